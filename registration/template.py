"""Pose candidates by dense 2.5D template matching of the exposure against the model.

Seen along the line of sight, both the exposure and the model's sensor-facing shell are
height maps carrying a field of surface normals. For every candidate rotation the in-plane
shift that best aligns the two normal fields is found by FFT masked normalised
cross-correlation (Padfield 2012), which ignores empty pixels and any depth offset; the
depth follows from the mode of the height differences. The best distinct poses are then
re-ranked together with a truncated 3D fit (:func:`arspine.registration.global_.proxy_scores`).

Rotations are the view direction in ``ct`` (the model's posterior direction tilted by up to
``max_tilt_deg``) times the roll about it (all the way round): the exposure template depends
only on the roll and the model map only on the view, so each is rendered once.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from arspine.registration._pc import grid_means, orthobasis, unit, voxel_index, voxel_means

__all__ = ["template_candidates", "view_directions", "exposure_view", "exposure_bone_features"]


def view_directions(center: np.ndarray, max_tilt_deg: float, step_deg: float) -> np.ndarray:
    """Unit directions (K, 3) covering the cap of radius ``max_tilt_deg`` around ``center``.

    Rings every ``step_deg`` of tilt, each with about ``2 pi sin(tilt) / step`` azimuths, so
    neighbours are about ``step_deg`` apart everywhere on the cap.
    """
    center = unit(center)
    a, b = orthobasis(center)
    out = [center]
    for tilt in np.arange(step_deg, max_tilt_deg + 1e-6, step_deg):
        t = np.radians(tilt)
        n_az = max(3, int(round(2 * np.pi * np.sin(t) / np.radians(step_deg))))
        for az in np.arange(n_az) * 2 * np.pi / n_az + (tilt / step_deg) * 0.5:
            out.append(np.cos(t) * center + np.sin(t) * (np.cos(az) * a + np.sin(az) * b))
    return unit(np.array(out))


def _basis(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane axes ``(a, b)`` with ``a x b = v`` (right-handed)."""
    a, b = orthobasis(v)
    return (a, b) if np.cross(a, b) @ v > 0 else (b, a)


def _view_features(q: np.ndarray, n_e: np.ndarray, d: np.ndarray, e1: np.ndarray,
                   e2: np.ndarray, pix: np.ndarray, shape: tuple, g: float) -> dict:
    """:func:`arspine.registration.bonelike.exposure_features` of points ``q`` (relative to
    the exposure's median) with normals ``n_e``, seen along ``d`` with in-plane axes e1, e2."""
    from arspine.registration.bonelike import exposure_features

    return exposure_features(q @ d, np.stack([q @ e1, q @ e2], axis=1), n_e @ d,
                             np.stack([n_e @ e1, n_e @ e2], axis=1), pix, shape, g)


def exposure_view(E: np.ndarray, g: float, max_radius_mm: float = 90.0):
    """The exposure seen along the line of sight, on a grid of ``g`` mm pixels.

    Returns ``None`` when fewer than 30 points lie within ``max_radius_mm`` of its median,
    else ``(keep (N,) bool, c (3,) median, d (3,) line of sight toward the sensor, e1, e2
    (3,) in-plane axes, r_px, shape, pix (K, 2))`` for the ``K`` kept points.
    """
    c = np.median(E, axis=0)
    d = unit(-c)
    e1, e2 = _basis(d)
    keep = np.linalg.norm(E - c, axis=1) < max_radius_mm
    if keep.sum() < 30:
        return None
    q = E[keep] - c
    uv = np.stack([q @ e1, q @ e2], axis=1)
    # The template size rounded up to 4 pixels: the model side (its maps and their FFTs)
    # depends on it and the model only, and is cached on the model for the next scan.
    r_px = 4 * int(np.ceil((np.linalg.norm(uv, axis=1).max() / g + 2) / 4))
    shape = (2 * r_px + 1, 2 * r_px + 1)
    return keep, c, d, e1, e2, r_px, shape, np.floor(uv / g).astype(np.int64) + r_px


def exposure_bone_features(E: np.ndarray, En: np.ndarray, g: float = 3.5,
                           max_radius_mm: float = 90.0):
    """``(keep, features)`` of :func:`arspine.registration.bonelike.exposure_features` for
    the points of an exposure the template uses (``None`` when it uses none)."""
    view = exposure_view(E, g, max_radius_mm)
    if view is None:
        return None
    keep, c, d, e1, e2, _, shape, pix = view
    return keep, _view_features(E[keep] - c, En[keep], d, e1, e2, pix, shape, g)


