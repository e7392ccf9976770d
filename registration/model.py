"""The CT side of registration, prepared once per CT before surgery (cacheable).

A :class:`PreparedModel` holds, in the ``ct`` frame (LPS mm):

- the *exposable shell* of every vertebra: surface samples with outward normals that can be
  seen from behind the patient (z-buffer from a few posterior view directions). The vertebral
  body and the canal never appear in a depth scan, so they are left out: what is not
  processed costs nothing and cannot attract a wrong match;
- per-point level index, level centroids, the spine axis (cranial -> caudal) and the
  posterior direction;
- a voxel grid of nearest shell points (correspondences by lookup).

Everything is saved with :meth:`save` and read back by :meth:`PreparedModel.load`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh
from arspine.registration._pc import orthobasis, unit, voxel_downsample

__all__ = ["PreparedModel", "prepare_model", "exposable_shell", "estimate_posterior",
           "NearestGrid"]

FORMAT_VERSION = 4
_LEVEL_ORDER = ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
                + [f"L{i}" for i in range(1, 6)] + ["S1", "S2", "S3", "S4", "S5"])


def _level_rank(name: str) -> int:
    return _LEVEL_ORDER.index(name) if name in _LEVEL_ORDER else 1000


@dataclass
class NearestGrid:
    """Voxel grid (frame ``ct``) holding the index of the nearest shell point of every cell.

    A correspondence becomes one array lookup instead of a KD-tree query. Cells farther than
    ``max_mm`` from the shell hold -1.
    """

    origin: np.ndarray
    voxel_mm: float
    index: np.ndarray      # (I, J, K) int32

    @classmethod
    def build(cls, points: np.ndarray, voxel_mm: float = 1.0, margin_mm: float = 10.0):
        """Exact Euclidean distance transform from the voxels holding shell points."""
        from scipy import ndimage

        lo = points.min(axis=0) - margin_mm
        shape = tuple(np.ceil((points.max(axis=0) + margin_mm - lo) / voxel_mm).astype(int) + 1)
        ijk = np.floor((points - lo) / voxel_mm).astype(np.int64)
        seed = np.full(shape, -1, dtype=np.int32)
        seed[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = np.arange(len(points), dtype=np.int32)
        dist, ind = ndimage.distance_transform_edt(seed < 0, return_indices=True)
        index = seed[ind[0], ind[1], ind[2]]
        index[dist * voxel_mm > margin_mm] = -1
        return cls(lo, float(voxel_mm), index.astype(np.int32))

    def __post_init__(self):
        # A border of -1 cells: clipping a query into the padded grid lands outside points
        # on the border, with no inside mask to build on the hot path.
        self._flat = np.pad(self.index, 1, constant_values=-1).ravel()
        self._shape = np.array(self.index.shape) + 2
        self._origin = np.asarray(self.origin, dtype=np.float64) - self.voxel_mm

    def lookup(self, q: np.ndarray) -> np.ndarray:
        """Nearest shell-point index of each query point (ct mm), -1 outside / too far."""
        # Truncation equals floor for positive values; (-1, 0) truncates to the border too.
        ijk = ((q - self._origin) * (1.0 / self.voxel_mm)).astype(np.int64)
        np.clip(ijk, 0, self._shape - 1, out=ijk)
        s = self._shape
        return self._flat[(ijk[..., 0] * s[1] + ijk[..., 1]) * s[2] + ijk[..., 2]].astype(
            np.int64)


@dataclass
class PreparedModel:
    """CT-side data for :func:`arspine.registration.register` (frame ``ct``, mm).

    Attributes
    ----------
    levels : tuple of str
        Level names, cranial to caudal (``("bone",)`` for one unlabelled body).
    points, normals : (N, 3) float64
        Exposable-shell samples (~``fine_voxel_mm`` apart) and outward unit normals.
    level_index : (N,) int
        Index into ``levels`` of each shell point.
    centroids : (L, 3) float64
        Centroid of each level's full surface.
    axis_ct : (3,) unit vector, cranial -> caudal.
    posterior_ct : (3,) unit vector pointing out of the back.
    posterior_alternatives : (K, 3) other plausible posterior directions (e.g. the CT's
        LPS ``+y`` when the shape-based estimate disagrees); the global search tries all.
    meta : dict
        Provenance (source, voxel sizes, format version).
    """

    levels: tuple
    points: np.ndarray
    normals: np.ndarray
    level_index: np.ndarray
    centroids: np.ndarray
    axis_ct: np.ndarray
    posterior_ct: np.ndarray
    meta: dict = field(default_factory=dict)
    grid: NearestGrid | None = None
    posterior_alternatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    _trees: dict = field(default_factory=dict, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)  # derived, per run

    def __post_init__(self):
        # The compiled kernels (and their exact argument types) are loaded here, with the
        # model, so a registration's time is the registration's (numba: ~0.4 s from its
        # on-disk cache, ~2 s the very first time).
        from arspine.registration._kernels import warm

        self.points = np.ascontiguousarray(self.points, dtype=np.float64)
        self.normals = np.ascontiguousarray(self.normals, dtype=np.float64)
        self.level_index = np.ascontiguousarray(self.level_index, dtype=np.int64)
        warm()

    def nearest_sq(self, q: np.ndarray, max_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`nearest` with *squared* distances (mm^2): no square root on the hot
        path of the score searches."""
        return grid_nearest(self, q, max_mm)

    def nearest_grid(self) -> NearestGrid:
        """The :class:`NearestGrid` of the shell, built on first use."""
        if self.grid is None:
            self.grid = NearestGrid.build(self.points)
        return self.grid

    def grid_args(self, level: int = -1) -> tuple:
        """The model as the compiled kernels take it (``registration/_kernels.py``): the
        padded nearest-point grid, the shell points and normals, each point's level, and the
        one level to use (-1: all)."""
        g = self.nearest_grid()
        return (g._flat, g._shape, g._origin, 1.0 / g.voxel_mm, self.points, self.normals,
                self.level_index, int(level))

    def nearest(self, q: np.ndarray, max_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """Nearest shell point (via the grid) of points ``q`` (ct mm).

        Returns ``(dist_mm, index)``; ``dist`` is inf and ``index`` -1 beyond ``max_mm``.
        """
        d2, idx = self.nearest_sq(q, max_mm)
        return np.sqrt(d2), idx

    # ----------------------------------------------------------------- lookups
    def tree(self, level: str | None = None):
        """cKDTree over the shell (or one level's part of it), built once."""
        from scipy.spatial import cKDTree

        key = level or "*"
        if key not in self._trees:
            pts = self.points if level is None else self.points[self.level_mask(level)]
            self._trees[key] = cKDTree(pts)
        return self._trees[key]

    def level_mask(self, level: str) -> np.ndarray:
        """Boolean mask of the shell points of ``level``."""
        if level not in self.levels:
            raise InputError(f"level must be one of {list(self.levels)}, got {level!r}")
        return self.level_index == self.levels.index(level)

    @property
    def center_ct(self) -> np.ndarray:
        """Mean of the level centroids (mm, ``ct``)."""
        return self.centroids.mean(axis=0)

    @property
    def level_step_mm(self) -> np.ndarray:
        """(3,) mean displacement from one level to the next caudal one (zeros if one level)."""
        if len(self.levels) < 2:
            return np.zeros(3)
        return np.diff(self.centroids, axis=0).mean(axis=0)

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``.npz``) atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh, points=self.points, normals=self.normals, level_index=self.level_index,
                    centroids=self.centroids, axis_ct=self.axis_ct,
                    posterior_ct=self.posterior_ct,
                    posterior_alternatives=self.posterior_alternatives,
                    grid_index=self.grid.index if self.grid is not None else np.zeros(0),
                    grid_origin=self.grid.origin if self.grid is not None else np.zeros(3),
                    grid_voxel=np.array(self.grid.voxel_mm if self.grid is not None else 0.0),
                    header=np.array(json.dumps({"levels": list(self.levels), "meta": self.meta,
                                                "format": FORMAT_VERSION})))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreparedModel:
        """Read a model written by :meth:`save`; clear error on a missing or broken file."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"prepared model file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                if header.get("format") != FORMAT_VERSION:
                    raise InputError(f"prepared model {path} has format {header.get('format')}, "
                                     f"expected {FORMAT_VERSION}; prepare it again")
                grid = None
                if z["grid_index"].ndim == 3:
                    grid = NearestGrid(z["grid_origin"], float(z["grid_voxel"]),
                                       z["grid_index"])
                return cls(levels=tuple(header["levels"]), points=z["points"],
                           normals=z["normals"], level_index=z["level_index"],
                           centroids=z["centroids"], axis_ct=z["axis_ct"],
                           posterior_ct=z["posterior_ct"], meta=header.get("meta", {}),
                           posterior_alternatives=z["posterior_alternatives"],
                           grid=grid)
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"prepared model file {path} is broken: {exc}") from exc


def grid_nearest(model, q: np.ndarray, max_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(squared distance mm^2, index)`` of the nearest shell point of each of ``q``
    (..., 3) through ``model.grid_args()`` (a PreparedModel or a one-level view of it);
    inf / -1 beyond ``max_mm``."""
    from arspine.registration._kernels import grid_nearest_kernel

    q = np.asarray(q, dtype=np.float64)
    d2, idx = grid_nearest_kernel(np.ascontiguousarray(q.reshape(-1, 3)), float(max_mm),
                                  *model.grid_args())
    return d2.reshape(q.shape[:-1]), idx.reshape(q.shape[:-1])


