"""Offscreen per-eye overlay renderer (VTK, EGL without a display).

One render window, one renderer and one camera are built once; each frame only the actors'
user matrices (``T_world_from_ct`` per vertebra) and the camera (``T_eye_from_world`` and
``K``) change, and both eyes are drawn into the same window one after the other, so the meshes
are uploaded to the (software) GPU once. Meshes are decimated to the display's resolution.

The VTK camera reproduces ``K`` exactly: vertical view angle from ``fy``, aspect from
``fx / fy``, window centre from the principal point, view-up ``-y`` of the eye, looking along
its ``+z``; pixel centres are at integer ``(u, v)`` with ``(0, 0)`` the top-left pixel.

Images are RGBA ``uint8`` ``(H, W, 4)``, row 0 at the top, straight (not premultiplied) alpha;
alpha 0 where nothing is drawn (what an optical see-through display leaves transparent). For a
video see-through display the overlay is composited onto a rendered camera view of the scene
(skin, wound) and alpha is 255 everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh, as_points
from arspine.overlay.display import EYES, HeadMountedDisplay, as_transform, get_display
from arspine.overlay.meshprep import (
    decimate,
    is_closed,
    mesh_to_polydata,
    oriented_outward,
    screw_polydata,
    tool_mesh,
    triangle_budget,
)

__all__ = [
    "OverlayRenderer",
    "StereoFrame",
    "ScrewSegment",
    "as_screw_segments",
    "STYLES",
    "LEVEL_COLORS",
    "make_render_window",
]

#: Rendering styles: opaque lit surfaces; semi-transparent; coloured silhouette/outline only;
#: colour by distance from the eye (near warm, far cool); opaque but with everything behind a
#: surface plane (``clip_plane``) hidden.
STYLES = ("solid", "transparent", "outline", "depth", "clip")

#: Display colours (RGB 0..1) per clinical level; other names cycle through the same list.
LEVEL_COLORS: dict[str, tuple[float, float, float]] = {
    "T11": (0.75, 0.55, 0.95), "T12": (0.60, 0.60, 1.00), "L1": (0.35, 0.75, 1.00),
    "L2": (0.30, 0.95, 0.85), "L3": (0.55, 1.00, 0.45), "L4": (1.00, 0.90, 0.35),
    "L5": (1.00, 0.65, 0.35), "S1": (1.00, 0.45, 0.55),
}
_CYCLE = list(LEVEL_COLORS.values())
_SCREW_COLOR = (0.1, 1.0, 0.2)
_TOOL_COLOR = (1.0, 1.0, 0.1)
_SCENE_COLOR = (0.85, 0.62, 0.55)


@dataclass(frozen=True)
class ScrewSegment:
    """A planned screw in the CT frame (mm), attached to ``level`` (moves with it)."""

    entry_ct_mm: np.ndarray
    target_ct_mm: np.ndarray
    diameter_mm: float
    level: str | None = None


def as_screw_segments(screws: object) -> list[ScrewSegment]:
    """Normalise screws given as ``(entry, target, diameter[, level])`` tuples or objects with
    ``entry_ct_mm``, ``target_ct_mm``, ``diameter_mm`` (and ``level`` or ``vertebra``), such
    as ``arspine.navigation.plan.ScrewTrajectory``."""
    if screws is None:
        return []
    out = []
    for i, s in enumerate(screws):
        if isinstance(s, ScrewSegment):
            out.append(s)
            continue
        if hasattr(s, "entry_ct_mm"):
            entry, target = s.entry_ct_mm, s.target_ct_mm
            diameter = getattr(s, "diameter_mm", 6.5)
            level = getattr(s, "level", None) or getattr(s, "vertebra", None)
        elif isinstance(s, (tuple, list)) and len(s) in (3, 4):
            entry, target, diameter = s[:3]
            level = s[3] if len(s) == 4 else None
        else:
            raise InputError(f"screws[{i}] must be (entry, target, diameter[, level]) or have "
                             f"entry_ct_mm/target_ct_mm/diameter_mm, got {s!r}")
        seg = as_points(np.array([entry, target], dtype=np.float64), f"screws[{i}] entry/target")
        try:
            d = float(diameter)
        except (TypeError, ValueError):
            raise InputError(f"screws[{i}] diameter must be a number, got {diameter!r}") from None
        if not (math.isfinite(d) and d > 0):
            raise InputError(f"screws[{i}] diameter must be > 0 mm, got {diameter!r}")
        out.append(ScrewSegment(seg[0], seg[1], d, None if level is None else str(level)))
    return out


@dataclass
class StereoFrame:
    """Both eyes of one rendered frame.

    Attributes
    ----------
    images : {"left": (H, W, 4) uint8, "right": ...} RGBA, row 0 at the top.
    K : (3, 3) intrinsics used (pixels), the same for both eyes.
    T_eye_from_world : {"left": RigidTransform, "right": RigidTransform}
    """

    images: dict[str, np.ndarray]
    K: np.ndarray
    T_eye_from_world: dict[str, RigidTransform]

    def eye_dict(self, side: str, image_name: str) -> dict:
        """The ``eyes.json`` entry of one eye (DESIGN.md)."""
        return {"K": self.K.tolist(), "T_eye_from_world":
                self.T_eye_from_world[side].as_matrix().tolist(), "image": image_name}


def make_render_window(width_px: int, height_px: int):
    """An offscreen render window: EGL (no display needed) when VTK has it."""
    try:
        from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow
        rw = vtkEGLRenderWindow()
    except ImportError:  # pragma: no cover - VTK builds without EGL
        import vtk
        rw = vtk.vtkRenderWindow()
    rw.SetOffScreenRendering(1)
    rw.SetSize(int(width_px), int(height_px))
    rw.SetAlphaBitPlanes(1)
    rw.SetMultiSamples(0)
    rw.SwapBuffersOff()  # pixels are read back from the render buffer: no blit per frame
    return rw


def _set_matrix(vtk_matrix, m: np.ndarray) -> None:
    vtk_matrix.DeepCopy(np.asarray(m, dtype=np.float64).ravel().tolist())


def set_camera_from_K(camera, K: np.ndarray, width_px: int, height_px: int,
                      T_eye_from_world: RigidTransform, focal_mm: float = 500.0) -> None:
    """Point a ``vtkCamera`` so the window reproduces ``K`` and ``T_eye_from_world`` exactly."""
    m = np.linalg.inv(T_eye_from_world.as_matrix())  # T_world_from_eye
    pos, z_axis, y_axis = m[:3, 3], m[:3, 2], m[:3, 1]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    camera.SetPosition(*pos)
    camera.SetFocalPoint(*(pos + z_axis * focal_mm))
    camera.SetViewUp(*(-y_axis))
    camera.SetViewAngle(math.degrees(2.0 * math.atan(height_px / (2.0 * fy))))
    # NDC spans pixel edges, so pixel centre u sits at NDC 2 (u + 0.5) / W - 1; VTK's window
    # centre is where the view centre moves to, i.e. minus the principal point's NDC offset.
    camera.SetWindowCenter(1.0 - 2.0 * (cx + 0.5) / width_px,
                           2.0 * (cy + 0.5) / height_px - 1.0)
    if abs(fx - fy) > 1e-9 * fx:
        camera.SetUseExplicitAspectRatio(True)
        camera.SetExplicitAspectRatio(width_px * fy / (fx * height_px))
    else:
        camera.SetUseExplicitAspectRatio(False)


class _Obj:
    __slots__ = ("name", "kind", "level", "actor", "matrix", "color", "n_faces", "m",
                 "normals", "rgb", "scalars")

    def __init__(self, name, kind, level, actor, matrix, color, n_faces):
        self.name, self.kind, self.level = name, kind, level
        self.actor, self.matrix, self.color, self.n_faces = actor, matrix, color, n_faces
        self.m = np.eye(4)  # the user matrix, as numpy
        self.normals = self.rgb = self.scalars = None


class OverlayRenderer:
    """Per-eye overlay renderer that keeps its VTK pipeline alive across frames.

    Parameters
    ----------
    display : HeadMountedDisplay, preset name or None (default display)
    surfaces : dict {level: Mesh} or sequence of Mesh
        Vertebra surfaces in the ``ct`` frame (mm); ``Mesh.name`` or the key is the level.
    screws : sequence
        Planned screws in the ``ct`` frame: ``(entry, target, diameter_mm[, level])`` or
        objects with ``entry_ct_mm``, ``target_ct_mm``, ``diameter_mm`` (and ``level``). A
        screw without a level follows the vertebra whose centroid is nearest its midpoint.
    style : {"solid", "transparent", "outline", "depth", "clip"}
    opacity : float or None
        Vertebra opacity (default 0.4 for "transparent", else 1).
    triangles_per_vertebra : int or None
        Decimation target; None picks one from the display resolution
        (:func:`~arspine.overlay.meshprep.triangle_budget`); 0 keeps full resolution.
    scene : Mesh or sequence of Mesh, optional
        Scene surfaces in the ``world`` frame (skin, wound) rendered as the camera view of a
        video see-through display.
    tool : Mesh or True, optional
        Tracked tool mesh in the ``tool`` frame (True: a 150 mm pointer, tip at the origin).
    clip_plane : (point_world (3,), normal_world (3,)), optional
        The surface plane: what lies behind it (opposite to ``normal``) is hidden. Needed by
        style "clip", applied in every style when given.
    line_width_px : int
        Outline thickness for style "outline".
    fill_alpha : float
        Fill opacity inside outlines (style "outline").
    depth_range_mm : (near, far) or None
        Colour range of style "depth"; None uses each frame's visible depth range.
    render_scale : float
        Render at this fraction of the display resolution and upsample (nearest) to full size;
        1.0 renders at full resolution.
    text_size_px : int
        Guidance text size.
    lighting : {"baked", "vtk"}
        "baked": a headlight computed per vertex in numpy when the view or a pose changes,
        drawn unlit (the rasteriser's cheapest shader; about a fifth less CPU on llvmpipe).
        "vtk": VTK's per-fragment headlight.
    screws_on_top : bool or None
        Draw planned screws and the tool over the anatomy even where bone hides them (an extra
        small render per eye). None: on for "outline" (a contour cannot show a screw inside
        the bone), off otherwise.
    """

    def __init__(self, display: HeadMountedDisplay | str | None = None,
                 surfaces: Mapping[str, Mesh] | Sequence[Mesh] | None = None,
                 screws: Sequence = (), *, style: str = "solid", opacity: float | None = None,
                 triangles_per_vertebra: int | None = None,
                 scene: Mesh | Sequence[Mesh] | None = None, tool: Mesh | bool | None = None,
                 clip_plane: tuple | None = None, line_width_px: int = 2,
                 fill_alpha: float = 0.0, depth_range_mm: tuple[float, float] | None = None,
                 render_scale: float = 1.0, text_size_px: int = 22,
                 lighting: str = "baked", screws_on_top: bool | None = None):
        import vtk

        self.display = get_display(display)
        if style not in STYLES:
            raise InputError(f"style must be one of {STYLES}, got {style!r}")
        if style == "clip" and clip_plane is None:
            raise InputError("style 'clip' needs clip_plane=(point_world, normal_world)")
        if not (isinstance(render_scale, (int, float)) and 0.1 <= render_scale <= 1.0):
            raise InputError(f"render_scale must be in 0.1..1, got {render_scale!r}")
        if opacity is not None and not (0.0 < float(opacity) <= 1.0):
            raise InputError(f"opacity must be in (0, 1], got {opacity!r}")
        if lighting not in ("baked", "vtk"):
            raise InputError(f"lighting must be 'baked' or 'vtk', got {lighting!r}")
        self.lighting = lighting
        self.screws_on_top = (style == "outline") if screws_on_top is None \
            else bool(screws_on_top)
        self._light_key = None
        if int(line_width_px) < 1:
            raise InputError(f"line_width_px must be >= 1, got {line_width_px!r}")
        self.style = style
        self.opacity = float(opacity) if opacity is not None else (
            0.4 if style == "transparent" else 1.0)
        self.line_width_px = int(line_width_px)
        self.fill_alpha = float(fill_alpha)
        self.depth_range_mm = depth_range_mm
        self.render_scale = float(render_scale)
        self._rdisplay = self.display if render_scale == 1.0 else self.display.scaled(
            render_scale)
        W, H = self._rdisplay.width_px, self._rdisplay.height_px

        meshes = self._as_mesh_dict(surfaces)
        self.screws = as_screw_segments(screws)  # validate before any VTK set-up
        self._window = make_render_window(W, H)
        self._ren = vtk.vtkRenderer()
        self._ren.SetBackground(0.0, 0.0, 0.0)
        self._ren.SetBackgroundAlpha(0.0)
        self._ren.SetUseFXAA(False)
        self._ren.SetUseDepthPeeling(False)
        self._window.AddRenderer(self._ren)
        self._camera = self._ren.GetActiveCamera()

        self._planes = None
        if clip_plane is not None:
            self._planes = self._make_plane(clip_plane)

        self._objects: list[_Obj] = []
        self.centroids_ct: dict[str, np.ndarray] = {}
        n_tri = (triangle_budget(self.display.width_px, self.display.height_px, len(meshes))
                 if triangles_per_vertebra is None else int(triangles_per_vertebra))
        self.triangles_per_vertebra = n_tri
        for i, (level, mesh) in enumerate(meshes.items()):
            m = decimate(mesh, n_tri) if n_tri > 0 else mesh
            closed = is_closed(m)
            if closed:
                m = oriented_outward(m)
            self.centroids_ct[level] = mesh.vertices.mean(axis=0)
            color = LEVEL_COLORS.get(level, _CYCLE[i % len(_CYCLE)])
            obj = self._add(level, "vertebra", level, self._normals(mesh_to_polydata(m)), color,
                            self.opacity)
            # A closed surface's back faces are always hidden by its front faces: skipping
            # them roughly halves the rasteriser's work (not for clipped views, which open
            # the surface).
            obj.actor.GetProperty().SetBackfaceCulling(closed and self._planes is None)
        for i, s in enumerate(self.screws):
            level = s.level or self._nearest_level((s.entry_ct_mm + s.target_ct_mm) / 2)
            pd = screw_polydata(s.entry_ct_mm, s.target_ct_mm, s.diameter_mm)
            obj = self._add(f"screw{i}", "screw", level, pd, _SCREW_COLOR, 1.0)
            obj.actor.GetProperty().SetBackfaceCulling(self._planes is None)
        if tool is not None and tool is not False:
            tm = tool_mesh() if tool is True else tool
            if not isinstance(tm, Mesh):
                raise InputError(f"tool must be a Mesh in the tool frame or True, got "
                                 f"{type(tool).__name__}")
            self._add("tool", "tool", None, mesh_to_polydata(tm), _TOOL_COLOR, 1.0)
        self._scene: list[_Obj] = []
        if scene is not None:
            for j, sm in enumerate([scene] if isinstance(scene, Mesh) else list(scene)):
                if not isinstance(sm, Mesh):
                    raise InputError(f"scene[{j}] must be a Mesh, got {type(sm).__name__}")
                self._scene.append(self._add(sm.name or f"scene{j}", "scene", None,
                                             self._normals(mesh_to_polydata(sm)),
                                             _SCENE_COLOR, 1.0))
        # video see-through without a scene composites onto the empty room's grey
        self._text = vtk.vtkTextActor()
        self._text.GetTextProperty().SetFontSize(int(text_size_px))
        self._text.GetTextProperty().SetColor(1.0, 1.0, 1.0)
        self._text.SetPosition(12, 12)
        self._text.SetVisibility(False)
        self._ren.AddViewProp(self._text)
        self._T_head_from_eye = {side: self.display.T_head_from_eye(side).as_matrix()
                                 for side in EYES}
        self._zarr = vtk.vtkFloatArray()
        self._carr = vtk.vtkUnsignedCharArray()
        self._apply_style()

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _as_mesh_dict(surfaces) -> dict[str, Mesh]:
        if surfaces is None:
            return {}
        if isinstance(surfaces, Mesh):
            surfaces = [surfaces]
        if isinstance(surfaces, Mapping):
            items = list(surfaces.items())
        else:
            items = [(m.name if isinstance(m, Mesh) and m.name else f"part{i}", m)
                     for i, m in enumerate(surfaces)]
        out = {}
        for name, m in items:
            if not isinstance(m, Mesh):
                raise InputError(f"surfaces[{name!r}] must be a Mesh, got {type(m).__name__}")
            if m.n_faces == 0:
                raise InputError(f"surfaces[{name!r}] has no triangles")
            out[str(name)] = m
        return out

    @staticmethod
    def _normals(pd):
        import vtk
        n = vtk.vtkPolyDataNormals()
        n.SetInputData(pd)
        n.SplittingOff()
        n.ConsistencyOn()
        n.AutoOrientNormalsOff()
        n.Update()
        return n.GetOutput()

    @staticmethod
    def _make_plane(clip_plane):
        import vtk
        try:
            point, normal = clip_plane
        except (TypeError, ValueError):
            raise InputError("clip_plane must be (point_world, normal_world)") from None
        p = as_points(np.reshape(np.asarray(point, dtype=np.float64), (1, 3)), "clip_plane point")
        n = as_points(np.reshape(np.asarray(normal, dtype=np.float64), (1, 3)),
                      "clip_plane normal")[0]
        if np.linalg.norm(n) < 1e-9:
            raise InputError("clip_plane normal must not be zero")
        plane = vtk.vtkPlane()
        plane.SetOrigin(*p[0])
        plane.SetNormal(*(n / np.linalg.norm(n)))
        planes = vtk.vtkPlaneCollection()
        planes.AddItem(plane)
        return planes

    def _nearest_level(self, p: np.ndarray) -> str | None:
        if not self.centroids_ct:
            return None
        names = list(self.centroids_ct)
        d = [np.linalg.norm(self.centroids_ct[n] - p) for n in names]
        return names[int(np.argmin(d))]

    def _add(self, name, kind, level, polydata, color, opacity) -> _Obj:
        import vtk
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(polydata)
        mapper.ScalarVisibilityOff()
        mapper.StaticOn()  # geometry never changes: skip pipeline checks every frame
        if self._planes is not None and kind != "scene":
            mapper.SetClippingPlanes(self._planes)
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        matrix = vtk.vtkMatrix4x4()
        actor.SetUserMatrix(matrix)
        prop = actor.GetProperty()
        prop.SetColor(*color)
        prop.SetOpacity(opacity)
        self._ren.AddActor(actor)
        obj = _Obj(name, kind, level, actor, matrix, color, polydata.GetNumberOfPolys())
        self._objects.append(obj)
        return obj

    def _apply_style(self) -> None:
        for o in self._objects:
            prop = o.actor.GetProperty()
            if o.kind == "scene":
                prop.SetAmbient(0.25)
                prop.SetDiffuse(0.75)
                prop.SetSpecular(0.1)
                continue
            prop.SetAmbient(0.3)
            prop.SetDiffuse(0.8)
            prop.SetSpecular(0.0)
            if self.style == "depth" and o.kind == "vertebra":
                prop.SetColor(1.0, 1.0, 1.0)  # the shading only; colour comes from depth
            if self.style == "outline":
                prop.LightingOff()  # flat colours: the outline colour of each object
            elif self.lighting == "baked":
                self._setup_baked(o)

    def _setup_baked(self, o: _Obj) -> None:
        import vtk
        from vtk.util.numpy_support import vtk_to_numpy

        mapper = o.actor.GetMapper()
        pd = mapper.GetInput()
        if pd.GetPointData().GetNormals() is None:
            pd = self._normals(pd)
            mapper.SetInputData(pd)
        o.normals = vtk_to_numpy(pd.GetPointData().GetNormals()).astype(np.float64)
        arr = vtk.vtkUnsignedCharArray()
        arr.SetNumberOfComponents(3)
        arr.SetNumberOfTuples(pd.GetNumberOfPoints())
        arr.SetName("baked_rgb")
        arr.Fill(0)
        pd.GetPointData().SetScalars(arr)
        o.scalars, o.rgb = arr, vtk_to_numpy(arr)
        mapper.StaticOff()  # the colours change with the view
        mapper.ScalarVisibilityOn()
        mapper.SetColorModeToDirectScalars()
        mapper.SetScalarModeToUsePointData()
        prop = o.actor.GetProperty()
        prop.LightingOff()
        prop.SetAmbient(0.0)
        prop.SetDiffuse(1.0)

    def _bake(self, m_world_from_eye: np.ndarray) -> None:
        """Per-vertex headlight: shade = 0.3 + 0.7 |n . l|, l towards the eye."""
        to_light = -m_world_from_eye[:3, 2]
        key = np.round(to_light, 3).tobytes()
        if key == self._light_key:
            return
        self._light_key = key
        white = self.style == "depth"
        for o in self._objects:
            if o.rgb is None or not o.actor.GetVisibility():
                continue
            l_local = o.m[:3, :3].T @ to_light
            # two-sided, as VTK's default lighting (open surfaces show their back side)
            shade = 0.3 + 0.7 * np.minimum(np.abs(o.normals @ l_local), 1.0)
            base = np.ones(3) if (white and o.kind == "vertebra") else np.asarray(o.color)
            o.rgb[:] = np.clip(shade[:, None] * base[None] * 255.0 + 0.5, 0, 255)
            o.scalars.Modified()

    # ----------------------------------------------------------------- state
    @property
    def levels(self) -> list[str]:
        """Vertebra levels this renderer draws."""
        return [o.level for o in self._objects if o.kind == "vertebra"]

    @property
    def n_triangles(self) -> int:
        """Triangles drawn per eye for the anatomy, screws and tool (scene excluded)."""
        return sum(o.n_faces for o in self._objects if o.kind != "scene")

    def set_poses(self, T_world_from_ct: object) -> None:
        """Place the anatomy: one ``T_world_from_ct`` for all, or ``{level: T_world_from_ct}``.

        A level missing from the dict is hidden (never drawn with a pose it does not have);
        its screws too.
        """
        if isinstance(T_world_from_ct, Mapping):
            poses = {str(k): as_transform(v, "world", "ct", f"T_world_from_ct[{k!r}]")
                     .as_matrix() for k, v in T_world_from_ct.items()}
            default = None
        else:
            poses = {}
            default = as_transform(T_world_from_ct, "world", "ct", "T_world_from_ct").as_matrix()
        for o in self._objects:
            if o.kind not in ("vertebra", "screw"):
                continue
            m = poses.get(o.level, default) if o.level is not None else default
            if m is None and o.level is None and len(poses) == 1:
                m = next(iter(poses.values()))
            o.actor.SetVisibility(m is not None)
            if m is not None:
                _set_matrix(o.matrix, m)
                o.m = m
        self._light_key = None

    def set_tool(self, T_world_from_tool: object | None) -> None:
        """Place the tracked tool (None hides it)."""
        for o in self._objects:
            if o.kind == "tool":
                o.actor.SetVisibility(T_world_from_tool is not None)
                if T_world_from_tool is not None:
                    o.m = as_transform(T_world_from_tool, "world", "tool",
                                       "T_world_from_tool").as_matrix()
                    _set_matrix(o.matrix, o.m)
                    self._light_key = None

    def set_text(self, text: str | None) -> None:
        """Guidance text drawn in the lower-left corner of both eyes (None clears it)."""
        self._text.SetVisibility(bool(text))
        if text:
            self._text.SetInput(str(text))

    # ----------------------------------------------------------------- rendering
    def render(self, T_world_from_head: object, T_world_from_ct: object | None = None, *,
               T_world_from_tool: object | None = None, text: str | None = None
               ) -> StereoFrame:
        """Render both eyes.

        Parameters
        ----------
        T_world_from_head : RigidTransform ("world" <- "head") or (4, 4), mm
        T_world_from_ct : RigidTransform, (4, 4) or {level: ...}, optional
            Anatomy pose(s); None keeps the last :meth:`set_poses`.
        T_world_from_tool : optional tracked tool pose.
        text : optional guidance text.

        Returns
        -------
        StereoFrame with full-resolution RGBA images per eye.
        """
        if T_world_from_ct is not None:
            self.set_poses(T_world_from_ct)
        if T_world_from_tool is not None or any(o.kind == "tool" for o in self._objects):
            self.set_tool(T_world_from_tool)
        if text is not None:
            self.set_text(text)
        # numpy for the chain (this runs every frame); one validated transform per eye
        m_wh = as_transform(T_world_from_head, "world", "head", "T_world_from_head").as_matrix()
        eyes = {side: RigidTransform(np.linalg.inv(m_wh @ self._T_head_from_eye[side]),
                                     f"eye_{side}", "world", atol=1e-4) for side in EYES}
        images = {side: self.render_eye(eyes[side]) for side in EYES}
        return StereoFrame(images=images, K=self.display.K, T_eye_from_world=eyes)

    def render_eye(self, T_eye_from_world: object) -> np.ndarray:
        """One eye's RGBA image ``(H, W, 4)`` uint8 for the current poses."""
        if isinstance(T_eye_from_world, RigidTransform):
            if T_eye_from_world.from_frame != "world":
                raise InputError(f"T_eye_from_world must map from 'world', got "
                                 f"{T_eye_from_world.name}")
            T = T_eye_from_world
        else:
            T = as_transform(T_eye_from_world, "eye", "world", "T_eye_from_world")
        rd = self._rdisplay
        W, H = rd.width_px, rd.height_px
        video = self.display.see_through == "video"
        for o in self._scene:
            o.actor.SetVisibility(False)
        if self.lighting == "baked" and self.style != "outline":
            self._bake(np.linalg.inv(T.as_matrix()))
        crop = self._crop(T)
        rgba = np.zeros((H, W, 4), dtype=np.uint8)
        if crop is not None:
            # Render only the rectangle that can hold anatomy: the rest is transparent anyway,
            # and the rasteriser's clear, read-back and copies scale with the pixels.
            x0, y0, x1, y1 = crop
            K = rd.K.copy()
            K[0, 2] -= x0
            K[1, 2] -= y0
            eps = 1e-9  # keep VTK's viewport-to-pixel rounding on the intended integers
            self._ren.SetViewport(x0 / W + eps, (H - y1) / H + eps, x1 / W + eps,
                                  (H - y0) / H + eps)
            set_camera_from_K(self._camera, K, x1 - x0, y1 - y0, T,
                              self.display.focal_plane_mm)
            self._ren.ResetCameraClippingRange()
            part, depth = self._draw(crop, need_depth=self.style in ("outline", "depth"))
            if self.style == "outline":
                part = self._outline(part, depth)
            elif self.style == "depth":
                part = self._depth_colour(part, depth)
            if self.opacity < 1.0 and self.style != "outline":
                part = _unpremultiply(part)
            rgba[y0:y1, x0:x1] = part
            if self.screws_on_top:
                self._draw_on_top(rgba, rd, T)
        if video:
            rgba = self._composite_on_scene(rgba, T)
        if self.render_scale != 1.0:
            rgba = _upsample(rgba, self.display.height_px, self.display.width_px)
        return rgba

    def _draw_on_top(self, rgba: np.ndarray, rd: HeadMountedDisplay, T: RigidTransform
                     ) -> None:
        """Render the screws and tool alone and paint them over ``rgba`` (in place)."""
        top = [o for o in self._objects if o.kind in ("screw", "tool")
               and o.actor.GetVisibility()]
        if not top:
            return
        hidden = [o for o in self._objects if o.kind not in ("screw", "tool")
                  and o.actor.GetVisibility()]
        text_vis = self._text.GetVisibility()
        for o in hidden:
            o.actor.SetVisibility(False)
        self._text.SetVisibility(False)
        try:
            crop = self._crop(T)
            if crop is None:
                return
            W, H = rd.width_px, rd.height_px
            x0, y0, x1, y1 = crop
            K = rd.K.copy()
            K[0, 2] -= x0
            K[1, 2] -= y0
            eps = 1e-9
            self._ren.SetViewport(x0 / W + eps, (H - y1) / H + eps, x1 / W + eps,
                                  (H - y0) / H + eps)
            set_camera_from_K(self._camera, K, x1 - x0, y1 - y0, T,
                              self.display.focal_plane_mm)
            self._ren.ResetCameraClippingRange()
            part, _ = self._draw(crop, need_depth=False)
            drawn = part[..., 3] > 0
            rgba[y0:y1, x0:x1][drawn] = part[drawn]
        finally:
            for o in hidden:
                o.actor.SetVisibility(True)
            self._text.SetVisibility(text_vis)

    def _crop(self, T: RigidTransform) -> tuple[int, int, int, int] | None:
        """Pixel rectangle ``(x0, y0, x1, y1)`` (top-left origin, x1/y1 exclusive) holding
        every visible prop's projected bounding box; None when nothing is in view."""
        W, H = self._rdisplay.width_px, self._rdisplay.height_px
        if self._text.GetVisibility():
            return 0, 0, W, H
        boxes = [o.actor.GetBounds() for o in self._objects
                 if o.kind != "scene" and o.actor.GetVisibility()]
        if not boxes:
            return None
        b = np.array(boxes)
        corners = np.stack(np.meshgrid([0, 1], [2, 3], [4, 5], indexing="ij"),
                           axis=-1).reshape(-1, 3)
        pts = b[:, corners.T].transpose(0, 2, 1).reshape(-1, 3)
        m = T.as_matrix()
        pe = pts @ m[:3, :3].T + m[:3, 3]
        if np.any(pe[:, 2] <= 1.0):  # something reaches behind the eye: no safe bound
            return 0, 0, W, H
        K = self._rdisplay.K
        u = K[0, 0] * pe[:, 0] / pe[:, 2] + K[0, 1] * pe[:, 1] / pe[:, 2] + K[0, 2]
        v = K[1, 1] * pe[:, 1] / pe[:, 2] + K[1, 2]
        pad = 2 + (self.line_width_px if self.style == "outline" else 0)
        x0 = max(0, int(math.floor(u.min())) - pad)
        y0 = max(0, int(math.floor(v.min())) - pad)
        x1 = min(W, int(math.ceil(u.max())) + pad + 1)
        y1 = min(H, int(math.ceil(v.max())) + pad + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1

    def _draw(self, crop: tuple[int, int, int, int], need_depth: bool
              ) -> tuple[np.ndarray, np.ndarray | None]:
        from vtk.util.numpy_support import vtk_to_numpy

        H = self._rdisplay.height_px
        x0, y0, x1, y1 = crop
        w, h = x1 - x0, y1 - y0
        self._window.Render()
        # VTK counts rows from the bottom
        self._window.GetRGBACharPixelData(x0, H - y1, x1 - 1, H - y0 - 1, 0, self._carr)
        # copy: the VTK array is reused by the next render (the other eye)
        rgba = np.ascontiguousarray(vtk_to_numpy(self._carr).reshape(h, w, 4)[::-1])
        depth = None
        if need_depth:
            self._window.GetZbufferData(x0, H - y1, x1 - 1, H - y0 - 1, self._zarr)
            zb = np.ascontiguousarray(vtk_to_numpy(self._zarr).reshape(h, w)[::-1])
            near, far = self._camera.GetClippingRange()
            ndc = 2.0 * zb.astype(np.float64) - 1.0
            depth = 2.0 * near * far / ((far + near) - ndc * (far - near))
            depth[zb >= 1.0] = np.inf
        return rgba, depth

    def _outline(self, rgba: np.ndarray, depth: np.ndarray) -> np.ndarray:
        fg = rgba[..., 3] > 0
        finite = np.where(np.isfinite(depth), depth, 1e9)
        # Occluding contours: the silhouette of the union plus depth jumps inside it.
        thr = np.maximum(3.0, 0.02 * np.where(np.isfinite(depth), depth, 0.0))
        edge = np.zeros_like(fg)
        for axis in (0, 1):
            a = np.diff(fg.astype(np.int8), axis=axis) != 0
            jump = np.abs(np.diff(finite, axis=axis)) > (thr[:-1] if axis == 0 else thr[:, :-1])
            e = (a | jump)
            # mark the nearer (foreground) side of each discontinuity
            lo = [slice(None), slice(None)]
            hi = [slice(None), slice(None)]
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            near_lo = finite[tuple(lo)] <= finite[tuple(hi)]
            edge[tuple(lo)] |= e & near_lo
            edge[tuple(hi)] |= e & ~near_lo
        edge &= fg
        color = rgba[..., :3].copy()
        acc = edge.copy()
        r = self.line_width_px - 1
        if r > 0:
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    if dy == 0 and dx == 0 or dy * dy + dx * dx > r * r + r:
                        continue
                    sh_e = _shift(edge, dy, dx)
                    new = sh_e & ~acc
                    if new.any():
                        color[new] = _shift(rgba[..., :3], dy, dx)[new]
                        acc |= new
        out = np.zeros_like(rgba)
        out[..., :3] = color
        out[..., 3] = np.where(acc, 255, np.where(fg, int(round(255 * self.fill_alpha)), 0))
        out[..., :3][out[..., 3] == 0] = 0
        return out

    def _depth_colour(self, rgba: np.ndarray, depth: np.ndarray) -> np.ndarray:
        fg = np.isfinite(depth) & (rgba[..., 3] > 0)
        if not fg.any():
            return rgba
        if self.depth_range_mm is not None:
            lo, hi = (float(x) for x in self.depth_range_mm)
        else:
            lo, hi = float(depth[fg].min()), float(depth[fg].max())
        t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        # near: warm yellow, far: cool blue (a perceptually ordered two-end ramp)
        near_c, mid_c, far_c = (np.array(c) for c in
                                ((1.0, 0.95, 0.3), (1.0, 0.35, 0.45), (0.25, 0.45, 1.0)))
        t3 = t[..., None]
        ramp = np.where(t3 < 0.5, near_c + (mid_c - near_c) * (t3 * 2),
                        mid_c + (far_c - mid_c) * (t3 * 2 - 1))
        shade = rgba[..., :3].astype(np.float64).max(axis=2, keepdims=True)
        out = rgba.copy()
        col = np.clip(ramp * shade, 0, 255).astype(np.uint8)
        # vertebrae are drawn white (grey when shaded); screws and tool keep their colours
        c = rgba[..., :3].astype(np.int16)
        vert = fg & ((c.max(axis=2) - c.min(axis=2)) < 8)
        out[..., :3] = np.where(vert[..., None], col, rgba[..., :3])
        return out

    def _composite_on_scene(self, overlay: np.ndarray, T: RigidTransform) -> np.ndarray:
        # The camera view: scene surfaces only, on an operating-room grey background.
        rd = self._rdisplay
        W, H = rd.width_px, rd.height_px
        saved = [(o, o.actor.GetVisibility()) for o in self._objects if o.kind != "scene"]
        for o, _ in saved:
            o.actor.SetVisibility(False)
        for o in self._scene:
            o.actor.SetVisibility(True)
        text_vis = self._text.GetVisibility()
        self._text.SetVisibility(False)
        self._ren.SetViewport(0.0, 0.0, 1.0, 1.0)
        set_camera_from_K(self._camera, rd.K, W, H, T, self.display.focal_plane_mm)
        self._ren.SetBackground(0.18, 0.2, 0.22)
        self._ren.SetBackgroundAlpha(1.0)
        self._ren.ResetCameraClippingRange()
        cam, _ = self._draw((0, 0, W, H), need_depth=False)
        self._ren.SetBackground(0.0, 0.0, 0.0)
        self._ren.SetBackgroundAlpha(0.0)
        for o, v in saved:
            o.actor.SetVisibility(v)
        for o in self._scene:
            o.actor.SetVisibility(False)
        self._text.SetVisibility(text_vis)
        a = overlay[..., 3:4].astype(np.float32) / 255.0
        out = np.empty_like(overlay)
        out[..., :3] = np.clip(overlay[..., :3] * a + cam[..., :3] * (1.0 - a) + 0.5, 0, 255)
        out[..., 3] = 255
        return out

    def close(self) -> None:
        """Release the render window (the renderer cannot be used afterwards)."""
        if self._window is not None:
            self._window.Finalize()
            self._window = None

    def __enter__(self) -> OverlayRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by (dy, dx) pixels, zero-filled."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """Blending on a transparent black background leaves colour premultiplied by alpha."""
    a = rgba[..., 3]
    part = (a > 0) & (a < 255)
    if not part.any():
        return np.ascontiguousarray(rgba)
    out = rgba.copy()
    af = a[part].astype(np.float32)[:, None]
    out[part, :3] = np.clip(rgba[part, :3].astype(np.float32) * 255.0 / af + 0.5, 0, 255)
    return out


def _upsample(rgba: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize to (height, width) keeping pixel centres aligned."""
    h, w = rgba.shape[:2]
    if height % h == 0 and width % w == 0 and height // h == width // w:
        k = height // h
        return np.repeat(np.repeat(rgba, k, axis=0), k, axis=1)
    yi = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    xi = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return rgba[yi[:, None], xi[None, :]]
