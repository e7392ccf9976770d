"""Per-vertebra (multi-body) refinement from the whole-spine pose.

Each level is refined on the scan points nearest to *that* level under the whole-spine pose
(so ICP cannot grab the neighbour or the skin), with a short correspondence distance and a
trust region around the whole-spine pose (inter-level motion is a few mm / degrees).
"""

from __future__ import annotations

import numpy as np

from arspine.registration.icp import icp_point_to_plane

__all__ = ["refine_levels", "level_motion"]


def level_motion(T_level: np.ndarray, T_whole: np.ndarray, center_ct: np.ndarray
                 ) -> tuple[float, float]:
    """(mm, deg) between two ``T_ct_from_sensor`` poses, measured at a level's centre."""
    D = T_level @ np.linalg.inv(T_whole)
    ang = float(np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1) / 2, -1, 1))))
    mm = float(np.linalg.norm(D[:3, :3] @ center_ct + D[:3, 3] - center_ct))
    return mm, ang


def refine_levels(T_whole: np.ndarray, pts: np.ndarray, nrm: np.ndarray, model,
                  assign_mm: float = 4.0, schedule_mm=(3.0, 2.0, 1.5),
                  max_motion_mm: float = 6.0, max_motion_deg: float = 6.0) -> dict:
    """Refine every level from ``T_whole`` (``T_ct_from_sensor``).

    Returns
    -------
    dict level -> {"T": (4, 4) T_ct_from_sensor, "rmse_mm", "n_inliers", "n_points"}
    """
    R, t = T_whole[:3, :3], T_whole[:3, 3]
    q = pts @ R.T + t
    d, idx = model.nearest(q, assign_mm)
    ok = np.isfinite(d)
    lev = np.full(len(pts), -1)
    lev[ok] = model.level_index[idx[ok]]
    out = {}
    for i, name in enumerate(model.levels):
        sel = lev == i
        if sel.sum() < 12:
            out[name] = {"T": T_whole.copy(), "rmse_mm": float("inf"), "n_inliers": 0,
                         "n_points": int(sel.sum())}
            continue
        def nearest(q, dmax, i=i):
            d, j = model.nearest(q, dmax)
            other = (j >= 0) & (model.level_index[np.maximum(j, 0)] != i)
            return np.where(other, np.inf, d), np.where(other, -1, j)

        res = icp_point_to_plane(pts[sel], nrm[sel], nearest, model.points,
                                 model.normals, T_whole, schedule_mm=schedule_mm,
                                 motion_center=model.centroids[i],
                                 iters_per_stage=6, tukey_c_mm=2.0,
                                 max_motion_mm=max_motion_mm, max_motion_deg=max_motion_deg)
        out[name] = {"T": res.T_ct_from_sensor, "rmse_mm": res.rmse_mm,
                     "n_inliers": res.n_inliers, "n_points": int(sel.sum())}
    return out