# --------------------------------------------------------------------- preparation helpers
def exposable_shell(points: np.ndarray, normals: np.ndarray, posterior: np.ndarray,
                    axis: np.ndarray, pixel_mm: float = 1.5, depth_tol_mm: float = 3.0,
                    tilt_deg: float = 35.0) -> np.ndarray:
    """Mask of surface samples visible from behind (z-buffer from 5 view directions).

    Parameters
    ----------
    points, normals : (N, 3) surface samples and outward normals (mm, ``ct``).
    posterior : (3,) unit vector out of the back; axis : (3,) spine axis.

    Returns
    -------
    (N,) bool mask.
    """
    lateral = unit(np.cross(axis, posterior))
    t = np.radians(tilt_deg)
    views = [posterior]
    for side in (lateral, axis):
        for s in (-1.0, 1.0):
            views.append(unit(np.cos(t) * posterior + s * np.sin(t) * side))
    keep = np.zeros(len(points), dtype=bool)
    for v in views:
        a, b = orthobasis(v)
        uv = np.floor(np.stack([points @ a, points @ b], axis=1) / pixel_mm).astype(np.int64)
        uv -= uv.min(axis=0)
        lin = uv[:, 0] * (uv[:, 1].max() + 1) + uv[:, 1]
        depth = points @ v
        top = np.full(lin.max() + 1, -np.inf)
        np.maximum.at(top, lin, depth)
        keep |= (depth >= top[lin] - depth_tol_mm) & (normals @ v > 0.05)
    return keep


