"""Global pose search without a prior: many hypotheses, scored on the full data.

1. Feature correspondences: FPFH of salient scan keypoints -> model keypoints (k nearest in
   feature space), plus the model -> scan direction (mutual evidence counts twice).
2. Vectorised RANSAC: thousands of 3-correspondence samples, pruned by pairwise-distance
   consistency and by anatomy (the back faces the sensor), each fitted in closed form and
   counted against all correspondences; the top distinct poses survive.
3. Each survivor is refined briefly (coarse robust ICP) and scored on the whole scan by a
   truncated robust score (:func:`score_pose`).
4. The explicit alternatives of the best pose are always evaluated: shifted by +-1 and +-2
   levels, and flipped 180 degrees about the spine axis and about the posterior axis.

All poses here are ``T_ct_from_sensor`` 4x4 matrices (the ICP direction); callers invert.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arspine.registration.icp import icp_point_to_plane

__all__ = ["Hypothesis", "GlobalConfig", "correspondences", "ransac_hypotheses", "DepthImage",
           "visibility_score", "refine", "rotation_grid", "hough_hypotheses",
           "exposure_hypotheses",
           "score_pose", "alternatives", "global_search"]


@dataclass(frozen=True)
class GlobalConfig:
    """Global search parameters (mm / degrees)."""

    k_features: int = 2
    n_samples: int = 30000
    edge_tol: float = 0.08          # relative pairwise-distance mismatch allowed
    min_edge_mm: float = 12.0
    inlier_mm: float = 5.0          # correspondence inlier distance in RANSAC counting
    max_posterior_deg: float = 75.0  # back must face the sensor within this angle
    top_k: int = 24
    distinct_mm: float = 8.0
    distinct_deg: float = 10.0
    score_mm: float = 2.5
    seed: int = 0


@dataclass
class Hypothesis:
    """A candidate ``T_ct_from_sensor`` with its score and provenance."""

    T: np.ndarray
    score: float
    kind: str = "ransac"
    votes: int = 0
    details: dict = field(default_factory=dict)


def correspondences(scan_feats: np.ndarray, model_feats: np.ndarray, k: int = 2):
    """Index pairs ``(scan_i, model_j)`` of nearest FPFH descriptors, both directions."""
    from scipy.spatial import cKDTree

    mt = cKDTree(model_feats)
    _, mi = mt.query(scan_feats, k=k, workers=2)
    mi = mi.reshape(len(scan_feats), -1)
    si = np.repeat(np.arange(len(scan_feats)), mi.shape[1])
    pairs = [np.stack([si, mi.ravel()], axis=1)]
    st = cKDTree(scan_feats)
    _, sj = st.query(model_feats, k=1, workers=2)
    pairs.append(np.stack([sj.ravel(), np.arange(len(model_feats))], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def _batched_kabsch(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Rigid maps of (B, 3, 3) triangles P onto Q (rows are points); returns (B, 4, 4)."""
    cp, cq = P.mean(axis=1), Q.mean(axis=1)
    H = np.einsum("bki,bkj->bij", P - cp[:, None], Q - cq[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("bij,bjk->bik", np.transpose(Vt, (0, 2, 1)),
                                        np.transpose(U, (0, 2, 1)))))
    D = np.tile(np.eye(3), (len(P), 1, 1))
    D[:, 2, 2] = np.where(d == 0, 1.0, d)
    R = np.einsum("bji,bjk,blk->bil", Vt, D, U)
    out = np.tile(np.eye(4), (len(P), 1, 1))
    out[:, :3, :3] = R
    out[:, :3, 3] = cq - np.einsum("bij,bj->bi", R, cp)
    return out


