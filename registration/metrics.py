"""Registration accuracy metrics, all with units in their names.

TRE at targets, pose error (deg, mm), screw entry / angle error for planned trajectories, and
success rates over a batch of cases.
"""

from __future__ import annotations

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import as_points

__all__ = ["tre_mm", "pose_error", "screw_error", "success_rate", "summarize_tre"]


def _matrix(T: object, name: str) -> np.ndarray:
    if isinstance(T, RigidTransform):
        return T.as_matrix()
    m = np.asarray(T, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"{name} must be a RigidTransform or finite 4x4 matrix, got shape "
                         f"{m.shape}")
    return m


def tre_mm(T_est: object, T_true: object, targets_ct_mm: object) -> np.ndarray:
    """Target registration error at each target.

    Parameters
    ----------
    T_est, T_true : RigidTransform or (4, 4)
        Estimated and true ``T_sensor_from_ct``.
    targets_ct_mm : (K, 3) array_like, mm, frame ``ct``

    Returns
    -------
    (K,) float64: ``|T_est(p) - T_true(p)|`` in mm.
    """
    a, b = _matrix(T_est, "T_est"), _matrix(T_true, "T_true")
    p = as_points(targets_ct_mm, "targets_ct_mm", min_points=1)
    d = p @ (a[:3, :3] - b[:3, :3]).T + (a[:3, 3] - b[:3, 3])
    return np.linalg.norm(d, axis=1)


def pose_error(T_est: object, T_true: object) -> tuple[float, float]:
    """Pose error of ``T_est`` against ``T_true`` as (angle_deg, translation_mm).

    The translation is that of ``T_est @ T_true^-1`` (error expressed in the ``to`` frame).
    """
    a, b = _matrix(T_est, "T_est"), _matrix(T_true, "T_true")
    d = a @ np.linalg.inv(b)
    c = np.clip((np.trace(d[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(c))), float(np.linalg.norm(d[:3, 3]))


def screw_error(T_est: object, T_true: object, entry_ct_mm: object,
                target_ct_mm: object) -> tuple[float, float]:
    """Entry-point error (mm) and trajectory angle error (deg) of a planned screw.

    Parameters
    ----------
    entry_ct_mm, target_ct_mm : (3,) array_like, mm, frame ``ct``
        Screw entry point and tip of the plan.

    Returns
    -------
    (entry_error_mm, angle_error_deg)
    """
    e = np.asarray(entry_ct_mm, dtype=np.float64).reshape(-1)
    t = np.asarray(target_ct_mm, dtype=np.float64).reshape(-1)
    if e.shape != (3,) or t.shape != (3,) or not np.all(np.isfinite(np.r_[e, t])):
        raise InputError("entry_ct_mm and target_ct_mm must be 3 finite values each")
    if np.linalg.norm(t - e) < 1e-9:
        raise InputError("entry_ct_mm and target_ct_mm must differ (a trajectory has length)")
    a, b = _matrix(T_est, "T_est"), _matrix(T_true, "T_true")
    entry_err = float(np.linalg.norm((a[:3, :3] - b[:3, :3]) @ e + a[:3, 3] - b[:3, 3]))
    d = t - e
    da, db = a[:3, :3] @ d, b[:3, :3] @ d
    c = np.clip(da @ db / (np.linalg.norm(da) * np.linalg.norm(db)), -1.0, 1.0)
    return entry_err, float(np.degrees(np.arccos(c)))


def success_rate(tre_values_mm: object, threshold_mm: float = 2.0) -> float:
    """Fraction (0..1) of values at or below ``threshold_mm`` (NaN counts as failure)."""
    v = np.asarray(tre_values_mm, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise InputError("tre_values_mm is empty")
    return float(np.mean(np.nan_to_num(v, nan=np.inf) <= threshold_mm))


def summarize_tre(tre_values_mm: object) -> dict:
    """``{"n", "median_mm", "p95_mm", "max_mm", "mean_mm"}`` of TRE values (mm)."""
    v = np.asarray(tre_values_mm, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return {"n": 0, "median_mm": None, "p95_mm": None, "max_mm": None, "mean_mm": None}
    return {"n": int(v.size), "median_mm": float(np.median(v)),
            "p95_mm": float(np.percentile(v, 95)), "max_mm": float(v.max()),
            "mean_mm": float(v.mean())}
