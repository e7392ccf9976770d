"""The CT side of registration, prepared once per CT before surgery (cacheable).

A :class:`PreparedModel` holds, in the ``ct`` frame (LPS mm):

- the *exposable shell* of every vertebra: surface samples with outward normals that can be
  seen from behind the patient (z-buffer from a few posterior view directions). The vertebral
  body and the canal never appear in a depth scan, so they are left out: what is not
  processed costs nothing and cannot attract a wrong match;
- per-point level index, level centroids, the spine axis (cranial -> caudal) and the
  posterior direction;
- coarse keypoints with FPFH descriptors for the global search.

KD-trees are rebuilt on load (milliseconds); everything else is saved with :meth:`save`.
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
from arspine.registration._pc import fpfh, orthobasis, unit, voxel_downsample

__all__ = ["PreparedModel", "prepare_model", "exposable_shell", "estimate_posterior"]

FORMAT_VERSION = 1
_LEVEL_ORDER = ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
                + [f"L{i}" for i in range(1, 6)] + ["S1", "S2", "S3", "S4", "S5"])


def _level_rank(name: str) -> int:
    return _LEVEL_ORDER.index(name) if name in _LEVEL_ORDER else 1000


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
    key_index : (K,) int
        Shell points used as global keypoints.
    key_features : (K, 33) float32
        FPFH of the keypoints.
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
    key_index: np.ndarray
    key_features: np.ndarray
    meta: dict = field(default_factory=dict)
    _trees: dict = field(default_factory=dict, repr=False, compare=False)

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
    def key_points(self) -> np.ndarray:
        return self.points[self.key_index]

    @property
    def key_normals(self) -> np.ndarray:
        return self.normals[self.key_index]

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
                    posterior_ct=self.posterior_ct, key_index=self.key_index,
                    key_features=self.key_features,
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
                return cls(levels=tuple(header["levels"]), points=z["points"],
                           normals=z["normals"], level_index=z["level_index"],
                           centroids=z["centroids"], axis_ct=z["axis_ct"],
                           posterior_ct=z["posterior_ct"], key_index=z["key_index"],
                           key_features=z["key_features"], meta=header.get("meta", {}))
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"prepared model file {path} is broken: {exc}") from exc


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


def estimate_posterior(parts: list, axis: np.ndarray) -> np.ndarray:
    """Posterior direction of vertebra-like point sets, from the asymmetry of their extents.

    Seen from a vertebra's centroid across the spine axis, the lateral reaches are about
    symmetric while the antero-posterior ones are not: the spinous process reaches much
    farther behind than the body does in front. The direction with the largest excess reach,
    summed over the vertebrae in ``parts`` (list of (N, 3) arrays), is posterior.
    """
    a, b = orthobasis(axis)
    angs = np.radians(np.arange(0, 360, 3))
    dirs = np.cos(angs)[:, None] * a + np.sin(angs)[:, None] * b
    total = np.zeros(len(dirs))
    for points in parts:
        q = points - points.mean(axis=0)
        x = q @ dirs.T                                   # (N, D)
        reach = np.percentile(x, 99.5, axis=0)
        total += reach - reach[(np.arange(len(dirs)) + len(dirs) // 2) % len(dirs)]
    return unit(dirs[int(np.argmax(total))])


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
                  fine_voxel_mm: float = 1.5, key_voxel_mm: float = 3.0,
                  feature_radius_mm: float = 12.0, seed: int = 0,
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
        Direction out of the patient's back in ``ct``; default: LPS ``+y`` for a CT, estimated
        from the anatomy for bare surfaces.
    fine_voxel_mm, key_voxel_mm : float
        Spacing of the shell samples and of the global keypoints (mm).

    Returns
    -------
    PreparedModel
    """
    if surfaces is None:
        if ct is None:
            raise InputError("prepare_model needs ct (a CtVolume) or surfaces (dict of Mesh)")
        surfaces = _surfaces_from_ct(ct, labels, levels)
        if posterior_ct is None:
            posterior_ct = [0.0, 1.0, 0.0]  # LPS: +y is posterior
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
    if posterior_ct is None:
        post = estimate_posterior([pts[lidx == i] for i in range(len(names))], axis)
    else:
        post = unit(np.asarray(posterior_ct, dtype=np.float64).reshape(3))
    post = unit(post - (post @ axis) * axis)
    keep = exposable_shell(pts, nrm, post, axis)
    pts, nrm, lidx = pts[keep], nrm[keep], lidx[keep]
    if len(pts) < 50:
        raise InputError(f"the CT surfaces give too few exposable points ({len(pts)})")
    kp, kn, kl, first = voxel_downsample(pts, key_voxel_mm, nrm, lidx)
    # Keypoints are real shell samples (the voxel's first member) so FPFH is on the surface.
    key_index = first.astype(np.int64)
    feats = fpfh(pts[key_index], nrm[key_index], feature_radius_mm)
    meta = {"source": "surfaces" if ct is None else "ct", "fine_voxel_mm": fine_voxel_mm,
            "key_voxel_mm": key_voxel_mm, "feature_radius_mm": feature_radius_mm,
            "n_points": int(len(pts))}
    return PreparedModel(levels=tuple(names), points=pts, normals=nrm, level_index=lidx,
                         centroids=cents, axis_ct=axis, posterior_ct=post,
                         key_index=key_index, key_features=feats, meta=meta)


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
