"""Scan clean-up: range crop, outlier removal, voxel downsampling, normals toward the sensor.

The output is a :class:`PreparedScan` with two resolutions in the ``sensor`` frame:
``fine`` points (for ICP and the final score) and ``coarse`` points with normals, surface
variation and FPFH at the salient (curved) ones (for the global search). Flat skin and
drapes, most of any scan, are kept for scoring but never become keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import PointCloud, as_points
from arspine.registration._pc import estimate_normals, fpfh, voxel_downsample

__all__ = ["PreparedScan", "prepare_scan", "ScanConfig"]


@dataclass(frozen=True)
class ScanConfig:
    """Clean-up parameters (mm)."""

    min_range_mm: float = 100.0
    max_range_mm: float = 2000.0
    fine_voxel_mm: float = 1.5
    coarse_voxel_mm: float = 3.0
    normal_radius_mm: float = 7.0
    feature_radius_mm: float = 12.0
    min_fine_per_coarse: int = 2          # coarse voxels with fewer fine points are outliers
    key_fraction: float = 0.35            # share of coarse points kept as keypoints (most curved)
    max_keypoints: int = 6000
    exposure_bin_mm: float = 3.5          # depth-map bin at the median range
    exposure_window_mm: float = 90.0      # wider than the wound
    exposure_depth_mm: float = 6.0        # deeper than the skin by this much
    exposure_min_area_mm2: float = 600.0


@dataclass
class PreparedScan:
    """A cleaned scan in the ``sensor`` frame (mm).

    Attributes
    ----------
    fine : (F, 3) points; fine_normals : (F, 3) unit normals toward the sensor.
    coarse : (C, 3) points; coarse_normals : (C, 3); variation : (C,) surface variation.
    key_index : (K,) indices into ``coarse``; key_features : (K, 33) FPFH.
    sensor_origin : (3,) the sensor position (origin of the sensor frame).
    n_input : int, number of input points.
    exposure : (F,) bool, fine points inside the surgical exposure (all True when no
        surrounding skin was found).
    exposure_found : bool, an enclosed exposure was found.
    skin_normal : (3,) unit normal of the skin around the exposure, toward the sensor.
    """

    fine: np.ndarray
    fine_normals: np.ndarray
    coarse: np.ndarray
    coarse_normals: np.ndarray
    variation: np.ndarray
    key_index: np.ndarray
    key_features: np.ndarray
    sensor_origin: np.ndarray
    n_input: int
    exposure: np.ndarray | None = None
    exposure_found: bool = False
    skin_normal: np.ndarray | None = None

    @property
    def key_points(self) -> np.ndarray:
        return self.coarse[self.key_index]

    @property
    def key_normals(self) -> np.ndarray:
        return self.coarse_normals[self.key_index]


def _surface_variation(points: np.ndarray, k: int = 12) -> np.ndarray:
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    _, idx = tree.query(points, k=min(k, len(points)), workers=2)
    nb = points[idx]
    nb = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    ev = np.linalg.eigvalsh(cov)
    return ev[:, 0] / np.maximum(ev.sum(axis=1), 1e-12)


def prepare_scan(scan: object, config: ScanConfig | None = None,
                 features: bool = True) -> PreparedScan:
    """Clean a raw scan.

    Parameters
    ----------
    scan : PointCloud (frame ``sensor``) or (N, 3) array_like, mm
        The intraoperative point cloud; the sensor sits at the origin looking along +z.
    config : ScanConfig, optional
    features : bool
        Compute keypoints and FPFH (needed for the global search only).

    Returns
    -------
    PreparedScan

    Raises
    ------
    InputError
        Wrong shape, NaN, or nothing left after the range crop.
    """
    cfg = config or ScanConfig()
    if isinstance(scan, PointCloud):
        if scan.frame != "sensor":
            raise InputError(f"scan must be in the 'sensor' frame, got frame '{scan.frame}'")
        pts = scan.points
    else:
        pts = as_points(scan, "scan", allow_empty=True)
    n_in = len(pts)
    if n_in == 0:
        raise InputError("scan is empty (0 points)")
    rng_mm = np.linalg.norm(pts, axis=1)
    pts = pts[(rng_mm >= cfg.min_range_mm) & (rng_mm <= cfg.max_range_mm)]
    if len(pts) < 10:
        raise InputError(f"scan has {len(pts)} points within {cfg.min_range_mm:g}-"
                         f"{cfg.max_range_mm:g} mm of the sensor (of {n_in}); is it in mm and "
                         f"in the sensor frame?")
    fine, _, _, _ = voxel_downsample(pts, cfg.fine_voxel_mm)
    # Outliers are isolated: a coarse voxel holding fewer than 2 fine points is noise.
    key = np.floor(fine / cfg.coarse_voxel_mm).astype(np.int64)
    key -= key.min(axis=0)
    dims = key.max(axis=0) + 1
    lin = (key[:, 0] * dims[1] + key[:, 1]) * dims[2] + key[:, 2]
    _, inv, cnt = np.unique(lin, return_inverse=True, return_counts=True)
    fine = fine[cnt[inv] >= cfg.min_fine_per_coarse]
    if len(fine) < 10:
        raise InputError(f"scan has only {len(fine)} points left after outlier removal "
                         f"(of {n_in})")
    coarse, _, _, _ = voxel_downsample(fine, cfg.coarse_voxel_mm)
    origin = np.zeros(3)
    cn = estimate_normals(coarse, cfg.normal_radius_mm, 20, toward=origin)
    # Fine normals: the normal of the nearest coarse point (cheap, good enough for gating).
    from scipy.spatial import cKDTree

    ctree = cKDTree(coarse)
    _, ci = ctree.query(fine, k=1, workers=2)
    fn = cn[ci]
    var = _surface_variation(coarse) if len(coarse) >= 12 else np.zeros(len(coarse))
    if features and len(coarse) >= 12:
        n_key = int(min(cfg.max_keypoints, max(50, cfg.key_fraction * len(coarse))))
        key_index = np.argsort(-var)[:n_key]
        # FPFH needs the neighbourhood of the keypoints only (2 radii covers SPFH of SPFH).
        near = np.unique(np.concatenate(
            ctree.query_ball_point(coarse[key_index], 2 * cfg.feature_radius_mm,
                                   workers=2, return_sorted=False)
        ).astype(np.int64)) if len(key_index) else np.zeros(0, np.int64)
        feats_all = fpfh(coarse[near], cn[near], cfg.feature_radius_mm)
        pos = np.searchsorted(near, key_index)
        feats = feats_all[pos]
    else:
        key_index = np.zeros(0, dtype=np.int64)
        feats = np.zeros((0, 33), dtype=np.float32)
    expo, found, skin_n = find_exposure(fine, cfg)
    return PreparedScan(fine=fine, fine_normals=fn, coarse=coarse, coarse_normals=cn,
                        variation=var, key_index=key_index, key_features=feats,
                        sensor_origin=origin, n_input=n_in, exposure=expo,
                        exposure_found=found, skin_normal=skin_n)


def find_exposure(points: np.ndarray, cfg: ScanConfig | None = None):
    """Fine points inside the surgical exposure: a region enclosed by skin, deeper than it.

    The skin (and drapes) form the front-most smooth surface; a grey opening of the depth
    map over a window wider than the wound estimates it across the wound. Bins more than
    ``exposure_depth_mm`` behind it that form a region enclosed by valid skin (not touching
    the image border or the empty outside) are the exposure.

    Returns
    -------
    mask : (N,) bool; found : bool; skin_normal : (3,) unit vector toward the sensor.
    """
    from scipy import ndimage

    cfg = cfg or ScanConfig()
    z = points[:, 2]
    zmed = float(np.median(z))
    b = cfg.exposure_bin_mm / max(zmed, 1.0)
    u = np.floor(points[:, 0] / z / b).astype(np.int64)
    v = np.floor(points[:, 1] / z / b).astype(np.int64)
    u -= u.min()
    v -= v.min()
    shape = (int(u.max()) + 3, int(v.max()) + 3)
    u += 1
    v += 1
    img = np.full(shape, np.inf)
    np.minimum.at(img, (u, v), z)
    valid = np.isfinite(img)
    if valid.sum() < 50:
        return np.ones(len(points), bool), False, np.array([0.0, 0.0, -1.0])
    far = float(img[valid].max())
    fill = np.where(valid, img, far)
    win = max(5, int(round(cfg.exposure_window_mm / cfg.exposure_bin_mm)))
    skin = ndimage.grey_opening(fill, size=(win, win))
    cand = valid & (img - skin > cfg.exposure_depth_mm)
    # The outside: empty bins connected to the image border.
    lab_empty, _ = ndimage.label(~valid)
    border = np.unique(np.r_[lab_empty[0], lab_empty[-1], lab_empty[:, 0], lab_empty[:, -1]])
    outside = np.isin(lab_empty, border[border > 0])
    outside = ndimage.binary_dilation(outside, iterations=2)
    lab, n = ndimage.label(cand)
    if n == 0:
        return np.ones(len(points), bool), False, np.array([0.0, 0.0, -1.0])
    bad = np.unique(lab[outside & (lab > 0)])
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    sizes[bad] = 0
    min_bins = cfg.exposure_min_area_mm2 / cfg.exposure_bin_mm**2
    if sizes.max() < min_bins:
        return np.ones(len(points), bool), False, np.array([0.0, 0.0, -1.0])
    keep_lab = np.flatnonzero(sizes >= max(min_bins, 0.3 * sizes.max()))
    region = np.isin(lab, keep_lab)
    region = ndimage.binary_closing(region, iterations=2)
    region = ndimage.binary_dilation(region, iterations=1)
    mask = region[u, v]
    sel = points[mask]
    skin_n = _skin_normal(points, mask)
    return mask, bool(len(sel) >= 50), skin_n


def _skin_normal(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normal of a plane fitted to the non-exposure points near the exposure, toward +-z."""
    ex = points[mask]
    if len(ex) < 10:
        return np.array([0.0, 0.0, -1.0])
    c = ex.mean(axis=0)
    r = np.linalg.norm(ex - c, axis=1).max() * 1.6
    near = (~mask) & (np.linalg.norm(points - c, axis=1) < r)
    q = points[near]
    if len(q) < 10:
        q = ex
    q = q - q.mean(axis=0)
    _, _, vt = np.linalg.svd(q[:: max(1, len(q) // 5000)], full_matrices=False)
    n = vt[2]
    return n if n[2] < 0 else -n
