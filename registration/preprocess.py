"""Scan clean-up: range crop, outlier removal, voxel downsampling, exposure, normals.

The scan is mostly skin and drapes. They are kept (as a depth map) to test poses against
what the sensor saw, but only the surgical exposure - the region deeper than the skin
around it - is registered, and only it gets normals: what is not processed costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import PointCloud, as_points
from arspine.registration._pc import estimate_normals, voxel_downsample

__all__ = ["PreparedScan", "prepare_scan", "ScanConfig", "find_exposure"]


@dataclass(frozen=True)
class ScanConfig:
    """Clean-up parameters (mm)."""

    min_range_mm: float = 100.0
    max_range_mm: float = 2000.0
    fine_voxel_mm: float = 1.5
    coarse_voxel_mm: float = 3.0
    normal_radius_mm: float = 4.5
    min_fine_per_coarse: int = 2          # coarse voxels with fewer fine points are outliers
    exposure_bin_mm: float = 3.5          # depth-map bin at the median range
    exposure_window_mm: float = 90.0      # wider than the wound
    exposure_depth_mm: float = 15.0       # deeper than the skin (and drape folds) by this much
    exposure_min_area_mm2: float = 600.0
    exposure_front_mm: float = 40.0       # nearer than the background by this: not skin
    exposure_wound_depth_mm: float = 35.0  # regions shallower on average rank lower
    exposure_background_mm: float = 150.0  # median window of that background


@dataclass
class PreparedScan:
    """A cleaned scan in the ``sensor`` frame (mm).

    Attributes
    ----------
    fine : (F, 3) points after range crop, voxel downsampling and outlier removal.
    fine_normals : (F, 3) unit normals toward the sensor (zero outside the exposure).
    exposure : (F,) bool, points inside the surgical exposure (all True when no
        surrounding skin was found).
    exposure_found : bool, an enclosed exposure was found.
    regions : list of ``(mask (F,) bool, skin_normal (3,))``, candidate exposures, best
        first, each with the unit normal of the skin around it (toward the sensor).
    sensor_origin : (3,) the sensor position (origin of the sensor frame).
    n_input : int, number of input points.
    """

    fine: np.ndarray
    fine_normals: np.ndarray
    exposure: np.ndarray
    exposure_found: bool
    regions: list
    sensor_origin: np.ndarray
    n_input: int


def prepare_scan(scan: object, config: ScanConfig | None = None) -> PreparedScan:
    """Clean a raw scan and find the surgical exposure.

    Parameters
    ----------
    scan : PointCloud (frame ``sensor``) or (N, 3) array_like, mm
        The intraoperative point cloud; the sensor sits at the origin looking along +z.
    config : ScanConfig, optional

    Returns
    -------
    PreparedScan

    Raises
    ------
    InputError
        Wrong shape, NaN, wrong frame, or nothing left after the range crop.
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
    r2 = np.einsum("ij,ij->i", pts, pts)
    pts = pts[(r2 >= cfg.min_range_mm**2) & (r2 <= cfg.max_range_mm**2)]
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
    if len(fine) < 10:  # let the caller's gate say "too few points"; keep what there is
        fine, _, _, _ = voxel_downsample(pts, cfg.fine_voxel_mm)
    origin = np.zeros(3)
    regions = find_exposure(fine, cfg)
    found = bool(regions)
    if not regions:  # no skin around: the whole scan is the exposure (e.g. a bone-only scan)
        regions = [(np.ones(len(fine), bool), _skin_normal(fine, fine))]
    expo = np.logical_or.reduce([m for m, _ in regions])
    normals = np.zeros_like(fine)
    if expo.sum() >= 3:
        normals[expo] = estimate_normals(fine[expo], cfg.normal_radius_mm, 16, toward=origin)
    return PreparedScan(fine=fine, fine_normals=normals, exposure=expo, exposure_found=found,
                        regions=regions, sensor_origin=origin, n_input=n_in)