def _point_weights(q: np.ndarray, n_e: np.ndarray, d: np.ndarray, e1: np.ndarray,
                   e2: np.ndarray, g: float, pix0: np.ndarray, ts: tuple) -> tuple:
    """Per-point weight (0..1) of being worth matching, and the height along ``d`` (mm).

    The weight is the squared probability of being bone (:mod:`.bonelike`): bone is a
    minority of the exposure, and what else is there (tissue in the gaps, walls, retractors,
    skin) argues against the true pose, its normals not following the model's. Squared, the
    weighted bone fraction of the hardest tenth of held-out simulated exposures is 0.52
    (0.39 unsquared, 0.36 with the hand-made weights this replaced). Points without a
    normal get no weight.
    """
    from arspine.registration.bonelike import bone_probability

    known = np.einsum("ij,ij->i", n_e, n_e) > 0.25
    f = _view_features(q, n_e, d, e1, e2, pix0, ts, g)
    return bone_probability(f) ** 2 * known, q @ d


def _model_maps(model, views: np.ndarray, g: float) -> list:
    """Per view (ct): top-surface pixels of the shell facing it, heights and in-plane normals."""
    P, Pn = model.points, model.normals
    maps = []
    for v in views:
        f1, f2 = _basis(v)
        face = Pn @ v > 0.1
        uv = np.stack([P[face] @ f1, P[face] @ f2], axis=1)
        lo = np.floor(uv.min(axis=0) / g) * g
        pix = np.floor((uv - lo) / g).astype(np.int64)
        hv = P[face] @ v
        lin = pix[:, 0] * 100000 + pix[:, 1]
        order = np.lexsort((-hv, lin))           # top surface: highest point per pixel
        first = order[np.r_[True, lin[order][1:] != lin[order][:-1]]]
        nf = Pn[face][first]
        maps.append((v, f1, f2, lo, pix[first], hv[first], nf @ f1, nf @ f2))
    return maps


