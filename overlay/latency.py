"""Motion-to-photon latency and head-pose prediction, and the overlay error they cost.

A frame shown at time ``t`` was rendered from the head pose measured at ``t - latency_s``.
A predictor extrapolates the measured poses ``latency_s`` ahead: hold (none), constant
velocity, constant acceleration, or a Kalman filter on SE(3) (constant-velocity model;
rotation kept on the manifold with a tangent-space error state).

Error is measured at targets in the world (e.g. the wound, screw entries): the pixel distance
between where a target is drawn (shown pose) and where it is (true pose), per eye, and that
distance expressed in mm at the target's depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import as_points
from arspine.overlay.display import EYES, HeadMountedDisplay, get_display
from arspine.overlay.headpose import HeadTrajectory

__all__ = [
    "PosePredictor",
    "HoldPredictor",
    "ConstantVelocityPredictor",
    "ConstantAccelerationPredictor",
    "KalmanSE3Predictor",
    "PREDICTORS",
    "make_predictor",
    "delayed_poses",
    "LatencyReport",
    "latency_overlay_error",
    "reprojection_error",
]


def _exp(rotvec: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(rotvec).as_matrix()


def _log(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_matrix(r).as_rotvec()


def _compose(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r, p
    return m


class PosePredictor:
    """Base class: feed measured poses with :meth:`update`, ask with :meth:`predict`."""

    name = "base"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._t: list[float] = []
        self._m: list[np.ndarray] = []

    def update(self, timestamp_s: float, T_world_from_head: np.ndarray) -> None:
        """Add a measured ``T_world_from_head`` (4, 4) at ``timestamp_s``."""
        m = np.asarray(T_world_from_head, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise InputError(f"T_world_from_head must be a finite 4x4, got shape {m.shape}")
        if self._t and timestamp_s <= self._t[-1]:
            raise InputError(f"timestamps must increase: {timestamp_s} after {self._t[-1]}")
        self._t.append(float(timestamp_s))
        self._m.append(m)
        if len(self._t) > 3:
            del self._t[0], self._m[0]

    def predict(self, timestamp_s: float) -> np.ndarray:
        """The (4, 4) pose expected at ``timestamp_s``."""
        if not self._m:
            raise InputError("predict() before any update()")
        return self._m[-1].copy()


class HoldPredictor(PosePredictor):
    """No prediction: show the last measured pose."""

    name = "none"


class ConstantVelocityPredictor(PosePredictor):
    """Extrapolate the last two poses at constant linear and angular (world) velocity."""

    name = "constant_velocity"

    def predict(self, timestamp_s: float) -> np.ndarray:
        if len(self._m) < 2:
            return super().predict(timestamp_s)
        (t0, t1), (m0, m1) = self._t[-2:], self._m[-2:]
        dt, h = t1 - t0, timestamp_s - t1
        v = (m1[:3, 3] - m0[:3, 3]) / dt
        w = _log(m1[:3, :3] @ m0[:3, :3].T) / dt
        return _compose(_exp(w * h) @ m1[:3, :3], m1[:3, 3] + v * h)


class ConstantAccelerationPredictor(ConstantVelocityPredictor):
    """Extrapolate the last three poses at constant linear and angular acceleration."""

    name = "constant_acceleration"

    def predict(self, timestamp_s: float) -> np.ndarray:
        if len(self._m) < 3:
            return super().predict(timestamp_s)
        (t0, t1, t2), (m0, m1, m2) = self._t, self._m
        d1, d2, h = t1 - t0, t2 - t1, timestamp_s - t2
        v1, v2 = (m1[:3, 3] - m0[:3, 3]) / d1, (m2[:3, 3] - m1[:3, 3]) / d2
        w1 = _log(m1[:3, :3] @ m0[:3, :3].T) / d1
        w2 = _log(m2[:3, :3] @ m1[:3, :3].T) / d2
        span = (d1 + d2) / 2.0
        a, al = (v2 - v1) / span, (w2 - w1) / span
        v, w = v2 + a * d2 / 2.0, w2 + al * d2 / 2.0  # velocity at t2, not mid-interval
        return _compose(_exp(w * h + 0.5 * al * h * h) @ m2[:3, :3],
                        m2[:3, 3] + v * h + 0.5 * a * h * h)


class KalmanSE3Predictor(PosePredictor):
    """Constant-velocity Kalman filter on SE(3).

    Translation: state ``(p, v)`` per axis. Rotation: nominal ``R`` and world angular
    velocity ``w`` with a 6-D tangent-space error state; the measurement residual is
    ``log(R_meas R^T)``, so the filter never leaves SO(3).

    Parameters
    ----------
    accel_noise_mm_s2 : process noise, RMS linear acceleration (mm/s^2).
    ang_accel_noise_deg_s2 : process noise, RMS angular acceleration (deg/s^2).
    meas_noise_mm, meas_noise_deg : head-tracking measurement noise (RMS).
    """

    name = "kalman"

    def __init__(self, accel_noise_mm_s2: float = 300.0, ang_accel_noise_deg_s2: float = 100.0,
                 meas_noise_mm: float = 0.3, meas_noise_deg: float = 0.1):
        self.qa = float(accel_noise_mm_s2) ** 2
        self.qw = math.radians(ang_accel_noise_deg_s2) ** 2
        self.rp = float(meas_noise_mm) ** 2
        self.rr = math.radians(meas_noise_deg) ** 2
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._last_t: float | None = None
        self._p = np.zeros(3)
        self._v = np.zeros(3)
        self._R = np.eye(3)
        self._w = np.zeros(3)
        self._Pt = np.zeros((3, 2, 2))
        self._Pr = np.zeros((6, 6))

    @staticmethod
    def _F(dt: float, n: int) -> np.ndarray:
        f = np.eye(2 * n)
        f[:n, n:] = np.eye(n) * dt
        return f

    @staticmethod
    def _Q(dt: float, q: float, n: int) -> np.ndarray:
        i = np.eye(n)
        return q * np.block([[i * dt ** 3 / 3, i * dt ** 2 / 2], [i * dt ** 2 / 2, i * dt]])

    def update(self, timestamp_s: float, T_world_from_head: np.ndarray) -> None:
        super().update(timestamp_s, T_world_from_head)
        m = self._m[-1]
        if self._last_t is None:
            self._p, self._R = m[:3, 3].copy(), m[:3, :3].copy()
            self._Pt[:] = np.diag([self.rp, 1e6])
            self._Pr = np.diag([self.rr] * 3 + [10.0] * 3)
            self._last_t = float(timestamp_s)
            return
        dt = float(timestamp_s) - self._last_t
        self._last_t = float(timestamp_s)
        # translation: three independent (p, v) filters
        F1, Q1 = self._F(dt, 1), self._Q(dt, self.qa, 1)
        for k in range(3):
            x = np.array([self._p[k] + self._v[k] * dt, self._v[k]])
            P = F1 @ self._Pt[k] @ F1.T + Q1
            s = P[0, 0] + self.rp
            gain = P[:, 0] / s
            x = x + gain * (m[k, 3] - x[0])
            P = P - np.outer(gain, P[0])
            self._p[k], self._v[k], self._Pt[k] = x[0], x[1], P
        # rotation: propagate the nominal state, then a tangent-space correction
        self._R = _exp(self._w * dt) @ self._R
        F3, Q3 = self._F(dt, 3), self._Q(dt, self.qw, 3)
        P = F3 @ self._Pr @ F3.T + Q3
        resid = _log(m[:3, :3] @ self._R.T)
        S = P[:3, :3] + np.eye(3) * self.rr
        gain = P[:, :3] @ np.linalg.inv(S)
        dx = gain @ resid
        self._R = _exp(dx[:3]) @ self._R
        self._w = self._w + dx[3:]
        self._Pr = (np.eye(6) - gain @ np.hstack([np.eye(3), np.zeros((3, 3))])) @ P

    def predict(self, timestamp_s: float) -> np.ndarray:
        if self._last_t is None:
            return super().predict(timestamp_s)
        h = float(timestamp_s) - self._last_t
        return _compose(_exp(self._w * h) @ self._R, self._p + self._v * h)


PREDICTORS: dict[str, type[PosePredictor]] = {
    "none": HoldPredictor,
    "constant_velocity": ConstantVelocityPredictor,
    "constant_acceleration": ConstantAccelerationPredictor,
    "kalman": KalmanSE3Predictor,
}


def make_predictor(name: str | PosePredictor = "none", **kwargs) -> PosePredictor:
    """A predictor by name (:data:`PREDICTORS`), or an instance passed through (reset)."""
    if isinstance(name, PosePredictor):
        name.reset()
        return name
    if name not in PREDICTORS:
        raise InputError(f"predictor must be one of {sorted(PREDICTORS)}, got {name!r}")
    return PREDICTORS[name](**kwargs)


def delayed_poses(trajectory: HeadTrajectory, latency_s: float,
                  predictor: str | PosePredictor = "none", *,
                  measurement_noise_mm: float = 0.0, measurement_noise_deg: float = 0.0,
                  seed: int = 0, **predictor_kw
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses shown vs true for a latency.

    Each sample ``i`` is measured at ``t_i`` (with optional head-tracking noise, RMS per
    axis, seeded) and shown at ``t_i + latency_s`` with the predictor's estimate for that
    time.

    Returns
    -------
    times_s : (M,) display times inside the trajectory span.
    shown : (M, 4, 4) poses used for rendering.
    true : (M, 4, 4) poses at the display times (interpolated).
    """
    if not isinstance(trajectory, HeadTrajectory):
        raise InputError(f"trajectory must be a HeadTrajectory, got {type(trajectory).__name__}")
    if not (math.isfinite(latency_s) and 0.0 <= latency_s < 5.0):
        raise InputError(f"latency_s must be in [0, 5) seconds, got {latency_s!r}")
    pred = make_predictor(predictor, **predictor_kw)
    times, shown = [], []
    t_end = trajectory.timestamps_s[-1]
    rng = np.random.default_rng(seed)
    noisy = measurement_noise_mm > 0 or measurement_noise_deg > 0
    for t, m in zip(trajectory.timestamps_s, trajectory.T_world_from_head):
        if noisy:
            m = m.copy()
            m[:3, 3] += rng.normal(0.0, measurement_noise_mm, 3)
            m[:3, :3] = _exp(rng.normal(0.0, math.radians(measurement_noise_deg), 3)) @ m[:3, :3]
        pred.update(t, m)
        if t + latency_s <= t_end + 1e-12:
            times.append(t + latency_s)
            shown.append(pred.predict(t + latency_s))
    if not times:
        raise InputError(f"latency_s {latency_s} is longer than the trajectory "
                         f"({trajectory.duration_s:.3f} s)")
    times = np.array(times)
    return times, np.array(shown), trajectory.poses_at(times)


