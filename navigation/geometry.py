"""Validated geometry containers shared by every package: points, point clouds, meshes.

numpy only (scipy imported lazily for connected components). Points are ``(N, 3) float64``
rows in millimetres; the frame they live in is the caller's to state (``PointCloud.frame``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform

__all__ = ["as_points", "as_vector3", "as_matrix4", "PointCloud", "Mesh"]


def as_points(points: object, name: str = "points", allow_empty: bool = False,
              min_points: int = 0) -> np.ndarray:
    """Validate and return ``(N, 3) float64`` points.

    Parameters
    ----------
    points : array_like, (N, 3)
        Points in mm.
    name : str
        Argument name used in error messages.
    allow_empty : bool
        Accept N == 0.
    min_points : int
        Minimum N.

    Raises
    ------
    InputError
        ``"points must be (N, 3), got (3, 100)"``; NaN/inf; too few points.
    """
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric (N, 3) array, got "
                         f"{type(points).__name__}") from exc
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{name} must be (N, 3), got {p.shape}")
    if p.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name} is empty (0 points)")
    if p.shape[0] < min_points:
        raise InputError(f"{name} needs at least {min_points} points, got {p.shape[0]}")
    # One reduction first (NaN / inf propagate into the sum): cheap on 250k-point frames;
    # the elementwise check runs only when the sum says something is off (or overflowed).
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(p, axis=None) if p.size else 0.0
    if not np.isfinite(total) and not np.all(np.isfinite(p)):
        bad = int(np.count_nonzero(~np.isfinite(p).all(axis=1)))
        raise InputError(f"{name} has {bad} rows with NaN or inf of {p.shape[0]}")
    return np.ascontiguousarray(p)


def as_vector3(value: object, name: str = "value", unit: str = "") -> np.ndarray:
    """Validate one 3-vector (a point or a direction) and return it as ``(3,) float64``.

    Raises
    ------
    InputError
        ``"entry_ct_mm must be 3 finite numbers (mm), got [1, 2]"``.
    """
    what = f"3 finite numbers{f' ({unit})' if unit else ''}"
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be {what}, got {value!r}") from exc
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise InputError(f"{name} must be {what}, got {value!r}")
    return v


def as_matrix4(matrix: object, name: str = "matrix") -> np.ndarray:
    """Validate a ``(4, 4)`` finite float64 matrix."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a 4x4 numeric matrix") from exc
    if m.shape != (4, 4):
        raise InputError(f"{name} must be 4x4, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{name} has NaN or inf")
    return m


def _optional_rows(arr: object, n: int, name: str, cols: int = 3) -> np.ndarray | None:
    if arr is None:
        return None
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != (n, cols):
        raise InputError(f"{name} must be ({n}, {cols}) to match the points, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or inf")
    return a


