"""Surgical plan: pedicle screw trajectories, automatic proposal and breach check.

Everything is in the ``ct`` frame (DICOM patient LPS, mm): +x patient left, +y posterior,
+z superior. A trajectory runs from the entry point on the posterior cortex through the
pedicle into the vertebral body; its tip is ``entry + length * direction``.

:func:`propose_screws` derives the trajectory of each vertebra and side from the anatomy in a
vertebra label map (:func:`propose_trajectory`); :func:`check_breach` measures the
clearance between the screw cylinder and the cortical surface.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh, as_points, as_vector3

__all__ = [
    "ScrewTrajectory",
    "SurgicalPlan",
    "BreachReport",
    "CortexIndex",
    "check_breach",
    "propose_screws",
    "propose_trajectory",
    "vertebra_anatomy",
    "VertebraAnatomy",
    "label_inside",
    "default_entry_zone_mm",
    "SIDES",
    "MEDIAL_ANGLE_RANGE_DEG",
    "SCREW_LENGTHS_MM",
    "SCREW_DIAMETERS_MM",
]

SIDES = ("left", "right")
_LEVEL_RE = re.compile(r"^(C[1-7]|T([1-9]|1[0-2])|L[1-6]|S[1-5])$")
#: +1 for the patient's left (+x in LPS), -1 for the right.
_SIDE_SIGN = {"left": 1.0, "right": -1.0}


def _point(value: object, name: str) -> np.ndarray:
    return as_vector3(value, name, "mm")


def _positive(value: object, name: str) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a positive number (mm), got {value!r}") from exc
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive number (mm), got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class ScrewTrajectory:
    """One planned pedicle screw, ``ct`` frame (LPS, mm).

    Parameters
    ----------
    vertebra : str
        Clinical level, ``"L3"``.
    side : str
        ``"left"`` or ``"right"`` (the patient's).
    entry_ct_mm : (3,)
        Entry point on the posterior cortex, mm.
    target_ct_mm : (3,)
        A point on the axis anterior to the entry; the axis runs entry -> target.
    diameter_mm : float
        Screw (outer thread) diameter, mm.
    length_mm : float, optional
        Screw length, mm; by default ``|target - entry|`` (the target is the tip).

    Trajectories are immutable: :meth:`edited` returns a changed copy.
    """

    vertebra: str
    side: str
    entry_ct_mm: np.ndarray
    target_ct_mm: np.ndarray
    diameter_mm: float = 6.5
    length_mm: float | None = None
    notes: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not isinstance(self.vertebra, str) or not _LEVEL_RE.match(self.vertebra):
            raise InputError(f"vertebra must be a clinical level name like 'L3', "
                             f"got {self.vertebra!r}")
        if self.side not in SIDES:
            raise InputError(f"side must be 'left' or 'right', got {self.side!r}")
        e = _point(self.entry_ct_mm, "entry_ct_mm")
        t = _point(self.target_ct_mm, "target_ct_mm")
        d = float(np.linalg.norm(t - e))
        if d < 1e-6:
            raise InputError("target_ct_mm must differ from entry_ct_mm (the axis is undefined)")
        object.__setattr__(self, "entry_ct_mm", e)
        object.__setattr__(self, "target_ct_mm", t)
        object.__setattr__(self, "diameter_mm", _positive(self.diameter_mm, "diameter_mm"))
        length = d if self.length_mm is None else _positive(self.length_mm, "length_mm")
        object.__setattr__(self, "length_mm", length)

    # ------------------------------------------------------------------ geometry
    @property
    def key(self) -> str:
        """``"L3_left"``."""
        return f"{self.vertebra}_{self.side}"

    @property
    def direction(self) -> np.ndarray:
        """(3,) unit axis from entry towards target, ``ct`` frame."""
        d = self.target_ct_mm - self.entry_ct_mm
        return d / np.linalg.norm(d)

    @property
    def tip_ct_mm(self) -> np.ndarray:
        """(3,) screw tip = entry + length * direction, mm."""
        return self.entry_ct_mm + self.length_mm * self.direction

    @property
    def radius_mm(self) -> float:
        return 0.5 * self.diameter_mm

    @property
    def medial_angle_deg(self) -> float:
        """Transverse (medial) angulation: angle in the axial plane between the axis and the
        anterior direction, positive when the screw converges towards the midline."""
        d = self.direction
        medial = -_SIDE_SIGN[self.side] * d[0]
        return math.degrees(math.atan2(medial, -d[1]))

    @property
    def cranial_angle_deg(self) -> float:
        """Sagittal angulation: positive when the tip is cranial of the entry."""
        d = self.direction
        return math.degrees(math.atan2(d[2], math.hypot(d[0], d[1])))

    def axis_points(self, step_mm: float = 0.5) -> np.ndarray:
        """(N, 3) points along the axis from entry to tip, mm."""
        n = max(2, int(math.ceil(self.length_mm / step_mm)) + 1)
        s = np.linspace(0.0, self.length_mm, n)
        return self.entry_ct_mm + s[:, None] * self.direction

    def edited(self, **changes) -> ScrewTrajectory:
        """A copy with some fields changed (``entry_ct_mm``, ``target_ct_mm``,
        ``diameter_mm``, ``length_mm``); moving the target keeps the length unless given."""
        allowed = {"entry_ct_mm", "target_ct_mm", "diameter_mm", "length_mm", "notes"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise InputError(f"edited() accepts {sorted(allowed)}, got {unknown}")
        if "notes" not in changes and set(changes) - {"notes"}:
            # a moved or resized screw invalidates the stored breach report
            changes["notes"] = {k: v for k, v in self.notes.items() if k != "breach"}
        return replace(self, **changes)

    # ------------------------------------------------------------------ I/O
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict:
        return {"vertebra": self.vertebra, "side": self.side,
                "entry_ct_mm": self.entry_ct_mm.tolist(),
                "target_ct_mm": self.target_ct_mm.tolist(),
                "diameter_mm": self.diameter_mm, "length_mm": self.length_mm,
                "notes": _jsonable(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping) -> ScrewTrajectory:
        try:
            return cls(d["vertebra"], d["side"], d["entry_ct_mm"], d["target_ct_mm"],
                       d.get("diameter_mm", 6.5), d.get("length_mm"), dict(d.get("notes", {})))
        except (KeyError, TypeError) as exc:
            raise InputError(f"trajectory needs vertebra, side, entry_ct_mm, target_ct_mm; got "
                             f"{d!r}") from exc


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no NaN/inf
    return obj


class SurgicalPlan:
    """An editable set of screw trajectories keyed by ``"L3_left"``."""

    def __init__(self, trajectories: Iterable[ScrewTrajectory] = (),
                 skipped: Mapping[str, str] | None = None):
        self._items: dict[str, ScrewTrajectory] = {}
        #: levels not planned automatically, with the reason
        self.skipped: dict[str, str] = dict(skipped or {})
        for t in trajectories:
            self.add(t)

    def add(self, trajectory: ScrewTrajectory) -> None:
        """Add or replace the trajectory of its level and side."""
        if not isinstance(trajectory, ScrewTrajectory):
            raise InputError(f"trajectory must be a ScrewTrajectory, got "
                             f"{type(trajectory).__name__}")
        self._items[trajectory.key] = trajectory

    def remove(self, key: str) -> None:
        if key not in self._items:
            raise InputError(f"no trajectory {key!r} in the plan (have {sorted(self._items)})")
        del self._items[key]

    def __getitem__(self, key: str) -> ScrewTrajectory:
        try:
            return self._items[key]
        except KeyError:
            raise InputError(f"no trajectory {key!r} in the plan (have {sorted(self._items)})") \
                from None

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def to_dict(self) -> dict:
        return {"trajectories": [t.to_dict() for t in self._items.values()],
                "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, d: Mapping) -> SurgicalPlan:
        if not isinstance(d, Mapping):
            raise InputError(f"plan must be a dict with 'trajectories', got {type(d).__name__}")
        return cls((ScrewTrajectory.from_dict(t) for t in d.get("trajectories", [])),
                   d.get("skipped"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SurgicalPlan):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SurgicalPlan({', '.join(self._items)})"


class CortexIndex:
    """Nearest-distance queries to a cortical surface (dense surface samples + k-d tree).

    Parameters
    ----------
    surface : Mesh
        The vertebra's outer (cortical) surface, mm.
    spacing_mm : float
        Target spacing of the samples; distances are exact to about half of it.
    """

    def __init__(self, surface: Mesh, spacing_mm: float = 0.5, max_samples: int = 400_000):
        from scipy.spatial import cKDTree

        if not isinstance(surface, Mesh) or surface.n_faces == 0:
            raise InputError(f"surface must be a non-empty Mesh, got {surface!r:.80}")
        n = int(min(max_samples, max(2000, surface.area() / spacing_mm ** 2)))
        pts, _ = surface.sample_points(n, seed=0)
        self.points = np.vstack([surface.vertices, pts])
        self.frame = surface.frame
        self.name = surface.name
        self._tree = cKDTree(self.points)

    def distance(self, points: object) -> np.ndarray:
        """(N,) distance of each point to the surface, mm."""
        p = as_points(points, "points")
        d, _ = self._tree.query(p)
        return d


@dataclass(frozen=True)
class BreachReport:
    """Screw-to-cortex clearance of one trajectory.

    Attributes
    ----------
    clearance_mm : float
        Minimum distance from the screw cylinder (radius = diameter / 2) to the cortical
        surface beyond the entry zone; negative when the screw cuts the cortex.
    closest_ct_mm : (3,)
        Cortical point that sets the clearance.
    outside_fraction : float
        Fraction of the axis (beyond the entry zone) outside the vertebra (label mask), or NaN
        when no mask was given.
    breach : bool
        True when the clearance is below ``min_clearance_mm`` or any axis sample is outside.
    warnings : list of str
    """

    key: str
    clearance_mm: float
    closest_ct_mm: np.ndarray
    outside_fraction: float
    breach: bool
    warnings: tuple[str, ...] = ()


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    s = np.clip((points - a) @ ab / max(float(ab @ ab), 1e-30), 0.0, 1.0)
    return np.linalg.norm(points - (a + s[:, None] * ab), axis=1)


def default_entry_zone_mm(trajectory: ScrewTrajectory) -> float:
    """Axis length at the entry excluded from the breach check, mm: up to 5 mm before the
    pedicle isthmus when the trajectory knows it (``notes["isthmus_ct_mm"]``), at least 5."""
    iso = trajectory.notes.get("isthmus_ct_mm") if isinstance(trajectory.notes, dict) else None
    if iso is None:
        return 5.0
    depth = float((np.asarray(iso, dtype=np.float64) - trajectory.entry_ct_mm)
                  @ trajectory.direction)
    return float(min(max(5.0, depth - 5.0), 0.5 * trajectory.length_mm))


def check_breach(trajectory: ScrewTrajectory, surface: Mesh | CortexIndex,
                 inside: object | None = None, *, entry_zone_mm: float | None = None,
                 min_clearance_mm: float = 0.0) -> BreachReport:
    """Clearance between the planned screw and the cortical surface.

    The screw is a cylinder of radius ``diameter_mm / 2`` along the axis. The first
    ``entry_zone_mm`` past the entry pierce the posterior cortex on purpose and are not
    counted; beyond it every cortical point should stay outside the cylinder.

    Parameters
    ----------
    trajectory : ScrewTrajectory
    surface : Mesh or CortexIndex
        The vertebra's surface in the ``ct`` frame, mm.
    inside : callable, optional
        ``inside(points (N, 3) ct mm) -> (N,) bool``: membership in the vertebra (e.g.
        :func:`label_inside` of the label map); axis samples outside it are a breach.
    entry_zone_mm : float, optional
        Length of axis at the entry excluded from the check, mm; by default
        :func:`default_entry_zone_mm` (the posterior elements in front of the pedicle are
        drilled through on purpose).
    min_clearance_mm : float
        Required clearance; less is reported as a breach.

    Returns
    -------
    BreachReport
    """
    index = surface if isinstance(surface, CortexIndex) else CortexIndex(surface)
    if entry_zone_mm is None:
        entry_zone_mm = default_entry_zone_mm(trajectory)
    d = trajectory.direction
    e = trajectory.entry_ct_mm
    s = (index.points - e) @ d
    keep = s >= entry_zone_mm
    a = e + entry_zone_mm * d
    b = trajectory.tip_ct_mm
    warnings = []
    if entry_zone_mm >= trajectory.length_mm or not keep.any():
        clearance, closest = math.inf, np.full(3, np.nan)
    else:
        pts = index.points[keep]
        dist = _segment_distance(pts, a, b) - trajectory.radius_mm
        i = int(np.argmin(dist))
        clearance, closest = float(dist[i]), pts[i]
    outside = math.nan
    if inside is not None:
        axis = trajectory.axis_points(0.5)
        axis = axis[(axis - e) @ d >= entry_zone_mm]
        if len(axis):
            outside = float(1.0 - np.mean(np.asarray(inside(axis), dtype=bool)))
    breach = clearance < min_clearance_mm or (not math.isnan(outside) and outside > 0)
    if clearance < min_clearance_mm:
        warnings.append(f"{trajectory.key}: screw cylinder within {clearance:.1f} mm of the "
                        f"cortex (required clearance {min_clearance_mm} mm): the screw leaves "
                        f"the pedicle or the vertebral body")
    if not math.isnan(outside) and outside > 0:
        warnings.append(f"{trajectory.key}: {100 * outside:.0f}% of the screw axis lies "
                        f"outside the vertebra")
    return BreachReport(trajectory.key, clearance, closest, outside, bool(breach),
                        tuple(warnings))


def propose_screws(ct, labels, levels: Iterable[str] | None = None, *,
                   sides: Iterable[str] = SIDES, surfaces: Mapping[str, Mesh] | None = None,
                   progress: bool = False) -> SurgicalPlan:
    """Propose one pedicle screw per vertebra and side from the anatomy.

    See :func:`propose_trajectory` for the method.

    Parameters
    ----------
    ct : CtVolume
        The CT (for the voxel-to-``ct`` affine).
    labels : VertebraLabels
        Vertebra label map on the CT grid.
    levels : iterable of str, optional
        Levels to plan. By default every thoracic and lumbar level present, skipping (into
        ``plan.skipped`` with the reason) levels cut by the CT's field of view or whose
        anatomy cannot be planned; levels asked for explicitly raise instead.
    sides : iterable of str
    surfaces : mapping of level -> Mesh, optional
        Cortical surfaces; when given, each trajectory's breach report is stored in
        ``trajectory.notes["breach"]``.

    Returns
    -------
    SurgicalPlan
    """
    names = list(getattr(labels, "levels", []))
    auto = levels is None
    if auto:
        levels = [n for n in names if n[0] in "TL"]
    levels = list(levels)
    missing = [lv for lv in levels if lv not in names]
    if missing:
        raise InputError(f"levels {missing} are not in the label map (present: {names})")
    sides = list(sides)
    for s in sides:
        if s not in SIDES:
            raise InputError(f"sides must be 'left'/'right', got {s!r}")
    plan = SurgicalPlan()
    iterator = levels
    if progress:
        import sys

        from tqdm import tqdm
        iterator = tqdm(levels, desc="planning", unit="level", disable=not sys.stderr.isatty())
    for level in iterator:
        if auto and _touches_border(labels, level):
            plan.skipped[level] = "cut by the CT field of view"
            continue
        try:
            anatomy = vertebra_anatomy(labels, level, names)
            trajs = [propose_trajectory(labels, level, side, anatomy=anatomy) for side in sides]
        except InputError as exc:
            if not auto:
                raise
            plan.skipped[level] = str(exc)
            continue
        for traj in trajs:
            if surfaces is not None and level in surfaces:
                zone = default_entry_zone_mm(traj)
                rep = check_breach(traj, surfaces[level], inside=label_inside(labels, level),
                                   entry_zone_mm=zone)
                traj = traj.edited(notes=dict(traj.notes, breach={
                    "entry_zone_mm": zone, "clearance_mm": rep.clearance_mm,
                    "outside_fraction": rep.outside_fraction,
                    "breach": rep.breach, "warnings": list(rep.warnings)}))
            plan.add(traj)
    return plan


def _touches_border(labels, level: str) -> bool:
    idx = np.argwhere(np.asarray(labels.mask(level)))
    return bool(len(idx) == 0 or (idx.min(axis=0) == 0).any()
                or (idx.max(axis=0) == np.array(labels.array.shape) - 1).any())


def label_inside(labels, level: str):
    """``inside(points) -> bool`` for the voxels of ``level`` (nearest voxel), ``ct`` mm."""
    mask = np.asarray(labels.mask(level), dtype=bool)
    T_ijk_from_ct = np.linalg.inv(np.asarray(labels.T_ct_from_ijk, dtype=np.float64))

    def inside(points: np.ndarray) -> np.ndarray:
        p = as_points(points, "points")
        ijk = np.rint(p @ T_ijk_from_ct[:3, :3].T + T_ijk_from_ct[:3, 3]).astype(np.int64)
        ok = np.all((ijk >= 0) & (ijk < np.array(mask.shape)), axis=1)
        out = np.zeros(len(p), dtype=bool)
        out[ok] = mask[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
        return out

    return inside



# Published lumbar pedicle morphometry (Zindrick et al. 1987; Olsewski 1990): transverse
# (medial) pedicle angle ~11 deg at L1 rising to ~30 deg at L5; chord length to the
# anterior cortex 45-55 mm. Screws stop short of the anterior cortex (~80 % of the depth).
MEDIAL_ANGLE_RANGE_DEG = (5.0, 35.0)
SCREW_LENGTHS_MM = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0)
SCREW_DIAMETERS_MM = (4.5, 5.5, 6.5, 7.5)


@dataclass(frozen=True, eq=False)
class VertebraAnatomy:
    """Local anatomical frame and landmarks of one vertebra (``ct`` frame, mm).

    Attributes
    ----------
    origin : (3,)  voxel centroid of the vertebra
    axes : (3, 3)  rows: lateral (patient left), anterior, cranial unit vectors
    canal_center : (3,) or None  centre of the vertebral foramen (None when not enclosed)
    canal_ap_mm : (2,)  posterior and anterior limits of the canal along the anterior axis
    canal_halfwidth_mm : float
    body_center : (3,)  centroid of the vertebral body
    """

    level: str
    origin: np.ndarray
    axes: np.ndarray
    canal_center: np.ndarray | None
    canal_ap_mm: np.ndarray
    canal_halfwidth_mm: float
    body_center: np.ndarray
    points_local: np.ndarray = field(repr=False)
    cell_mm: float = 3.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def vertebra_anatomy(labels, level: str, neighbours: Iterable[str] | None = None
                     ) -> VertebraAnatomy:
    """Anatomical frame, spinal canal and body of ``level`` from the label map.

    The cranial axis follows the line through the neighbouring levels' centroids (the
    local spine curve), the anterior axis is the ``ct`` frame's anterior (-y in LPS)
    made orthogonal to it. The canal is the hole in the vertebra's projection along the
    cranial axis (the vertebral foramen runs through every slice).
    """
    from scipy import ndimage

    T = np.asarray(labels.T_ct_from_ijk, dtype=np.float64)
    ijk = np.argwhere(np.asarray(labels.mask(level)))
    if len(ijk) < 50:
        raise InputError(f"level {level!r} has only {len(ijk)} voxels; too few to plan")
    pts = ijk @ T[:3, :3].T + T[:3, 3]
    origin = pts.mean(axis=0)
    spacing = np.linalg.norm(T[:3, :3], axis=0)
    cell = float(max(1.0, spacing.max()))
    cranial = np.array([0.0, 0.0, 1.0])
    names = list(neighbours) if neighbours is not None else list(labels.levels)
    if level in names:
        i = names.index(level)
        near = [names[j] for j in (i - 1, i + 1) if 0 <= j < len(names)]
        cents = {n: labels.centroid_mm(n) for n in near}
        if len(cents) == 2:
            up = _unit(cents[names[i - 1]] - cents[names[i + 1]])  # cranial neighbour first
        elif len(cents) == 1:
            (n, c), = cents.items()
            up = _unit(c - origin) if names.index(n) < i else _unit(origin - c)
        else:
            up = cranial
        if up @ cranial > np.cos(np.radians(40)):  # trust the spine curve within 40 deg
            cranial = up
    anterior = np.array([0.0, -1.0, 0.0])
    anterior = _unit(anterior - (anterior @ cranial) * cranial)
    lateral = np.cross(cranial, anterior)  # patient left (+x in LPS)
    axes = np.stack([lateral, anterior, cranial])
    q = (pts - origin) @ axes.T

    # axial projection on a grid; the canal is the enclosed hole
    lo = q[:, :2].min(axis=0) - 2 * cell
    idx = np.floor((q[:, :2] - lo) / cell).astype(int)
    grid = np.zeros(idx.max(axis=0) + 3, dtype=bool)
    grid[idx[:, 0], idx[:, 1]] = True
    closed = ndimage.binary_closing(grid, iterations=1)
    holes = ndimage.binary_fill_holes(closed) & ~closed
    lab, n = ndimage.label(holes)
    canal_center = None
    canal_ap = np.array([np.nan, np.nan])
    half = math.nan
    if n:
        sizes = ndimage.sum(holes, lab, range(1, n + 1))
        k = int(np.argmax(sizes)) + 1
        if sizes[k - 1] * cell * cell >= 40.0:  # a foramen, not a voxel gap
            cells = np.argwhere(lab == k)
            uv = (cells + 0.5) * cell + lo
            c2 = uv.mean(axis=0)
            canal_ap = np.array([uv[:, 1].min() - 0.5 * cell, uv[:, 1].max() + 0.5 * cell])
            half = float(0.5 * (np.ptp(uv[:, 0]) + cell))
            canal_center = np.array([c2[0], c2[1], 0.0])
    if canal_center is None:
        # open ring (low resolution or partial label): canal assumed where the midline
        # column of the projection has its gap, else 5 mm posterior of the centroid
        mid = int(round((0.0 - lo[0]) / cell))
        col = closed[min(max(mid, 0), closed.shape[0] - 1)]
        filled = np.flatnonzero(col)
        gaps = np.flatnonzero(~col[filled.min():filled.max() + 1]) + filled.min() \
            if len(filled) else np.array([], int)
        a0 = float((gaps.mean() + 0.5) * cell + lo[1]) if len(gaps) else -5.0
        canal_center = np.array([0.0, a0, 0.0])
        canal_ap = np.array([a0 - 8.0, a0 + 8.0])
        half = 10.0
    body = q[q[:, 1] > canal_ap[1] + cell]
    if len(body) < 10:
        raise InputError(f"level {level!r}: no vertebral body found anterior to the canal")
    body_center = body.mean(axis=0)
    to_ct = lambda v: origin + v @ axes  # noqa: E731
    return VertebraAnatomy(level, origin, axes, to_ct(canal_center), canal_ap, half,
                           to_ct(body_center), q, cell)


#: Mean transverse pedicle angles (Zindrick et al. 1987), deg, the tie-breaker of the search.
_REF_MEDIAL_DEG = {"T10": 5.0, "T11": 5.0, "T12": 8.0, "L1": 11.0, "L2": 12.0, "L3": 14.0,
                   "L4": 18.0, "L5": 30.0}


def _edt_sampler(labels, level: str):
    """``f(points ct mm) -> (N,)`` distance to the outside of the vertebra, mm, minus half a
    voxel (the boundary lies between voxel centres); trilinear, 0 outside."""
    from scipy import ndimage

    T = np.asarray(labels.T_ct_from_ijk, dtype=np.float64)
    mask = np.asarray(labels.mask(level))
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = np.minimum(idx.max(axis=0) + 3, mask.shape)
    sub = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sub = np.pad(sub, 1)
    spacing = np.linalg.norm(T[:3, :3], axis=0)
    edt = ndimage.distance_transform_edt(sub, sampling=spacing) - 0.5 * spacing.min()
    edt = np.maximum(edt, 0.0)
    T_ijk_from_ct = np.linalg.inv(T)

    def f(points: np.ndarray) -> np.ndarray:
        ijk = points @ T_ijk_from_ct[:3, :3].T + T_ijk_from_ct[:3, 3] - lo + 1
        return ndimage.map_coordinates(edt, ijk.T, order=1, mode="constant", cval=0.0)

    return f


def _snap_down(value: float, options: tuple[float, ...]) -> float:
    ok = [o for o in options if o <= value + 1e-9]
    return ok[-1] if ok else options[0]


def propose_trajectory(labels, level: str, side: str,
                       neighbours: Iterable[str] | None = None,
                       anatomy: VertebraAnatomy | None = None) -> ScrewTrajectory:
    """Propose the pedicle screw of one vertebra and side from its label map.

    Method, in the vertebra's local frame (:func:`vertebra_anatomy`):

    1. Pedicle sections: slabs across the anterior axis between the canal's posterior and
       anterior limits, keeping the bone lateral to the canal on that side within 15 mm of
       its wall; the narrowest section (fewest voxels) is the isthmus.
    2. Pedicle axis: a line fitted through the section centroids (cross-check: medial
       angulation clipped to :data:`MEDIAL_ANGLE_RANGE_DEG`; parallel to the endplates),
       passing through the isthmus centre.
    3. Entry: where the axis leaves the bone posteriorly; the tip at 80 % of the distance to
       the anterior cortex, length snapped down to :data:`SCREW_LENGTHS_MM`.
    4. Diameter: 80 % of the isthmus's smaller width, snapped down to
       :data:`SCREW_DIAMETERS_MM`.

    ``notes`` records the isthmus centre and widths and the method's intermediate values.
    """
    if side not in SIDES:
        raise InputError(f"side must be 'left' or 'right', got {side!r}")
    an = anatomy if anatomy is not None else vertebra_anatomy(labels, level, neighbours)
    q, cell = an.points_local, an.cell_mm
    sgn = _SIDE_SIGN[side]
    cu = (an.canal_center - an.origin) @ an.axes[0]
    lat = sgn * (q[:, 0] - cu)
    a_lo, a_hi = an.canal_ap_mm
    sel = (lat >= an.canal_halfwidth_mm - cell) & (lat <= an.canal_halfwidth_mm + 15.0)
    slabs = np.arange(a_lo, a_hi + 1e-9, cell)
    sections = []
    for a0 in slabs:
        m = sel & (q[:, 1] >= a0 - 0.5 * cell) & (q[:, 1] < a0 + 0.5 * cell)
        if m.sum() >= 2:
            sections.append((a0, int(m.sum()), q[m]))
    if len(sections) < 1:
        raise InputError(f"{level} {side}: no pedicle found lateral to the spinal canal")
    # the isthmus: the narrowest section, central ones preferred over the ends on ties
    mid = 0.5 * (a_lo + a_hi)
    a_i, _, sec = min(sections, key=lambda s: (s[1], abs(s[0] - mid)))
    p_local = sec.mean(axis=0)
    width_u = float(np.ptp(sec[:, 0]) + cell)
    height_c = float(np.ptp(sec[:, 2]) + cell)
    # pedicle axis: the line through the isthmus with the widest bony corridor (largest
    # minimum distance to the cortex over pedicle and body), near the published angle
    edt_at = _edt_sampler(labels, level)
    # centre of the isthmus: the point of the section plane farthest from the cortex
    du, dc = np.meshgrid(np.arange(-7.5, 7.6, 1.5), np.arange(-7.5, 7.6, 1.5), indexing="ij")
    cand = np.c_[p_local[0] + du.ravel(), np.full(du.size, a_i), p_local[2] + dc.ravel()]
    depth_here = edt_at(an.origin + cand @ an.axes)
    p_local = cand[int(np.argmax(depth_here))]
    p = an.origin + p_local @ an.axes
    ref = _REF_MEDIAL_DEG.get(level, 12.0)
    s_line = np.arange(-5.0, 25.0 + 1e-9, 1.0)
    best = None
    for theta in np.arange(MEDIAL_ANGLE_RANGE_DEG[0], MEDIAL_ANGLE_RANGE_DEG[1] + 1e-9, 1.0):
        for phi in (-10.0, -5.0, 0.0, 5.0, 10.0):
            t, f = math.radians(theta), math.radians(phi)
            dl = np.array([-sgn * math.sin(t) * math.cos(f), math.cos(t) * math.cos(f),
                           math.sin(f)])
            corridor = float(edt_at(p + s_line[:, None] * (dl @ an.axes)).min())
            score = corridor - 0.1 * abs(theta - ref) - 0.05 * abs(phi)
            if best is None or score > best[0]:
                best = (score, theta, phi, corridor, dl)
    _, medial_used, phi_used, corridor, d_local = best
    d = d_local @ an.axes
    inside = label_inside(labels, level)
    step = 0.5
    s = np.arange(0.0, 120.0, step)
    back = inside(p - s[:, None] * d)
    n_back = int(np.argmin(back)) if not back.all() else len(s)
    fwd = inside(p + s[:, None] * d)
    n_fwd = int(np.argmin(fwd)) if not fwd.all() else len(s)
    entry = p - max(0, n_back - 1) * step * d
    anterior = p + max(0, n_fwd - 1) * step * d
    depth = float((anterior - entry) @ d)
    length = _snap_down(0.8 * depth, SCREW_LENGTHS_MM)
    # the screw fills at most 80 % of the narrowest corridor (bounded by the isthmus size)
    diameter = _snap_down(min(1.6 * corridor, 0.8 * min(width_u, height_c)),
                          SCREW_DIAMETERS_MM)
    notes = {"method": "widest corridor through the pedicle isthmus (label map)",
             "isthmus_ct_mm": p.tolist(), "isthmus_width_mm": width_u,
             "isthmus_height_mm": height_c, "corridor_radius_mm": corridor,
             "local_medial_deg": float(medial_used), "local_cranial_deg": float(phi_used),
             "entry_to_anterior_cortex_mm": depth}
    return ScrewTrajectory(level, side, entry, entry + length * d, diameter, length, notes)
