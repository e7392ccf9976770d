"""How bone-like each point of an exposure looks, from its geometry alone.

Bone is a minority of what a depth camera sees in a wound: soft tissue filling the gaps
between the laminae and covering the wound floor, the retracted muscle walls, retractor
blades, skin and drapes let in at the edge. Template matching (:mod:`.template`) weighs each
point by its probability of being bone, so the spine's relief is matched and the rest is
not. On 18 fresh scans where the hand-made weights this replaced let the template find no
right pose among 8, the true bone mask as weights put it first on 17.

The probability is an additive logistic model (a GAM on binned features): each feature's
bin adds a log-odds term. The terms are learned from labelled simulated scans by
``scripts/fit_bone_odds.py`` (seeds 40000-40159, disjoint from every evaluation seed) and
stored in :mod:`._bone_odds`. They only steer which poses are proposed: every pose is then
judged on the whole scan against the bone model and by the quality gate.

Features are computed on the exposure seen along the line of sight, as a height map of
``g`` mm pixels (heights toward the sensor):

=========  =================================================================================
ndot       cosine between the point's normal and the line of sight (walls are steep)
hab40/15   height above the lowest point within 40 / 15 mm (the local floor)
below10..  depth below the highest point within 10 / 20 / 40 mm
clo10/17   depth below the height map's grey closing at 10 / 17 mm (tissue in the gaps)
border     distance to the exposure's edge (mm)
rough      height spread over 3 x 3 pixels (bone is rough, tissue smooth)
hpct       height rank within the exposure (0..1)
lateral    distance from the exposure's long axis (mm): the spine runs down the middle
along      position along that axis (0 centre .. 1 end)
nvar       in-plane normal change over 3 x 3 pixels
hplane     height above a plane fitted to the whole exposure (mm)
=========  =================================================================================
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from arspine.registration._pc import grid_means

__all__ = ["FEATURES", "exposure_features", "bone_probability", "fit_bone_odds"]

FEATURES = ("ndot", "hab40", "hab15", "below10", "below20", "below40", "clo10", "clo17",
            "border", "rough", "hpct", "lateral", "along", "nvar", "hplane")


def exposure_features(h: np.ndarray, uv: np.ndarray, n_view: np.ndarray, n_uv: np.ndarray,
                      pix: np.ndarray, shape: tuple, g: float) -> dict[str, np.ndarray]:
    """Per-point features of an exposure seen along the line of sight.

    Parameters
    ----------
    h : (N,) height of each point toward the sensor (mm).
    uv : (N, 2) in-plane coordinates (mm).
    n_view : (N,) normal component along the line of sight (toward the sensor).
    n_uv : (N, 2) in-plane normal components.
    pix : (N, 2) int pixel of each point in a grid of ``shape`` with ``g`` mm pixels.

    Returns
    -------
    dict feature name -> (N,) float64 (see the module docstring).
    """
    hm, cnt = grid_means(pix, None, shape, h)
    seen = cnt > 0
    at = pix[:, 0], pix[:, 1]
    f = {"ndot": np.asarray(n_view, dtype=np.float64)}
    for mm in (40.0, 15.0):
        win = int(round(mm / g)) | 1
        floor = ndimage.grey_erosion(np.where(seen, hm, np.inf), size=(win, win))
        f[f"hab{int(mm)}"] = h - floor[at]
    top_in = np.where(seen, hm, -np.inf)
    for mm in (10.0, 20.0, 40.0):
        win = int(round(mm / g)) | 1
        f[f"below{int(mm)}"] = ndimage.grey_dilation(top_in, size=(win, win))[at] - h
    filled = np.where(seen, hm, hm[seen].min())
    for mm in (10.0, 17.0):
        win = int(round(mm / g)) | 1
        f[f"clo{int(mm)}"] = ndimage.grey_closing(filled, size=(win, win))[at] - h
    inside = ndimage.binary_closing(seen, iterations=2)
    f["border"] = ndimage.distance_transform_edt(inside)[at] * g
    k = ndimage.uniform_filter(seen.astype(np.float64), 3)

    def local_mean(a):
        return ndimage.uniform_filter(np.where(seen, a, 0.0), 3) / np.maximum(k, 1e-9)

    var = local_mean(hm * hm) - local_mean(hm) ** 2
    f["rough"] = np.sqrt(np.maximum(var, 0.0))[at]
    f["hpct"] = (np.argsort(np.argsort(h)) + 0.5) / len(h)
    c = uv - uv.mean(axis=0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    a = np.abs(c @ vt[0])
    f["lateral"] = np.abs(c @ vt[1])
    f["along"] = a / max(float(a.max()), 1e-9)
    m1, m2, _ = grid_means(pix, None, shape, n_uv[:, 0], n_uv[:, 1])
    f["nvar"] = np.hypot(n_uv[:, 0] - local_mean(m1)[at], n_uv[:, 1] - local_mean(m2)[at])
    A = np.c_[uv, np.ones(len(uv))]
    f["hplane"] = h - A @ np.linalg.lstsq(A, h, rcond=None)[0]
    return f


def bone_probability(features: dict[str, np.ndarray], odds: dict | None = None) -> np.ndarray:
    """(N,) probability (0..1) that each point is bone, from :func:`exposure_features`.

    ``odds``: ``{"bias": float, "terms": {name: (edges, log_odds)}}`` (default: the table
    in :mod:`arspine.registration._bone_odds`); a value in bin ``searchsorted(edges, x)``
    adds ``log_odds[bin]``.
    """
    if odds is None:
        from arspine.registration._bone_odds import BONE_ODDS as odds
    n = len(next(iter(features.values())))
    z = np.full(n, float(odds["bias"]))
    for name, (edges, lo) in odds["terms"].items():
        z += np.asarray(lo)[np.searchsorted(np.asarray(edges), features[name])]
    return 1.0 / (1.0 + np.exp(-z))


def fit_bone_odds(features: dict[str, np.ndarray], is_bone: np.ndarray, n_bins: int = 12,
                  ridge: float = 1.0) -> dict:
    """Fit the additive log-odds table of :func:`bone_probability` (L2-penalised logistic
    regression on one-hot quantile bins of each feature).

    Parameters
    ----------
    features : dict name -> (N,) values, for labelled points of many scans.
    is_bone : (N,) bool labels.
    """
    from scipy import sparse
    from scipy.optimize import minimize

    y = np.asarray(is_bone, dtype=np.float64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("is_bone must hold both bone and non-bone points")
    names = list(features)
    edges = [np.unique(np.quantile(features[k], np.linspace(0, 1, n_bins + 1)[1:-1]))
             for k in names]
    # One-hot design as a sparse matrix (one 1 per feature and point, plus the bias column):
    # dense, 500k points x ~180 columns would take 0.7 GB.
    cols, spans, off = [], [], 0
    for k, e in zip(names, edges):
        cols.append(off + np.searchsorted(e, features[k]))
        spans.append((off, len(e) + 1))
        off += len(e) + 1
    cols.append(np.full(len(y), off))
    rows = np.tile(np.arange(len(y)), len(cols))
    A = sparse.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(cols))),
                          shape=(len(y), off + 1))

    def loss(w):
        z = A @ w
        p = 1.0 / (1.0 + np.exp(-z))
        pen = np.r_[w[:-1], 0.0]
        return (float(np.sum(np.logaddexp(0.0, z) - y * z) + ridge * pen @ pen),
                A.T @ (p - y) + 2 * ridge * pen)

    w = minimize(loss, np.zeros(A.shape[1]), jac=True, method="L-BFGS-B").x
    return {"bias": float(w[-1]),
            "terms": {k: ([round(float(x), 4) for x in e],
                          [round(float(x), 4) for x in w[o:o + m]])
                      for k, e, (o, m) in zip(names, edges, spans)}}