def ransac_hypotheses(scan_pts: np.ndarray, model_pts: np.ndarray, pairs: np.ndarray,
                      posterior_ct: np.ndarray, sensor_origin: np.ndarray,
                      model_center: np.ndarray, cfg: GlobalConfig) -> list[Hypothesis]:
    """Top distinct ``T_ct_from_sensor`` poses by correspondence consensus."""
    rng = np.random.default_rng(cfg.seed)
    if len(pairs) < 3:
        return []
    S, M = scan_pts[pairs[:, 0]], model_pts[pairs[:, 1]]
    tri = rng.integers(0, len(pairs), size=(cfg.n_samples, 3))
    ps, pm = S[tri], M[tri]
    ok = np.ones(len(tri), dtype=bool)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        ds = np.linalg.norm(ps[:, a] - ps[:, b], axis=1)
        dm = np.linalg.norm(pm[:, a] - pm[:, b], axis=1)
        ok &= (ds > cfg.min_edge_mm) & (np.abs(ds - dm) < cfg.edge_tol * np.maximum(ds, dm))
    ps, pm = ps[ok], pm[ok]
    if len(ps) == 0:
        return []
    Ts = _batched_kabsch(ps, pm)  # scan -> model
    # Anatomy prior: the back (posterior) faces the sensor.
    R = Ts[:, :3, :3]
    post_s = np.einsum("bji,j->bi", R, posterior_ct)          # R^T posterior, sensor frame
    center_s = np.einsum("bji,bj->bi", R, model_center[None] - Ts[:, :3, 3])
    view = sensor_origin[None] - center_s
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    cosang = np.einsum("bi,bi->b", post_s, view)
    keep = cosang > np.cos(np.radians(cfg.max_posterior_deg))
    Ts = Ts[keep]
    if len(Ts) == 0:
        return []
    # Consensus over all correspondences (chunked to bound memory).
    votes = np.zeros(len(Ts), dtype=np.int64)
    for s in range(0, len(Ts), 512):
        T = Ts[s:s + 512]
        mapped = np.einsum("bij,nj->bni", T[:, :3, :3], S) + T[:, None, :3, 3]
        votes[s:s + 512] = np.sum(np.sum((mapped - M[None]) ** 2, axis=2)
                                  < cfg.inlier_mm**2, axis=1)
    order = np.argsort(-votes)
    out: list[Hypothesis] = []
    for i in order:
        if len(out) >= cfg.top_k or votes[i] < 4:
            break
        if any(_close(Ts[i], h.T, model_center, cfg.distinct_mm, cfg.distinct_deg) for h in out):
            continue
        out.append(Hypothesis(Ts[i], 0.0, "ransac", int(votes[i])))
    return out


def _close(A: np.ndarray, B: np.ndarray, center_ct: np.ndarray, mm: float, deg: float) -> bool:
    D = A @ np.linalg.inv(B)
    ang = np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1) / 2, -1, 1)))
    move = np.linalg.norm(D[:3, :3] @ center_ct + D[:3, 3] - center_ct)
    return ang < deg and move < mm


def score_pose(T_ct_from_sensor: np.ndarray, pts: np.ndarray, nrm: np.ndarray, model,
               tau_mm: float = 2.5, normal_min_dot: float = 0.5,
               level_counts: bool = False):
    """Truncated robust score of a pose on scan points (sensor frame).

    Each scan point within ``tau_mm`` of the model shell with an agreeing normal adds
    ``1 - (d / tau)^2``. Returns ``(score, n_inliers)`` or, with ``level_counts``, also the
    per-level inlier counts ``(L,)``.
    """
    R, t = T_ct_from_sensor[:3, :3], T_ct_from_sensor[:3, 3]
    lo = model.points.min(axis=0) - tau_mm
    hi = model.points.max(axis=0) + tau_mm
    q = pts @ R.T + t
    box = np.all((q >= lo) & (q <= hi), axis=1)
    q = q[box]
    d, idx = model.tree().query(q, k=1, distance_upper_bound=tau_mm, workers=2)
    ok = np.isfinite(d)
    idx_ok = idx[ok]
    agree = np.einsum("ij,ij->i", nrm[box][ok] @ R.T, model.normals[idx_ok]) > normal_min_dot
    d_in = d[ok][agree]
    score = float(np.sum(1.0 - (d_in / tau_mm) ** 2))
    if level_counts:
        lc = np.bincount(model.level_index[idx_ok[agree]], minlength=len(model.levels))
        return score, int(len(d_in)), lc
    return score, int(len(d_in))


def alternatives(T: np.ndarray, model, max_shift: int = 2) -> list[tuple[str, np.ndarray]]:
    """Explicit look-alike poses of ``T`` (``T_ct_from_sensor``).

    Level shift ``k``: the scan that matched level i is mapped onto level i+k (the model is
    translated by k level steps); flips: 180 degrees about the spine axis and about the
    posterior axis, through the model centre.
    """
    out = []
    step = model.level_step_mm
    if np.linalg.norm(step) > 0:
        for k in range(-max_shift, max_shift + 1):
            if k == 0 or abs(k) >= len(model.levels):
                continue
            S = np.eye(4)
            S[:3, 3] = k * step
            out.append((f"shift{k:+d}", S @ T))
    c = model.center_ct
    for name, ax in (("flip_axis", model.axis_ct), ("flip_posterior", model.posterior_ct)):
        R = 2 * np.outer(ax, ax) - np.eye(3)  # 180 degrees about ax
        F = np.eye(4)
        F[:3, :3] = R
        F[:3, 3] = c - R @ c
        out.append((name, F @ T))
    return out


