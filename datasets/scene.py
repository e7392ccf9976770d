"""The surgical scene around a posterior midline incision, as triangle meshes.

Built in a local patient frame (x left, y posterior = towards the sensor of a prone patient,
z cranial; origin at the centre of the exposed levels) from a height field over (x, z):

- **wound floor**: inside the incision the exposed posterior elements (spinous processes,
  laminae, facets) are bone; soft tissue (ligament, blood, muscle remnants) lies a few mm
  below the bone top and fills the interlaminar gaps, so the canal and bodies are never seen;
- **wound walls**: retracted paraspinal muscle rising steeply from the floor to the skin at
  the wound edge, hiding the transverse processes and everything lateral;
- **skin**: the CT's body surface (or a synthetic back when the anatomy has no skin), moved
  a few mm by a smooth random field (the patient was supine in the CT, prone now);
- **drapes** with random folds, leaving a window of skin around the wound;
- **retractor** blades on both wound walls with a cross bar above the skin;
- **a tool** (instrument shaft) pointing into the wound and the **hand** holding it.

Each mesh carries a label code (:data:`LABELS`); bone gets ``bone_label(level)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspine.datasets.anatomy import VERTEBRA_NAMES
from arspine.navigation.geometry import Mesh

__all__ = ["LABELS", "bone_label", "label_name", "label_names", "is_bone", "SceneConfig",
           "SceneMesh", "build_scene", "heightfield_mesh"]

#: Label codes of what a simulated ray hit (bone levels are ``100 + index`` in
#: :data:`arspine.datasets.anatomy.VERTEBRA_NAMES`, e.g. L3 = 121).
LABELS: dict[str, int] = {"outlier": 0, "flying_pixel": 1, "skin": 2, "soft_tissue": 3,
                          "drape": 4, "retractor": 5, "tool": 6, "hand": 7, "clutter": 8}
_BONE0 = 100


def bone_label(level: str) -> int:
    """Label code of a vertebra (``"L3"`` -> 121)."""
    return _BONE0 + VERTEBRA_NAMES.index(level)


def label_name(code: int) -> str:
    """Name of a label code (``121`` -> ``"L3"``, ``2`` -> ``"skin"``)."""
    code = int(code)
    if code >= _BONE0 and code - _BONE0 < len(VERTEBRA_NAMES):
        return VERTEBRA_NAMES[code - _BONE0]
    for k, v in LABELS.items():
        if v == code:
            return k
    return f"unknown_{code}"


def label_names(codes) -> dict[int, str]:
    """``{code: name}`` for the distinct codes given."""
    return {int(c): label_name(c) for c in np.unique(np.asarray(codes))}


def is_bone(labels) -> np.ndarray:
    """Boolean mask of bone labels."""
    return np.asarray(labels) >= _BONE0


@dataclass(frozen=True)
class SceneConfig:
    """Geometry of the surgical situation (mm, deg). Random draws use the simulator's seed.

    Attributes
    ----------
    wound_half_width_mm : float
        Lateral half-width of the exposure (to the facets); lumbar facets lie ~15-25 mm
        from the midline.
    wound_margin_mm : float
        Exposure beyond the posterior elements of the first and last exposed level.
    wall_width_mm : float
        Lateral run of the retracted muscle wall from floor to skin.
    floor_depth_mm : float
        Soft tissue below the local bone top (exposed bone stands this far proud).
    gap_depth_mm : float
        Depth of the tissue filling interlaminar gaps below the closed bone surface.
    min_floor_mm : float
        The wound floor never lies deeper than this far posterior of the vertebral
        centroids (bodies and canal stay covered).
    tissue_remnants : float
        Fraction of the exposed bone still covered by soft-tissue patches.
    remnant_mm : float
        Thickness of those patches over the bone.
    skin_shift_mm : float
        Amplitude of the smooth random skin displacement vs. the CT.
    soft_tissue_mm : float
        Skin above the spinous processes for a synthetic back (no CT skin).
    drapes : bool
    drape_margin_mm : float
        Skin visible between the wound edge and the drape window.
    drape_fold_mm : float
        Fold amplitude.
    retractors : bool
    tool : bool
    hand : bool
    tool_probability : float
        Chance that the tool (and the hand holding it) is in the field for this scan;
        surgeons often, not always, take instruments out before a registration scan.
    clutter : int
        Extra objects: gauze sponges on the drapes, suction tubing across the field.
    grid_mm : float
        Height-field spacing over the wound and its walls.
    coarse_grid_mm : float
        Height-field spacing of the skin and drapes away from the wound.
    extent_mm : float
        Half-size of the modelled field around the wound.
    table_half_width_mm : float
        Beyond this lateral distance the drapes fall off the table.
    """

    wound_half_width_mm: float = 25.0
    wound_margin_mm: float = 6.0
    wall_width_mm: float = 6.0
    floor_depth_mm: float = 3.0
    gap_depth_mm: float = 9.0
    min_floor_mm: float = 8.0
    tissue_remnants: float = 0.15
    remnant_mm: float = 2.0
    skin_shift_mm: float = 3.0
    soft_tissue_mm: float = 35.0
    drapes: bool = True
    drape_margin_mm: float = 35.0
    drape_fold_mm: float = 5.0
    retractors: bool = True
    tool: bool = True
    hand: bool = True
    tool_probability: float = 0.5
    clutter: int = 0
    grid_mm: float = 1.5
    coarse_grid_mm: float = 4.0
    extent_mm: float = 400.0
    table_half_width_mm: float = 260.0


    @classmethod
    def preset(cls, name: str) -> SceneConfig:
        """Named scene: ``"clean"`` (wound and skin only: no drapes, retractors, tool, tissue
        remnants; for debugging a method step by step), ``"standard"`` (the defaults) or
        ``"hard"`` (narrow wound, deep drape folds, clutter, tool always in view)."""
        from arspine.errors import InputError

        presets = {
            "clean": dict(drapes=False, retractors=False, tool=False, hand=False,
                          tissue_remnants=0.0, skin_shift_mm=0.0),
            "standard": {},
            "hard": dict(wound_half_width_mm=17.0, drape_fold_mm=9.0, clutter=3,
                         tool_probability=1.0),
        }
        if name not in presets:
            raise InputError(f"scene preset must be one of {sorted(presets)}, got {name!r}")
        return cls(**presets[name])


@dataclass(frozen=True)
class SceneMesh:
    """A scene part: mesh in the ``patient`` frame, its label code and whether it is bone."""

    mesh: Mesh
    label: int
    level: str | None = None


def heightfield_mesh(xs: np.ndarray, zs: np.ndarray, h: np.ndarray,
                     keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of a height field ``y = h[i, j]`` over ``x = xs[i], z = zs[j]``.

    Cells with a NaN corner, or whose four corners are not all in ``keep``, are dropped.

    Returns
    -------
    vertices : (V, 3) local mm, faces : (F, 3)
    """
    nx, nz = h.shape
    X, Z = np.meshgrid(xs, zs, indexing="ij")
    verts = np.stack([X, np.nan_to_num(h, nan=0.0), Z], -1).reshape(-1, 3)
    ok = np.isfinite(h)
    if keep is not None:
        ok &= keep
    idx = np.arange(nx * nz).reshape(nx, nz)
    cell = ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]
    a, b = idx[:-1, :-1][cell], idx[1:, :-1][cell]
    c, d = idx[:-1, 1:][cell], idx[1:, 1:][cell]
    # Wound so the normals point to +y (up, towards the sensor).
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    used = np.zeros(len(verts), bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces]