def find_exposure(points: np.ndarray, cfg: ScanConfig | None = None,
                  max_regions: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate surgical exposures: regions enclosed by skin and deeper than it.

    The skin (and drapes) form the front-most smooth surface; a grey opening of the depth
    map over a window wider than the wound estimates it across the wound. Bins more than
    ``exposure_depth_mm`` behind it, closed over thin occluders (a retractor bar), that do
    not touch the image border or the empty outside are candidates, ranked by the depth
    volume they hold (a wound is deep, a fold beside a hand is shallow).

    Returns
    -------
    list of ``(mask (N,) bool, skin_normal (3,))``, best first; empty when none is found.
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
    # Median depth per bin over bins with >= 3 points: outliers in front of the surface (a
    # tenth of some scans) must not become the "skin".
    lin = u * shape[1] + v
    order = np.lexsort((z, lin))
    ls = lin[order]
    starts = np.flatnonzero(np.r_[True, ls[1:] != ls[:-1]])
    counts = np.diff(np.r_[starts, len(ls)])
    med = z[order][starts + counts // 2]
    img = np.full(shape, np.inf)
    good = counts >= 3
    img.ravel()[ls[starts[good]]] = med[good]
    valid = np.isfinite(img)
    if valid.sum() < 50:
        return []
    far = float(img[valid].max())
    fill = np.where(valid, img, far)
    # Objects well in front of the back (a hand, an instrument tray) would pull the skin
    # estimate forward around them and make the skin beside them look like a wound: they
    # are replaced by a coarse median background first.
    bg = _background(fill, cfg)
    front = valid & (img < bg - cfg.exposure_front_mm)
    fill = np.where(front, bg, fill)
    win = max(5, int(round(cfg.exposure_window_mm / cfg.exposure_bin_mm)))
    skin = ndimage.grey_opening(fill, size=(win, win))
    below = np.where(valid, img - skin, 0.0)
    cand = valid & (below > cfg.exposure_depth_mm)
    cand = ndimage.binary_closing(cand, iterations=2) & (valid | cand)
    # The outside: empty bins connected to the image border.
    lab_empty, _ = ndimage.label(~valid)
    border = np.unique(np.r_[lab_empty[0], lab_empty[-1], lab_empty[:, 0], lab_empty[:, -1]])
    outside = np.isin(lab_empty, border[border > 0])
    outside = ndimage.binary_dilation(outside, iterations=2)
    outside[[0, -1], :] = True
    outside[:, [0, -1]] = True
    lab, n = ndimage.label(cand)
    if n == 0:
        return []
    bad = np.unique(lab[outside & (lab > 0)])
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(float)
    volume = np.bincount(lab.ravel(), weights=np.clip(below, 0, 60).ravel(), minlength=n + 1)
    sizes[0] = volume[0] = 0
    # Touching the outside is suspicious (a fold at the edge, skin beside a hand at the
    # border) but not disqualifying: down-weight, let the pose scores decide.
    volume[bad] *= 0.3
    # A wound is deep all over; a drape sagging off the table or a fold is a large region
    # only just below the skin. On 60 fresh scans the mean depth of the wound regions was
    # 36-60 mm (5th-95th percentile), of the skin and drape ones 6-29 mm; ranked by
    # volume alone a drape region came first on 3 of them.
    mean_depth = volume / np.maximum(sizes, 1)
    volume *= np.clip(mean_depth / cfg.exposure_wound_depth_mm, 0.0, 1.0) ** 2
    min_bins = cfg.exposure_min_area_mm2 / cfg.exposure_bin_mm**2
    volume[sizes < min_bins] = 0
    out = []
    for k in np.argsort(-volume)[:max_regions]:
        if volume[k] <= 0 or volume[k] < 0.05 * volume.max():
            break
        region = ndimage.binary_dilation(lab == k, iterations=1)
        mask = region[u, v]
        if mask.sum() < 50:
            continue
        ring = ndimage.binary_dilation(region, iterations=8) & ~ndimage.binary_dilation(
            region, iterations=2) & valid & (below < 3.0)
        out.append((mask, _skin_normal(points[ring[u, v]], points[mask])))
    if len(out) >= 2:
        # A tool or retractor lying in the wound splits it: offer the union of the regions
        # near the best one as a candidate of its own (first, it holds the most bone).
        c0 = np.median(points[out[0][0]], axis=0)
        near = [m for m, _ in out
                if np.linalg.norm(np.median(points[m], axis=0) - c0) < 90.0]
        if len(near) >= 2:
            union = np.logical_or.reduce(near)
            ring_pts = points[~union & (np.linalg.norm(points - c0, axis=1) < 120.0)]
            out.insert(0, (union, _skin_normal(ring_pts, points[union])))
    return out


def _background(fill: np.ndarray, cfg: ScanConfig) -> np.ndarray:
    """Median depth over ``exposure_background_mm`` (on bins ~10 mm wide), full size."""
    from scipy import ndimage

    f = max(1, int(round(10.0 / cfg.exposure_bin_mm)))
    H, W = fill.shape
    Hp, Wp = -(-H // f) * f, -(-W // f) * f
    pad = np.pad(fill, ((0, Hp - H), (0, Wp - W)), mode="edge")
    coarse = np.median(pad.reshape(Hp // f, f, Wp // f, f).transpose(0, 2, 1, 3)
                       .reshape(Hp // f, Wp // f, f * f), axis=2)
    size = max(3, int(round(cfg.exposure_background_mm / (f * cfg.exposure_bin_mm))) | 1)
    med = ndimage.median_filter(coarse, size=size, mode="nearest")
    return np.repeat(np.repeat(med, f, axis=0), f, axis=1)[:H, :W]


def _skin_normal(skin_pts: np.ndarray, region_pts: np.ndarray) -> np.ndarray:
    """Robust plane normal of the skin ring around a region, pointing to the sensor (-z)."""
    q = skin_pts if len(skin_pts) >= 20 else region_pts
    if len(q) < 3:
        return np.array([0.0, 0.0, -1.0])
    q = q[:: max(1, len(q) // 4000)]
    keep = np.ones(len(q), bool)
    n = np.array([0.0, 0.0, -1.0])
    for _ in range(3):
        c = q[keep].mean(axis=0)
        _, _, vt = np.linalg.svd(q[keep] - c, full_matrices=False)
        n = vt[2]
        r = np.abs((q - c) @ n)
        keep = r < max(3.0, np.percentile(r, 70))
        if keep.sum() < 10:
            break
    return n if n[2] < 0 else -n
