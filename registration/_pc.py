"""Small point-cloud kernels shared by the registration modules (numpy / scipy)."""

from __future__ import annotations

import numpy as np

__all__ = ["voxel_index", "voxel_means", "voxel_downsample", "grid_means", "estimate_normals",
           "orthobasis", "unit"]


def unit(v: np.ndarray) -> np.ndarray:
    """Rows (or a vector) scaled to unit length; zero rows stay zero."""
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def orthobasis(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``v`` to a right-handed orthonormal basis."""
    v = unit(v)
    a = np.array([1.0, 0, 0]) if abs(v[0]) < 0.9 else np.array([0, 1.0, 0])
    a = unit(a - (a @ v) * v)
    return a, np.cross(v, a)


def voxel_index(points: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the index of one member of each occupied voxel (voxels in a fixed
    order) and each point's voxel (:func:`voxel_downsample` returns the voxels in that order).
    """
    key = np.floor(points / voxel_mm).astype(np.int64)
    key -= key.min(axis=0)
    dims = key.max(axis=0) + 1
    lin = (key[:, 0] * dims[1] + key[:, 1]) * dims[2] + key[:, 2]
    _, first, inv = np.unique(lin, return_index=True, return_inverse=True)
    return first, inv.ravel()


def voxel_means(inv: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-voxel means of each ``(N,)`` or ``(N, k)`` array, voxels as in ``inv`` (from
    :func:`voxel_index`)."""
    cnt = np.bincount(inv).astype(np.float64)
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1:
            out.append(np.bincount(inv, a, len(cnt)) / cnt)
        else:
            out.append(np.stack([np.bincount(inv, a[:, k], len(cnt)) for k in range(a.shape[1])],
                                axis=1) / cnt[:, None])
    return tuple(out)


def grid_means(pix: np.ndarray, w: np.ndarray | None, shape: tuple,
               *vals: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted means of each of ``vals`` per pixel of a 2D grid of ``shape`` (integer pixel
    indices ``pix`` (N, 2); ``w`` None: unit weights), then the total weight per pixel
    (empty pixels: mean 0, weight 0)."""
    lin = pix[:, 0] * shape[1] + pix[:, 1]
    n = shape[0] * shape[1]
    w = np.ones(len(lin)) if w is None else w
    wsum = np.bincount(lin, w, n)
    den = np.maximum(wsum, 1e-9)
    return (*((np.bincount(lin, w * v, n) / den).reshape(shape) for v in vals),
            wsum.reshape(shape))


def voxel_downsample(points: np.ndarray, voxel_mm: float, normals: np.ndarray | None = None,
                     labels: np.ndarray | None = None):
    """Average points (and normals) per voxel; labels take the first point's value.

    Returns ``(points, normals_or_None, labels_or_None, index_of_a_member)``.
    """
    first, inv = voxel_index(points, voxel_mm)
    out = voxel_means(inv, points)[0]
    nrm = None if normals is None else unit(voxel_means(inv, normals)[0])
    lab = None if labels is None else labels[first]
    return out, nrm, lab, first


def estimate_normals(points: np.ndarray, radius_mm: float, max_nn: int = 16,
                     toward: np.ndarray | None = None) -> np.ndarray:
    """PCA normals from the ``max_nn`` nearest neighbours within ``radius_mm`` (scipy).

    Oriented toward the point ``toward`` when given (the sensor).
    """
    from scipy.spatial import cKDTree

    k = int(min(max_nn, len(points)))
    d, idx = cKDTree(points).query(points, k=k, distance_upper_bound=radius_mm, workers=2)
    idx = np.where(np.isfinite(d), idx, np.arange(len(points))[:, None])
    nb = points[idx]
    nb = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vec = np.linalg.eigh(cov)
    n = vec[:, :, 0]
    if toward is not None:
        flip = np.einsum("ij,ij->i", n, np.asarray(toward)[None, :] - points) < 0
        n[flip] *= -1
    return n