def refine(T: np.ndarray, pts: np.ndarray, nrm: np.ndarray, model,
           schedule=(8.0, 5.0, 3.0), iters: int = 5) -> np.ndarray:
    """Brief robust ICP of a hypothesis on (coarse) scan points near the model."""
    R, t = T[:3, :3], T[:3, 3]
    q = pts @ R.T + t
    lo = model.points.min(axis=0) - schedule[0]
    hi = model.points.max(axis=0) + schedule[0]
    box = np.all((q >= lo) & (q <= hi), axis=1)
    if box.sum() < 12:
        return T
    res = icp_point_to_plane(pts[box], nrm[box], model.tree(), model.points, model.normals,
                             T, schedule_mm=schedule, iters_per_stage=iters)
    return res.T_ct_from_sensor


def global_search(scan, model, cfg: GlobalConfig | None = None) -> list[Hypothesis]:
    """Ranked hypotheses (best first), alternatives of the best included.

    Parameters
    ----------
    scan : PreparedScan; model : PreparedModel.

    Returns
    -------
    list of Hypothesis sorted by score (coarse-data score after a brief ICP).
    """
    cfg = cfg or GlobalConfig()
    pairs = correspondences(scan.key_features, model.key_features, cfg.k_features)
    hyps = ransac_hypotheses(scan.key_points, model.key_points, pairs, model.posterior_ct,
                             scan.sensor_origin, model.center_ct, cfg)
    pts, nrm = scan.coarse, scan.coarse_normals
    for h in hyps:
        h.T = refine(h.T, pts, nrm, model)
        h.score = score_pose(h.T, pts, nrm, model, tau_mm=cfg.score_mm)[0]
    hyps.sort(key=lambda h: -h.score)
    # De-duplicate after refinement: several samples converge to the same pose.
    uniq: list[Hypothesis] = []
    for h in hyps:
        if not any(_close(h.T, u.T, model.center_ct, 3.0, 3.0) for u in uniq):
            uniq.append(h)
    if not uniq:
        return []
    best = uniq[0]
    for name, Talt in alternatives(best.T, model):
        Tr = refine(Talt, pts, nrm, model)
        s = score_pose(Tr, pts, nrm, model, tau_mm=cfg.score_mm)[0]
        uniq.append(Hypothesis(Tr, s, name, 0))
    uniq.sort(key=lambda h: -h.score)
    return uniq


class DepthImage:
    """The scan as a depth map over viewing angle: nearest ``z`` per (x/z, y/z) bin.

    Used to test model points against what the sensor saw along the same ray: a scan point
    well *behind* a model point means the sensor saw through where bone should be (free-space
    violation: strong evidence against the pose); one in *front* is an occlusion (neutral).
    """

    def __init__(self, points: np.ndarray, bin_rad: float = 0.0035):
        z = points[:, 2]
        ok = z > 1e-6
        p = points[ok]
        self.bin = bin_rad
        u = np.floor(p[:, 0] / p[:, 2] / bin_rad).astype(np.int64)
        v = np.floor(p[:, 1] / p[:, 2] / bin_rad).astype(np.int64)
        self.u0, self.v0 = int(u.min()), int(v.min())
        self.shape = (int(u.max()) - self.u0 + 1, int(v.max()) - self.v0 + 1)
        self.depth = np.full(self.shape, np.inf)
        np.minimum.at(self.depth, (u - self.u0, v - self.v0), p[:, 2])

    def lookup(self, pts: np.ndarray) -> np.ndarray:
        """Scan depth (z, mm) on the rays of ``pts`` (sensor frame); inf when none."""
        out = np.full(len(pts), np.inf)
        z = pts[:, 2]
        ok = z > 1e-6
        u = np.floor(pts[ok, 0] / z[ok] / self.bin).astype(np.int64) - self.u0
        v = np.floor(pts[ok, 1] / z[ok] / self.bin).astype(np.int64) - self.v0
        inside = (u >= 0) & (u < self.shape[0]) & (v >= 0) & (v < self.shape[1])
        idx = np.flatnonzero(ok)[inside]
        out[idx] = self.depth[u[inside], v[inside]]
        return out