def template_candidates(E: np.ndarray, En: np.ndarray, model, n_out: int = 12,
                        max_tilt_deg: float = 35.0, tilt_step_deg: float = 12.0,
                        roll_step_deg: float = 10.0, pixel_mm: float = 3.5,
                        min_overlap: float = 0.1, max_radius_mm: float = 90.0,
                        n_rerank: int = 80, rerank_tau_mm: float = 5.0,
                        refine_steps: tuple = (6.0, 4.0, 2.0)) -> list[tuple[np.ndarray, float]]:
    """Candidate ``T_ct_from_sensor`` (4x4, mm) poses with a score, best first.

    Parameters
    ----------
    E, En : (N, 3) exposure points (sensor frame, mm) and unit normals toward the sensor
        (zero rows: unknown).
    model : PreparedModel (shell ``points``/``normals`` in ``ct``, ``posterior_ct``).
    n_out : number of poses returned (10 deg or 10 mm apart before the refinement).
    max_tilt_deg : largest angle between the model's posterior direction and the line of
        sight to the exposure; ``tilt_step_deg`` and ``roll_step_deg`` sample the rotations.
    pixel_mm : height-map grid (mm).
    min_overlap : shifts where the model covers less than this fraction of the exposure's
        weight are not considered (a tiny overlap correlates well by chance).
    max_radius_mm : exposure points farther than this from its median are ignored.
    n_rerank, rerank_tau_mm : the best ``n_rerank`` distinct template poses are re-ranked by
        template score + truncated 3D fit at ``rerank_tau_mm`` (each normalised by its max).
    refine_steps : deg / mm steps of the pattern-search rounds on the 3D fit (tau 8 mm) that
        pull each returned pose off the rotation grid; ``()`` returns the grid poses.

    Returns
    -------
    list of ``(T_ct_from_sensor (4, 4), score)``, best first; score (0..2) is the re-rank
    score of the pose before refinement.
    """
    from arspine.registration.global_ import _moves, proxy_scores

    E = np.asarray(E, dtype=np.float64)
    En = np.asarray(En, dtype=np.float64)
    g = float(pixel_mm)
    view = exposure_view(E, g, max_radius_mm)
    if view is None:  # nothing to match (a sliver, or points scattered around a hole)
        return []
    keep, c, d, e1, e2, r_px, ts, pix0 = view
    q, n_e = E[keep] - c, En[keep]
    uv0 = np.stack([q @ e1, q @ e2], axis=1)
    w_pt, h_e = _point_weights(q, n_e, d, e1, e2, g, pix0, ts)
    if not np.any(w_pt > 0):
        return []

    key = ("template", g, float(max_tilt_deg), float(tilt_step_deg), r_px)
    cache = getattr(model, "_cache", None)
    if cache is not None and key in cache:
        maps, shp, fs, off, Fm, H_m = cache[key]
    else:
        views = np.concatenate([view_directions(unit(p), max_tilt_deg, tilt_step_deg)
                                for p in [model.posterior_ct, *model.posterior_alternatives]])
        maps = _model_maps(model, views, g)
        shp = np.max([m[4].max(axis=0) for m in maps], axis=0) + 1
        # Shifts put the template centre on a model pixel, the model sits ``off`` = half a
        # template from the origin: with ``shp + off`` pixels the circular correlation wraps
        # only onto empty pixels for those shifts (template pixel x at shift s reads model
        # pixel x + s <= 2 off + shp - 2, which wraps below ``off``).
        fs = tuple(fft.next_fast_len(int(s) + r_px, real=True) for s in shp)
        off = r_px
        Fm, H_m = [], []
        for _v, _f1, _f2, _lo, pix, hv, nx_, ny_ in maps:
            ch = np.zeros((5,) + fs)                 # mask, nx, ny, |n|^2, height
            i, j = pix[:, 0] + off, pix[:, 1] + off
            ch[0, i, j], ch[1, i, j], ch[2, i, j], ch[4, i, j] = 1.0, nx_, ny_, hv
            ch[3] = ch[1] ** 2 + ch[2] ** 2
            H_m.append(ch[[4, 0]])
            Fm.append(fft.rfft2(ch[:4].astype(np.float32), workers=2))
        if cache is not None:
            cache[key] = (maps, shp, fs, off, Fm, H_m)
    # Exposure templates per roll: the in-plane axes (and normals) turned by the roll.
    rolls = np.radians(np.arange(0.0, 360.0, roll_step_deg))
    ne1, ne2 = n_e @ e1, n_e @ e2
    tpl, T_h = [], []
    for phi in rolls:
        co, si = np.cos(phi), np.sin(phi)
        uv = uv0 @ np.array([[co, -si], [si, co]])
        pix = np.floor(uv / g).astype(np.int64) + r_px
        nx, ny, w = grid_means(pix, w_pt, ts, co * ne1 + si * ne2, -si * ne1 + co * ne2)
        T_h.append((grid_means(pix, w_pt + 1e-6, ts, h_e)[0], w))
        w = np.minimum(w, 1.0)
        tpl.append([w, w * nx, w * ny, w * (nx * nx + ny * ny)])
    tpl = np.array(tpl, dtype=np.float32)
    tot = tpl[:, 0].sum(axis=(1, 2))
    Ft = np.conj(fft.rfft2(tpl, s=fs, workers=2))          # (R, 4, ...)
    peaks = []
    prods = np.empty((len(rolls), 4) + Ft.shape[2:], dtype=np.complex64)
    for k, F in enumerate(Fm):
        # Masked NCC of the normal fields: overlap weight, cross term, both energies.
        np.multiply(Ft[:, 0], F[0], out=prods[:, 0])
        np.multiply(Ft[:, 1], F[1], out=prods[:, 1])
        prods[:, 1] += Ft[:, 2] * F[2]
        np.multiply(Ft[:, 3], F[0], out=prods[:, 2])
        np.multiply(Ft[:, 0], F[3], out=prods[:, 3])
        # Only shifts that put the template centre on the model are scored (the rest of
        # the circular correlation is padding): about a third of the output.
        n, cr, A, B = np.moveaxis(fft.irfft2(prods, s=fs, workers=2)[..., :shp[0], :shp[1]],
                                  1, 0)
        frac = np.minimum(n / tot[:, None, None], 1.0)
        AB = np.maximum(A, 1e-3) * np.maximum(B, 1e-3)
        score = cr * frac / np.sqrt(AB)
        score[frac < min_overlap] = -1.0
        flat = score.reshape(len(rolls), -1)
        top = np.argpartition(-flat, 3, axis=1)[:, :3]      # a few peaks per roll
        peaks += [(float(flat[r, j]), k, r, j) for r in range(len(rolls)) for j in top[r]]
    peaks.sort(key=lambda b: -b[0])
    cands: list[tuple[np.ndarray, float]] = []
    kR = np.zeros((n_rerank, 3, 3))
    kc = np.zeros((n_rerank, 3))
    for s, k, r, j in peaks:
        v, f1, f2, lo = maps[k][:4]
        su, sv = np.unravel_index(j, tuple(shp))
        co, si = np.cos(rolls[r]), np.sin(rolls[r])
        R = np.outer(f1, co * e1 + si * e2) + np.outer(f2, -si * e1 + co * e2) + np.outer(v, d)
        # Template pixel x lies on model pixel x + s; depth: the offset most pixels agree on.
        hm, mm = (a[su:su + ts[0], sv:sv + ts[1]] for a in H_m[k])
        th, tw = (a[: hm.shape[0], : hm.shape[1]] for a in T_h[r])
        ok = (tw > 0.3) & (mm > 0)
        t = f1 * (lo[0] + (su - off + r_px) * g) + f2 * (lo[1] + (sv - off + r_px) * g) \
            + v * _mode(hm[ok] - th[ok]) - R @ c
        # Distinct: at least 10 deg (trace > 1 + 2 cos 10) or 10 mm at the exposure centre.
        m = len(cands)
        if m and np.any((np.einsum("ij,kij->k", R, kR[:m]) > 2.9696)
                        & (np.linalg.norm(kc[:m] - (R @ c + t), axis=1) < 10.0)):
            continue
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        kR[m], kc[m] = R, R @ c + t
        cands.append((T, s))
        if len(cands) >= n_rerank:
            break
    if not cands:
        return []
    # Re-rank with the 3D fit: it sees the depth the normal correlation is blind to.
    # Its points are drawn by the same weights (mean per 3 mm voxel): drawn uniformly, tissue
    # and walls outnumber the bone and the re-rank favours poses that fit them.
    _, inv = voxel_index(E[keep], 3.0)
    P, Pn, w_vox = voxel_means(inv, E[keep], En[keep], w_pt)
    Pn = unit(Pn)
    n_draw = min(600, int(np.count_nonzero(w_vox > 0)))
    sel = np.random.default_rng(0).choice(len(P), n_draw, replace=False,
                                          p=w_vox / w_vox.sum())
    Ts = np.array([T for T, _ in cands])
    ts_ = np.array([s for _, s in cands])
    P, Pn = P[sel], Pn[sel]
    ps = proxy_scores(Ts, P, Pn, model, rerank_tau_mm)
    comb = ps / max(ps.max(), 1e-9) + ts_ / max(ts_.max(), 1e-9)
    order = np.argsort(-comb)[:n_out]
    Ts, comb = Ts[order], comb[order]
    # A few batched pattern-search rounds on the 3D fit: the rotation grid leaves poses up
    # to ~8 deg off, which a wide-tau fit pulls in without leaving the basin.
    cen = P.mean(axis=0)
    for step in refine_steps:
        mv = np.concatenate([Ts[:, None], np.array([_moves(step, step, T[:3, :3] @ cen + T[:3, 3])
                                                    @ T for T in Ts])], axis=1)
        sc = proxy_scores(mv.reshape(-1, 4, 4), P, Pn, model, 8.0).reshape(len(Ts), -1)
        Ts = mv[np.arange(len(Ts)), np.argmax(sc, axis=1)]
    return [(Ts[i], float(comb[i])) for i in range(len(Ts))]


def _mode(x: np.ndarray, bin_mm: float = 2.0) -> float:
    """Peak of the smoothed histogram of ``x`` (mm): the offset most pixels agree on, where a
    median would be pulled by walls and tools."""
    if len(x) == 0:
        return 0.0
    k = np.floor((x - x.min()) / bin_mm).astype(np.int64)
    hist = ndimage.uniform_filter1d(np.bincount(k).astype(float), 3, mode="constant")
    j = int(np.argmax(hist))
    return float(np.mean(x[np.abs(k - j) <= 1]))