def _symmetry_lateral(parts: list, axis: np.ndarray, step_deg: float = 3.0,
                      max_points: int = 1200) -> tuple[np.ndarray, float]:
    """Lateral direction of vertebra-like point sets: the normal of their mirror plane.

    Each vertebra is bilaterally symmetric about its mid-sagittal plane (which contains the
    spine axis). For directions ``d`` across the axis, the points are mirrored through the
    plane with normal ``d`` and the mean (clipped) distance to the nearest original point is
    the cost. Returns ``(lateral (3,), min cost / median cost)``: a low ratio is a clear plane.
    """
    from scipy.spatial import cKDTree

    a, b = orthobasis(axis)
    angs = np.radians(np.arange(0.0, 180.0, step_deg))
    dirs = np.cos(angs)[:, None] * a + np.sin(angs)[:, None] * b
    cost = np.zeros(len(dirs))
    for points in parts:
        q = points[:: max(1, len(points) // max_points)]
        q = q - q.mean(axis=0)
        tree = cKDTree(q)
        for j, d in enumerate(dirs):
            dist, _ = tree.query(q - 2.0 * np.outer(q @ d, d), k=1)
            cost[j] += float(np.mean(np.minimum(dist, 10.0)))
    j = int(np.argmin(cost))
    return unit(dirs[j]), float(cost[j] / max(np.median(cost), 1e-9))


def estimate_posterior(parts: list, axis: np.ndarray, return_confidence: bool = False):
    """Posterior direction of vertebra-like point sets (mm, any frame).

    The mid-sagittal mirror plane of the vertebrae (:func:`_symmetry_lateral`) fixes the
    antero-posterior line; along it the spinous process reaches much farther behind than the
    body does in front, which gives the sign. (The reach asymmetry alone, over all directions,
    was fooled by long transverse processes: 63 degrees off on the procedural phantom.)

    Parameters
    ----------
    parts : list of (N, 3) arrays, one per vertebra; axis : (3,) spine axis.
    return_confidence : also return the mirror cost ratio (min / median; below ~0.6 the
        plane is clear).

    Returns
    -------
    (3,) unit vector out of the back, or ``(vector, ratio)``.
    """
    lateral, ratio = _symmetry_lateral(parts, axis)
    ap = unit(np.cross(axis, lateral))
    excess = 0.0
    for points in parts:
        x = (points - points.mean(axis=0)) @ ap
        excess += float(np.percentile(x, 99.5) + np.percentile(x, 0.5))
    post = ap if excess >= 0 else -ap
    return (post, ratio) if return_confidence else post


def _sample_surface(mesh: Mesh, spacing_mm: float, seed: int):
    n = int(min(max(mesh.area() / (0.35 * spacing_mm**2), 500), 400_000))
    pts, nrm = mesh.sample_points(n, seed=seed)
    # Make normals outward: a closed surface has positive enclosed volume with outward faces.
    if mesh.enclosed_volume() < 0:
        nrm = -nrm
    p, n_, _, _ = voxel_downsample(pts, spacing_mm, nrm)
    return p, n_


def prepare_model(ct=None, labels=None, surfaces: dict | None = None, *,
                  levels: list | None = None, posterior_ct: object = None,
                  fine_voxel_mm: float = 1.5, grid_voxel_mm: float = 1.0, seed: int = 0,
                  progress: bool = False) -> PreparedModel:
    """Prepare a CT for registration (done once per CT; cache with :meth:`PreparedModel.save`).

    Parameters
    ----------
    ct : arspine.imaging.CtVolume, optional
        The CT. Needed unless ``surfaces`` is given.
    labels : arspine.imaging.VertebraLabels, optional
        Vertebra labels; without them the bone surface is one body (or split per vertebra
        when :func:`arspine.imaging.split_vertebrae` separates it).
    surfaces : dict[str, Mesh], optional
        Per-level surfaces in frame ``ct`` (mm), used as given (e.g. a shape model).
    levels : list of str, optional
        Restrict to these levels.
    posterior_ct : (3,) array_like, optional
        Direction out of the patient's back in ``ct``; default: estimated from the vertebrae
        (the spinous processes reach farther than the bodies), since a CT's ``+y`` (LPS
        posterior) is only the patient's back when the patient lay square in the scanner.
    fine_voxel_mm : float
        Spacing of the shell samples (mm).
    grid_voxel_mm : float
        Cell of the nearest-point grid (mm).

    Returns
    -------
    PreparedModel
    """
    if surfaces is None:
        if ct is None:
            raise InputError("prepare_model needs ct (a CtVolume) or surfaces (dict of Mesh)")
        surfaces = _surfaces_from_ct(ct, labels, levels)
    if not isinstance(surfaces, dict) or not surfaces:
        raise InputError(f"surfaces must be a non-empty dict of level -> Mesh, got "
                         f"{type(surfaces).__name__} of length "
                         f"{len(surfaces) if hasattr(surfaces, '__len__') else '?'}")
    names = [n for n in surfaces if levels is None or n in levels]
    if not names:
        raise InputError(f"levels {levels} not among the surfaces {list(surfaces)}")
    for n in names:
        if not isinstance(surfaces[n], Mesh):
            raise InputError(f"surfaces[{n!r}] must be a Mesh, got {type(surfaces[n]).__name__}")
    names.sort(key=_level_rank)
    pts_l, nrm_l, idx_l, cents = [], [], [], []
    for i, n in enumerate(names):
        p, nr = _sample_surface(surfaces[n], fine_voxel_mm, seed + i)
        pts_l.append(p)
        nrm_l.append(nr)
        idx_l.append(np.full(len(p), i, dtype=np.int32))
        cents.append(p.mean(axis=0))
    pts, nrm, lidx = np.concatenate(pts_l), np.concatenate(nrm_l), np.concatenate(idx_l)
    cents = np.array(cents)
    if len(names) >= 2:
        axis = unit(cents[-1] - cents[0])
    else:
        q = pts - pts.mean(axis=0)
        ev, evec = np.linalg.eigh(q.T @ q)
        axis = evec[:, 2]  # vertical extent of one bone body: its longest axis
    ratio = 0.0
    if posterior_ct is None:
        post, ratio = estimate_posterior([pts[lidx == i] for i in range(len(names))], axis,
                                         return_confidence=True)
    else:
        post = unit(np.asarray(posterior_ct, dtype=np.float64).reshape(3))
    post = unit(post - (post @ axis) * axis)
    alts = []
    # A CT's LPS +y is a second candidate only when the vertebrae show no clear mirror plane
    # (one bone body, a fused or damaged spine): every candidate doubles the search.
    if ct is not None and posterior_ct is None and ratio > 0.6:
        lps = np.array([0.0, 1.0, 0.0])
        lps = unit(lps - (lps @ axis) * axis)
        if post @ lps < np.cos(np.radians(20)):
            alts.append(lps)
    keep = exposable_shell(pts, nrm, post, axis)
    pts, nrm, lidx = pts[keep], nrm[keep], lidx[keep]
    if len(pts) < 50:
        raise InputError(f"the CT surfaces give too few exposable points ({len(pts)})")
    meta = {"source": "surfaces" if ct is None else "ct", "fine_voxel_mm": fine_voxel_mm,
            "grid_voxel_mm": grid_voxel_mm, "n_points": int(len(pts))}
    return PreparedModel(levels=tuple(names), points=pts, normals=nrm, level_index=lidx,
                         centroids=cents, axis_ct=axis, posterior_ct=post, meta=meta,
                         posterior_alternatives=np.array(alts).reshape(-1, 3),
                         grid=NearestGrid.build(pts, grid_voxel_mm))


def _surfaces_from_ct(ct, labels, levels) -> dict:
    from arspine import imaging

    if labels is not None:
        return imaging.vertebra_surfaces(ct, labels, levels=levels)
    mask = imaging.segment_bone(ct)
    try:
        split = imaging.split_vertebrae(mask, ct)
        if len(split.levels) >= 2:
            return imaging.vertebra_surfaces(ct, split, levels=levels)
    except Exception:  # noqa: BLE001 - splitting is best effort; one body is the fallback
        pass
    return {"bone": imaging.bone_surface(ct, mask)}