def visibility_score(T_sensor_from_ct: np.ndarray, model, depth: DepthImage,
                     tau_mm: float = 3.0, violation_mm: float = 5.0,
                     violation_weight: float = 1.0, mask: np.ndarray | None = None):
    """Support minus free-space violations of the model's sensor-facing shell points.

    Returns ``(score, n_support, n_violation, n_facing)``; with ``mask`` only those shell
    points count.
    """
    P = model.points if mask is None else model.points[mask]
    N = model.normals if mask is None else model.normals[mask]
    R, t = T_sensor_from_ct[:3, :3], T_sensor_from_ct[:3, 3]
    ps = P @ R.T + t
    ns = N @ R.T
    facing = np.einsum("ij,ij->i", ns, -ps) > 0.1 * np.linalg.norm(ps, axis=1)
    ps = ps[facing]
    dz = depth.lookup(ps) - ps[:, 2]
    sup = np.abs(dz) < tau_mm
    viol = np.isfinite(dz) & (dz > violation_mm)
    s = float(np.sum(1.0 - (dz[sup] / tau_mm) ** 2) - violation_weight * np.sum(viol))
    return s, int(sup.sum()), int(viol.sum()), int(facing.sum())


def rotation_grid(posterior_ct: np.ndarray, axis_ct: np.ndarray, max_tilt_deg: float = 50.0,
                  step_deg: float = 15.0) -> np.ndarray:
    """Rotations ``R_ct_from_sensor`` with the back facing the sensor (posterior ~ -z_sensor).

    Directions of the sensor's ``-z`` in ct are sampled on a cap of ``max_tilt_deg`` around
    ``posterior_ct`` (Fibonacci lattice, ~``step_deg`` apart), each with in-plane angles every
    ``step_deg``. Returns ``(J, 3, 3)``.
    """
    from arspine.registration._pc import orthobasis

    cap_sr = 2 * np.pi * (1 - np.cos(np.radians(max_tilt_deg)))
    n_dir = max(1, int(round(cap_sr / np.radians(step_deg) ** 2)))
    # Fibonacci points on the cap around +z, then rotated onto posterior.
    i = np.arange(n_dir) + 0.5
    cz = 1 - (1 - np.cos(np.radians(max_tilt_deg))) * i / n_dir
    phi = np.pi * (1 + 5**0.5) * i
    sz = np.sqrt(1 - cz**2)
    local = np.stack([sz * np.cos(phi), sz * np.sin(phi), cz], axis=1)
    a, b = orthobasis(posterior_ct)
    dirs = local @ np.stack([a, b, posterior_ct])
    out = []
    for d in dirs:  # d = ct direction of the sensor's -z axis
        e1, _ = orthobasis(d)
        for ang in np.radians(np.arange(0.0, 360.0, step_deg)):
            x = np.cos(ang) * e1 + np.sin(ang) * np.cross(d, e1)
            z = -d
            y = np.cross(z, x)
            out.append(np.stack([x, y, z], axis=1))  # columns: sensor axes in ct
    return np.array(out)


def hough_hypotheses(scan, model, cfg: GlobalConfig, k: int = 8, bin_mm: float = 8.0,
                     step_deg: float = 15.0, max_tilt_deg: float = 50.0,
                     top_k: int = 30) -> list[Hypothesis]:
    """Rotation-sampled translation voting with FPFH-gated keypoint pairs.

    For each rotation of :func:`rotation_grid`, every pair (scan keypoint, one of its ``k``
    nearest model keypoints in feature space) votes for ``t = m - R s``; the fullest
    translation bin is that rotation's hypothesis. Wrong pairs scatter, right ones pile up.
    """
    from scipy.spatial import cKDTree

    mt = cKDTree(model.key_features)
    _, mi = mt.query(scan.key_features, k=k, workers=2)
    S = np.repeat(scan.key_points, k, axis=0)
    Mp = model.key_points[mi.ravel()]
    Rs = rotation_grid(model.posterior_ct, model.axis_ct, max_tilt_deg, step_deg)
    best = np.zeros(len(Rs))
    best_t = np.zeros((len(Rs), 3))
    size = 1 << 20
    for j, R in enumerate(Rs):
        t = Mp - S @ R.T
        q = np.floor(t / bin_mm).astype(np.int64)
        h = ((q[:, 0] * 73856093) ^ (q[:, 1] * 19349663) ^ (q[:, 2] * 83492791)) % size
        cnt = np.bincount(h, minlength=size)
        hb = int(np.argmax(cnt))
        best[j] = cnt[hb]
        sel = h == hb
        best_t[j] = np.median(t[sel], axis=0)
    order = np.argsort(-best)
    out: list[Hypothesis] = []
    for j in order:
        if len(out) >= top_k:
            break
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = Rs[j], best_t[j]
        if any(_close(T, h.T, model.center_ct, 10.0, 20.0) for h in out):
            continue
        out.append(Hypothesis(T, 0.0, "hough", int(best[j])))
    return out


