"""A procedural lumbar spine phantom: CT volume in HU plus a per-level label map.

Each vertebra is a union of simple solids in its own frame (x left, y posterior, z cranial;
origin at the body centre): an elliptic body with a posterior concavity, two pedicles, the
lamina (canal roof), a caudally sloping spinous process, transverse processes, superior and
inferior articular processes (the facets, interleaved between neighbours). Sizes follow
published lumbar morphometry (:data:`MORPHOMETRY`), jittered per seed. Levels stack along a
lordotic curve with discs between the bodies. Bone has a cortical shell (~1100 HU) around a
cancellous core (~230 HU with trabecular texture); around the spine: paraspinal and psoas
muscle, visceral soft tissue, a subcutaneous fat layer and skin, air outside; CT noise on top.

The volume is in the ``ct`` frame (LPS mm). ``oblique_deg`` tilts the voxel grid against the
patient (an oblique acquisition); the anatomy stays where it is in LPS. Labels use the VerSe
ids (L1 = 20 ... L5 = 24). Written as DICOM by ``arspine.imaging.write_dicom_series``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError

__all__ = ["MORPHOMETRY", "PUBLISHED_RANGES", "Phantom", "make_phantom", "VERSE_IDS"]

#: Nominal lumbar dimensions (mm, deg). Body width/depth (upper endplate) and height, canal
#: width (interpedicular distance) and depth: Panjabi et al. 1992, "Human lumbar vertebrae:
#: quantitative three-dimensional anatomy", Spine 17(3):299-306, and Zhou et al. 2000,
#: "Geometrical dimensions of the lumbar vertebrae", Eur Spine J 9:242-248. Pedicle width
#: (transverse) and height: Zindrick et al. 1987, "Analysis of the morphometric
#: characteristics of the thoracic and lumbar pedicles", Spine 12(2):160-166. Disc heights and
#: segmental lordosis: typical adult values (Roussouly & Pinheiro-Franco 2011).
MORPHOMETRY: dict[str, dict[str, float]] = {
    "L1": dict(body_width=40.0, body_depth=32.0, body_height=25.0, pedicle_width=8.7,
               pedicle_height=15.4, canal_width=22.0, canal_depth=17.5, tp_span=72.0,
               sp_length=30.0, sp_height=22.0, disc_below=9.5, lordosis_below_deg=4.0),
    "L2": dict(body_width=42.0, body_depth=33.0, body_height=26.0, pedicle_width=8.9,
               pedicle_height=15.0, canal_width=22.5, canal_depth=17.0, tp_span=82.0,
               sp_length=31.0, sp_height=23.0, disc_below=10.5, lordosis_below_deg=6.0),
    "L3": dict(body_width=44.0, body_depth=34.0, body_height=26.5, pedicle_width=10.3,
               pedicle_height=14.9, canal_width=23.5, canal_depth=16.5, tp_span=90.0,
               sp_length=31.0, sp_height=23.0, disc_below=11.0, lordosis_below_deg=9.0),
    "L4": dict(body_width=46.0, body_depth=35.0, body_height=26.0, pedicle_width=12.9,
               pedicle_height=14.8, canal_width=24.5, canal_depth=16.5, tp_span=86.0,
               sp_length=29.0, sp_height=21.0, disc_below=11.5, lordosis_below_deg=12.0),
    "L5": dict(body_width=48.5, body_depth=35.0, body_height=25.0, pedicle_width=18.0,
               pedicle_height=14.0, canal_width=26.0, canal_depth=17.0, tp_span=92.0,
               sp_length=26.0, sp_height=18.0, disc_below=12.0, lordosis_below_deg=15.0),
}

#: Published adult ranges (approximately mean +- 2 SD over the cited series), used by the
#: tests: body width 36-54, depth 27-41, posterior height 21-31, canal width 18-30, canal depth
#: 12-22 (Panjabi 1992; Zhou 2000); pedicle width L1 5-13 ... L5 12-24 (Zindrick 1987).
PUBLISHED_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    lv: {"body_width": (36.0, 54.0), "body_depth": (27.0, 41.0), "body_height": (21.0, 31.0),
         "canal_width": (18.0, 30.0), "canal_depth": (12.0, 22.0),
         "pedicle_width": {"L1": (5.0, 13.0), "L2": (5.0, 13.0), "L3": (6.0, 15.0),
                           "L4": (8.0, 18.0), "L5": (12.0, 24.0)}[lv]}
    for lv in MORPHOMETRY
}

#: VerSe label ids of the lumbar levels.
VERSE_IDS: dict[str, int] = {"L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24}

_HU = dict(air=-1000.0, fat=-100.0, soft=35.0, muscle=55.0, skin=40.0, disc=90.0,
           cancellous=230.0, cortical=1100.0)


@dataclass
class Phantom:
    """A generated phantom.

    Attributes
    ----------
    ct : arspine.imaging.CtVolume
        HU volume, ``ct`` frame (LPS mm).
    labels : arspine.imaging.VertebraLabels
        VerSe ids on the CT grid.
    poses : dict[str, (4, 4) ndarray]
        ``T_ct_from_vertebra`` per level (vertebra frame: x left, y posterior, z cranial,
        origin at the body centre).
    dimensions : dict[str, dict[str, float]]
        The drawn dimensions per level (mm).
    seed : int
    """

    ct: object
    labels: object
    poses: dict[str, np.ndarray]
    dimensions: dict[str, dict[str, float]]
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def levels(self) -> list[str]:
        return list(self.poses)

    def anatomy(self, target_faces: int = 20000):
        """The phantom as an :class:`arspine.datasets.anatomy.Anatomy` (surfaces from
        ``arspine.imaging.vertebra_surfaces``, skin from the CT)."""
        from arspine import imaging
        from arspine.datasets.anatomy import Anatomy, _skin_points
        from arspine.navigation.geometry import Mesh

        surf = imaging.vertebra_surfaces(self.ct, self.labels, target_faces=target_faces)
        surf = {lv: Mesh(m.vertices, m.faces, name=lv, frame="ct") for lv, m in surf.items()}
        return Anatomy(surfaces=surf, axes=np.eye(3), skin_points=_skin_points(self.ct),
                       source="phantom", ct=self.ct, labels=self.labels, label_scheme="verse",
                       description=f"procedural lumbar phantom {'-'.join(self.levels)}, "
                                   f"seed {self.seed}")


def _rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _vertebra_mask(x, y, z, d: dict) -> np.ndarray:
    """Inside test of one vertebra in its own frame (arrays of mm coordinates)."""
    W, D, H = d["body_width"], d["body_depth"], d["body_height"]
    pw, ph = d["pedicle_width"], d["pedicle_height"]
    cw, cd = d["canal_width"], d["canal_depth"]
    ax = np.abs(x)
    # Body: elliptic cylinder with the posterior wall pushed in (kidney shape), endplates
    # slightly concave.
    body = ((x / (W / 2)) ** 2 + (y / (D / 2)) ** 2 <= 1.0)
    body &= np.abs(z) <= H / 2 - 0.6 * np.clip(1 - (x / (W / 2)) ** 2 - (y / (D / 2)) ** 2, 0, 1)
    body &= ~(((x / (0.45 * cw)) ** 2 + ((y - D / 2 - 2.0) / 5.0) ** 2) < 1.0)
    y_pw = D / 2 - 1.0                       # posterior wall (midline)
    y_roof = y_pw + cd - 2.0                 # canal roof (the wall's concavity adds ~2 mm)
    zp = H / 2 - ph / 2 - 1.0                # pedicles sit in the cranial half
    xp = cw / 2 + pw / 2
    ped = (((ax - xp) / (pw / 2)) ** 2 + ((z - zp) / (ph / 2)) ** 2 <= 1.0) & \
        (y >= y_pw - 6.0) & (y <= y_roof + 3.0)
    # Lamina: a plate over the canal, its caudal edge further posterior.
    y_l = y_roof + 0.22 * np.maximum(zp - z, 0.0)
    lam = (y >= y_l) & (y <= y_l + 6.5) & (ax <= cw / 2 + pw * 0.8) & \
        (z >= -H / 2 - 4.0) & (z <= H / 2 - 1.0)
    # Spinous process from the lamina backwards, sloping caudally, tapering.
    y0 = y_roof + 5.0
    t = (y - y0) / d["sp_length"]
    zc = -0.12 * H - 0.30 * (y - y0)
    sp = (t >= 0) & (t <= 1) & (ax <= 3.2 - 0.8 * t) & \
        (np.abs(z - zc) <= d["sp_height"] / 2 * (1 - 0.25 * t))
    sp |= ((y - (y0 + d["sp_length"])) / 4.0) ** 2 + (x / 3.5) ** 2 + \
        ((z - (-0.12 * H - 0.30 * d["sp_length"])) / (d["sp_height"] / 2.6)) ** 2 <= 1
    # Transverse processes: flattened, tapering rods to the lateral tips.
    x_tp0, x_tp1 = xp, d["tp_span"] / 2
    s = np.clip((ax - x_tp0) / max(x_tp1 - x_tp0, 1.0), 0, 1)
    r = 1.0 - 0.35 * s
    y_tp = y_pw + 0.75 * cd + 3.0 * s
    tp = (ax >= x_tp0) & (ax <= x_tp1) & \
        (((y - y_tp) / (4.5 * r)) ** 2 + ((z - (zp - 1.0)) / (5.0 * r)) ** 2 <= 1.0)
    # Articular processes (facets): superior ones lateral, reaching up; inferior ones medial,
    # reaching down, so neighbours interleave with a joint gap.
    xs0 = cw / 2 + pw * 0.5
    sap = (ax >= xs0) & (ax <= xs0 + 7.0) & (y >= y_roof - 3.0) & (y <= y_roof + 10.0) & \
        (z >= zp - 2.0) & (z <= H / 2 + d["disc_below"] * 0.8 + 5.0)
    iap = (ax >= xs0 - 8.5) & (ax <= xs0 - 1.5) & (y >= y_roof + 1.0) & \
        (y <= y_roof + 13.0) & (z >= -H / 2 - d["disc_below"] * 0.8 - 5.0) & (z <= -H / 2 + 8.0)
    return body | ped | lam | sp | tp | sap | iap


def make_phantom(levels=("L1", "L2", "L3", "L4", "L5"), seed: int = 0,
                 spacing_mm: float | tuple = 1.5, oblique_deg: float = 0.0,
                 noise_hu: float = 15.0, jitter: float = 0.04,
                 progress: bool = False) -> Phantom:
    """Build a lumbar spine phantom.

    Parameters
    ----------
    levels : sequence of str
        Consecutive lumbar levels among L1..L5.
    seed : int
        Size jitter, curvature, tissue thickness and noise all derive from it.
    spacing_mm : float or (3,)
        Voxel size along i, j, k.
    oblique_deg : float
        Tilt of the voxel grid against the patient axes (0 = axial acquisition).
    noise_hu : float
        Standard deviation of the CT noise.
    jitter : float
        Relative standard deviation of the per-level size draw.

    Returns
    -------
    Phantom
    """
    from scipy import ndimage

    from arspine.datasets.anatomy import sort_levels
    from arspine.imaging import CtVolume, VertebraLabels

    levels = sort_levels(levels)
    if not levels or any(lv not in MORPHOMETRY for lv in levels):
        raise InputError(f"levels must be lumbar levels among {list(MORPHOMETRY)}, got {levels}")
    idx = [list(MORPHOMETRY).index(lv) for lv in levels]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise InputError(f"levels must be consecutive, got {levels}")
    sp = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0.2) or np.any(sp > 5):
        raise InputError(f"spacing_mm must be in (0.2, 5] mm, got {spacing_mm}")
    rng = np.random.default_rng(seed)

    # Per-level dimensions and poses along a lordotic curve (L1 on top).
    dims: dict[str, dict[str, float]] = {}
    for lv in levels:
        f = float(np.clip(rng.normal(1.0, jitter), 0.9, 1.1))
        dims[lv] = {k: (v * f * float(np.clip(rng.normal(1.0, jitter / 2), 0.95, 1.05))
                        if k != "lordosis_below_deg" else v + rng.normal(0, 1.5))
                    for k, v in MORPHOMETRY[lv].items()}
    angles = [0.0]
    for lv in levels[:-1]:
        angles.append(angles[-1] + dims[lv]["lordosis_below_deg"])
    angles = np.array(angles) - np.mean(angles)
    poses: dict[str, np.ndarray] = {}
    c = np.zeros(3)
    bend = rng.normal(0, 1.0, len(levels))
    twist = rng.normal(0, 1.5, len(levels))
    for i, lv in enumerate(levels):
        # Lordosis: the curve is convex anteriorly (-y): L5's cranial axis leans anteriorly,
        # L1's posteriorly (rot_x(+a) maps +z to (0, -sin a, cos a)).
        R = _rot_x(angles[i]) @ _rot_y(bend[i]) @ _rot_z(twist[i])
        if i > 0:
            prev = levels[i - 1]
            step = dims[prev]["body_height"] / 2 + dims[prev]["disc_below"] + \
                dims[lv]["body_height"] / 2
            mid = _rot_x((angles[i] + angles[i - 1]) / 2)
            c = c - step * (mid @ np.array([0, 0, 1.0]))
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, c
        poses[lv] = T
    # Centre the spine: bodies around y = +35 (posterior half of the trunk), z around 0.
    cz = np.mean([T[2, 3] for T in poses.values()])
    cy = np.mean([T[1, 3] for T in poses.values()])
    for T in poses.values():
        T[1, 3] += 35.0 - cy
        T[2, 3] -= cz

    # Trunk outline: super-ellipse, back at y ~ +150, belly at y ~ -115, sides +-150.
    half_w = 150.0 * rng.uniform(0.92, 1.08)
    back_y = 150.0 * rng.uniform(0.95, 1.05)
    belly_y = -115.0 * rng.uniform(0.9, 1.1)
    z_top = max(T[2, 3] for T in poses.values()) + 45.0
    z_bot = min(T[2, 3] for T in poses.values()) - 45.0
    lo = np.array([-half_w - 10, belly_y - 10, z_bot])
    hi = np.array([half_w + 10, back_y + 10, z_top])
    # Grid (possibly oblique) covering the box.
    Rg = _rot_x(oblique_deg * 0.6) @ _rot_y(oblique_deg * 0.8) if oblique_deg else np.eye(3)
    centre = (lo + hi) / 2
    corners = np.array([[a, b, cc] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for cc in (lo[2], hi[2])]) - centre
    loc = corners @ Rg  # in grid axes
    ext = loc.max(0) - loc.min(0)
    shape = np.maximum(np.ceil(ext / sp).astype(int) + 1, 2)
    A = np.eye(4)
    A[:3, :3] = Rg * sp[None, :]
    A[:3, 3] = centre - A[:3, :3] @ ((shape - 1) / 2)
    I, J, K = shape

    def world(ii, jj, kk):
        return (A[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), kk.ravel()]).astype(np.float64)
                ).T + A[:3, 3]

    ii, jj, kk = np.meshgrid(np.arange(I), np.arange(J), np.arange(K), indexing="ij")
    P = world(ii, jj, kk).astype(np.float32)
    del ii, jj, kk
    x, y = P[:, 0], P[:, 1]
    hu = np.full(I * J * K, _HU["air"], dtype=np.float32)

    def outline(shrink):
        yc = (back_y + belly_y) / 2
        hy = (back_y - belly_y) / 2 - shrink
        return (np.abs(x) / (half_w - shrink)) ** 2.4 + (np.abs(y - yc) / hy) ** 2.4 <= 1.0

    fat_t = rng.uniform(12, 25)
    hu[outline(0.0)] = _HU["skin"]
    hu[outline(2.0)] = _HU["fat"]
    inner = outline(fat_t)
    hu[inner] = _HU["soft"] + 25 * np.sin(x[inner] / 17.0 + seed) * np.cos(y[inner] / 23.0)
    # Muscles: paraspinal (erector spinae + multifidus) beside the spinous processes, psoas
    # beside the bodies.
    ys = np.mean([T[1, 3] for T in poses.values()])
    para = ((np.abs(x) - 32.0) / 30.0) ** 2 + ((y - (ys + 55.0)) / 33.0) ** 2 <= 1.0
    psoas = ((np.abs(x) - 38.0) / 18.0) ** 2 + ((y - (ys - 5.0)) / 20.0) ** 2 <= 1.0
    hu[(para | psoas) & inner] = _HU["muscle"]
    del inner, para, psoas

    labels = np.zeros(I * J * K, dtype=np.uint8)
    bone = np.zeros(I * J * K, dtype=bool)
    Ainv = np.linalg.inv(A)

    def box_indices(T, bb):
        """Flat voxel indices of the grid box covering local corners ``bb`` posed by ``T``."""
        wpts = bb @ T[:3, :3].T + T[:3, 3]
        ijk = wpts @ Ainv[:3, :3].T + Ainv[:3, 3]
        i0 = np.clip(np.floor(ijk.min(0)).astype(int), 0, shape - 1)
        i1 = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 1, shape)
        g = np.meshgrid(*[np.arange(i0[a], i1[a]) for a in range(3)], indexing="ij")
        return np.ravel_multi_index([gg.ravel() for gg in g], tuple(shape))

    # Discs between consecutive bodies.
    for a, b in zip(levels[:-1], levels[1:]):
        Ta, Tb = poses[a], poses[b]
        cm = (Ta[:3, 3] + Tb[:3, 3]) / 2
        u = (Ta[:3, 3] - Tb[:3, 3]) / np.linalg.norm(Ta[:3, 3] - Tb[:3, 3])
        ex = np.array([1.0, 0, 0]) - u[0] * u
        ex /= np.linalg.norm(ex)
        Rm = np.stack([ex, np.cross(u, ex), u], 1)
        W = (dims[a]["body_width"] + dims[b]["body_width"]) / 2 * 0.97
        Dd = (dims[a]["body_depth"] + dims[b]["body_depth"]) / 2 * 0.97
        half = np.linalg.norm(Ta[:3, 3] - Tb[:3, 3]) / 2
        Tm = np.eye(4)
        Tm[:3, :3], Tm[:3, 3] = Rm, cm
        flat = box_indices(Tm, np.array([[sx * W / 2, sy * Dd / 2, sz * half]
                                         for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]))
        q = (P[flat] - cm) @ Rm
        disc = ((q[:, 0] / (W / 2)) ** 2 + (q[:, 1] / (Dd / 2)) ** 2 <= 1) & \
            (np.abs(q[:, 2]) <= half)
        hu[flat[disc]] = _HU["disc"]
    from tqdm.auto import tqdm

    for lv in tqdm(levels, disable=not progress, desc="phantom"):
        T = poses[lv]
        d = dims[lv]
        # Voxel box of this vertebra (its local bounding box mapped to the grid).
        bb = np.array([[sx * (d["tp_span"] / 2 + 4), sy, sz]
                       for sx in (-1, 1)
                       for sy in (-d["body_depth"] / 2 - 4,
                                  d["body_depth"] / 2 + d["canal_depth"] + d["sp_length"] + 14)
                       for sz in (-d["body_height"] / 2 - d["disc_below"] - 12,
                                  d["body_height"] / 2 + d["disc_below"] + 12)])
        flat = box_indices(T, bb)
        q = (P[flat] - T[:3, 3]) @ T[:3, :3]
        m = _vertebra_mask(q[:, 0], q[:, 1], q[:, 2], d)
        take = flat[m & (labels[flat] == 0)]
        labels[take] = VERSE_IDS[lv]
        bone[take] = True
    labels = labels.reshape(shape)
    bone = bone.reshape(shape)
    # Cortical shell ~1.5 mm around a cancellous core with trabecular texture.
    n_er = max(1, int(round(1.5 / float(sp.min()))))
    hu = hu.reshape(shape)
    box = ndimage.find_objects(bone.astype(np.uint8))[0]
    core = np.zeros_like(bone)
    core[box] = ndimage.binary_erosion(bone[box], iterations=n_er)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, bone[box].shape).astype(np.float32), 1.0)
    tex *= 60.0 / max(float(tex.std()), 1e-6)
    hu[bone] = _HU["cortical"] + rng.normal(0, 80, int(bone.sum()))
    hb = hu[box]
    hb[core[box]] = _HU["cancellous"] + tex[core[box]]
    hu += rng.normal(0, noise_hu, shape).astype(np.float32)
    hu = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    ct = CtVolume(hu, A, meta={"source": "arspine phantom", "seed": int(seed),
                               "series_description": "arspine lumbar phantom"})
    names = {VERSE_IDS[lv]: lv for lv in levels}
    lab = VertebraLabels(labels, A, names, meta={"scheme": "verse", "source": "phantom"})
    return Phantom(ct=ct, labels=lab, poses=poses, dimensions=dims, seed=int(seed),
                   meta={"spacing_mm": sp.tolist(), "oblique_deg": float(oblique_deg)})
