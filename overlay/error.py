"""Overlay error budget: how registration, tracking, display calibration and latency errors
show up on the surgeon's eye image, in pixels and in mm at each target, per eye.

Every source is modelled as an isotropic 3-D error with the given RMS magnitude (per axis
RMS / sqrt(3)):

- ``registration_tre_mm``: the target drawn away from where it is (registration TRE);
- ``tracking_error_mm`` / ``_deg``: head pose error (position of the head origin, orientation);
- ``calibration_error_mm`` / ``_deg``: eye-to-display calibration (``T_head_from_eye``) error;
- ``latency_s`` x head speed: the head moves between pose measurement and photons.

:func:`expected_overlay_error` propagates them to first order (numerical Jacobians of the
projection); :func:`simulate_overlay_error` draws them (Monte Carlo) over a head trajectory,
with latency taken from the trajectory's actual motion. Pixel errors become mm at the target's
depth (the size of the displacement in the plane through the target facing the eye).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import as_points
from arspine.overlay.display import EYES, HeadMountedDisplay, as_transform, get_display
from arspine.overlay.headpose import HeadTrajectory

__all__ = [
    "ErrorSources",
    "OverlayErrorBudget",
    "expected_overlay_error",
    "simulate_overlay_error",
    "COMPONENTS",
]

#: Budget components, in report order.
COMPONENTS = ("registration", "tracking", "calibration", "latency")


@dataclass(frozen=True)
class ErrorSources:
    """RMS magnitudes of the error sources (3-D, isotropic).

    Attributes
    ----------
    registration_tre_mm : registration target error at the targets (mm).
    tracking_error_mm, tracking_error_deg : head tracking error.
    calibration_error_mm, calibration_error_deg : eye pose (display calibration) error.
    latency_s : motion-to-photon latency (s).
    head_speed_mm_s, head_speed_deg_s : RMS head speed for the expected latency term (None:
        taken from the trajectory, or 0 without one).
    """

    registration_tre_mm: float = 1.0
    tracking_error_mm: float = 0.3
    tracking_error_deg: float = 0.1
    calibration_error_mm: float = 0.5
    calibration_error_deg: float = 0.1
    latency_s: float = 0.02
    head_speed_mm_s: float | None = None
    head_speed_deg_s: float | None = None

    def __post_init__(self):
        for k, v in asdict(self).items():
            if v is None:
                continue
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{k} must be a finite number >= 0, got {v!r}")


@dataclass
class OverlayErrorBudget:
    """Overlay error per component, eye and target.

    Attributes
    ----------
    px : {component: {"left": (K,), "right": (K,)}} RMS pixel error; component "total" too.
    mm : same layout, RMS error in mm at the target's depth.
    samples_px, samples_mm : {"left": (S, K), "right": (S, K)} Monte Carlo draws (or None).
    """

    px: dict[str, dict[str, np.ndarray]]
    mm: dict[str, dict[str, np.ndarray]]
    samples_px: dict[str, np.ndarray] | None = field(default=None, repr=False)
    samples_mm: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def summary(self) -> dict:
        """JSON-ready: RMS px and mm per component and eye (mean over targets), and for the
        total the p95 of the Monte Carlo draws when there are any."""
        out: dict = {}
        for c in self.px:
            out[c] = {s: {"px": float(np.sqrt(np.nanmean(self.px[c][s] ** 2))),
                          "mm": float(np.sqrt(np.nanmean(self.mm[c][s] ** 2)))} for s in EYES}
        if self.samples_px is not None:
            for s in EYES:
                out["total"][s]["p95_px"] = float(np.nanpercentile(self.samples_px[s], 95))
                out["total"][s]["p95_mm"] = float(np.nanpercentile(self.samples_mm[s], 95))
        return out


def _project(K: np.ndarray, T_eye_from_world: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(..., K, 2) pixels for batched (..., 4, 4) eye poses and (K, 3) or (..., K, 3) points."""
    if pts.ndim == 2:
        pe = np.einsum("...ij,kj->...ki", T_eye_from_world[..., :3, :3], pts)
    else:
        pe = np.einsum("...ij,...kj->...ki", T_eye_from_world[..., :3, :3], pts)
    pe = pe + T_eye_from_world[..., None, :3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = pe[..., :2] / pe[..., 2:3]
    return np.stack([K[0, 0] * x[..., 0] + K[0, 1] * x[..., 1] + K[0, 2],
                     K[1, 1] * x[..., 1] + K[1, 2]], axis=-1)


def _twists(eps_rot: float, eps_t: float) -> np.ndarray:
    """(12, 4, 4) +/- perturbations: 3 rotations then 3 translations."""
    from scipy.spatial.transform import Rotation
    out = []
    for sign in (1.0, -1.0):
        for k in range(6):
            m = np.eye(4)
            if k < 3:
                rv = np.zeros(3)
                rv[k] = sign * eps_rot
                m[:3, :3] = Rotation.from_rotvec(rv).as_matrix()
            else:
                m[k - 3, 3] = sign * eps_t
            out.append(m)
    return np.array(out)


def _pose_jacobians(K, T_wh, T_he, targets):
    """d(uv)/d(head perturbation) and d(uv)/d(eye perturbation), each (K, 2, 6) per unit
    rad / mm (rotations first)."""
    eps_r, eps_t = 1e-6, 1e-3
    tw = _twists(eps_r, eps_t)
    scale = np.array([eps_r] * 3 + [eps_t] * 3)
    heads = T_wh[None] @ tw @ T_he[None]  # perturb in the head frame
    eyes = T_wh[None] @ T_he[None] @ tw   # perturb in the eye frame
    out = []
    for poses in (heads, eyes):
        uv = _project(K, np.linalg.inv(poses), targets)  # (12, K, 2)
        j = (uv[:6] - uv[6:]) / (2 * scale[:, None, None])  # (6, K, 2)
        out.append(np.transpose(j, (1, 2, 0)))
    return out


def expected_overlay_error(display: HeadMountedDisplay | str | None,
                           T_world_from_head: object, targets_world_mm: object,
                           sources: ErrorSources | None = None,
                           trajectory: HeadTrajectory | None = None) -> OverlayErrorBudget:
    """First-order (linearised) RMS overlay error per component, eye and target.

    Parameters
    ----------
    display : HeadMountedDisplay or preset name.
    T_world_from_head : RigidTransform or (4, 4), the nominal head pose.
    targets_world_mm : (K, 3) world points (e.g. screw entries, the wound centre).
    sources : ErrorSources (defaults when None).
    trajectory : optional head trajectory giving the RMS head speed for the latency term.

    Returns
    -------
    OverlayErrorBudget (no samples).
    """
    display = get_display(display)
    sources = sources or ErrorSources()
    T_wh = as_transform(T_world_from_head, "world", "head", "T_world_from_head").as_matrix()
    targets = as_points(np.atleast_2d(np.asarray(targets_world_mm, dtype=np.float64)),
                        "targets_world_mm")
    v_mm, v_deg = sources.head_speed_mm_s, sources.head_speed_deg_s
    if trajectory is not None and (v_mm is None or v_deg is None):
        lin, ang = trajectory.speeds()
        v_mm = float(np.sqrt(np.mean(lin ** 2))) if v_mm is None else v_mm
        v_deg = float(np.sqrt(np.mean(ang ** 2))) if v_deg is None else v_deg
    v_mm, v_deg = v_mm or 0.0, v_deg or 0.0
    K = display.K
    f = (K[0, 0] + K[1, 1]) / 2.0
    px: dict = {c: {} for c in COMPONENTS + ("total",)}
    mm: dict = {c: {} for c in COMPONENTS + ("total",)}
    for side in EYES:
        T_he = display.T_head_from_eye(side).as_matrix()
        T_ew = np.linalg.inv(T_wh @ T_he)
        depth = targets @ T_ew[2, :3] + T_ew[2, 3]
        # registration: d(uv)/d(target) by central differences
        jp = np.zeros((len(targets), 2, 3))
        for k in range(3):
            d = np.zeros(3)
            d[k] = 1e-3
            jp[:, :, k] = (_project(K, T_ew, targets + d) - _project(K, T_ew, targets - d)) / 2e-3
        jh, je = _pose_jacobians(K, T_wh, T_he, targets)

        def rms(j, sig_rot_rad, sig_t_mm):
            var = (sig_rot_rad ** 2 / 3.0) * (j[:, :, :3] ** 2).sum(axis=(1, 2)) \
                + (sig_t_mm ** 2 / 3.0) * (j[:, :, 3:] ** 2).sum(axis=(1, 2))
            return np.sqrt(var)

        comp = {
            "registration": np.sqrt((sources.registration_tre_mm ** 2 / 3.0)
                                    * (jp ** 2).sum(axis=(1, 2))),
            "tracking": rms(jh, math.radians(sources.tracking_error_deg),
                            sources.tracking_error_mm),
            "calibration": rms(je, math.radians(sources.calibration_error_deg),
                               sources.calibration_error_mm),
            "latency": rms(jh, math.radians(v_deg * sources.latency_s),
                           v_mm * sources.latency_s),
        }
        total = np.sqrt(sum(c ** 2 for c in comp.values()))
        for c, val in list(comp.items()) + [("total", total)]:
            px[c][side] = val
            mm[c][side] = val * depth / f
    return OverlayErrorBudget(px, mm)


def _random_rotations(rng, n: int, sigma_rad: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(rng.normal(0.0, sigma_rad / math.sqrt(3), (n, 3))).as_matrix()


def _random_poses(rng, n: int, sigma_deg: float, sigma_mm: float) -> np.ndarray:
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :3] = _random_rotations(rng, n, math.radians(sigma_deg))
    m[:, :3, 3] = rng.normal(0.0, sigma_mm / math.sqrt(3), (n, 3))
    return m


def simulate_overlay_error(display: HeadMountedDisplay | str | None,
                           trajectory: HeadTrajectory, targets_world_mm: object,
                           sources: ErrorSources | None = None, n_samples: int = 2000,
                           seed: int = 0) -> OverlayErrorBudget:
    """Monte Carlo overlay error over a head trajectory.

    Each draw picks a trajectory time ``t`` (true head pose), renders with the pose measured
    at ``t - latency_s`` perturbed by tracking error, through eyes perturbed by calibration
    error, at targets displaced by registration error, and measures the drawn-vs-true
    distance per eye and target. Components are simulated alone too (others set to zero).

    Returns
    -------
    OverlayErrorBudget with RMS per component and the total's draws in ``samples_px`` /
    ``samples_mm`` (``(n_samples, K)`` per eye; NaN where the target is out of view).
    """
    display = get_display(display)
    sources = sources or ErrorSources()
    if not isinstance(trajectory, HeadTrajectory):
        raise InputError(f"trajectory must be a HeadTrajectory, got {type(trajectory).__name__}")
    if not (isinstance(n_samples, int) and n_samples >= 10):
        raise InputError(f"n_samples must be an integer >= 10, got {n_samples!r}")
    targets = as_points(np.atleast_2d(np.asarray(targets_world_mm, dtype=np.float64)),
                        "targets_world_mm")
    K = display.K
    Kinv = np.linalg.inv(K)
    t0, t1 = trajectory.timestamps_s[0], trajectory.timestamps_s[-1]
    lat = sources.latency_s
    if len(trajectory) > 1 and lat >= t1 - t0:
        raise InputError(f"latency_s {lat} is longer than the trajectory ({t1 - t0:.3f} s)")
    rng = np.random.default_rng(seed)
    times = rng.uniform(t0 + lat if len(trajectory) > 1 else t0, t1, n_samples)
    true_heads = trajectory.poses_at(times)
    lag_heads = trajectory.poses_at(times - lat)
    trk = _random_poses(rng, n_samples, sources.tracking_error_deg, sources.tracking_error_mm)
    cal = {s: _random_poses(rng, n_samples, sources.calibration_error_deg,
                            sources.calibration_error_mm) for s in EYES}
    reg = rng.normal(0.0, sources.registration_tre_mm / math.sqrt(3),
                     (n_samples, len(targets), 3))
    ident = np.tile(np.eye(4), (n_samples, 1, 1))
    zero = np.zeros_like(reg)
    cases = {
        "registration": (true_heads, ident, False, reg),
        "tracking": (true_heads, trk, False, zero),
        "calibration": (true_heads, ident, True, zero),
        "latency": (lag_heads, ident, False, zero),
        "total": (lag_heads, trk, True, reg),
    }
    px: dict = {c: {} for c in cases}
    mm: dict = {c: {} for c in cases}
    samples_px, samples_mm = {}, {}
    for side in EYES:
        T_he = display.T_head_from_eye(side).as_matrix()
        true_eye = np.linalg.inv(true_heads @ T_he)
        uv_true = _project(K, true_eye, targets)  # (S, K, 2)
        depth = np.einsum("sj,kj->sk", true_eye[:, 2, :3], targets) + true_eye[:, None, 2, 3]
        visible = display.in_view(uv_true.reshape(-1, 2), depth.ravel()).reshape(depth.shape)
        for c, (heads, trk_err, use_cal, reg_err) in cases.items():
            he = T_he[None] @ cal[side] if use_cal else np.broadcast_to(T_he, heads.shape)
            drawn_eye = np.linalg.inv(heads @ trk_err @ he)
            uv = _project(K, drawn_eye, targets[None] + reg_err)
            d = np.linalg.norm(uv - uv_true, axis=-1)
            # the drawn pixel back-projected at the target's true depth
            uvh = np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], axis=-1)
            pe_true = np.einsum("sij,kj->ski", true_eye[:, :3, :3], targets) \
                + true_eye[:, None, :3, 3]
            drawn = np.einsum("ij,skj->ski", Kinv, uvh) * depth[..., None]
            e_mm = np.linalg.norm(drawn - pe_true, axis=-1)
            d = np.where(visible, d, np.nan)
            e_mm = np.where(visible, e_mm, np.nan)
            with np.errstate(invalid="ignore"):
                px[c][side] = np.sqrt(np.nanmean(d ** 2, axis=0))
                mm[c][side] = np.sqrt(np.nanmean(e_mm ** 2, axis=0))
            if c == "total":
                samples_px[side], samples_mm[side] = d, e_mm
    return OverlayErrorBudget(px, mm, samples_px, samples_mm)
