"""Compiled inner loops of the score searches (numba).

The pattern searches evaluate ~20 x 12 poses x 600 points per hypothesis; in NumPy each
query is a chain of small temporary arrays (transform, grid index, two gathers, two dot
products). Fused in one loop a query costs a few nanoseconds instead of ~70.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["proxy_scores_kernel", "grid_nearest_kernel", "warm"]


@njit(cache=True, nogil=True)
def _cell(x: float, y: float, z: float, origin, inv_vox: float, shape) -> int:
    # Clamped into the padded grid, whose border cells hold -1 (no shell point near).
    c = 0
    for a, v in enumerate((x, y, z)):
        f = (v - origin[a]) * inv_vox
        n = shape[a]
        # NaN lands on the border too (both comparisons false).
        i = int(f) if (f >= 0.0 and f <= n - 1) else (n - 1 if f > n - 1 else 0)
        c = c * n + i
    return c


@njit(cache=True, nogil=True)
def proxy_scores_kernel(Ts, P, Pn, flat, shape, origin, inv_vox, pts, nrm, tau_mm,
                        point_level, level):
    """(K,) truncated-quadratic scores; see :func:`arspine.registration.global_.proxy_scores`.

    ``flat``/``shape``/``origin``/``inv_vox`` describe the padded nearest-point grid
    (:class:`arspine.registration.model.NearestGrid`); ``pts``/``nrm`` the shell. With
    ``level >= 0`` only shell points whose ``point_level`` is ``level`` count (a point whose
    nearest shell point belongs to another level scores nothing).
    """
    K, N = Ts.shape[0], P.shape[0]
    tau2 = tau_mm * tau_mm
    out = np.zeros(K)
    for k in range(K):
        R = Ts[k]
        acc = 0.0
        for n in range(N):
            px, py, pz = P[n, 0], P[n, 1], P[n, 2]
            x = R[0, 0] * px + R[0, 1] * py + R[0, 2] * pz + R[0, 3]
            y = R[1, 0] * px + R[1, 1] * py + R[1, 2] * pz + R[1, 3]
            z = R[2, 0] * px + R[2, 1] * py + R[2, 2] * pz + R[2, 3]
            j = flat[_cell(x, y, z, origin, inv_vox, shape)]
            if j < 0 or (level >= 0 and point_level[j] != level):
                continue
            dx, dy, dz = x - pts[j, 0], y - pts[j, 1], z - pts[j, 2]
            d2 = dx * dx + dy * dy + dz * dz
            if d2 > tau2:
                continue
            nx, ny, nz = Pn[n, 0], Pn[n, 1], Pn[n, 2]
            dot = (nrm[j, 0] * (R[0, 0] * nx + R[0, 1] * ny + R[0, 2] * nz)
                   + nrm[j, 1] * (R[1, 0] * nx + R[1, 1] * ny + R[1, 2] * nz)
                   + nrm[j, 2] * (R[2, 0] * nx + R[2, 1] * ny + R[2, 2] * nz))
            if dot > 0.3:
                acc += 1.0 - d2 / tau2
        out[k] = acc
    return out


@njit(cache=True, nogil=True)
def grid_nearest_kernel(q, flat, shape, origin, inv_vox, pts, max_mm):
    """Squared distance (mm^2, inf beyond ``max_mm``) and index (-1) of the grid's nearest
    shell point of every query point ``q`` (M, 3)."""
    M = q.shape[0]
    d2 = np.empty(M)
    idx = np.empty(M, dtype=np.int64)
    lim = max_mm * max_mm
    for m in range(M):
        x, y, z = q[m, 0], q[m, 1], q[m, 2]
        j = flat[_cell(x, y, z, origin, inv_vox, shape)]
        if j >= 0:
            dx, dy, dz = x - pts[j, 0], y - pts[j, 1], z - pts[j, 2]
            d = dx * dx + dy * dy + dz * dz
            if d <= lim:
                d2[m], idx[m] = d, j
                continue
        d2[m], idx[m] = np.inf, -1
    return d2, idx


_WARM = []


def warm() -> None:
    """Compile (or load from numba's cache) every kernel for the argument types in use."""
    if _WARM:
        return
    flat, shape = np.full(27, -1, np.int32), np.array([3, 3, 3], dtype=np.int64)
    z3, one = np.zeros((1, 3)), np.zeros(3)
    grid_nearest_kernel(z3, flat, shape, one, 1.0, z3, 1.0)
    proxy_scores_kernel(np.eye(4)[None], z3, z3, flat, shape, one, 1.0, z3, z3, 1.0,
                        np.zeros(1, np.int64), -1)
    _WARM.append(True)