def _o3d_prim(kind: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    g = o3d.geometry.TriangleMesh
    m = {"box": g.create_box, "cylinder": g.create_cylinder, "sphere": g.create_sphere}[kind](**kw)
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64)


def _box(center, size, R=None) -> tuple[np.ndarray, np.ndarray]:
    v, f = _o3d_prim("box", width=size[0], height=size[1], depth=size[2])
    v = v - np.asarray(size) / 2
    if R is not None:
        v = v @ np.asarray(R).T
    return v + np.asarray(center), f


def _frame_along(axis: np.ndarray) -> np.ndarray:
    """Rotation whose z column is ``axis``."""
    z = axis / np.linalg.norm(axis)
    t = np.array([1.0, 0, 0]) if abs(z[0]) < 0.9 else np.array([0, 1.0, 0])
    x = np.cross(t, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], 1)


def _smooth_field(rng, X, Z, amplitude, wavelengths=(60.0, 150.0), n=4) -> np.ndarray:
    """Smooth random field: sum of plane waves with random directions and phases."""
    f = np.zeros_like(X)
    for _ in range(n):
        ang = rng.uniform(0, np.pi)
        lam = rng.uniform(*wavelengths)
        k = 2 * np.pi / lam
        f += rng.normal() * np.sin(k * (np.cos(ang) * X + np.sin(ang) * Z) + rng.uniform(0, 6.3))
    return amplitude * f / np.sqrt(n)