def _frame(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    a = a - (a @ n) * n
    a = a / np.linalg.norm(a)
    return np.stack([a, n, np.cross(a, n)], axis=1)


def exposure_hypotheses(scan, model, step_mm: float = 4.0, depth_steps=(-8, -4, 0, 4, 8),
                        psi_deg=(-12.0, 0.0, 12.0), tau_mm: float = 4.0, top_k: int = 8,
                        max_points: int = 900, seed: int = 0) -> list[Hypothesis]:
    """Hypotheses from the structure of the exposure (midline sweep).

    The skin normal around the wound gives the posterior direction, the wound's long axis
    the spine axis (both signs: head/tail unknown), and a sweep along the axis (every
    ``step_mm`` over the model's length) and in depth places the model; each placement is
    scored by a fast truncated distance score on a subsample of exposure points.
    """
    from arspine.registration._pc import voxel_downsample

    E = scan.fine[scan.exposure]
    En = scan.fine_normals[scan.exposure]
    if len(E) < 30:
        return []
    c = np.median(E, axis=0)
    n_s = scan.skin_normal / np.linalg.norm(scan.skin_normal)
    q = (E - c) - np.outer((E - c) @ n_s, n_s)
    _, _, vt = np.linalg.svd(q[:: max(1, len(q) // 4000)], full_matrices=False)
    a_s = vt[0]
    sub, subn, _, _ = voxel_downsample(E, 4.0, En)
    if len(sub) > max_points:
        pick = np.random.default_rng(seed).choice(len(sub), max_points, replace=False)
        sub, subn = sub[pick], subn[pick]
    post, axis = model.posterior_ct, model.axis_ct
    F_c = _frame(axis, post)
    rel = model.points - model.center_ct
    h_m = float(np.percentile(rel @ post, 60))
    h_e = float(np.percentile((E - c) @ n_s, 50))
    along = rel @ axis
    offsets = np.arange(along.min() * 0.8, along.max() * 0.8 + 1e-9, step_mm)
    tree = model.tree()
    cands = []
    for sign in (1.0, -1.0):
        for psi in psi_deg:
            ps = np.radians(psi)
            a_rot = np.cos(ps) * a_s + np.sin(ps) * np.cross(n_s, a_s)
            F_s = _frame(sign * a_rot, n_s)
            R = F_c @ F_s.T                                     # ct_from_sensor
            base = sub @ R.T
            nb = subn @ R.T
            rc = R @ c
            for o in offsets:
                for dh in depth_steps:
                    target = model.center_ct + o * axis + (h_m - h_e + dh) * post
                    t = target - rc
                    d, idx = tree.query(base + t, k=1, distance_upper_bound=tau_mm)
                    ok = np.isfinite(d)
                    agree = np.einsum("ij,ij->i", nb[ok], model.normals[idx[ok]]) > 0.3
                    s = float(np.sum(1 - (d[ok][agree] / tau_mm) ** 2))
                    cands.append((s, R, t, sign, psi, o, dh))
    cands.sort(key=lambda x: -x[0])
    out: list[Hypothesis] = []
    for s, R, t, sign, psi, o, dh in cands:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        if any(_close(T, h.T, model.center_ct, 6.0, 10.0) for h in out):
            continue
        out.append(Hypothesis(T, s, "sweep", 0, {"sign": sign, "psi_deg": psi,
                                                 "offset_mm": float(o), "depth_mm": dh}))
        if len(out) >= top_k:
            break
    return out