@dataclass(frozen=True)
class PointCloud:
    """Points with optional per-point normals, colours and labels.

    Attributes
    ----------
    points : (N, 3) float64, mm
    normals : (N, 3) float64 unit vectors, or None
    colors : (N, 3) float64 in [0, 1], or None
    labels : (N,) int, or None (e.g. what a simulated ray hit)
    frame : str
        Frame the points are in (``"sensor"`` for scans, ``"ct"`` for models).
    extra : dict of str -> (N,) array
        Other per-point values read from a file (intensity, curvature, ...).
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    labels: np.ndarray | None = None
    frame: str = "sensor"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        p = as_points(self.points, "points", allow_empty=True)
        object.__setattr__(self, "points", p)
        object.__setattr__(self, "normals", _optional_rows(self.normals, len(p), "normals"))
        object.__setattr__(self, "colors", _optional_rows(self.colors, len(p), "colors"))
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (len(p),):
                raise InputError(f"labels must be ({len(p)},), got {lab.shape}")
            object.__setattr__(self, "labels", lab)
        extra = {}
        for k, v in dict(self.extra or {}).items():
            a = np.asarray(v)
            if a.shape[:1] != (len(p),):
                raise InputError(f"extra[{k!r}] must have {len(p)} rows, got {a.shape}")
            extra[str(k)] = a
        object.__setattr__(self, "extra", extra)

    def __len__(self) -> int:
        return len(self.points)

    def transformed(self, transform: RigidTransform) -> PointCloud:
        """The cloud mapped by ``transform`` (whose ``from_frame`` must be this frame)."""
        if transform.from_frame != self.frame:
            raise InputError(f"transform {transform.name} does not apply to points in frame "
                             f"'{self.frame}'")
        n = None if self.normals is None else transform.apply_vectors(self.normals)
        return replace(self, points=transform.apply(self.points), normals=n,
                       frame=transform.to_frame)

    def select(self, mask_or_index: object) -> PointCloud:
        """Subset by boolean mask or index array."""
        idx = np.asarray(mask_or_index)

        def sub(a):
            return None if a is None else a[idx]
        return replace(self, points=self.points[idx], normals=sub(self.normals),
                       colors=sub(self.colors), labels=sub(self.labels),
                       extra={k: v[idx] for k, v in self.extra.items()})


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in millimetres.

    Attributes
    ----------
    vertices : (V, 3) float64, mm
    faces : (F, 3) int64 vertex indices
    normals : (V, 3) float64 vertex normals, or None
    name : str or None
        Vertebra name (``"L3"``) or another label.
    frame : str
        Frame of the vertices (``"ct"`` for surfaces extracted from a CT).
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    name: str | None = None
    frame: str = "ct"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        v = as_points(self.vertices, "vertices", allow_empty=True)
        f = np.asarray(self.faces)
        if f.size == 0:
            f = np.zeros((0, 3), dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise InputError(f"faces must be (F, 3), got {f.shape}")
        if not np.issubdtype(f.dtype, np.integer):
            if not np.all(np.mod(f, 1) == 0):
                raise InputError("faces must hold integer vertex indices")
        f = f.astype(np.int64)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise InputError(f"faces index vertices 0..{len(v) - 1}, got indices "
                             f"{int(f.min())}..{int(f.max())}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        object.__setattr__(self, "normals", _optional_rows(self.normals, len(v), "normals"))

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    def face_normals(self) -> np.ndarray:
        """(F, 3) unit face normals (right-hand rule on the vertex order)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return n / np.maximum(norm, 1e-30)

    def vertex_normals(self) -> np.ndarray:
        """(V, 3) area-weighted unit vertex normals (computed when not stored)."""
        if self.normals is not None:
            return self.normals
        tri = self.vertices[self.faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        vn = np.zeros_like(self.vertices)
        for k in range(3):
            np.add.at(vn, self.faces[:, k], fn)
        return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-30)

    def area(self) -> float:
        """Surface area in mm^2."""
        tri = self.vertices[self.faces]
        return float(0.5 * np.linalg.norm(
            np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())

    def enclosed_volume(self) -> float:
        """Signed enclosed volume in mm^3 (divergence theorem; positive for outward faces)."""
        tri = self.vertices[self.faces]
        return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)

    def centroid(self) -> np.ndarray:
        """(3,) centroid of the enclosed solid, mm (not the vertex mean).

        Falls back to the area-weighted surface centroid for open or degenerate meshes.
        """
        tri = self.vertices[self.faces]
        if len(tri) == 0:
            return self.vertices.mean(axis=0) if len(self.vertices) else np.zeros(3)
        # Tetrahedra against a point near the mesh keep the sum well conditioned.
        o = self.vertices.mean(axis=0)
        a, b, c = tri[:, 0] - o, tri[:, 1] - o, tri[:, 2] - o
        vol = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        total = vol.sum()
        if abs(total) > 1e-9 * max(1.0, self.area()) ** 1.5:
            return o + (vol[:, None] * (a + b + c) / 4.0).sum(axis=0) / total
        areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        return o + (areas[:, None] * (a + b + c) / 3.0).sum(axis=0) / max(areas.sum(), 1e-30)

    def principal_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Principal axes of the surface (exact area-weighted second moments).

        Returns
        -------
        axes : (3, 3) rows are unit axes, largest extent first
        std_mm : (3,) standard deviation along each axis
        """
        if self.n_faces == 0:
            d = self.vertices - self.vertices.mean(axis=0)
            cov = d.T @ d / max(len(d), 1)
        else:
            o = self.vertices.mean(axis=0)  # a nearby origin keeps the sums well conditioned
            tri = self.vertices[self.faces] - o
            w = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                     axis=1)
            total = max(w.sum(), 1e-30)
            s = tri.sum(axis=1)
            mu = (w[:, None] * s).sum(0) / (3.0 * total)
            # Integral of x x^T over a triangle = A/12 (sum_i v_i v_i^T + s s^T), s = sum_i v_i;
            # centroid-only weighting would misread how a face is split into triangles.
            second = (np.einsum("f,fki,fkj->ij", w, tri, tri)
                      + np.einsum("f,fi,fj->ij", w, s, s)) / (12.0 * total)
            cov = second - np.outer(mu, mu)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1]
        return evecs[:, order].T, np.sqrt(np.maximum(evals[order], 0))

    def bounds(self) -> np.ndarray:
        """(2, 3) min and max corner, mm."""
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)])

    def transformed(self, transform: RigidTransform) -> Mesh:
        """The mesh mapped by ``transform`` (whose ``from_frame`` must be this frame)."""
        if transform.from_frame != self.frame:
            raise InputError(f"transform {transform.name} does not apply to a mesh in frame "
                             f"'{self.frame}'")
        n = None if self.normals is None else transform.apply_vectors(self.normals)
        return replace(self, vertices=transform.apply(self.vertices), normals=n,
                       frame=transform.to_frame)

    def connected_components(self) -> list[Mesh]:
        """Split into connected components (shared vertices), largest first."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = len(self.vertices)
        f = self.faces
        rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        ncomp, lab = connected_components(adj, directed=False)
        # One stable sort of vertices and of faces by component: O(n log n) however many
        # components (marching-cubes output can hold thousands of specks).
        vorder = np.argsort(lab, kind="stable")
        vstart = np.searchsorted(lab[vorder], np.arange(ncomp + 1))
        rank = np.empty(n, dtype=np.int64)
        rank[vorder] = np.arange(n) - vstart[lab[vorder]]
        flab = lab[f[:, 0]] if len(f) else np.zeros(0, dtype=lab.dtype)
        forder = np.argsort(flab, kind="stable")
        fstart = np.searchsorted(flab[forder], np.arange(ncomp + 1))
        parts = []
        for c in np.flatnonzero(np.diff(fstart) > 0):
            vidx = vorder[vstart[c]:vstart[c + 1]]
            fidx = forder[fstart[c]:fstart[c + 1]]
            nrm = None if self.normals is None else self.normals[vidx]
            parts.append(replace(self, vertices=self.vertices[vidx], faces=rank[f[fidx]],
                                 normals=nrm))
        parts.sort(key=lambda m: -m.n_faces)
        return parts

    def sample_points(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Area-uniform random surface samples.

        Returns
        -------
        points : (n, 3) mm, normals : (n, 3) face normals at the samples.
        """
        if self.n_faces == 0:
            raise InputError("cannot sample points on a mesh with no faces")
        rng = np.random.default_rng(seed)
        tri = self.vertices[self.faces]
        areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                     axis=1)
        idx = rng.choice(len(tri), size=n, p=areas / areas.sum())
        u, v = rng.random(n), rng.random(n)
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        t = tri[idx]
        pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
        return pts, self.face_normals()[idx]
