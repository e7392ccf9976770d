"""Anatomy sources for simulation: vertebra surfaces, patient axes, skin, and TRE targets.

An :class:`Anatomy` holds one surface mesh per vertebra in the ``ct`` frame (LPS mm), the
patient axes in that frame (left, posterior, cranial), optionally points on the CT's skin,
and where it came from (a CT + label map, or a mesh such as the real lumbar shape model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh

__all__ = ["VERTEBRA_NAMES", "Anatomy", "anatomy_from_mesh", "anatomy_from_ct",
           "estimate_axes", "vertebra_targets", "sort_levels", "mesh_to_ct"]

#: Clinical vertebra names, cranial to caudal.
VERTEBRA_NAMES: tuple[str, ...] = tuple(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)] + ["S1"])


def sort_levels(levels) -> list[str]:
    """Clinical names sorted cranial to caudal (unknown names raise InputError)."""
    levels = list(levels)
    bad = [lv for lv in levels if lv not in VERTEBRA_NAMES]
    if bad:
        raise InputError(f"levels must be clinical vertebra names such as L3, got {bad}")
    return sorted(levels, key=VERTEBRA_NAMES.index)


@dataclass
class Anatomy:
    """Vertebrae to simulate, in the ``ct`` frame.

    Attributes
    ----------
    surfaces : dict[str, Mesh]
        Per-level closed surface, vertices in ``ct`` mm, cranial to caudal.
    axes : (3, 3) float64
        Columns are the patient's left, posterior and cranial unit vectors in the ``ct``
        frame (identity for an LPS-aligned CT).
    skin_points : (M, 3) float64 or None
        Points on the CT's body surface (``ct`` mm); None when the source has no skin (a
        shape-model mesh), in which case the scene synthesises one.
    source : str
        ``"ct"``, ``"mesh"`` or ``"phantom"``.
    ct_path, labels_path : Path or None
        Files the anatomy came from (copied into case bundles).
    label_scheme : str or None
    ct : object
        The loaded ``CtVolume`` when the source is a CT (else None).
    """

    surfaces: dict[str, Mesh]
    axes: np.ndarray
    skin_points: np.ndarray | None = None
    source: str = "mesh"
    ct_path: Path | None = None
    labels_path: Path | None = None
    label_scheme: str | None = None
    ct: object = None
    labels: object = None
    description: str = ""
    _targets: dict = field(default_factory=dict, repr=False)

    @property
    def levels(self) -> list[str]:
        """Levels present, cranial to caudal."""
        return sort_levels(self.surfaces)

    def centroid(self, level: str) -> np.ndarray:
        """(3,) enclosed-volume centroid of a vertebra, ``ct`` mm (cached)."""
        key = ("__centroid__", level)
        if key not in self._targets:
            self._targets[key] = self.surfaces[level].centroid()
        return self._targets[key]

    def targets(self, level: str) -> np.ndarray:
        """(K, 3) TRE target points of one vertebra, ``ct`` mm (see :func:`vertebra_targets`)."""
        if level not in self._targets:
            self._targets[level] = vertebra_targets(self.surfaces[level], self.axes)
        return self._targets[level]


def estimate_axes(surfaces: dict[str, Mesh]) -> np.ndarray:
    """Patient axes (columns left, posterior, cranial) from vertebra shapes alone.

    Cranial follows the line through the vertebra centroids, ordered by level name (needs
    two or more levels). Posterior is, across the plane normal to it, the direction of the
    long one-sided tail of each vertebra's surface: the spinous process (the body is the
    compact, massive end).
    """
    levels = sort_levels(surfaces)
    if len(levels) < 2:
        raise InputError(f"estimating patient axes needs at least 2 vertebrae, got {levels}")
    cents = np.array([surfaces[lv].centroid() for lv in levels])
    _, _, vt = np.linalg.svd(cents - cents.mean(0))
    cranial = vt[0]
    if np.dot(cents[0] - cents[-1], cranial) < 0:
        cranial = -cranial
    d = np.concatenate([surfaces[lv].vertices - c for lv, c in zip(levels, cents)])
    d = d - np.outer(d @ cranial, cranial)
    w, v = np.linalg.eigh(d.T @ d)
    cand = [v[:, i] for i in np.argsort(w)[::-1][:2]]
    skews = [np.mean((d @ c) ** 3) / np.std(d @ c) ** 3 for c in cand]
    k = int(np.argmax(np.abs(skews)))
    posterior = cand[k] * np.sign(skews[k])
    posterior -= np.dot(posterior, cranial) * cranial
    posterior /= np.linalg.norm(posterior)
    left = np.cross(posterior, cranial)
    return np.stack([left, posterior, cranial], axis=1)


def anatomy_from_mesh(mesh: Mesh | str | Path, levels=("L2", "L3", "L4", "L5"),
                      description: str = "") -> Anatomy:
    """Anatomy from one mesh holding one connected component per vertebra.

    Parameters
    ----------
    mesh : Mesh or path
        E.g. ``lumbar_ssm_mean/mean_L2-L5.ply`` (four components, mm).
    levels : sequence of str
        Names of the components, cranial to caudal. The cranial end is the end whose
        vertebra is smallest (lumbar vertebrae grow caudally).
    """
    if not isinstance(mesh, Mesh):
        path = Path(mesh)
        if not path.is_file():
            raise InputError(f"mesh file not found: {path}")
        from arspine.datasets.io import read_mesh

        mesh = read_mesh(path)
        description = description or f"vertebra surfaces from {path.name}"
    levels = sort_levels(levels)
    parts = [p for p in mesh.connected_components() if p.n_faces >= 100]
    if len(parts) != len(levels):
        raise InputError(f"mesh has {len(parts)} connected components (>= 100 faces), but "
                         f"levels names {len(levels)}: {levels}")
    cents = np.array([p.centroid() for p in parts])
    _, _, vt = np.linalg.svd(cents - cents.mean(0))
    order = np.argsort(cents @ vt[0])
    parts = [parts[i] for i in order]
    vols = [abs(p.enclosed_volume()) for p in parts]
    if vols[0] > vols[-1]:  # the small end is cranial
        parts = parts[::-1]
    surfaces = {lv: Mesh(p.vertices, p.faces, name=lv, frame="ct") for lv, p in zip(levels, parts)}
    return Anatomy(surfaces=surfaces, axes=estimate_axes(surfaces), source="mesh",
                   description=description or "vertebra surfaces from a mesh")


def _skin_points(ct, threshold_hu: float = -400.0) -> np.ndarray:
    """Boundary voxels of the body (largest air-separated component, table removed), ct mm."""
    from scipy import ndimage

    body = np.asarray(ct.hu) > threshold_hu
    body = ndimage.binary_opening(body, iterations=2)
    lab, n = ndimage.label(body)
    if n == 0:
        raise InputError(f"CT has no voxels above {threshold_hu} HU: no body to find")
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    body = ndimage.binary_fill_holes(body)
    edge = body & ~ndimage.binary_erosion(body)
    return ct.ijk_to_ct(np.argwhere(edge).astype(np.float64))


def _cut_by_field_of_view(labels) -> set[str]:
    """Levels whose voxels touch the first or last index of any grid axis."""
    from scipy import ndimage

    arr = np.asarray(labels.array)
    boxes = ndimage.find_objects(arr)
    out = set()
    for lid, name in labels.names.items():
        if lid - 1 < len(boxes) and boxes[lid - 1] is not None:
            b = boxes[lid - 1]
            if any(sl.start == 0 or sl.stop == n for sl, n in zip(b, arr.shape)):
                out.add(name)
    return out


def anatomy_from_ct(ct, labels, label_scheme: str = "totalsegmentator", levels=None,
                    target_faces: int = 20000, progress: bool = False) -> Anatomy:
    """Anatomy from a CT and its vertebra label map (paths or loaded objects).

    Parameters
    ----------
    ct : path or CtVolume
        DICOM folder, .nii/.nii.gz or .nrrd (loaded by :func:`arspine.imaging.load_ct`).
    labels : path or VertebraLabels
        Label map on the CT grid.
    label_scheme : {"totalsegmentator", "verse"}
    levels : sequence of str, optional
        Vertebrae to keep (default: all that are not cut by the edge of the scan and have a
        plausible volume).
    target_faces : int
        Faces per vertebra surface.
    """
    from arspine import imaging

    ct_path = labels_path = None
    if not hasattr(ct, "hu"):
        ct_path = Path(ct)
        if not ct_path.exists():
            raise InputError(f"ct not found: {ct_path}")
        ct = imaging.load_ct(ct_path, progress=progress)
    if not hasattr(labels, "names"):
        labels_path = Path(labels)
        if not labels_path.exists():
            raise InputError(f"labels not found: {labels_path}")
        labels = imaging.load_labels(labels_path, like=ct, scheme=label_scheme)
    present = list(labels.levels)
    partial = _cut_by_field_of_view(labels)
    if levels is not None:
        levels = sort_levels(levels)
        missing = [lv for lv in levels if lv not in present]
        if missing:
            raise InputError(f"levels {missing} are not in the label map (present: {present})")
    else:
        # A vertebra cut by the edge of the scan is not the real bone's shape: leave it out
        # unless asked for by name (or unless nothing else is left).
        levels = [lv for lv in present if lv not in partial] or present
    surfaces = imaging.vertebra_surfaces(ct, labels, target_faces=target_faces,
                                         levels=levels)
    # Partial vertebrae at the edge of the scan (e.g. T11 cut by the field of view) would give
    # truth for a shape that is not the real bone: keep levels with a plausible volume.
    vols = {lv: abs(m.enclosed_volume()) for lv, m in surfaces.items() if m.n_faces}
    if not vols:
        raise InputError("no vertebra surface could be extracted from the label map")
    ref = np.median(list(vols.values()))
    surfaces = {lv: Mesh(m.vertices, m.faces, name=lv, frame="ct")
                for lv, m in surfaces.items() if vols.get(lv, 0) > 0.4 * ref}
    # DICOM LPS: left +x, posterior +y, cranial +z.
    axes = np.eye(3)
    return Anatomy(surfaces=surfaces, axes=axes, skin_points=_skin_points(ct), source="ct",
                   ct_path=ct_path, labels_path=labels_path, label_scheme=label_scheme,
                   ct=ct, labels=labels,
                   description=f"CT {ct_path.name if ct_path else ''} with "
                               f"{label_scheme} vertebra labels")


class _Occupancy:
    """Inside/outside queries against one closed mesh (ray parity, open3d)."""

    def __init__(self, mesh: Mesh):
        import open3d as o3d

        self._o3d = o3d
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                                 o3d.core.Tensor(mesh.faces.astype(np.uint32)))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        q = self._o3d.core.Tensor(np.asarray(points, dtype=np.float32))
        return self.scene.compute_occupancy(q, nsamples=1).numpy() > 0.5


def _exit_distance(occ: _Occupancy, origin: np.ndarray, direction: np.ndarray,
                   max_mm: float = 80.0, step_mm: float = 0.5) -> float:
    """Distance from an inside point along a direction to where the bone ends (mm)."""
    t = np.arange(0.0, max_mm, step_mm)
    inside = occ(origin + t[:, None] * direction)
    if not inside[0]:
        return 0.0
    out = np.flatnonzero(~inside)
    return float(t[out[0]]) if len(out) else max_mm


def vertebra_targets(mesh: Mesh, axes: np.ndarray, n_interior: int = 24,
                     seed: int = 0) -> np.ndarray:
    """TRE targets of one vertebra: pedicle screw entry and tip points plus interior points.

    The vertebra is voxelised (2 mm) in patient axes. The spinal canal is the empty gap, on
    the midline, between the body (anterior) and the lamina (posterior); the pedicles are the
    bone lateral to the canal at canal depth. Each screw runs from the pedicle centre towards
    the body centre (medial convergence), entry where it leaves the posterior cortex, tip at
    80 % of the way to the anterior cortex.

    Returns
    -------
    (4 + n_interior + 1, 3) float64, ct mm
        Rows: left entry, left tip, right entry, right tip, ``n_interior`` random points
        inside the bone, and the centroid.
    """
    R = np.asarray(axes, dtype=np.float64)  # columns: left, posterior, cranial
    c = mesh.centroid()
    loc = (mesh.vertices - c) @ R  # (x left, y posterior, z cranial) around the centroid
    lo, hi = np.floor(loc.min(0)) - 1, np.ceil(loc.max(0)) + 1
    g = [np.arange(lo[i], hi[i] + 1, 2.0) for i in range(3)]
    X, Y, Z = np.meshgrid(*g, indexing="ij")
    grid = np.stack([X, Y, Z], -1).reshape(-1, 3)
    inside = _Occupancy(mesh)
    occ = inside(c + grid @ R.T).reshape(X.shape)
    pts_in = grid[occ.ravel()]
    if len(pts_in) < 50:
        raise InputError(f"vertebra {mesh.name} encloses almost no volume; is it closed?")
    # Canal: along the midline column (|x| < 3 mm, middle third in z), the longest empty run
    # in y between bone anterior and bone posterior.
    zmid = np.abs(g[2] - np.median(pts_in[:, 2])) < max(3.0, 0.2 * np.ptp(pts_in[:, 2]))
    xmid = np.abs(g[0]) < 3.0
    col = occ[np.ix_(xmid, np.ones(len(g[1]), bool), zmid)].any(axis=(0, 2))
    filled = np.flatnonzero(col)
    best = (0, None, None)
    for a, b in zip(filled[:-1], filled[1:]):
        if b - a - 1 > best[0]:
            best = (b - a - 1, g[1][a], g[1][b])
    if best[1] is None or best[0] < 5:
        # No canal found (a very rough mesh): fall back to anterior / posterior thirds.
        y0 = np.percentile(pts_in[:, 1], 40)
        y1 = np.percentile(pts_in[:, 1], 60)
    else:
        y0, y1 = best[1], best[2]
    body = pts_in[pts_in[:, 1] < y0]
    body_c = body.mean(0) if len(body) else pts_in.mean(0)
    rows = []
    for side in (1.0, -1.0):  # left (+x) then right
        sel = ((pts_in[:, 1] >= y0) & (pts_in[:, 1] <= y1) & (pts_in[:, 0] * side > 3.0)
               & (np.abs(pts_in[:, 0]) < 35.0))
        ped = pts_in[sel]
        if len(ped) < 5:
            ped_c = body_c + np.array([side * 12.0, 0.5 * (y1 - y0) + (y0 - body_c[1]), 0.0])
        else:
            ped_c = ped.mean(0)
        aim = body_c.copy()
        aim[0] = body_c[0] + 0.5 * (ped_c[0] - body_c[0])
        d = aim - ped_c
        d /= max(np.linalg.norm(d), 1e-9)
        p_world, d_world = c + R @ ped_c, R @ d
        back = _exit_distance(inside, p_world, -d_world)
        fwd = _exit_distance(inside, p_world, d_world)
        rows.append(p_world - back * d_world)
        rows.append(p_world + 0.8 * fwd * d_world)
    rng = np.random.default_rng(seed)
    interior = pts_in[rng.choice(len(pts_in), size=min(n_interior, len(pts_in)), replace=False)]
    rows.extend(c + interior @ R.T)
    rows.append(c)
    return np.asarray(rows, dtype=np.float64)


def mesh_to_ct(anatomy: Anatomy, spacing_mm: float = 1.0, margin_mm: float = 15.0):
    """Voxelise an anatomy's vertebra surfaces into a CT + VerSe label map (``ct`` frame).

    For anatomies without a CT (a shape-model mesh), so every case bundle carries a CT and
    labels that the registration can prepare its model from. Bone inside each surface gets a
    cortical shell (~1000 HU) around a cancellous core (~250 HU); everything else is soft
    tissue (40 HU). The grid is axis-aligned in the ``ct`` frame (LPS), so the labels' surfaces
    coincide with the meshes to within half a voxel.

    Returns
    -------
    ct : arspine.imaging.CtVolume
    labels : arspine.imaging.VertebraLabels
        VerSe ids (``L3`` = 22).
    """
    from scipy import ndimage

    from arspine.imaging import CtVolume, VertebraLabels
    from arspine.imaging.labels import SCHEMES

    cached = anatomy._targets.get(("__ct__", spacing_mm))
    if cached is not None:
        return cached
    verse_ids = {v: k for k, v in SCHEMES["verse"].items()}
    allv = np.concatenate([m.vertices for m in anatomy.surfaces.values()])
    lo = allv.min(0) - margin_mm
    hi = allv.max(0) + margin_mm
    shape = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    A = np.eye(4)
    A[:3, :3] *= spacing_mm
    A[:3, 3] = lo
    lab = np.zeros(shape, np.uint8)
    for lv, m in anatomy.surfaces.items():
        b0 = np.clip(np.floor((m.vertices.min(0) - lo) / spacing_mm).astype(int) - 1, 0, None)
        b1 = np.minimum(np.ceil((m.vertices.max(0) - lo) / spacing_mm).astype(int) + 2, shape)
        g = np.meshgrid(*[np.arange(b0[a], b1[a]) for a in range(3)], indexing="ij")
        ijk = np.stack([gg.ravel() for gg in g], 1)
        inside = _Occupancy(m)(lo + ijk * spacing_mm).reshape(g[0].shape)
        sub = lab[b0[0]:b1[0], b0[1]:b1[1], b0[2]:b1[2]]
        sub[inside & (sub == 0)] = verse_ids[lv]
    bone = lab > 0
    core = ndimage.binary_erosion(bone, iterations=max(1, int(round(1.5 / spacing_mm))))
    hu = np.full(shape, 40, np.int16)
    hu[bone] = 1000
    hu[core] = 250
    ct = CtVolume(hu, A, meta={"source": "voxelised surfaces", "series_description":
                               anatomy.description or "voxelised surfaces"})
    names = {verse_ids[lv]: lv for lv in anatomy.surfaces}
    labels = VertebraLabels(lab, A, names, meta={"scheme": "verse"})
    anatomy._targets[("__ct__", spacing_mm)] = (ct, labels)
    return ct, labels
