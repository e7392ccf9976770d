"""Head-mounted display model: per-eye intrinsics, eye poses in the head frame, presets.

Conventions (DESIGN.md): eye cameras and the head frame have x right, y down, z forward
(where the surgeon looks). The head frame's origin is midway between the eyes; the left eye
sits at ``-ipd_mm / 2`` and the right eye at ``+ipd_mm / 2`` along head x. A point ``p`` in an
eye frame projects to pixel ``(u, v) = K @ (x / z, y / z, 1)`` with pixel centres at integer
``(u, v)`` and ``(0, 0)`` the centre of the top-left pixel (the OpenCV convention).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import as_points

__all__ = [
    "HeadMountedDisplay",
    "PRESETS",
    "get_display",
    "project_points",
    "as_transform",
    "EYES",
]

#: The two eyes, in the order images are produced.
EYES = ("left", "right")

_SEE_THROUGH = ("optical", "video")


def as_transform(value: object, to_frame: str, from_frame: str, name: str) -> RigidTransform:
    """Accept a :class:`RigidTransform` or a 4x4 array as ``T_<to>_from_<from>``.

    Raises
    ------
    InputError
        A RigidTransform with other frame names, or a matrix that is not a rigid 4x4.
    """
    if isinstance(value, RigidTransform):
        if (value.to_frame, value.from_frame) != (to_frame, from_frame):
            raise InputError(f"{name} must be T_{to_frame}_from_{from_frame}, got {value.name}")
        return value
    try:
        return RigidTransform.from_matrix(value, to_frame, from_frame, orthonormalize=False)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


def project_points(K: np.ndarray, T_eye_from_world: object, points_world: object
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into an eye image.

    Parameters
    ----------
    K : (3, 3) intrinsics, pixels.
    T_eye_from_world : RigidTransform or (4, 4)
        World (mm) to eye camera (x right, y down, z forward).
    points_world : (N, 3) float64, mm, world frame.

    Returns
    -------
    uv : (N, 2) float64 pixel coordinates (NaN for points at or behind the eye).
    depth_mm : (N,) float64 eye-frame z (mm).
    """
    m = T_eye_from_world.as_matrix() if isinstance(T_eye_from_world, RigidTransform) \
        else np.asarray(T_eye_from_world, dtype=np.float64)
    p = as_points(points_world, "points_world", allow_empty=True)
    pe = p @ m[:3, :3].T + m[:3, 3]
    z = pe[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = pe[:, 0] / z, pe[:, 1] / z
    K = np.asarray(K, dtype=np.float64)
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)
    uv[z <= 1e-9] = np.nan
    return uv, z


