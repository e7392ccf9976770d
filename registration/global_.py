"""Global pose search without a prior: many hypotheses, scored on the whole scan.

1. Per candidate exposure, hypotheses from dense template matching of the exposure's normal
   field against the model's (:mod:`arspine.registration.template`, the default) and/or
   from rotations derived from its shape (:func:`rotation_candidates`: the skin normal is
   the posterior direction, the wound's long axis the spine axis, both signs, yaw and pitch
   around them) with the translations voted by normal-compatible point pairs
   (:func:`hough_translations`), ranked by a truncated fit score (:func:`proxy_scores`).
2. The best distinct ones are refined by a coarse-to-fine pattern search on that score
   (:func:`pattern_search`, basin 10-15 deg / 10-15 mm) and scored by *visibility* on the
   whole scan (:func:`visibility_score`): model points the sensor should see must be where
   the scan is, facing the same way, and the sensor must never see *through* where bone
   should be. Skin and drapes, which attract plain ICP / RANSAC, count against a wrong pose.
3. The explicit look-alikes of the best pose are always refined and scored: +-1 and +-2
   levels, and the 180-degree flips about the spine, posterior and viewing axes.

Poses here are ``T_ct_from_sensor`` 4x4 matrices (the ICP direction); callers invert.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from arspine.registration._pc import unit

__all__ = ["Hypothesis", "DepthImage", "visibility_score", "facing_deg", "alternatives",
           "rotation_candidates", "hough_translations", "proxy_scores", "pattern_search",
           "global_search"]


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


class DepthImage:
    """The scan as a depth map over viewing angle: nearest ``z`` per (x/z, y/z) bin.

    Used to test model points against what the sensor saw along the same ray: a scan point
    well *behind* a model point means the sensor saw through where bone should be (free-space
    violation: strong evidence against the pose); one in *front* is an occlusion (neutral).
    With ``normals`` (unit, toward the sensor; zero where unknown) each bin also keeps the
    normal of its nearest point, so support can require the surface to face the same way.
    """

    def __init__(self, points: np.ndarray, bin_rad: float = 0.0035,
                 normals: np.ndarray | None = None):
        z = points[:, 2]
        ok = z > 1e-6
        p = points[ok]
        self.bin = bin_rad
        u = np.floor(p[:, 0] / p[:, 2] / bin_rad).astype(np.int64)
        v = np.floor(p[:, 1] / p[:, 2] / bin_rad).astype(np.int64)
        self.u0, self.v0 = int(u.min()), int(v.min())
        self.shape = (int(u.max()) - self.u0 + 1, int(v.max()) - self.v0 + 1)
        lin = (u - self.u0) * self.shape[1] + (v - self.v0)
        order = np.lexsort((p[:, 2], lin))
        first = order[np.r_[True, lin[order][1:] != lin[order][:-1]]]
        self.depth = np.full(self.shape, np.inf)
        self.depth.ravel()[lin[first]] = p[first, 2]
        self.normals = None
        if normals is not None:
            self.normals = np.zeros(self.shape + (3,))
            self.normals.reshape(-1, 3)[lin[first]] = normals[ok][first]

    def _bins(self, pts: np.ndarray):
        z = pts[:, 2]
        ok = z > 1e-6
        u = np.floor(pts[ok, 0] / z[ok] / self.bin).astype(np.int64) - self.u0
        v = np.floor(pts[ok, 1] / z[ok] / self.bin).astype(np.int64) - self.v0
        inside = (u >= 0) & (u < self.shape[0]) & (v >= 0) & (v < self.shape[1])
        return np.flatnonzero(ok)[inside], u[inside], v[inside]

    def lookup(self, pts: np.ndarray) -> np.ndarray:
        """Scan depth (z, mm) on the rays of ``pts`` (sensor frame); inf when none."""
        out = np.full(len(pts), np.inf)
        idx, u, v = self._bins(pts)
        out[idx] = self.depth[u, v]
        return out

    def lookup_normals(self, pts: np.ndarray) -> np.ndarray:
        """Scan normal on the rays of ``pts`` (zero when none or unknown)."""
        out = np.zeros((len(pts), 3))
        if self.normals is not None:
            idx, u, v = self._bins(pts)
            out[idx] = self.normals[u, v]
        return out


def visibility_score(T_sensor_from_ct: np.ndarray, model, depth: DepthImage,
                     tau_mm: float = 3.0, violation_mm: float = 5.0,
                     violation_weight: float = 1.0, mask: np.ndarray | None = None,
                     min_normal_dot: float = 0.5):
    """Support minus free-space violations of the model's sensor-facing shell points.

    Returns ``(score, n_support, n_violation, n_facing)``; with ``mask`` only those shell
    points count. When ``depth`` holds normals, support also needs the scan normal within
    ``acos(min_normal_dot)`` of the model's.
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
    if depth.normals is not None:
        # Support needs the seen surface to face the way the bone does: a smooth drape
        # under a wrongly placed spine matches depths, not the relief's normals.
        sup &= np.einsum("ij,ij->i", depth.lookup_normals(ps), ns[facing]) > min_normal_dot
    viol = np.isfinite(dz) & (dz > violation_mm)
    s = float(np.sum(1.0 - (dz[sup] / tau_mm) ** 2) - violation_weight * np.sum(viol))
    return s, int(sup.sum()), int(viol.sum()), int(facing.sum())