def reprojection_error(display: HeadMountedDisplay, T_world_from_head_shown: np.ndarray,
                       T_world_from_head_true: np.ndarray, targets_world_mm: np.ndarray
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Overlay error of drawing with the shown head poses while the head is at the true ones.

    Parameters
    ----------
    display : HeadMountedDisplay
    T_world_from_head_shown, T_world_from_head_true : (M, 4, 4)
    targets_world_mm : (K, 3) world points.

    Returns
    -------
    error_px : {"left": (M, K), "right": (M, K)} pixel distance drawn vs true.
    error_mm : {"left": (M, K), "right": (M, K)} the same distance in mm in the plane
        through the target facing the eye (back-projected at the target's true depth).
    """
    targets = as_points(targets_world_mm, "targets_world_mm")
    K = display.K
    Kinv = np.linalg.inv(K)
    shown = np.asarray(T_world_from_head_shown, dtype=np.float64).reshape(-1, 4, 4)
    true = np.asarray(T_world_from_head_true, dtype=np.float64).reshape(-1, 4, 4)
    epx, emm = {}, {}
    for side in EYES:
        he = display.T_head_from_eye(side).as_matrix()
        e_shown = np.linalg.inv(shown @ he)  # (M, 4, 4) T_eye_from_world
        e_true = np.linalg.inv(true @ he)
        ps = np.einsum("mij,kj->mki", e_shown[:, :3, :3], targets) + e_shown[:, None, :3, 3]
        pt = np.einsum("mij,kj->mki", e_true[:, :3, :3], targets) + e_true[:, None, :3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            us = np.einsum("ij,mkj->mki", K, ps / ps[..., 2:3])[..., :2]
            ut = np.einsum("ij,mkj->mki", K, pt / pt[..., 2:3])[..., :2]
        d = np.linalg.norm(us - ut, axis=-1)
        # back-project the drawn pixel at the target's true depth (eye frame)
        uvh = np.concatenate([us, np.ones(us.shape[:-1] + (1,))], axis=-1)
        ray = np.einsum("ij,mkj->mki", Kinv, uvh)
        drawn = ray * pt[..., 2:3]
        mm = np.linalg.norm(drawn - pt, axis=-1)
        # targets outside the true eye's image (e.g. while looking at a screen) do not count
        bad = (ps[..., 2] <= 0) | (pt[..., 2] <= 0) | ~display.in_view(
            ut.reshape(-1, 2), pt[..., 2].ravel()).reshape(d.shape)
        d[bad], mm[bad] = np.nan, np.nan
        epx[side], emm[side] = d, mm
    return epx, emm


def _summary(a: np.ndarray) -> dict:
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": float("nan"), "rms": float("nan"), "p95": float("nan"),
                "max": float("nan")}
    return {"mean": float(a.mean()), "rms": float(np.sqrt(np.mean(a ** 2))),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


@dataclass
class LatencyReport:
    """Overlay error from latency (and prediction) over a head trajectory.

    Attributes
    ----------
    latency_s : float
    predictor : str
    times_s : (M,) display times.
    error_px, error_mm : {"left": (M, K), "right": (M, K)}
    """

    latency_s: float
    predictor: str
    times_s: np.ndarray
    error_px: dict[str, np.ndarray] = field(repr=False)
    error_mm: dict[str, np.ndarray] = field(repr=False)

    def summary(self) -> dict:
        """``{"px": {"mean","rms","p95","max"}, "mm": {...}}`` over both eyes, all targets
        and all frames, plus per eye under ``"left"``/``"right"``."""
        out = {"latency_s": self.latency_s, "predictor": self.predictor,
               "px": _summary(np.concatenate([self.error_px[s].ravel() for s in EYES])),
               "mm": _summary(np.concatenate([self.error_mm[s].ravel() for s in EYES]))}
        for s in EYES:
            out[s] = {"px": _summary(self.error_px[s].ravel()),
                      "mm": _summary(self.error_mm[s].ravel())}
        return out


def latency_overlay_error(trajectory: HeadTrajectory,
                          display: HeadMountedDisplay | str | None = None,
                          targets_world_mm: object = None, latency_s: float | None = None,
                          predictor: str | PosePredictor = "none", *,
                          measurement_noise_mm: float = 0.0, measurement_noise_deg: float = 0.0,
                          seed: int = 0, **predictor_kw) -> LatencyReport:
    """Overlay error that a motion-to-photon latency costs, with or without prediction.

    Parameters
    ----------
    trajectory : HeadTrajectory (true head motion).
    display : HeadMountedDisplay or preset name.
    targets_world_mm : (K, 3) world points; None uses ``trajectory.meta["wound_world_mm"]``.
    latency_s : seconds; None uses ``display.latency_s``.
    predictor : "none", "constant_velocity", "constant_acceleration", "kalman" or an instance.
    measurement_noise_mm, measurement_noise_deg : head-tracking noise per axis (RMS), seeded.

    Returns
    -------
    LatencyReport
    """
    display = get_display(display)
    if targets_world_mm is None:
        if "wound_world_mm" not in trajectory.meta:
            raise InputError("targets_world_mm is required (the trajectory has no wound "
                             "position in its meta)")
        targets_world_mm = [trajectory.meta["wound_world_mm"]]
    targets = as_points(np.atleast_2d(np.asarray(targets_world_mm, dtype=np.float64)),
                        "targets_world_mm")
    lat = display.latency_s if latency_s is None else float(latency_s)
    times, shown, true = delayed_poses(trajectory, lat, predictor,
                                       measurement_noise_mm=measurement_noise_mm,
                                       measurement_noise_deg=measurement_noise_deg, seed=seed,
                                       **predictor_kw)
    epx, emm = reprojection_error(display, shown, true, targets)
    name = predictor if isinstance(predictor, str) else predictor.name
    return LatencyReport(lat, name, times, epx, emm)