@dataclass(frozen=True)
class HeadMountedDisplay:
    """A stereo head-mounted display (both eyes share the intrinsics).

    Parameters
    ----------
    name : str
        Preset or device name.
    width_px, height_px : int
        Per-eye resolution.
    fov_h_deg : float
        Horizontal field of view per eye (degrees); gives ``fx``.
    fov_v_deg : float or None
        Vertical field of view; None means square pixels (``fy == fx``).
    principal_offset_px : (float, float)
        Principal point offset from the image centre ``((W - 1) / 2, (H - 1) / 2)``, pixels.
    ipd_mm : float
        Interpupillary distance (mm).
    eye_relief_mm : float
        Eye to display optics (mm); descriptive, the eye centres are the cameras.
    focal_plane_mm : float
        Distance of the display's (fixed) focal plane, mm: where the overlay is in focus.
    see_through : {"optical", "video"}
        Optical: additive light, black/alpha 0 is transparent. Video: the overlay is composited
        onto a camera image of the scene.
    refresh_hz : float
        Display refresh rate.
    latency_s : float
        Typical motion-to-photon latency of the device (seconds).
    T_head_from_eye_left, T_head_from_eye_right : RigidTransform or None
        Explicit eye poses (e.g. a calibration); None places the eyes at -/+ IPD/2 along x.
    notes : str
        Where the numbers come from.
    """

    name: str = "default"
    width_px: int = 1280
    height_px: int = 720
    fov_h_deg: float = 43.0
    fov_v_deg: float | None = None
    principal_offset_px: tuple[float, float] = (0.0, 0.0)
    ipd_mm: float = 63.0
    eye_relief_mm: float = 18.0
    focal_plane_mm: float = 500.0
    see_through: str = "optical"
    refresh_hz: float = 60.0
    latency_s: float = 0.020
    T_head_from_eye_left: RigidTransform | None = field(default=None, compare=False)
    T_head_from_eye_right: RigidTransform | None = field(default=None, compare=False)
    notes: str = ""

    def __post_init__(self):
        for arg in ("width_px", "height_px"):
            v = getattr(self, arg)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 16 <= v <= 8192:
                raise InputError(f"{arg} must be an integer in 16..8192, got {v!r}")
        for arg in ("fov_h_deg",) + (("fov_v_deg",) if self.fov_v_deg is not None else ()):
            v = getattr(self, arg)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 1.0 <= v <= 170.0):
                raise InputError(f"{arg} must be a finite angle in 1..170 degrees, got {v!r}")
        for arg in ("ipd_mm", "focal_plane_mm", "refresh_hz"):
            v = getattr(self, arg)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{arg} must be a positive finite number, got {v!r}")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise InputError(f"latency_s must be >= 0, got {self.latency_s!r}")
        if self.see_through not in _SEE_THROUGH:
            raise InputError(f"see_through must be one of {_SEE_THROUGH}, got "
                             f"{self.see_through!r}")
        off = tuple(float(x) for x in self.principal_offset_px)
        if len(off) != 2 or not all(math.isfinite(x) for x in off):
            raise InputError(f"principal_offset_px must be two finite numbers, got "
                             f"{self.principal_offset_px!r}")
        object.__setattr__(self, "principal_offset_px", off)
        for side in EYES:
            arg = f"T_head_from_eye_{side}"
            v = getattr(self, arg)
            if v is not None:
                object.__setattr__(self, arg, as_transform(v, "head", f"eye_{side}", arg))

    # ----------------------------------------------------------------- intrinsics
    @property
    def fx(self) -> float:
        """Horizontal focal length, pixels."""
        return (self.width_px / 2.0) / math.tan(math.radians(self.fov_h_deg) / 2.0)

    @property
    def fy(self) -> float:
        """Vertical focal length, pixels (== fx for square pixels)."""
        if self.fov_v_deg is None:
            return self.fx
        return (self.height_px / 2.0) / math.tan(math.radians(self.fov_v_deg) / 2.0)

    @property
    def fov_v(self) -> float:
        """Vertical field of view, degrees (derived when not given)."""
        return math.degrees(2.0 * math.atan((self.height_px / 2.0) / self.fy))

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix, pixels; principal point at the image centre + offset."""
        cx = (self.width_px - 1) / 2.0 + self.principal_offset_px[0]
        cy = (self.height_px - 1) / 2.0 + self.principal_offset_px[1]
        return np.array([[self.fx, 0.0, cx], [0.0, self.fy, cy], [0.0, 0.0, 1.0]])

    @property
    def pixels_per_degree(self) -> float:
        """Angular resolution at the image centre (pixels per degree)."""
        return self.fx * math.tan(math.radians(1.0))

    def mm_per_pixel(self, depth_mm: float | np.ndarray) -> float | np.ndarray:
        """Size of one pixel at ``depth_mm`` along the eye's z axis (mm)."""
        return np.asarray(depth_mm, dtype=np.float64) / self.fx if np.ndim(depth_mm) \
            else float(depth_mm) / self.fx

    # ----------------------------------------------------------------- eye poses
    def T_head_from_eye(self, side: str) -> RigidTransform:
        """``T_head_from_eye_<side>``: the eye camera in the head frame (mm)."""
        if side not in EYES:
            raise InputError(f"side must be 'left' or 'right', got {side!r}")
        explicit = getattr(self, f"T_head_from_eye_{side}")
        if explicit is not None:
            return explicit
        x = -self.ipd_mm / 2.0 if side == "left" else self.ipd_mm / 2.0
        return RigidTransform.from_rt(np.eye(3), [x, 0.0, 0.0], "head", f"eye_{side}")

    def eye_poses(self, T_world_from_head: object) -> dict[str, RigidTransform]:
        """``{"left": T_eye_left_from_world, "right": T_eye_right_from_world}``.

        Parameters
        ----------
        T_world_from_head : RigidTransform or (4, 4)
            Head pose in the world (operating room) frame, mm.
        """
        T_wh = as_transform(T_world_from_head, "world", "head", "T_world_from_head")
        return {side: (T_wh @ self.T_head_from_eye(side)).inv() for side in EYES}

    def project(self, points_world: object, T_eye_from_world: object
                ) -> tuple[np.ndarray, np.ndarray]:
        """Project world points with this display's ``K``; see :func:`project_points`."""
        return project_points(self.K, T_eye_from_world, points_world)

    def in_view(self, uv: np.ndarray, depth_mm: np.ndarray) -> np.ndarray:
        """(N,) bool: in front of the eye and inside the image."""
        uv = np.asarray(uv, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return ((np.asarray(depth_mm) > 0) & (uv[:, 0] >= -0.5)
                    & (uv[:, 0] <= self.width_px - 0.5) & (uv[:, 1] >= -0.5)
                    & (uv[:, 1] <= self.height_px - 0.5))

    # ----------------------------------------------------------------- misc
    def with_(self, **changes) -> HeadMountedDisplay:
        """A copy with fields changed (``display.with_(width_px=640, height_px=360)``)."""
        return replace(self, **changes)

    def scaled(self, factor: float) -> HeadMountedDisplay:
        """Same field of view and principal point at ``factor`` times the resolution."""
        w = max(16, int(round(self.width_px * factor)))
        h = max(16, int(round(self.height_px * factor)))
        sx, sy = w / self.width_px, h / self.height_px
        off = (self.principal_offset_px[0] * sx, self.principal_offset_px[1] * sy)
        return replace(self, width_px=w, height_px=h, principal_offset_px=off)

    def to_dict(self) -> dict:
        """JSON-ready description (with the derived ``K``)."""
        d = asdict(self)
        for side in EYES:
            d[f"T_head_from_eye_{side}"] = self.T_head_from_eye(side).as_matrix().tolist()
        d["principal_offset_px"] = list(self.principal_offset_px)
        d["K"] = self.K.tolist()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> HeadMountedDisplay:
        """Inverse of :meth:`to_dict` (derived keys such as ``K`` are ignored)."""
        if not isinstance(data, dict):
            raise InputError(f"display must be a dict, got {type(data).__name__}")
        allowed = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in data.items() if k in allowed}
        if "principal_offset_px" in kw:
            kw["principal_offset_px"] = tuple(kw["principal_offset_px"])
        return cls(**kw)


