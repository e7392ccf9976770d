"""Paired-point (fiducial) rigid registration, FRE, and TRE prediction from FLE.

The rigid fit is the weighted least-squares solution of Arun/Horn/Umeyama (SVD of the
weighted cross-covariance, with the reflection guard). The TRE prediction is Fitzpatrick,
West & Maurer 1998, eq. 46::

    <TRE^2(r)> ~ <FLE^2>/N * (1 + 1/3 * sum_k d_k^2 / f_k^2)

with ``d_k`` the distance of the target to principal axis ``k`` of the fiducial configuration
and ``f_k`` the RMS distance of the fiducials to that axis. FRE does not predict TRE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import as_points

__all__ = ["FiducialResult", "register_fiducials", "predict_tre", "predict_fre",
           "kabsch"]


@dataclass(frozen=True)
class FiducialResult:
    """Result of :func:`register_fiducials`.

    Attributes
    ----------
    T : RigidTransform
        ``T_<fixed>_from_<moving>``: maps moving fiducials onto fixed ones (mm).
    fre_mm : float
        Fiducial registration error: weighted RMS of the residuals (mm).
    residuals_mm : (N,) float64
        Distance of each mapped moving fiducial to its fixed partner (mm).
    """

    T: RigidTransform
    fre_mm: float
    residuals_mm: np.ndarray


def kabsch(fixed: np.ndarray, moving: np.ndarray,
           weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares rigid transform mapping ``moving`` onto ``fixed`` (no checks).

    Parameters
    ----------
    fixed, moving : (N, 3) float64, mm
    weights : (N,) non-negative, or None

    Returns
    -------
    (4, 4) float64 matrix ``T`` with ``fixed ~ R @ moving + t``.
    """
    w = np.ones(len(fixed)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    cf = w @ fixed
    cm = w @ moving
    h = (moving - cm).T @ ((fixed - cf) * w[:, None])
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d if d != 0 else 1.0]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = cf - r @ cm
    return m


def _check_configuration(p: np.ndarray, name: str) -> None:
    centred = p - p.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    scale = max(float(s[0]), 1e-12)
    if s[1] / scale < 1e-6:
        raise InputError(f"{name} are collinear (or coincident): a rigid transform is not "
                         f"determined by them (singular values {np.round(s, 6).tolist()})")


def register_fiducials(fixed: object, moving: object, weights: object = None,
                       fixed_frame: str = "ct", moving_frame: str = "sensor"
                       ) -> FiducialResult:
    """Rigid paired-point registration (weighted Arun/Horn/Umeyama with reflection guard).

    Parameters
    ----------
    fixed : (N, 3) array_like, mm, in ``fixed_frame``
    moving : (N, 3) array_like, mm, in ``moving_frame``; row i pairs with ``fixed`` row i.
    weights : (N,) array_like of positive floats, optional
        Per-pair weights (e.g. 1 / FLE variance).
    fixed_frame, moving_frame : str
        Frame names of the returned ``T_<fixed_frame>_from_<moving_frame>``.

    Returns
    -------
    FiducialResult

    Raises
    ------
    InputError
        Fewer than 3 pairs, mismatched counts, NaN, collinear fiducials, bad weights.
    """
    f = as_points(fixed, "fixed", min_points=3)
    m = as_points(moving, "moving", min_points=3)
    if len(f) != len(m):
        raise InputError(f"fixed and moving must have the same number of points, got "
                         f"{len(f)} and {len(m)}")
    _check_configuration(f, "fixed fiducials")
    _check_configuration(m, "moving fiducials")
    if weights is None:
        w = np.ones(len(f))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(f),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise InputError(f"weights must be {len(f)} finite non-negative values, not all "
                             f"zero, got {np.asarray(weights).tolist()}")
    mat = kabsch(f, m, w)
    T = RigidTransform.from_matrix(mat, fixed_frame, moving_frame, orthonormalize=True)
    res = np.linalg.norm(T.apply(m) - f, axis=1)
    fre = float(np.sqrt(np.sum(w * res**2) / np.sum(w)))
    return FiducialResult(T=T, fre_mm=fre, residuals_mm=res)


def predict_tre(fiducials: object, targets: object, fle_mm: float) -> np.ndarray:
    """Expected RMS target registration error (Fitzpatrick, West & Maurer 1998, eq. 46).

    Parameters
    ----------
    fiducials : (N, 3) array_like, mm
        Fiducial positions (either space; the configuration is what matters).
    targets : (K, 3) or (3,) array_like, mm, same frame as ``fiducials``
    fle_mm : float
        RMS fiducial localisation error, ``sqrt(<FLE^2>)`` (mm), isotropic, same for all.

    Returns
    -------
    (K,) float64: predicted RMS TRE at each target (mm).
    """
    f = as_points(fiducials, "fiducials", min_points=3)
    _check_configuration(f, "fiducials")
    t = np.asarray(targets, dtype=np.float64)
    t = as_points(t.reshape(1, 3) if t.shape == (3,) else t, "targets", min_points=1)
    if not np.isfinite(fle_mm) or fle_mm < 0:
        raise InputError(f"fle_mm must be a finite non-negative number, got {fle_mm!r}")
    c = f.mean(axis=0)
    _, _, vt = np.linalg.svd(f - c)
    ratio = np.zeros(len(t))
    for k in range(3):
        axis = vt[k]

        def dist2(p, axis=axis):
            q = p - c
            return np.sum(q**2, axis=1) - (q @ axis) ** 2
        fk2 = float(np.mean(dist2(f)))
        ratio += dist2(t) / fk2
    tre2 = fle_mm**2 / len(f) * (1.0 + ratio / 3.0)
    return np.sqrt(tre2)


def predict_fre(n_fiducials: int, fle_mm: float) -> float:
    """Expected RMS FRE for ``N`` fiducials: ``sqrt((1 - 2/N) <FLE^2>)`` (Fitzpatrick 1998)."""
    if n_fiducials < 3:
        raise InputError(f"n_fiducials must be >= 3, got {n_fiducials}")
    return float(np.sqrt(max(0.0, 1.0 - 2.0 / n_fiducials)) * fle_mm)
