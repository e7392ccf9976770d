"""Global pose search without a prior: many hypotheses, scored on the whole scan.

1. Hypotheses from the structure of each candidate exposure (:func:`region_hypotheses`):
   the skin around the wound gives the posterior direction, the wound's long axis the spine
   axis (both head/tail signs, a few in-plane angles), and a sweep along the axis and in depth
   places the model; a fast truncated distance score keeps the best placements.
2. Each survivor is refined briefly (robust ICP) and scored by *visibility* on the whole scan
   (:func:`visibility_score`): model points the sensor should see must be where the scan
   is, and the sensor must never see *through* where bone should be. Skin and drapes, which
   attract plain ICP / RANSAC, count against a wrong pose instead of for it.
3. The explicit look-alikes of the best pose are always refined and scored: +-1 and +-2
   levels, and the 180-degree flips about the spine and posterior axes.

Poses here are ``T_ct_from_sensor`` 4x4 matrices (the ICP direction); callers invert.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from arspine.registration._pc import unit
from arspine.registration.icp import icp_point_to_plane

__all__ = ["Hypothesis", "DepthImage", "visibility_score", "refine", "alternatives",
           "exposure_hypotheses", "region_hypotheses", "global_search"]


@dataclass
class Hypothesis:
    """A candidate ``T_ct_from_sensor`` with its score and provenance."""

    T: np.ndarray
    score: float
    kind: str = "ransac"
    votes: int = 0
    details: dict = field(default_factory=dict)


def _close(A: np.ndarray, B: np.ndarray, center_ct: np.ndarray, mm: float, deg: float) -> bool:
    D = A @ np.linalg.inv(B)
    ang = np.degrees(np.arccos(np.clip((np.trace(D[:3, :3]) - 1) / 2, -1, 1)))
    move = np.linalg.norm(D[:3, :3] @ center_ct + D[:3, 3] - center_ct)
    return ang < deg and move < mm


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
    # The line of sight through the model centre (in ct): 180 degrees about it swaps head
    # and tail while keeping the same face toward the sensor - the look-alike that matters
    # for symmetric vertebrae, whatever the posterior estimate says.
    Ti = np.linalg.inv(T)
    c_s = Ti[:3, :3] @ c + Ti[:3, 3]
    view_ct = T[:3, :3] @ (-c_s / max(np.linalg.norm(c_s), 1e-9))
    flips = [("flip_axis", model.axis_ct), ("flip_posterior", model.posterior_ct),
             ("flip_view", view_ct)]
    flips += [(f"flip_posterior{i + 2}", p) for i, p in enumerate(model.posterior_alternatives)]
    for name, ax in flips:
        ax = ax / np.linalg.norm(ax)
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
    res = icp_point_to_plane(pts[box], nrm[box], model.nearest, model.points, model.normals,
                             T, schedule_mm=schedule, iters_per_stage=iters)
    return res.T_ct_from_sensor


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


def _frame(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    a = a - (a @ n) * n
    a = a / np.linalg.norm(a)
    return np.stack([a, n, np.cross(a, n)], axis=1)


def exposure_hypotheses(scan, model, step_mm: float = 5.0, depth_steps=(-6, 0, 6),
                        psi_deg=(-30.0, -15.0, 0.0, 15.0, 30.0, 90.0), tau_mm: float = 4.0,
                        top_k: int = 8, max_points: int = 300, seed: int = 0,
                        pitch_deg=(-20.0, 0.0, 20.0),
                        roll_deg=(0.0,)) -> list[Hypothesis]:
    """Sweep hypotheses pooled over the scan's candidate exposures (best first)."""
    out: list[Hypothesis] = []
    # Proxy scores of different regions are not comparable: each region keeps its own best
    # (fewer for the less likely regions); the visibility score ranks them all later.
    for i, (mask, normal) in enumerate(scan.regions):
        k = max(2, top_k // (1 + i))
        hs = region_hypotheses(scan.fine[mask], scan.fine_normals[mask], normal, model,
                               step_mm, depth_steps, psi_deg, tau_mm, k, max_points, seed,
                               pitch_deg, roll_deg)
        for h in hs:
            h.details["region"] = i
        out += hs
    return out


def region_hypotheses(E: np.ndarray, En: np.ndarray, skin_normal: np.ndarray, model,
                      step_mm: float = 5.0, depth_steps=(-6, 0, 6),
                      psi_deg=(-12.0, 0.0, 12.0, 90.0), tau_mm: float = 4.0,
                      top_k: int = 8, max_points: int = 600, seed: int = 0,
                      pitch_deg=(-20.0, 0.0, 20.0),
                      roll_deg=(0.0,)) -> list[Hypothesis]:
    """Hypotheses from the structure of the exposure (midline sweep).

    The skin normal around the wound gives the posterior direction, the wound's long axis
    the spine axis (both signs: head/tail unknown), and a sweep along the axis (every
    ``step_mm`` over the model's length) and in depth places the model; each placement is
    scored by a fast truncated distance score on a subsample of exposure points.
    """
    from arspine.registration._pc import voxel_downsample

    if len(E) < 30:
        return []
    c = np.median(E, axis=0)
    n_s = skin_normal / np.linalg.norm(skin_normal)
    q = (E - c) - np.outer((E - c) @ n_s, n_s)
    _, _, vt = np.linalg.svd(q[:: max(1, len(q) // 4000)], full_matrices=False)
    # Two readings of the exposure: skin normal + wound axis in the skin plane, and the 3D
    # principal axes of the wound itself (its floor follows the lordotic spine, which can run
    # 30 degrees out of the skin plane). Each is tried with pitch and yaw perturbations.
    frames = [(vt[0], n_s)]
    _, _, vt3 = np.linalg.svd((E - c)[:: max(1, len(E) // 4000)], full_matrices=False)
    n3 = vt3[2] if vt3[2][2] < 0 else -vt3[2]
    if abs(vt3[0] @ vt[0]) < np.cos(np.radians(8)) or n3 @ n_s < np.cos(np.radians(8)):
        frames.append((vt3[0], n3))
    sub, subn, _, _ = voxel_downsample(E, 4.0, En)
    if len(sub) > max_points:
        pick = np.random.default_rng(seed).choice(len(sub), max_points, replace=False)
        sub, subn = sub[pick], subn[pick]
    h_e = float(np.percentile((E - c) @ n_s, 50))
    cands = []
    L = len(model.levels)
    for post0 in [model.posterior_ct, *model.posterior_alternatives]:
        # Local frames along the (curved) spine: lordosis turns the axis 20+ degrees
        # between the ends of a long CT, so each level anchors its own sweep.
        for k in range(L):
            if L >= 2:
                axis = unit(model.centroids[min(k + 1, L - 1)] - model.centroids[max(k - 1, 0)])
                half = 0.5 * float(np.linalg.norm(model.level_step_mm))
            else:
                axis = model.axis_ct
                half = 0.4 * float(np.ptp((model.points - model.center_ct) @ axis))
            post = unit(post0 - (post0 @ axis) * axis)
            F_c = _frame(axis, post)
            near = model.level_index == k
            rel = model.points[near] - model.centroids[k]
            h_m = float(np.percentile(rel @ post, 60))
            offsets = np.arange(-half, half + 1e-9, step_mm)
            grid_o, grid_d = np.meshgrid(offsets, np.asarray(depth_steps, float), indexing="ij")
            grid_o, grid_d = grid_o.ravel(), grid_d.ravel()
            targets = (model.centroids[k][None] + grid_o[:, None] * axis[None]
                       + (h_m - h_e + grid_d)[:, None] * post[None])
            for (a_f, n_f), sign, psi, pitch, roll in itertools.product(
                    frames, (1.0, -1.0), psi_deg, pitch_deg, roll_deg):
                if True:
                    ps, pt, rl = np.radians(psi), np.radians(pitch), np.radians(roll)
                    a_rot = np.cos(ps) * a_f + np.sin(ps) * np.cross(n_f, a_f)
                    # pitch: tilt axis and normal together about the lateral direction
                    a_p = np.cos(pt) * a_rot + np.sin(pt) * n_f
                    n_p = np.cos(pt) * n_f - np.sin(pt) * a_rot
                    # roll: the skin normal about the spine axis (a tilted patient, a
                    # skin ring sloping off one side of the wound)
                    n_p = np.cos(rl) * n_p + np.sin(rl) * np.cross(a_p, n_p)
                    F_s = _frame(sign * a_p, n_p)
                    R = F_c @ F_s.T                                 # ct_from_sensor
                    base = sub @ R.T
                    nb = subn @ R.T
                    ts = targets - R @ c
                    q = base[None, :, :] + ts[:, None, :]
                    d, idx = model.nearest(q.reshape(-1, 3), tau_mm)
                    d, idx = d.reshape(len(ts), -1), idx.reshape(len(ts), -1)
                    agree = np.einsum("knj,nj->kn", model.normals[np.maximum(idx, 0)],
                                      nb) > 0.3
                    w = np.where(np.isfinite(d) & agree,
                                 1 - (np.minimum(d, tau_mm) / tau_mm) ** 2, 0.0)
                    sc = w.sum(axis=1)
                    for j in np.argsort(-sc)[:3]:
                        cands.append((float(sc[j]), R, ts[j], sign, psi, grid_o[j],
                                      grid_d[j]))
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


def global_search(scan, model, depth: DepthImage, n_hypotheses: int = 8,
                  seed: int = 0) -> list[Hypothesis]:
    """Ranked hypotheses (best first), the best pose's look-alikes included.

    Parameters
    ----------
    scan : PreparedScan; model : PreparedModel; depth : DepthImage of the scan.

    Returns
    -------
    list of Hypothesis sorted by visibility score (after a brief robust ICP each).
    """
    from arspine.registration._pc import voxel_downsample

    # Each hypothesis is refined on the points of the region it came from: another region
    # (a fold, the skin beside a hand) inside a long model's box must not pull it.
    coarse = []
    for mask, _ in scan.regions:
        p, n, _, _ = voxel_downsample(scan.fine[mask], 3.0, scan.fine_normals[mask])
        coarse.append((p, n))
    hyps = exposure_hypotheses(scan, model, top_k=n_hypotheses, seed=seed)
    for h in hyps:
        Ec, Ecn = coarse[h.details.get("region", 0)]
        h.T = refine(h.T, Ec, Ecn, model, schedule=(10.0, 6.0, 4.0, 3.0), iters=4)
        h.score = visibility_score(np.linalg.inv(h.T), model, depth)[0]
    if not hyps:
        return []
    hyps.sort(key=lambda h: -h.score)
    # The look-alikes of the best pose; when one of them wins, its own look-alikes are
    # evaluated too (a flip of a shift is still a look-alike), a few rounds at most.
    done: list[np.ndarray] = []
    for _ in range(3):
        hyps.sort(key=lambda h: -h.score)
        best = hyps[0]
        if any(_close(best.T, d, model.center_ct, 3.0, 3.0) for d in done):
            break
        done.append(best.T)
        region = best.details.get("region", 0)
        Ec, Ecn = coarse[region]
        for name, Ta in alternatives(best.T, model):
            Tr = refine(Ta, Ec, Ecn, model, schedule=(6.0, 4.0, 3.0), iters=4)
            hyps.append(Hypothesis(Tr, visibility_score(np.linalg.inv(Tr), model, depth)[0],
                                   name, details={"region": region}))
    hyps.sort(key=lambda h: -h.score)
    return hyps