def _frame(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    a = a - (a @ n) * n
    a = a / np.linalg.norm(a)
    return np.stack([a, n, np.cross(a, n)], axis=1)


def _in_plane_axes(E: np.ndarray, c: np.ndarray, n: np.ndarray):
    """Principal axes (rows) and extents of ``E - c`` projected on the plane normal to ``n``."""
    q = (E - c) - np.outer((E - c) @ n, n)
    _, sv, vt = np.linalg.svd(q[:: max(1, len(q) // 4000)], full_matrices=False)
    return vt, sv


def rotation_candidates(E: np.ndarray, skin_normal: np.ndarray, model,
                        psi_deg=(-30.0, -15.0, 0.0, 15.0, 30.0),
                        pitch_deg=(-15.0, 0.0, 15.0),
                        round_ratio: float = 1.6) -> list[np.ndarray]:
    """Candidate rotations (``R_ct_from_sensor``) from the shape of one exposure.

    The skin normal around the wound is the posterior direction and the wound's long axis
    the spine axis, each a few tens of degrees off on real scans (skin sloping off the flank,
    a wound split by a tool): both signs of the axis, yaw ``psi_deg`` about the normal and
    pitch ``pitch_deg`` about the lateral direction are tried; a wound that is not elongated
    (in-plane extent ratio below ``round_ratio``) gets the whole circle of yaws every 30 deg.
    """
    c = np.median(E, axis=0)
    n_s = unit(skin_normal)
    vt, sv = _in_plane_axes(E, c, n_s)
    frames = [(vt[0], n_s)]
    # The line of sight is a second reading of the posterior direction when the skin ring
    # disagrees with it by more than 20 deg: on scans of the real CT the ring was up to 70 deg
    # off (drapes sloping beside the wound) while the line of sight stayed within 11-20 deg
    # (a camera over an open spine looks at its back).
    view = unit(-c)
    if view @ n_s < np.cos(np.radians(20)):
        frames.append((_in_plane_axes(E, c, view)[0][0], view))
    if sv[0] < round_ratio * max(sv[1], 1e-9):
        yaws = [(1.0, float(p)) for p in np.arange(0.0, 360.0, 30.0)]
    else:
        yaws = [(sg, float(p)) for sg in (1.0, -1.0) for p in psi_deg]
    out = []
    for post0 in [model.posterior_ct, *model.posterior_alternatives]:
        post = unit(post0 - (post0 @ model.axis_ct) * model.axis_ct)
        F_c = _frame(model.axis_ct, post)
        for (a_f, n_f), (sign, psi), pitch in itertools.product(frames, yaws, pitch_deg):
            ps, pt = np.radians(psi), np.radians(pitch)
            a_rot = np.cos(ps) * a_f + np.sin(ps) * np.cross(n_f, a_f)
            a_p = np.cos(pt) * a_rot + np.sin(pt) * n_f
            n_p = np.cos(pt) * n_f - np.sin(pt) * a_rot
            out.append(F_c @ _frame(sign * a_p, n_p).T)
    return out


def hough_translations(R: np.ndarray, S: np.ndarray, Sn: np.ndarray, M: np.ndarray,
                       Mn: np.ndarray, bin_mm: float = 5.0, cos_min: float = 0.85,
                       top: int = 3) -> list[tuple[np.ndarray, float]]:
    """Translations that bring scan points onto the model under rotation ``R``, by voting.

    Every pair of a scan point and a model point whose normals agree under ``R`` votes for
    ``t = m - R s``; bone seen in the exposure votes coherently for the true translation
    (and for the one-level shifts), clutter scatters. Returns up to ``top`` peaks
    ``(t (3,), votes)`` of the 2x2x2-smoothed vote grid, strongest first, at least 3 bins
    apart.
    """
    Sr = S @ R.T
    si, mi = np.nonzero((Sn @ R.T) @ Mn.T > cos_min)
    if len(si) == 0:
        return []
    t = M[mi] - Sr[si]
    k = np.floor(t / bin_mm).astype(np.int64)
    lo = k.min(axis=0)
    k -= lo
    dims = k.max(axis=0) + 2
    lin = (k[:, 0] * dims[1] + k[:, 1]) * dims[2] + k[:, 2]
    acc = np.bincount(lin, minlength=int(np.prod(dims))).reshape(dims).astype(np.float32)
    for ax in range(3):  # sum over 2 bins per axis: a peak on a bin edge is not split
        sh = [slice(None)] * 3
        sh2 = [slice(None)] * 3
        sh[ax], sh2[ax] = slice(None, -1), slice(1, None)
        acc[tuple(sh)] += acc[tuple(sh2)]
    flat = acc.ravel()
    n_c = min(60, len(flat) - 1)
    cand = np.argpartition(-flat, n_c)[:n_c]
    cand = cand[np.argsort(-flat[cand])]
    out: list = []
    for j in cand:
        ijk = np.array(np.unravel_index(j, dims))
        if any(np.abs(ijk - p).max() <= 3 for p, _ in out):
            continue
        out.append((ijk, float(flat[j])))
        if len(out) >= top:
            break
    return [((ijk + lo + 1.0) * bin_mm, v) for ijk, v in out]


def proxy_scores(Ts: np.ndarray, P: np.ndarray, Pn: np.ndarray, model,
                 tau_mm: float) -> np.ndarray:
    """Truncated-quadratic fit of scan points ``P`` to the model under each pose ``Ts``.

    ``Ts`` (K, 4, 4) ``T_ct_from_sensor``; a point counts ``1 - (d / tau)^2`` when its
    nearest model point is within ``tau_mm`` and the normals agree. ``model``: a
    PreparedModel or a one-level view of it (``multibody._LevelView``: that level's points
    only). Returns (K,) scores.
    """
    from arspine.registration._kernels import proxy_scores_kernel

    return proxy_scores_kernel(np.ascontiguousarray(Ts, dtype=np.float64),
                               np.ascontiguousarray(P, dtype=np.float64),
                               np.ascontiguousarray(Pn, dtype=np.float64), float(tau_mm),
                               *model.grid_args())


def _moves(step_deg: float, step_mm: float, c: np.ndarray) -> np.ndarray:
    """The 12 pattern moves (4, 4): +-step rotations about the axes through ``c``, +-step
    translations along them."""
    th = np.radians(step_deg)
    co, si = np.cos(th), np.sin(th)
    out = np.tile(np.eye(4), (12, 1, 1))
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        for m, s in enumerate((-1.0, 1.0)):
            R = out[2 * k + m, :3, :3]
            R[i, i] = R[j, j] = co
            R[i, j], R[j, i] = -s * si, s * si
            out[2 * k + m, :3, 3] = c - R @ c
            out[6 + 2 * k + m, k, 3] = s * step_mm
    return out


def pattern_search(T: np.ndarray, P: np.ndarray, Pn: np.ndarray, model,
                   taus=(8.0, 5.0, 3.0), step=(6.0, 6.0), min_step_deg: float = 0.5,
                   coarse_min_step_deg: float = 1.0) -> np.ndarray:
    """Local search of the pose that maximises :func:`proxy_scores` (coarse to fine ``tau``).

    Moves of +-``step`` (deg about the points' centre, mm) along each of the 6 axes; the best
    improving move is taken, the steps halve when none improves. With a wide ``tau`` first
    the basin reaches 10-15 deg / 10-15 mm, where point-to-plane ICP on the same points,
    pulled by the wound walls and the repeating laminae, reaches about 5.
    """
    T = np.array(T, dtype=np.float64)
    for i, tau in enumerate(taus):
        sd, sm = (step if i == 0 else (step[0] / 2, step[1] / 2))
        cur = proxy_scores(T[None], P, Pn, model, tau)[0]
        stop = min_step_deg if i == len(taus) - 1 else coarse_min_step_deg
        while sd >= stop:
            c = P.mean(axis=0) @ T[:3, :3].T + T[:3, 3]
            Ts = _moves(sd, sm, c) @ T
            s = proxy_scores(Ts, P, Pn, model, tau)
            j = int(np.argmax(s))
            if s[j] > cur:
                T, cur = Ts[j], s[j]
            else:
                sd, sm = sd / 2, sm / 2
    return T


def facing_deg(T_ct_from_sensor: np.ndarray, model) -> float:
    """Angle (deg) between the back of the posed model and the line of sight to it.

    The best over the posterior candidates (``posterior_ct`` and its alternatives): a depth
    camera over an open spine sees its back, so large angles mean an implausible pose.
    """
    Ts = np.linalg.inv(T_ct_from_sensor)
    c_s = Ts[:3, :3] @ model.center_ct + Ts[:3, 3]
    view = -c_s / max(np.linalg.norm(c_s), 1e-9)
    cos = max(float((Ts[:3, :3] @ p) @ view)
              for p in [model.posterior_ct, *model.posterior_alternatives])
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _region_points(E, En, voxel, n_max, rng):
    from arspine.registration._pc import voxel_downsample

    p, n, _, _ = voxel_downsample(E, voxel, En)
    if len(p) > n_max:
        pick = rng.choice(len(p), n_max, replace=False)
        p, n = p[pick], n[pick]
    return p, n


def global_search(scan, model, depth: DepthImage, n_hypotheses: int = 8,
                  seed: int = 0, max_facing_deg: float = 60.0, n_vote_points: int = 120,
                  n_score_points: int = 600, vote_voxel_mm: float = 5.0,
                  sources: tuple = ("template",), n_template: int = 8,
                  max_template_regions: int = 2
                  ) -> list[Hypothesis]:
    """Ranked hypotheses (best first), the best pose's look-alikes included.

    Per candidate exposure: poses from template matching (``"template"`` in ``sources``,
    :func:`arspine.registration.template.template_candidates`, ``n_template`` of them in the
    first region, half in the second, none beyond ``max_template_regions``) and/or
    rotations from its shape (:func:`rotation_candidates`) with the translations voted by
    normal-compatible point pairs (``"hough"``, :func:`hough_translations`, ranked by
    :func:`proxy_scores`); the best few distinct ones are refined by
    :func:`pattern_search` and scored by visibility on the whole scan. Poses whose back
    does not face the sensor are not considered (a depth camera over an open spine sees the
    back). The look-alikes of the best pose (+-1, +-2 levels, 180-degree flips) are always
    refined and scored, several rounds when one of them wins.

    Parameters
    ----------
    scan : PreparedScan; model : PreparedModel; depth : DepthImage of the scan.

    Returns
    -------
    list of Hypothesis sorted by visibility score; ``details["region"]`` is the exposure.
    """
    from arspine.registration._pc import voxel_downsample

    rng = np.random.default_rng(seed)
    if "hough" in sources:
        M, Mn, _, _ = voxel_downsample(model.points, vote_voxel_mm, model.normals)
    pts = []
    hyps: list[Hypothesis] = []
    for i, (mask, normal) in enumerate(scan.regions):
        E, En = scan.fine[mask], scan.fine_normals[mask]
        # Bone is the floor of the wound: two thirds of the voting points come from the
        # deepest 40 % along the skin normal (there the bone fraction is about doubled when
        # skin, walls and retractors dominate the region), a third from anywhere.
        h = (E - np.median(E, axis=0)) @ unit(normal)
        deep = h <= np.percentile(h, 40)
        S1, Sn1 = _region_points(E[deep], En[deep], 4.0, (2 * n_vote_points) // 3, rng)
        S2, Sn2 = _region_points(E, En, 4.0, n_vote_points - len(S1), rng)
        S, Sn = np.vstack([S1, S2]), np.vstack([Sn1, Sn2])
        P1, Pn1 = _region_points(E[deep], En[deep], 3.0, (2 * n_score_points) // 3, rng)
        P2, Pn2 = _region_points(E, En, 3.0, n_score_points - len(P1), rng)
        P, Pn = np.vstack([P1, P2]), np.vstack([Pn1, Pn2])
        pts.append((P, Pn))
        if len(S) < 12:
            continue
        kept: list[tuple[np.ndarray, str]] = []
        if "template" in sources and i < max_template_regions:
            # Dense 2.5D matching of the exposure's normal field against the model's
            # (template.py): it uses the whole wound floor, which follows the spine's relief,
            # where the votes below use a few hundred points; on fresh scans it put the
            # right pose in its top 12 on ~80 % of scans against ~60 % for the votes.
            from arspine.registration.template import template_candidates

            for T, _ in template_candidates(E, En, model,
                                            n_out=n_template if i == 0 else n_template // 2):
                if facing_deg(T, model) <= max_facing_deg and not any(
                        _close(T, k, model.center_ct, 8.0, 10.0) for k, _ in kept):
                    kept.append((T, "template"))
        cands = [np.r_[np.c_[R, t], [[0, 0, 0, 1]]]
                 for R in rotation_candidates(E, normal, model,
                                              pitch_deg=(-15.0, 0.0, 15.0) if i < 2 else (0.0,))
                 for t, _ in hough_translations(R, S, Sn, M, Mn)] if "hough" in sources else []
        cands = [T for T in cands if facing_deg(T, model) <= max_facing_deg]
        if cands:
            Ts = np.array(cands)
            sc = proxy_scores(Ts, P, Pn, model, 5.0)
            n_h = 0
            for j in np.argsort(-sc):
                if any(_close(Ts[j], k, model.center_ct, 8.0, 10.0) for k, _ in kept):
                    continue
                kept.append((Ts[j], "hough"))
                n_h += 1
                if n_h >= max(2, n_hypotheses // (1 + i)):
                    break
        for T0, kind in kept:
            T = pattern_search(T0, P, Pn, model)
            hyps.append(Hypothesis(T, visibility_score(np.linalg.inv(T), model, depth)[0],
                                   kind, details={"region": i}))
    if not hyps:
        return []
    # The look-alikes of the best pose, and of the best pose on the first exposure (the
    # deepest: a pose on a drape fold elsewhere can outscore the wound's pose until the
    # wound's pose is shifted to the right level); when one of them wins, its own
    # look-alikes are evaluated too (a flip of a shift is still a look-alike), a few rounds
    # at most.
    done: list[np.ndarray] = []
    for round_ in range(3):
        hyps.sort(key=lambda h: -h.score)
        best = hyps[0]
        if any(_close(best.T, d, model.center_ct, 3.0, 3.0) for d in done):
            break
        todo = [best]
        first = next((h for h in hyps if h.details.get("region", 0) == 0), None)
        if round_ == 0 and first is not None and first is not best:
            todo.append(first)
        for h in todo:
            done.append(h.T)
            region = h.details.get("region", 0)
            P, Pn = pts[region]
            for name, Ta in alternatives(h.T, model):
                Tr = pattern_search(Ta, P, Pn, model, taus=(5.0, 3.0), step=(3.0, 3.0))
                s = visibility_score(np.linalg.inv(Tr), model, depth)[0]
                if facing_deg(Tr, model) > max_facing_deg:
                    s = -np.inf
                hyps.append(Hypothesis(Tr, s, name, details={"region": region}))
    hyps.sort(key=lambda h: -h.score)
    return hyps