def _bin_max(x, z, y, xs, zs) -> np.ndarray:
    """Max of y per (x, z) grid cell (NaN where empty)."""
    step = xs[1] - xs[0]
    i = np.round((x - xs[0]) / step).astype(int)
    j = np.round((z - zs[0]) / step).astype(int)
    ok = (i >= 0) & (i < len(xs)) & (j >= 0) & (j < len(zs))
    out = np.full((len(xs), len(zs)), -np.inf)
    np.maximum.at(out, (i[ok], j[ok]), y[ok])
    out[~np.isfinite(out)] = np.nan
    return out


def _fill_nan(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    bad = ~np.isfinite(a)
    if not bad.any():
        return a
    if bad.all():
        return np.zeros_like(a)
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return a[tuple(idx)]


def build_scene(posed: dict[str, Mesh], exposed: list[str], axes: np.ndarray,
                skin_points: np.ndarray | None, config: SceneConfig,
                rng: np.random.Generator,
                centroids: dict | None = None) -> tuple[list[SceneMesh], dict]:
    """Meshes of the surgical scene in the ``patient`` frame.

    Parameters
    ----------
    posed : dict[str, Mesh]
        Vertebrae in their intraoperative pose (``patient`` frame, mm).
    exposed : list[str]
        Levels whose posterior elements the incision exposes.
    axes : (3, 3)
        Columns: patient left, posterior, cranial (unit vectors in the ``patient`` frame).
    skin_points : (M, 3) or None
        CT body-surface points (``patient`` frame before the skin shift), or None.
    config : SceneConfig
    rng : numpy Generator
    centroids : dict[str, (3,)], optional
        Posed vertebra centroids (computed from the meshes when not given).

    Returns
    -------
    parts : list[SceneMesh]
    info : dict
        ``origin`` (3,), ``axes`` (3, 3), ``wound_center`` (3,) at bone-top height,
        ``wound_half_length_mm``, ``bone_top_mm``, ``skin_height_mm``.
    """
    import open3d as o3d

    from arspine.navigation.geometry import as_points

    R = np.asarray(axes, dtype=np.float64)
    if centroids is None:
        centroids = {lv: m.centroid() for lv, m in posed.items()}
    cents = np.array([centroids[lv] for lv in exposed])
    origin = cents.mean(0)

    def to_local(p):
        return (np.asarray(p) - origin) @ R

    def to_patient(p):
        return origin + np.asarray(p) @ R.T

    step = config.grid_mm
    # Cranio-caudal span of the exposed posterior elements.
    post = np.concatenate([to_local(posed[lv].vertices) for lv in exposed])
    post = post[post[:, 1] > np.percentile(post[:, 1], 40)]
    z0, z1 = post[:, 2].min() - config.wound_margin_mm, post[:, 2].max() + config.wound_margin_mm
    half_len = 0.5 * (z1 - z0)
    zc = 0.5 * (z0 + z1)
    hw = config.wound_half_width_mm * rng.uniform(0.9, 1.15)  # how far the surgeon exposed
    ext = config.extent_mm
    # Two height-field grids: a fine one over the wound and its walls, a coarse one (skin,
    # drapes) over the whole back; the coarse skin has a hole where the fine patch lies.
    cstep = config.coarse_grid_mm
    xs_c = np.arange(-ext, ext + cstep / 2, cstep)
    zs_c = np.arange(zc - half_len - ext, zc + half_len + ext + cstep / 2, cstep)
    pad = config.wall_width_mm + 20.0
    xs = np.arange(-(hw + pad), hw + pad + step / 2, step)
    zs = np.arange(zc - half_len - pad, zc + half_len + pad + step / 2, step)
    X, Z = np.meshgrid(xs, zs, indexing="ij")
    Xc, Zc = np.meshgrid(xs_c, zs_c, indexing="ij")

    # Bone height field: first hit looking down (-y) onto every vertebra.
    scene = o3d.t.geometry.RaycastingScene()
    for m in posed.values():
        v = to_local(m.vertices)
        scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)),
                            o3d.core.Tensor(m.faces.astype(np.uint32)))
    top = max(float(np.max(to_local(m.vertices)[:, 1])) for m in posed.values()) + 50.0

    def bone_height(XX, ZZ):
        rays = np.zeros((XX.size, 6), np.float32)
        rays[:, 0], rays[:, 1], rays[:, 2] = XX.ravel(), top, ZZ.ravel()
        rays[:, 4] = -1.0
        t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        return np.where(np.isfinite(t), top - t, np.nan).reshape(XX.shape)

    hb = bone_height(X, Z)
    hb_c = bone_height(Xc, Zc)
    bone_top = float(np.nanmax(hb[np.abs(X) < 15])) if np.isfinite(hb).any() else 0.0

    from scipy import ndimage
    from scipy.interpolate import RegularGridInterpolator

    # Skin height field on the coarse grid (CT body surface binned, or a synthetic back),
    # moved by a smooth random field; the fine grid interpolates it.
    if skin_points is not None and len(skin_points):
        sp = to_local(as_points(skin_points, "skin_points"))
        skin_c = _bin_max(sp[:, 0], sp[:, 2], sp[:, 1], xs_c, zs_c)
        skin_c = ndimage.median_filter(_fill_nan(skin_c), size=3)
        skin_c = ndimage.gaussian_filter(skin_c, 0.7)
    else:
        t_soft = config.soft_tissue_mm * rng.uniform(0.8, 1.25)
        skin_c = bone_top + t_soft - Xc ** 2 / (2 * 220.0) - 4.0 * np.exp(-(Xc / 25.0) ** 2)
    skin_c = skin_c + _smooth_field(rng, Xc, Zc, config.skin_shift_mm) + \
        rng.normal(0, config.skin_shift_mm / 2)
    skin_c = np.maximum(skin_c, np.where(np.isfinite(hb_c), hb_c + 6.0, -1e3))
    # Beyond the table edge (~26 cm from the midline) everything (the drapes) hangs down.
    skin_c = skin_c - 2.5 * np.clip(np.abs(Xc) - config.table_half_width_mm, 0, None)
    skin = RegularGridInterpolator((xs_c, zs_c), skin_c)(np.stack([X, Z], -1))
    hb_f = np.where(np.isfinite(hb), hb, -1e3)
    skin = np.maximum(skin, np.where(np.isfinite(hb), hb + 6.0, -1e3))

    # Wound: rounded rectangle (super-ellipse) over the exposed levels.
    def wound_edge(XX, ZZ):
        """> 0 outside the wound (mm, approximately the distance to its edge)."""
        u = np.abs(ZZ - zc) / half_len
        inside_w = np.clip(1 - u ** 4, 0, None) ** 0.25 * hw
        return np.maximum(np.abs(XX) - inside_w, np.abs(ZZ - zc) - half_len)

    edge = wound_edge(X, Z)
    edge_c = wound_edge(Xc, Zc)

    size = max(3, int(round(9.0 / step)))
    closed = ndimage.grey_closing(hb_f, size=(size, size))
    closed = np.where(closed < -500, np.nan, closed)
    floor = np.where(np.isfinite(hb) & (closed - hb_f < config.gap_depth_mm),
                     hb_f - config.floor_depth_mm, closed - config.gap_depth_mm)
    floor = _fill_nan(np.where(np.isfinite(floor), floor, np.nan))
    floor = np.where(np.isfinite(floor), floor, bone_top - 20.0)
    # Never deeper than a little posterior of the vertebral centroids: at the ends of the
    # wound, or of a spine model without a neighbour, the bodies and canal stay covered.
    cl = np.array([to_local(c) for c in centroids.values()])
    cl = cl[np.argsort(cl[:, 2])]
    floor = np.maximum(floor, np.interp(Z, cl[:, 2], cl[:, 1]) + config.min_floor_mm)
    if config.tissue_remnants > 0:
        # Dissection never leaves bare bone everywhere: patches of muscle and ligament stay on
        # the laminae and spinous processes, a few mm proud of the bone surface.
        blob = ndimage.gaussian_filter(rng.normal(size=X.shape), 3.0 / step)
        in_w = (edge < -1.0) & np.isfinite(hb)
        if in_w.any():
            thr = np.quantile(blob[in_w], 1.0 - config.tissue_remnants)
            patch = in_w & (blob > thr)
            floor = np.where(patch, np.maximum(floor, hb_f + config.remnant_mm), floor)
    s = np.clip(edge / config.wall_width_mm, 0, 1)
    s = s * s * (3 - 2 * s)  # smoothstep wall profile
    tissue = floor + (skin - floor) * s
    tissue = np.where(edge <= 0, floor, tissue)
    is_skin = edge > config.wall_width_mm + step

    parts: list[SceneMesh] = []
    for lv, m in posed.items():
        parts.append(SceneMesh(m, bone_label(lv), lv))

    def add(v_local, f, label):
        if len(f):
            parts.append(SceneMesh(Mesh(to_patient(v_local), f, name=label_name(label),
                                        frame="patient"), label))

    add(*heightfield_mesh(xs, zs, tissue, keep=is_skin), LABELS["skin"])
    add(*heightfield_mesh(xs, zs, tissue,
                          keep=ndimage.binary_dilation(~is_skin, structure=np.ones((3, 3)))),
        LABELS["soft_tissue"])
    # Coarse skin outside the fine patch (overlapping it by about one coarse cell).
    inner = (np.abs(Xc) < xs[-1] - cstep) & (np.abs(Zc - zc) < (zs[-1] - zs[0]) / 2 - cstep)
    add(*heightfield_mesh(xs_c, zs_c, skin_c, keep=~inner), LABELS["skin"])

    if config.drapes:
        margin = config.drape_margin_mm * rng.uniform(0.8, 1.3)
        folds = np.abs(_smooth_field(rng, Xc, Zc, config.drape_fold_mm, (18.0, 60.0), n=6))
        drape = skin_c + 1.5 + folds
        add(*heightfield_mesh(xs_c, zs_c, drape, keep=edge_c > margin), LABELS["drape"])

    skin_mid = float(np.nanmedian(skin[np.abs(X) < hw + 20]))
    if config.retractors:
        blade_len = rng.uniform(25, 40)
        bz = zc + rng.uniform(-0.3, 0.3) * half_len
        j = int(np.clip(np.searchsorted(zs, bz), 0, len(zs) - 1))
        for side in (-1.0, 1.0):
            i = int(np.clip(np.searchsorted(xs, side * (hw + 1.0)), 0, len(xs) - 1))
            y_lo = float(floor[i, j]) - 2.0
            y_hi = skin_mid + 12.0
            cx = side * (hw + 1.5 + rng.uniform(0, 2.0))
            add(*_box([cx, 0.5 * (y_lo + y_hi), bz], [2.0, y_hi - y_lo, blade_len]),
                LABELS["retractor"])
        # Cross bar of a self-retaining retractor, above the skin.
        add(*_box([0, skin_mid + 15.0, bz + rng.choice([-1, 1]) * (blade_len / 2 - 4)],
                  [2 * hw + 40, 8.0, 8.0]), LABELS["retractor"])

    if config.tool and rng.random() < config.tool_probability:
        cand = np.argwhere((edge < -3) & np.isfinite(hb) & (hb > bone_top - 25))
        surf = RegularGridInterpolator((xs, zs), tissue, bounds_error=False, fill_value=None)
        length = 200.0
        for _ in range(30 if len(cand) else 0):
            # Tip on exposed bone; the shaft leaves the wound without passing through tissue
            # (mostly along the incision, where there is room).
            i, j = cand[rng.integers(len(cand))]
            tip = np.array([xs[i], hb[i, j] + 1.0, zs[j]])
            tilt = np.radians(rng.uniform(20, 55))
            az = rng.choice([0.5, 1.5]) * np.pi + rng.normal(0, 0.5)
            axis = np.array([np.sin(tilt) * np.cos(az), np.cos(tilt), np.sin(tilt) * np.sin(az)])
            tt = np.linspace(3.0, 90.0, 30)
            pts = tip + tt[:, None] * axis
            inside = (np.abs(pts[:, 0]) < xs[-1]) & (np.abs(pts[:, 2] - zc) < zs[-1] - zc)
            if np.any(pts[inside, 1] < surf(pts[inside][:, [0, 2]]) + 3.0):
                continue
            v, f = _o3d_prim("cylinder", radius=3.0, height=length, resolution=16)
            Rt = _frame_along(axis)
            add(v @ Rt.T + tip + axis * length / 2, f, LABELS["tool"])
            if config.hand:
                v, f = _o3d_prim("sphere", radius=1.0, resolution=12)
                v = v * np.array([40.0, 22.0, 50.0])  # a gloved fist around the handle
                add(v @ Rt.T + tip + axis * 185.0, f, LABELS["hand"])
            break

    # Clutter: gauze sponges on the drapes at the wound edge and suction tubing across the
    # field (what a real OR scan has besides anatomy).
    for _ in range(int(config.clutter)):
        side = rng.choice([-1.0, 1.0])
        if rng.random() < 0.5:
            cx = side * (hw + rng.uniform(5, 40))
            cz = zc + rng.uniform(-1, 1) * (half_len + 20)
            h = float(np.interp(cx, xs_c, skin_c[:, int(np.argmin(np.abs(zs_c - cz)))]))
            Rz = _frame_along(np.array([rng.normal(0, 0.15), 1.0, rng.normal(0, 0.15)]))
            add(*_box([cx, h + 6.0, cz], [rng.uniform(40, 80), 8.0, rng.uniform(40, 80)], Rz),
                LABELS["clutter"])
        else:
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), 0.0, np.sin(a)])
            c0 = np.array([side * (hw + rng.uniform(10, 60)), skin_mid + rng.uniform(8, 40),
                           zc + rng.uniform(-half_len, half_len)])
            v, f = _o3d_prim("cylinder", radius=4.0, height=300.0, resolution=12)
            add(v @ _frame_along(d).T + c0, f, LABELS["clutter"])

    i0 = int(np.argmin(np.abs(xs)))
    j0 = int(np.argmin(np.abs(zs - zc)))
    info = {"origin": origin, "axes": R, "wound_half_length_mm": float(half_len),
            "wound_half_width_mm": float(hw),
            "wound_center": to_patient(np.array([0.0, bone_top, zc])),
            "bone_top_mm": bone_top, "skin_height_mm": float(skin[i0, j0])}
    return parts, info
