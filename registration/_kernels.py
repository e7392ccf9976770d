"""Compiled inner loops of the score searches (numba).

The pattern searches evaluate ~20 x 12 poses x 600 points per hypothesis; in NumPy each
query is a chain of small temporary arrays (transform, grid index, two gathers, two dot
products). Fused in one loop a query costs a few nanoseconds instead of ~70.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["proxy_scores_kernel", "grid_nearest_kernel", "icp_pairs_kernel",
           "normal_equations_kernel", "warm"]


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
def _apply(T, v, n, translate: bool):
    """Row ``n`` of ``v`` through ``T`` (4, 4): rotated, and translated when asked."""
    px, py, pz = v[n, 0], v[n, 1], v[n, 2]
    x = T[0, 0] * px + T[0, 1] * py + T[0, 2] * pz
    y = T[1, 0] * px + T[1, 1] * py + T[1, 2] * pz
    z = T[2, 0] * px + T[2, 1] * py + T[2, 2] * pz
    if translate:
        x, y, z = x + T[0, 3], y + T[1, 3], z + T[2, 3]
    return x, y, z


@njit(cache=True, nogil=True)
def _shell_point(x, y, z, flat, shape, origin, inv_vox, pts, point_level, level, lim):
    """The grid's nearest shell point ``j`` of (x, y, z) and the offset to it, ``j = -1``
    when there is none within ``sqrt(lim)`` mm (or it belongs to another level)."""
    j = flat[_cell(x, y, z, origin, inv_vox, shape)]
    if j < 0 or (level >= 0 and point_level[j] != level):
        return -1, 0.0, 0.0, 0.0
    dx, dy, dz = x - pts[j, 0], y - pts[j, 1], z - pts[j, 2]
    if dx * dx + dy * dy + dz * dz > lim:
        return -1, 0.0, 0.0, 0.0
    return j, dx, dy, dz


@njit(cache=True, nogil=True)
def proxy_scores_kernel(Ts, P, Pn, tau_mm, flat, shape, origin, inv_vox, pts, nrm,
                        point_level, level):
    """(K,) truncated-quadratic scores; see :func:`arspine.registration.global_.proxy_scores`.

    The arguments after ``tau_mm`` are :meth:`PreparedModel.grid_args
    <arspine.registration.model.PreparedModel.grid_args>`: the padded nearest-point grid,
    the shell and, with ``level >= 0``, only that level's shell points (a point whose
    nearest shell point belongs to another level scores nothing).
    """
    K, N = Ts.shape[0], P.shape[0]
    tau2 = tau_mm * tau_mm
    out = np.zeros(K)
    for k in range(K):
        R = Ts[k]
        acc = 0.0
        for n in range(N):
            x, y, z = _apply(R, P, n, True)
            j, dx, dy, dz = _shell_point(x, y, z, flat, shape, origin, inv_vox, pts,
                                         point_level, level, tau2)
            if j < 0:
                continue
            nx, ny, nz = _apply(R, Pn, n, False)
            if nrm[j, 0] * nx + nrm[j, 1] * ny + nrm[j, 2] * nz > 0.3:
                acc += 1.0 - (dx * dx + dy * dy + dz * dz) / tau2
        out[k] = acc
    return out


@njit(cache=True, nogil=True)
def grid_nearest_kernel(q, max_mm, flat, shape, origin, inv_vox, pts, nrm, point_level, level):
    """Squared distance (mm^2, inf beyond ``max_mm``) and index (-1) of the grid's nearest
    shell point of every query point ``q`` (M, 3); grid arguments as in
    :func:`proxy_scores_kernel`."""
    M = q.shape[0]
    d2 = np.empty(M)
    idx = np.empty(M, dtype=np.int64)
    lim = max_mm * max_mm
    for m in range(M):
        j, dx, dy, dz = _shell_point(q[m, 0], q[m, 1], q[m, 2], flat, shape, origin, inv_vox,
                                     pts, point_level, level, lim)
        d2[m] = dx * dx + dy * dy + dz * dz if j >= 0 else np.inf
        idx[m] = j
    return d2, idx


@njit(cache=True, nogil=True)
def icp_pairs_kernel(src, src_normals, T, max_mm, min_dot, use_normals, flat, shape, origin,
                     inv_vox, pts, nrm, point_level, level):
    """Correspondences of one point-to-plane ICP step.

    ``src`` (N, 3) under ``T`` (4, 4); a pair is kept when the grid's nearest shell point
    (of ``level`` only when ``level >= 0``; grid arguments as in
    :func:`proxy_scores_kernel`) lies within ``max_mm`` and, with ``use_normals``, the
    rotated source normal agrees with its normal (dot > ``min_dot``).

    Returns ``(src_index (K,), shell_index (K,), q (K, 3) transformed points,
    r (K,) signed point-to-plane residuals, mm)``.
    """
    N = src.shape[0]
    keep = np.empty(N, dtype=np.int64)
    jj = np.empty(N, dtype=np.int64)
    qs = np.empty((N, 3))
    rs = np.empty(N)
    lim = max_mm * max_mm
    k = 0
    for n in range(N):
        x, y, z = _apply(T, src, n, True)
        j, dx, dy, dz = _shell_point(x, y, z, flat, shape, origin, inv_vox, pts, point_level,
                                     level, lim)
        if j < 0:
            continue
        if use_normals:
            nx, ny, nz = _apply(T, src_normals, n, False)
            if not nrm[j, 0] * nx + nrm[j, 1] * ny + nrm[j, 2] * nz > min_dot:
                continue
        keep[k], jj[k] = n, j
        qs[k, 0], qs[k, 1], qs[k, 2] = x, y, z
        rs[k] = dx * nrm[j, 0] + dy * nrm[j, 1] + dz * nrm[j, 2]
        k += 1
    return keep[:k], jj[:k], qs[:k], rs[:k]


@njit(cache=True, nogil=True)
def normal_equations_kernel(q, n, r, w):
    """``A = J^T W J``, ``b = -J^T W r`` (6x6, 6) of point-to-plane ICP with the Jacobian
    rows ``[q x n, n]`` (rotation first)."""
    A = np.zeros((6, 6))
    b = np.zeros(6)
    J = np.empty(6)
    for i in range(q.shape[0]):
        wi = w[i]
        if wi == 0.0:
            continue
        J[0] = q[i, 1] * n[i, 2] - q[i, 2] * n[i, 1]
        J[1] = q[i, 2] * n[i, 0] - q[i, 0] * n[i, 2]
        J[2] = q[i, 0] * n[i, 1] - q[i, 1] * n[i, 0]
        J[3], J[4], J[5] = n[i, 0], n[i, 1], n[i, 2]
        for a in range(6):
            wa = wi * J[a]
            b[a] -= wa * r[i]
            for c in range(a, 6):
                A[a, c] += wa * J[c]
    for a in range(6):
        for c in range(a):
            A[a, c] = A[c, a]
    return A, b


_WARM = []


def warm() -> None:
    """Compile (or load from numba's cache) every kernel for the argument types in use."""
    if _WARM:
        return
    z3, one, lv = np.zeros((1, 3)), np.zeros(3), np.zeros(1, np.int64)
    grid = (np.full(27, -1, np.int32), np.array([3, 3, 3], dtype=np.int64), one, 1.0, z3, z3,
            lv, -1)
    grid_nearest_kernel(z3, 1.0, *grid)
    proxy_scores_kernel(np.eye(4)[None], z3, z3, 1.0, *grid)
    icp_pairs_kernel(z3, z3, np.eye(4), 1.0, 0.3, True, *grid)
    normal_equations_kernel(z3, z3, np.zeros(1), np.zeros(1))
    _WARM.append(True)