#: Presets. Published device figures; where a maker does not publish one (IPD, latency,
#: eye relief) a typical value is used and said so in ``notes``.
PRESETS: dict[str, HeadMountedDisplay] = {
    "default": HeadMountedDisplay(
        notes="arspine default: 1280x720 per eye, 43 deg horizontal FOV, IPD 63 mm, "
              "focal plane 0.5 m, optical see-through"),
    "hololens2": HeadMountedDisplay(
        name="hololens2", width_px=1440, height_px=936, fov_h_deg=43.0, fov_v_deg=29.0,
        focal_plane_mm=2000.0, see_through="optical", refresh_hz=60.0, latency_s=0.016,
        notes="Microsoft HoloLens 2: waveguide optical see-through, 43 x 29 deg FOV "
              "(52 deg diagonal), '2k 3:2 light engines' (1440x936 per eye as rendered), "
              "fixed focus about 2 m, 60 Hz; latency after late-stage reprojection"),
    "magicleap2": HeadMountedDisplay(
        name="magicleap2", width_px=1440, height_px=1760, fov_h_deg=44.0, fov_v_deg=53.0,
        focal_plane_mm=1000.0, see_through="optical", refresh_hz=120.0, latency_s=0.016,
        notes="Magic Leap 2: optical see-through, 1440x1760 per eye, 44 x 53 deg FOV "
              "(70 deg diagonal), up to 120 Hz; focal plane typical value"),
    "waveguide_glasses": HeadMountedDisplay(
        name="waveguide_glasses", width_px=1280, height_px=720, fov_h_deg=26.0,
        focal_plane_mm=3000.0, see_through="optical", refresh_hz=60.0, latency_s=0.030,
        notes="binocular waveguide smart-glasses class (Epson Moverio / Vuzix style): "
              "about 30 deg diagonal FOV, 720p per eye, focus at a few metres; typical values"),
    "quest3": HeadMountedDisplay(
        name="quest3", width_px=2064, height_px=2208, fov_h_deg=110.0, fov_v_deg=96.0,
        focal_plane_mm=1300.0, see_through="video", refresh_hz=90.0, latency_s=0.040,
        notes="Meta Quest 3: video see-through (colour passthrough), 2064x2208 per eye, "
              "110 x 96 deg FOV, 90-120 Hz; passthrough latency typical value"),
}


def get_display(display: str | HeadMountedDisplay | None = None) -> HeadMountedDisplay:
    """A preset by name (``"default"``, ``"hololens2"``, ...) or a display passed through."""
    if display is None:
        return PRESETS["default"]
    if isinstance(display, HeadMountedDisplay):
        return display
    if isinstance(display, str) and display.lower() in PRESETS:
        return PRESETS[display.lower()]
    raise InputError(f"display must be one of {sorted(PRESETS)} or a HeadMountedDisplay, "
                     f"got {display!r}")
