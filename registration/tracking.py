"""Frame-to-frame tracking of every exposed vertebra at sensor rate, with loss-of-track detection.

After an initial registration, :meth:`Tracker.update` takes each new sensor frame and updates
every vertebra's ``T_sensor_from_ct`` from its previous pose (warm start). Why it is fast:

- the frame is cropped to the box around the predicted vertebra surfaces first (most of a
  640x480 depth frame is skin and drapes, and what is not processed costs nothing);
- the target is cached: per vertebra, a voxel grid in the ``ct`` frame holds the nearest
  exposable-shell point (and its normal) of every cell, so a correspondence is one array
  lookup instead of a KD-tree query;
- robust (Tukey) point-to-plane steps on at most a few thousand points per vertebra.

Loss of track (a hand or tool occluding, sudden motion, too few points, a poor fit) is
detected per vertebra from the inlier count against a running reference, the residual, the
step from the prediction and the conditioning of the fit; a lost vertebra is never reported
ok. When a vertebra stays lost for ``relocalize_after`` frames the tracker falls back to the
global registration (:func:`arspine.registration.register`) and says so in the frame result.

Frames: scan points are in ``sensor`` (mm); model points in ``ct`` (mm); poses are
``T_sensor_from_ct`` per vertebra.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import PointCloud, as_points

__all__ = ["Tracker", "TrackerConfig", "FrameResult", "LevelTrack", "LevelTarget",
           "build_level_target"]


@dataclass(frozen=True)
class TrackerConfig:
    """Tracking parameters (mm, deg).

    Attributes
    ----------
    voxel_mm : float
        Cell size of the cached nearest-point grid.
    margin_mm : float
        The grid (and the crop box) extends this far beyond a vertebra's shell.
    gate_mm : float
        Correspondence distance of the first ICP step (largest motion caught per frame).
    final_gate_mm : float
        Correspondence distance of the last steps (and of the inlier count).
    steady_gate_mm, steady_final_gate_mm : float
        The same while a vertebra is tracked steadily (ok in the previous frame): motion
        between frames is then well under a millimetre, and a tight gate keeps soft tissue
        and the neighbouring bone out of the fit.
    tukey_c_mm : float
        Tukey scale of the point-to-plane residual.
    min_tukey_c_mm : float
        While tracking steadily the scale is 3x the running RMS, at least this.
    max_iterations : int
        ICP steps per vertebra and frame.
    crop_budget : int
        At most this many cropped points are used per frame (uniform stride).
    level_budget : int
        At most this many points per vertebra in the ICP.
    min_points : int
        Fewer inliers than this: lost ("too few points").
    min_coverage : float
        Points near the predicted surface below this fraction of their running reference:
        lost ("occluded").
    min_inlier_ratio : float
        Lost when fewer of the points used are inliers (a tool or hand touching the bone).
    max_rmse_mm : float
        Absolute limit of the inlier point-to-plane RMS.
    rmse_factor : float
        Lost when the RMS exceeds ``rmse_factor`` times its running reference (+0.2 mm).
    reacquire_coverage, reacquire_rmse_factor : float
        Stricter coverage / RMS limits for a vertebra to count as ok again after a loss.
    consistency_mm, consistency_deg : float
        A vertebra whose pose relative to every tracked neighbour changed by more than this
        since they were last both ok is lost ("inconsistent with its neighbours"): vertebrae
        move a few mm relative to each other, not a level.
    anchor_mm, anchor_deg : float
        The same against the relation of the last global registration: breathing moves
        neighbours ~1 mm and well under a degree relative to each other, so a larger change
        is a level sliding where its visible patch does not hold it.
    max_step_mm, max_step_deg : float
        A frame-to-frame change beyond these is a sudden motion: lost for that frame.
    prior_mm, prior_deg : float
        Standard deviation of the motion prior around the prediction (per frame): damps
        jitter along directions the visible bone does not constrain.
    min_conditioning : float
        Lost when the smallest / largest eigenvalue of the scaled 6x6 normal matrix falls
        below this (the visible patch no longer pins the pose: it could slide).
    relocalize_after : int
        Consecutive lost frames of a vertebra before the global registration is tried.
    relocalize_every : int
        At most one global attempt per this many frames (it costs far more than a frame).
    """

    voxel_mm: float = 1.0
    margin_mm: float = 8.0
    gate_mm: float = 6.0
    final_gate_mm: float = 3.0
    steady_gate_mm: float = 3.5
    steady_final_gate_mm: float = 2.5
    tukey_c_mm: float = 2.5
    min_tukey_c_mm: float = 1.5
    max_iterations: int = 5
    crop_budget: int = 8000
    level_budget: int = 1000
    min_points: int = 60
    min_coverage: float = 0.5
    min_inlier_ratio: float = 0.5
    max_rmse_mm: float = 2.0
    rmse_factor: float = 1.4
    reacquire_coverage: float = 0.75
    reacquire_rmse_factor: float = 1.25
    consistency_mm: float = 3.0
    consistency_deg: float = 4.0
    anchor_mm: float = 2.5
    anchor_deg: float = 2.0
    max_step_mm: float = 3.0
    max_step_deg: float = 3.0
    prior_mm: float = 2.0
    prior_deg: float = 2.0
    min_conditioning: float = 2e-3
    relocalize_after: int = 2
    relocalize_every: int = 5


# ----------------------------------------------------------------------------- cached target
@dataclass
class LevelTarget:
    """Cached point-to-plane target of one vertebra (frame ``ct``, mm).

    ``grid`` maps a cell to the index of the nearest shell point within ``margin_mm``
    (-1 beyond); ``origin_mm`` is the corner of cell (0, 0, 0).
    """

    name: str
    points: np.ndarray
    normals: np.ndarray
    origin_mm: np.ndarray
    voxel_mm: float
    dims: np.ndarray
    grid: np.ndarray
    corners: np.ndarray = field(repr=False)

    def lookup(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest shell point of each ``(N, 3)`` ct point (-1 outside)."""
        # the grid's outer layer is -1, so clipping sends every outside point to "none"
        g = ((x - self.origin_mm) * (1.0 / self.voxel_mm)).astype(np.int64)
        np.clip(g, 0, self.dims - 1, out=g)
        return self.grid[g @ self._strides]

    @property
    def _strides(self) -> np.ndarray:
        s = self.__dict__.get("_s")
        if s is None:
            d = self.dims
            s = self.__dict__["_s"] = np.array([d[1] * d[2], d[2], 1], dtype=np.int64)
        return s


def build_level_target(name: str, points: np.ndarray, normals: np.ndarray,
                       voxel_mm: float = 1.0, margin_mm: float = 8.0) -> LevelTarget:
    """Build the nearest-point grid of one vertebra's shell (done once per tracker).

    Parameters
    ----------
    points, normals : (N, 3) float64
        Shell points and unit normals, frame ``ct``, mm.
    """
    from scipy import ndimage

    pts = as_points(points, f"model points of {name}", min_points=10)
    nrm = np.asarray(normals, dtype=np.float64)
    # one empty cell around the margin: clipped outside points land on -1
    lo = pts.min(axis=0) - margin_mm - voxel_mm
    hi = pts.max(axis=0) + margin_mm + voxel_mm
    dims = np.ceil((hi - lo) / voxel_mm).astype(np.int64) + 1
    cell = np.floor((pts - lo) / voxel_mm).astype(np.int64)
    lin = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    owner = np.full(int(np.prod(dims)), -1, dtype=np.int64)
    owner[lin] = np.arange(len(pts))  # one representative shell point per occupied cell
    owner = owner.reshape(tuple(dims))
    # nearest occupied cell of every cell (exact Euclidean distance transform, in C)
    dist, idx = ndimage.distance_transform_edt(owner < 0, return_indices=True)
    grid = owner[tuple(idx)]
    grid[dist * voxel_mm > margin_mm] = -1
    grid[0, :, :] = grid[-1, :, :] = grid[:, 0, :] = grid[:, -1, :] = -1
    grid[:, :, 0] = grid[:, :, -1] = -1
    c = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                  for z in (lo[2], hi[2])])
    return LevelTarget(name=name, points=pts, normals=nrm, origin_mm=lo,
                       voxel_mm=float(voxel_mm), dims=dims,
                       grid=grid.reshape(-1).astype(np.int32), corners=c)


def _model_targets(model: Any, levels: list[str], cfg: TrackerConfig) -> dict[str, LevelTarget]:
    """Per-level targets, cached on the model object (one build per model and grid)."""
    cache = getattr(model, "_trees", None)
    key = ("tracking", cfg.voxel_mm, cfg.margin_mm)
    out = {}
    for level in levels:
        k = key + (level,)
        if isinstance(cache, dict) and k in cache:
            out[level] = cache[k]
            continue
        mask = np.asarray(model.level_index) == list(model.levels).index(level)
        t = build_level_target(level, np.asarray(model.points)[mask],
                               np.asarray(model.normals)[mask], cfg.voxel_mm, cfg.margin_mm)
        if isinstance(cache, dict):
            cache[k] = t
        out[level] = t
    return out


def _pack(targets: dict[str, LevelTarget], levels: list[str]) -> dict[str, np.ndarray]:
    """All levels' targets in flat arrays, indexed by level number (for the batched ICP)."""
    pts, nrm, grids, offs = [], [], [], []
    n_pts = n_cells = 0
    for lv in levels:
        tg = targets[lv]
        pts.append(tg.points)
        nrm.append(tg.normals)
        grids.append(np.where(tg.grid >= 0, tg.grid + n_pts, -1).astype(np.int64))
        offs.append(n_cells)
        n_pts += len(tg.points)
        n_cells += len(tg.grid)
    tgs = [targets[lv] for lv in levels]
    return {"points_normals": np.hstack([np.concatenate(pts), np.concatenate(nrm)]),
            "grid": np.concatenate(grids), "offset": np.array(offs, dtype=np.int64),
            "origin": np.stack([t.origin_mm for t in tgs]),
            "inv_voxel": np.array([1.0 / t.voxel_mm for t in tgs]),
            "dims_m1": np.stack([t.dims - 1 for t in tgs]).astype(np.int64),
            "strides": np.stack([t._strides for t in tgs])}


# ----------------------------------------------------------------------------- small math
def _rigid_from_twists(x: np.ndarray) -> np.ndarray:
    """Batched :func:`_rigid_from_twist`: ``(L, 6)`` -> ``(L, 4, 4)``."""
    w, t = x[:, :3], x[:, 3:]
    th = np.sqrt((w * w).sum(axis=1))
    k = np.zeros((len(x), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    safe = np.where(th > 1e-12, th, 1.0)
    a = np.where(th > 1e-12, np.sin(th) / safe, 1.0)
    b = np.where(th > 1e-12, (1.0 - np.cos(th)) / (safe * safe), 0.5)
    m = np.zeros((len(x), 4, 4))
    m[:, :3, :3] = np.eye(3) + a[:, None, None] * k + b[:, None, None] * (k @ k)
    m[:, :3, 3] = t
    m[:, 3, 3] = 1.0
    return m


def _inv(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    r = m[:3, :3].T
    out[:3, :3], out[:3, 3] = r, -r @ m[:3, 3]
    return out


def _frame_points(points: object) -> np.ndarray:
    """A frame's ``(N, 3)`` points (N may be 0: a blank frame is lost, not an error)."""
    if isinstance(points, PointCloud):
        return points.points
    return as_points(points, "points", allow_empty=True)


def _orthonormalize(m: np.ndarray) -> np.ndarray:
    """Nearest rotation (SVD) of a 4x4's rotation part: products of steps drift."""
    u, _, vt = np.linalg.svd(m[:3, :3])
    out = m.copy()
    out[:3, :3] = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return out


def _step(a: np.ndarray, b: np.ndarray, centre: np.ndarray) -> tuple[float, float]:
    """(deg, mm) between two poses; mm measured at ``centre`` (ct) - what the eye sees."""
    d = a @ _inv(b)
    c = np.clip((np.trace(d[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    p = b[:3, :3] @ centre + b[:3, 3]
    return math.degrees(math.acos(c)), float(np.linalg.norm(d[:3, :3] @ p + d[:3, 3] - p))


# ----------------------------------------------------------------------------- results
class LevelTrack:
    """Per-vertebra outcome of one frame.

    Attributes
    ----------
    status : str
        ``"ok"`` or ``"lost"`` (``"rejected"`` after a refused global re-registration).
    T_sensor_from_ct : RigidTransform
        The estimate when ok; the last good pose (held) otherwise.
    matrix : (4, 4) ndarray
        The same pose as a matrix.
    rmse_mm : float
        Inlier point-to-plane RMS (mm), NaN when not fitted.
    inlier_fraction : float
        Inliers over the points used in the fit (0..1).
    coverage : float
        Points near the surface over their running reference (0..~1; occlusion lowers it).
    n_points : int
        Inliers used.
    reason : str or None
        Why it is not ok.
    """

    __slots__ = ("status", "matrix", "rmse_mm", "inlier_fraction", "coverage", "n_points",
                 "reason", "needs_verify", "_T")

    def __init__(self, status: str, matrix: np.ndarray, rmse_mm: float = float("nan"),
                 inlier_fraction: float = 0.0, n_points: int = 0, reason: str | None = None,
                 coverage: float = 0.0):
        self.status = status
        self.matrix = matrix
        self.rmse_mm = rmse_mm
        self.inlier_fraction = inlier_fraction
        self.coverage = coverage
        # re-acquired away from its last good pose: ok only once a neighbour confirms it
        self.needs_verify = False
        self.n_points = n_points
        self.reason = reason
        self._T: RigidTransform | None = None

    @property
    def T_sensor_from_ct(self) -> RigidTransform:
        # built on demand: validating a RigidTransform costs more than a tracking step
        if self._T is None or self._T.as_matrix() is not self.matrix:
            self._T = RigidTransform(self.matrix, "sensor", "ct")
        return self._T

    def __repr__(self) -> str:
        return (f"LevelTrack({self.status!r}, rmse_mm={self.rmse_mm:.3f}, "
                f"n_points={self.n_points}, reason={self.reason!r})")

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 4)

        return {"T_sensor_from_ct": np.asarray(self.matrix).tolist(),
                "status": self.status, "rmse_mm": num(self.rmse_mm),
                "inlier_fraction": num(self.inlier_fraction), "coverage": num(self.coverage),
                "n_points": int(self.n_points),
                "reason": self.reason}


@dataclass
class FrameResult:
    """Outcome of :meth:`Tracker.update` for one frame.

    Attributes
    ----------
    index : int
        Frame counter of this tracker (0 = first update).
    timestamp_s : float
    status : str
        ``"ok"`` when every tracked vertebra is ok; ``"rejected"`` when the global
        re-registration of this frame was refused; ``"lost"`` otherwise.
    levels : dict[str, LevelTrack]
    elapsed_ms : float
        Time of the update itself (ms).
    reason : str or None
        Why the frame is not ok; mentions a global re-registration when one ran.
    relocalized : bool
        The global registration ran on this frame.
    """

    index: int
    timestamp_s: float
    status: str
    levels: dict[str, LevelTrack]
    elapsed_ms: float
    reason: str | None = None
    relocalized: bool = False

    @property
    def vertebrae(self) -> dict[str, RigidTransform]:
        """``{level: T_sensor_from_ct}``."""
        return {k: v.T_sensor_from_ct for k, v in self.levels.items()}

    def to_dict(self) -> dict:
        """One entry of ``trajectory.json`` (DESIGN.md), with per-level details added."""
        return {"index": self.index, "timestamp_s": self.timestamp_s, "status": self.status,
                "vertebrae": {k: v.to_dict() for k, v in self.levels.items()},
                "elapsed_ms": round(self.elapsed_ms, 3), "reason": self.reason,
                "relocalized": self.relocalized}


@dataclass
class _LevelState:
    pose: np.ndarray          # T_sensor_from_ct, last estimate (ok or not)
    good: np.ndarray          # last pose reported ok
    prev_good: np.ndarray | None = None
    ok_streak: int = 0
    last_near: int = 0
    fails: int = 0
    ref_inliers: list = field(default_factory=list)
    ref_rmse: list = field(default_factory=list)


# ----------------------------------------------------------------------------- tracker
def _initial_poses(initial_result: Any, levels: list[str]) -> dict[str, np.ndarray | None]:
    """Per-level ``T_sensor_from_ct`` of the initial registration (None when not ok)."""
    if isinstance(initial_result, dict):
        from arspine.registration import RegistrationResult

        initial_result = RegistrationResult.from_dict(initial_result)
    if initial_result is None or not hasattr(initial_result, "status"):
        raise InputError(f"initial_result must be a RegistrationResult (or its dict), got "
                         f"{type(initial_result).__name__}")
    vert = getattr(initial_result, "vertebrae", None) or {}
    out: dict[str, np.ndarray | None] = {}
    for level in levels:
        vr = vert.get(level)
        if vr is not None:
            ok = initial_result.status == "ok" and getattr(vr, "status", "ok") == "ok"
            out[level] = vr.T_sensor_from_ct.as_matrix() if ok else None
        elif not vert and initial_result.status == "ok":
            out[level] = initial_result.T_sensor_from_ct.as_matrix()
        else:
            out[level] = None
    return out


class Tracker:
    """Per-vertebra tracker warm-started from a registration.

    Parameters
    ----------
    prepared_model : PreparedModel
        From :func:`arspine.registration.prepare_model` (shell points / normals per level).
    initial_result : RegistrationResult or dict
        The registration of the first frame; its ok vertebrae start tracked, the others start
        lost (and are recovered by the global fallback).
    levels : list of str, optional
        Levels to track (default: the model's levels present in ``initial_result``).
    config : TrackerConfig, optional
    register_fn : callable (model, PointCloud, levels) -> RegistrationResult, optional
        The global fallback (default :func:`arspine.registration.register`).

    Examples
    --------
    >>> tracker = Tracker(model, register(model, first_frame))        # doctest: +SKIP
    >>> for t, pts in frames:                                         # doctest: +SKIP
    ...     fr = tracker.update(pts, t)
    ...     if fr.status == "ok":
    ...         show(fr.vertebrae["L3"])
    """

    def __init__(self, prepared_model: Any, initial_result: Any, *,
                 levels: list[str] | None = None, config: TrackerConfig | None = None,
                 register_fn: Any = None):
        for attr in ("levels", "points", "normals", "level_index"):
            if not hasattr(prepared_model, attr):
                raise InputError(f"prepared_model must be a PreparedModel (missing .{attr}), "
                                 f"got {type(prepared_model).__name__}")
        self.model = prepared_model
        self.config = config or TrackerConfig()
        if not isinstance(self.config, TrackerConfig):
            raise InputError(f"config must be a TrackerConfig, got {type(config).__name__}")
        model_levels = list(prepared_model.levels)
        vert = getattr(initial_result, "vertebrae", None)
        if isinstance(initial_result, dict):
            vert = initial_result.get("vertebrae")
        if levels is None:
            levels = [lv for lv in model_levels if not vert or lv in vert]
        levels = list(levels)
        bad = [lv for lv in levels if lv not in model_levels]
        if bad or not levels:
            raise InputError(f"levels must be among the model's {model_levels}, got {levels}")
        self.levels = levels
        self._register = register_fn
        self.targets = _model_targets(prepared_model, levels, self.config)
        self._packed = _pack(self.targets, levels)
        # Untracked model levels next to tracked ones (e.g. L5 below an exposed L2-L4):
        # scan points nearer to them are nobody's. Their pose is borrowed from the adjacent
        # tracked level (neighbours move a few mm relative to each other).
        self._guards: dict[str, str] = {}
        for i, lv in enumerate(model_levels):
            if lv in levels:
                continue
            for j in (i - 1, i + 1):
                if 0 <= j < len(model_levels) and model_levels[j] in levels:
                    self._guards[lv] = model_levels[j]
                    break
        self._guard_targets = _model_targets(prepared_model, list(self._guards), self.config)
        poses = _initial_poses(initial_result, levels)
        self._state: dict[str, _LevelState] = {}
        self._lost_from_start = [lv for lv, p in poses.items() if p is None]
        fallback = next((p for p in poses.values() if p is not None), np.eye(4))
        for lv in levels:
            p = poses[lv] if poses[lv] is not None else fallback
            st = _LevelState(pose=p.copy(), good=p.copy())
            if poses[lv] is None:
                st.fails = self.config.relocalize_after  # relocalize at the first frame
            self._state[lv] = st
        self._centres = {lv: self.targets[lv].points.mean(axis=0) for lv in levels}
        # half the largest extent (mm): scales rotation to mm in the conditioning check
        self._extent = {lv: max(float(np.ptp(self.targets[lv].points, axis=0).max()) / 2, 1.0)
                        for lv in levels}
        self._index = 0
        self._crop_full = 0
        self._crop_factor = 1
        self._near: dict[str, int] = {}
        # relative poses of neighbouring levels when last both ok
        self._rel: dict[tuple[str, str], np.ndarray] = {}
        self._rel_anchor: dict[tuple[str, str], np.ndarray] = {}
        self._update_relations({lv: LevelTrack("ok" if poses[lv] is not None else "lost",
                                               poses[lv] if poses[lv] is not None
                                               else np.eye(4)) for lv in levels})
        self._rel_anchor = dict(self._rel)
        self._last_t: float | None = None
        self._last_global = -10**9

    # ------------------------------------------------------------------ public
    def update(self, points: object, timestamp_s: float) -> FrameResult:
        """Track one frame.

        Parameters
        ----------
        points : (N, 3) array_like or PointCloud
            The frame's points, frame ``sensor``, mm (N may be 0: a blank frame is lost).
        timestamp_s : float
            Frame time (s), not earlier than the previous frame's.

        Returns
        -------
        FrameResult
        """
        t_start = time.perf_counter()
        pts = _frame_points(points)
        try:
            ts = float(timestamp_s)
        except (TypeError, ValueError) as exc:
            raise InputError(f"timestamp_s must be a number, got {timestamp_s!r}") from exc
        if not math.isfinite(ts):
            raise InputError(f"timestamp_s must be finite, got {timestamp_s!r}")
        if self._last_t is not None and ts < self._last_t:
            raise InputError(f"timestamp_s must not go back in time: got {ts} after "
                             f"{self._last_t}")
        self._last_t = ts
        cfg = self.config
        preds = {lv: self._predict(lv) for lv in self.levels}
        crop = self._crop(pts, preds)
        owned = self._assign(crop, preds)
        tracks = self._track_levels(owned, preds, self.levels)
        self._check_neighbours(tracks)
        self._verify(tracks)
        relocalized = False
        reason = None
        lost_long = [lv for lv in self.levels if tracks[lv].status != "ok"
                     and self._state[lv].fails + 1 >= cfg.relocalize_after]
        if lost_long and self._index - self._last_global >= cfg.relocalize_every:
            relocalized = True
            self._last_global = self._index
            # every level not ok now or lost last frame gets the global pose (checked again)
            need = [lv for lv in self.levels if tracks[lv].status != "ok"
                    or self._state[lv].fails > 0]
            reason = self._relocalize(pts, need, tracks)
            self._check_neighbours(tracks)
            self._verify(tracks)
            if any(tracks[lv].status == "ok" for lv in need):
                # the global registration is the new reference of the relations it confirmed
                for a, b in zip(self.levels[:-1], self.levels[1:]):
                    if tracks[a].status == "ok" and tracks[b].status == "ok":
                        pa, pb = tracks[a].matrix, tracks[b].matrix
                        self._rel_anchor[(a, b)] = _inv(pb) @ pa
                        self._rel_anchor[(b, a)] = _inv(pa) @ pb
        status = "ok"
        bad = [lv for lv in self.levels if tracks[lv].status != "ok"]
        if bad:
            status = "rejected" if relocalized and any(
                tracks[lv].status == "rejected" for lv in bad) else "lost"
            why = "; ".join(f"{lv}: {tracks[lv].reason}" for lv in bad)
            reason = why if reason is None else f"{why}; {reason}"
        elif relocalized:
            reason = f"re-registered globally after loss of track ({reason})"
        self._update_relations(tracks)
        for lv in self.levels:
            self._commit(lv, tracks[lv])
        elapsed = (time.perf_counter() - t_start) * 1e3
        fr = FrameResult(index=self._index, timestamp_s=ts, status=status, levels=tracks,
                         elapsed_ms=elapsed, reason=reason, relocalized=relocalized)
        self._index += 1
        return fr

    # ------------------------------------------------------------------ steps
    def _predict(self, lv: str) -> np.ndarray:
        st = self._state[lv]
        if st.fails == 0 and st.ok_streak >= 2 and st.prev_good is not None:
            # constant velocity (the camera or the patient moves smoothly between frames)
            delta = st.good @ _inv(st.prev_good)
            deg, mm = _step(st.good, st.prev_good, self._centres[lv])
            if deg < self.config.max_step_deg and mm < self.config.max_step_mm:
                return delta @ st.good
        return st.pose

    def _crop(self, pts: np.ndarray, preds: dict[str, np.ndarray]) -> np.ndarray:
        """Points inside the sensor-frame box around the predicted vertebrae (+ margin)."""
        if len(pts) == 0:
            return pts
        corners = np.concatenate([self.targets[lv].corners @ preds[lv][:3, :3].T
                                  + preds[lv][:3, 3] for lv in self.levels])
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        # Only ~crop_budget points are used: stride the frame first, by what the previous
        # frame's crop held (a 640x480 frame has ~300k points, the wound a few 10k).
        stride = max(1, self._crop_full // self.config.crop_budget)
        view = pts[::stride] if stride > 1 else pts
        # z first: the depth slab alone drops most of the frame cheaply
        z = view[:, 2]
        sub = view[(z >= lo[2]) & (z <= hi[2])]
        m = ((sub[:, 0] >= lo[0]) & (sub[:, 0] <= hi[0]) & (sub[:, 1] >= lo[1])
             & (sub[:, 1] <= hi[1]))
        sub = sub[m]
        self._crop_full = len(sub) * stride
        self._crop_factor = stride
        if len(sub) > self.config.crop_budget:
            k = -(-len(sub) // self.config.crop_budget)
            sub = sub[::k]
            self._crop_factor *= k
        return sub

    def _assign(self, crop: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scan points near each predicted vertebra surface (nearest level wins).

        Also sets ``self._near[lv]``: the estimated number of frame points near the level
        before any subsampling (what occlusion reduces).
        """
        if len(crop) == 0:
            self._near = {lv: 0 for lv in self.levels}
            return {lv: crop for lv in self.levels}
        rows = [(lv, self.targets[lv], preds[lv]) for lv in self.levels]
        rows += [(g, self._guard_targets[g], preds[b]) for g, b in self._guards.items()
                 if b in preds]
        dists = np.full((len(rows), len(crop)), np.inf)
        for i, (_, tg, pred) in enumerate(rows):
            inv = _inv(pred)
            x = crop @ inv[:3, :3].T + inv[:3, 3]
            idx = tg.lookup(x)
            ok = idx >= 0
            d = np.full(len(crop), np.inf)
            d[ok] = np.linalg.norm(x[ok] - tg.points[idx[ok]], axis=1)
            dists[i] = d
        owner = np.argmin(dists, axis=0)
        gates = np.array([self._gates(lv)[0] for lv in self.levels] + [0.0] * (len(rows)
                                                                              - len(self.levels)))
        near = dists[owner, np.arange(len(crop))] < gates[owner]
        out = {}
        self._near = {}
        for i, lv in enumerate(self.levels):
            sel = crop[near & (owner == i)]
            self._near[lv] = len(sel) * self._crop_factor
            if len(sel) > self.config.level_budget:
                sel = sel[:: -(-len(sel) // self.config.level_budget)]
            out[lv] = sel
        return out

    def _gates(self, lv: str) -> tuple[float, float, float]:
        """Correspondence gates (mm) of the ICP steps of ``lv``: tight while steady."""
        cfg = self.config
        st = self._state[lv]
        a, b = ((cfg.steady_gate_mm, cfg.steady_final_gate_mm)
                if st.fails == 0 and st.ok_streak >= 1 else (cfg.gate_mm, cfg.final_gate_mm))
        return a, 0.5 * (a + b), b

    def _tukey(self, lv: str) -> float:
        """Tukey scale (mm) of ``lv``: ``tukey_c_mm``, or 3x its running RMS while steady
        (soft tissue lying 1-3 mm off the bone then gets no weight)."""
        cfg = self.config
        st = self._state[lv]
        if st.fails or st.ok_streak < 1 or not st.ref_rmse:
            return cfg.tukey_c_mm
        return float(np.clip(3.0 * statistics.median(st.ref_rmse), cfg.min_tukey_c_mm,
                             cfg.tukey_c_mm))

    def _icp_all(self, srcs: dict[str, np.ndarray], preds: dict[str, np.ndarray]
                 ) -> dict[str, tuple[np.ndarray, float, int, float]]:
        """Robust point-to-plane ICP of every level at once onto the cached targets.

        One set of array operations per iteration serves all levels (the per-level 6x6
        systems are summed with ``reduceat`` and solved as a batch): at a few hundred points
        per level, the cost is the number of numpy calls, not the arithmetic.

        Returns ``{level: (T_sensor_from_ct, rmse_mm, n_inliers, conditioning)}``.
        """
        cfg = self.config
        pk = self._packed
        lv_list = list(srcs)
        li = np.array([self.levels.index(lv) for lv in lv_list])
        counts = np.array([len(srcs[lv]) for lv in lv_list])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        P = np.concatenate([srcs[lv] for lv in lv_list])
        gl = np.repeat(li, counts)  # level of each point in the packed target
        org, invh, dmax, strd, goff = (pk["origin"][gl], pk["inv_voxel"][gl],
                                       pk["dims_m1"][gl], pk["strides"][gl], pk["offset"][gl])
        # linearise about each vertebra's centre, not the CT origin (often far away): the
        # rotation then neither couples with translation nor skews the prior / conditioning
        cen = np.stack([self._centres[lv] for lv in lv_list])
        cpts = cen[np.repeat(np.arange(len(lv_list)), counts)]
        T = np.stack([_inv(preds[lv]) for lv in lv_list])  # T_ct_from_sensor per level
        gsq = np.repeat(np.array([self._gates(lv) for lv in lv_list]) ** 2, counts, axis=0)
        c2 = np.repeat(np.array([self._tukey(lv) for lv in lv_list]) ** 2, counts)
        L = len(lv_list)
        eps = 1e-9 * np.eye(6)
        slices = [slice(int(a), int(a + c)) for a, c in zip(starts, counts)]
        prior = np.r_[[1.0 / math.radians(cfg.prior_deg) ** 2] * 3,
                      [1.0 / cfg.prior_mm ** 2] * 3]
        diag = np.arange(6)
        acc = np.zeros((L, 6))  # twist accumulated from the prediction (small-angle sum)
        x = np.empty_like(P)
        A = np.empty((L, 6, 6))
        b = np.empty((L, 6))
        for it in range(cfg.max_iterations):
            gate2 = gsq[:, min(it, 2)]
            for k in range(L):
                sl = slices[k]
                np.matmul(P[sl], T[k, :3, :3].T, out=x[sl])
                x[sl] += T[k, :3, 3]
            g = ((x - org) * invh[:, None]).astype(np.int64)
            np.clip(g, 0, dmax, out=g)
            idx = pk["grid"][goff + np.einsum("ij,ij->i", g, strd)]
            valid = idx >= 0
            idx[~valid] = 0
            qn = pk["points_normals"][idx]  # one gather for both
            q, n = qn[:, :3], qn[:, 3:]
            diff = x - q
            r = np.einsum("ij,ij->i", diff, n)
            r2 = r * r
            w = np.where(r2 < c2, (1.0 - r2 / c2) ** 2, 0.0)
            w[~valid | (np.einsum("ij,ij->i", diff, diff) > gate2)] = 0.0
            J = np.empty((len(x), 6))
            # p x n, written out (np.cross is slow)
            xc = x - cpts
            J[:, 0] = xc[:, 1] * n[:, 2] - xc[:, 2] * n[:, 1]
            J[:, 1] = xc[:, 2] * n[:, 0] - xc[:, 0] * n[:, 2]
            J[:, 2] = xc[:, 0] * n[:, 1] - xc[:, 1] * n[:, 0]
            J[:, 3:] = n
            Jw = J * w[:, None]
            for k in range(L):  # small BLAS calls beat one big outer-product reduction
                sl = slices[k]
                A[k] = Jw[sl].T @ J[sl]
                b[k] = -(Jw[sl].T @ r[sl])
            sw = np.add.reduceat(w, starts)
            swr2 = np.add.reduceat(w * r2, starts)
            n_in = np.add.reduceat((w > 0).astype(np.int64), starts)
            # motion prior around the prediction (information = noise^2 / prior^2): it only
            # matters along directions the visible patch does not pin down, where it stops
            # the pose from jittering frame to frame
            noise2 = np.clip(swr2 / np.maximum(sw, 1e-12), 0.1, 4.0)
            lam = noise2[:, None] * prior
            Aw = A + eps
            Aw[:, diag, diag] += lam
            dx = np.linalg.solve(Aw, (b - lam * acc)[:, :, None])[:, :, 0]
            dx[n_in < 6] = 0.0
            acc += dx
            D = _rigid_from_twists(dx)  # about the centre c: x -> R (x - c) + c + t
            D[:, :3, 3] += cen - np.einsum("lij,lj->li", D[:, :3, :3], cen)
            T = np.matmul(D, T)
            small = ((dx[:, :3] ** 2).sum(1) < 1e-8) & ((dx[:, 3:] ** 2).sum(1) < 4e-4)
            if it >= 1 and small.all():
                break
        rmse = np.sqrt(swr2 / np.maximum(sw, 1e-12))
        # conditioning of each fit, rotation scaled to mm at the vertebra's extent
        sc = np.ones((L, 6))
        sc[:, :3] = 1.0 / np.array([self._extent[lv] for lv in lv_list])[:, None]
        ev = np.linalg.eigvalsh(A * sc[:, :, None] * sc[:, None, :])
        cond = np.where(ev[:, -1] > 0, ev[:, 0] / np.where(ev[:, -1] > 0, ev[:, -1], 1), 0.0)
        out = {}
        for k, lv in enumerate(lv_list):
            ok = n_in[k] >= 6
            out[lv] = (_inv(_orthonormalize(T[k])), float(rmse[k]) if ok else float("inf"),
                       int(n_in[k]), float(cond[k]) if ok else 0.0)
        return out

    def _track_levels(self, owned: dict[str, np.ndarray], preds: dict[str, np.ndarray],
                      levels: list[str]) -> dict[str, LevelTrack]:
        """Fit and check ``levels`` on their points; lost ones keep their last good pose."""
        cfg = self.config
        out: dict[str, LevelTrack] = {}
        fit = [lv for lv in levels if len(owned[lv]) >= cfg.min_points]
        for lv in levels:
            if lv not in fit:
                out[lv] = LevelTrack("lost", self._state[lv].good,
                                     n_points=len(owned[lv]),
                                     reason=f"too few points near the vertebra "
                                            f"({len(owned[lv])})")
        if not fit:
            return out
        res = self._icp_all({lv: owned[lv] for lv in fit}, preds)
        for lv in fit:
            out[lv] = self._check(lv, *res[lv], pred=preds[lv], n_used=len(owned[lv]),
                                  n_near=self._near.get(lv, len(owned[lv])))
        return out

    def _check(self, lv: str, T: np.ndarray, rmse: float, n_in: int, cond: float,
               pred: np.ndarray, n_used: int, n_near: int) -> LevelTrack:
        """Quality checks of one level's fit (module docstring); lost -> held pose."""
        cfg = self.config
        st = self._state[lv]
        st.pose = T
        st.last_near = n_near
        ref_n = statistics.median(st.ref_inliers) if st.ref_inliers else float(n_near)
        coverage = n_near / max(ref_n, 1.0)
        track = LevelTrack("ok", T, rmse_mm=rmse,
                           inlier_fraction=n_in / max(n_used, 1), n_points=n_in,
                           coverage=coverage)
        problems = []
        # after a loss, re-acquisition is held to stricter limits (hysteresis)
        min_cov = cfg.reacquire_coverage if st.fails else cfg.min_coverage
        rmse_f = cfg.reacquire_rmse_factor if st.fails else cfg.rmse_factor
        if n_in < cfg.min_points:
            problems.append(f"too few points ({n_in} inliers)")
        elif coverage < min_cov:
            problems.append(f"occluded ({coverage:.0%} of the expected points)")
        if n_in < cfg.min_inlier_ratio * n_used:
            problems.append(f"poor fit ({n_in / max(n_used, 1):.0%} inliers)")
        ref_rmse = statistics.median(st.ref_rmse) if st.ref_rmse else None
        if not math.isfinite(rmse) or rmse > cfg.max_rmse_mm or (
                ref_rmse is not None and rmse > rmse_f * ref_rmse + 0.2):
            problems.append(f"poor fit (RMS {rmse:.2f} mm)")
        if cond < cfg.min_conditioning:
            problems.append(f"ill-conditioned fit ({cond:.1e})")
        # motion not explained by the prediction (after a lost frame: by its estimate)
        deg, mm = _step(T, pred, self._centres[lv])
        if deg > cfg.max_step_deg or mm > cfg.max_step_mm:
            problems.append(f"sudden motion ({mm:.1f} mm, {deg:.1f} deg in one frame)")
        if problems:
            track.status = "lost"
            track.reason = ", ".join(problems)
            track.matrix = st.good
        elif st.fails:
            deg, mm = _step(T, st.good, self._centres[lv])
            track.needs_verify = deg > cfg.max_step_deg or mm > cfg.max_step_mm
        return track

    def _check_neighbours(self, tracks: dict[str, LevelTrack]) -> None:
        """Mark lost an ok level inconsistent with every ok neighbour (see TrackerConfig).

        Two references: the relation when both were last ok (a jump), and the relation given
        by the last global registration (a slow slide of one level along a direction its
        visible patch does not pin down).
        """
        cfg = self.config
        ok = [lv for lv in self.levels if tracks[lv].status == "ok"]
        if len(ok) < 2:
            return
        poses = {lv: tracks[lv].matrix for lv in ok}
        flagged = []
        for i, lv in enumerate(self.levels):
            if lv not in poses:
                continue
            verdicts = []
            for j in (i - 1, i + 1):
                if not 0 <= j < len(self.levels) or self.levels[j] not in poses:
                    continue
                nb = self.levels[j]
                rel = _inv(poses[nb]) @ poses[lv]  # T_ct(nb)_from_ct(lv)
                bad = None
                for refs, lim_mm, lim_deg, what in (
                        (self._rel, cfg.consistency_mm, cfg.consistency_deg,
                         "since they were last tracked together"),
                        (self._rel_anchor, cfg.anchor_mm, cfg.anchor_deg,
                         "since the last global registration")):
                    ref = refs.get((lv, nb))
                    if ref is None:
                        continue
                    deg, mm = _step(rel, ref, self._centres[lv])
                    if deg > lim_deg or mm > lim_mm:
                        bad = (deg, mm, what)
                        break
                verdicts.append(bad)
            if verdicts and all(v is not None for v in verdicts):
                flagged.append((lv, min(verdicts, key=lambda v: v[1])))
        for lv, (d, m, what) in flagged:
            tr = tracks[lv]
            tr.status = "lost"
            tr.reason = f"inconsistent with its neighbours ({m:.1f} mm, {d:.1f} deg {what})"
            tr.matrix = self._state[lv].good

    def _verify(self, tracks: dict[str, LevelTrack]) -> None:
        """A level re-acquired away from its last good pose (after a jump, or from the global
        registration) is ok only when its relation to an ok neighbour matches the one they
        had when last tracked together: a level locked onto its neighbour's bone fits well
        locally and is caught here. With one tracked level, or a level never tracked with
        another, there is nothing to compare and the registration's own gate decides."""
        cfg = self.config
        pending = [lv for lv in self.levels
                   if tracks[lv].status == "ok" and tracks[lv].needs_verify]
        if not pending or len(self.levels) < 2:
            for lv in pending:
                tracks[lv].needs_verify = False
            return
        confirmed = set()
        for lv in pending:
            i = self.levels.index(lv)
            known = [nb for nb in self.levels if (lv, nb) in self._rel]
            if not known:  # never tracked with another level: the registration decides
                confirmed.add(lv)
                continue
            for j in (i - 1, i + 1):
                if not 0 <= j < len(self.levels):
                    continue
                nb = self.levels[j]
                ref = self._rel.get((lv, nb))
                if tracks[nb].status != "ok" or ref is None:
                    continue
                rel = _inv(tracks[nb].matrix) @ tracks[lv].matrix
                deg, mm = _step(rel, ref, self._centres[lv])
                if deg <= cfg.anchor_deg * 1.5 and mm <= cfg.anchor_mm * 1.5:
                    confirmed.add(lv)
                    break
        for lv in pending:
            tr = tracks[lv]
            tr.needs_verify = False
            if lv not in confirmed:
                tr.status = "lost"
                tr.reason = ("re-acquired pose not confirmed by a neighbour (its relation to "
                             "them differs from when they were last tracked together)")
                tr.matrix = self._state[lv].good

    def _update_relations(self, tracks: dict[str, LevelTrack]) -> None:
        for i, lv in enumerate(self.levels[:-1]):
            nb = self.levels[i + 1]
            if tracks[lv].status == "ok" and tracks[nb].status == "ok":
                a, b = tracks[lv].matrix, tracks[nb].matrix
                self._rel[(lv, nb)] = _inv(b) @ a
                self._rel[(nb, lv)] = _inv(a) @ b

    def _relocalize(self, pts: np.ndarray, need: list[str],
                    tracks: dict[str, LevelTrack]) -> str:
        """Global registration of the whole frame for the lost levels; returns a note."""
        register = self._register
        if register is None:
            from arspine.registration import register
        if len(pts) < 3:
            for lv in need:
                tracks[lv].status = "rejected"
            return "global registration not possible on an empty frame"
        try:
            res = register(self.model, PointCloud(pts), levels=self.levels)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused / failed re-registration is reported
            res = getattr(exc, "result", None)
            if res is None:
                for lv in need:
                    tracks[lv].status = "rejected"
                return f"global registration failed: {type(exc).__name__}: {exc}"
        if isinstance(res, dict):
            from arspine.registration import RegistrationResult

            res = RegistrationResult.from_dict(res)
        poses = _initial_poses(res, need)
        got = []
        preds = {k: self._state[k].pose for k in self.levels}
        preds.update({lv: p for lv, p in poses.items() if p is not None})
        # refine on this frame's points near the new poses and check them like any frame
        owned = self._assign(self._crop(pts, preds), preds)
        fresh = self._track_levels(owned, preds, [lv for lv in need if poses[lv] is not None])
        for lv in need:
            if poses[lv] is None:
                tracks[lv].status = "rejected"
                continue
            tr = fresh[lv]
            tr.needs_verify = tr.status == "ok" and len(self.levels) > 1
            if tr.status == "ok":
                tracks[lv] = tr
                got.append(lv)
            else:
                tracks[lv].status = "rejected"
                tracks[lv].reason = f"{tracks[lv].reason}; global re-registration: {tr.reason}"
        status = getattr(res, "status", "?")
        why = getattr(res, "reason", None)
        note = f"global registration {status}" + (f" ({why})" if why else "")
        if got:
            note += f", recovered {', '.join(got)}"
        return note

    def _commit(self, lv: str, track: LevelTrack) -> None:
        st = self._state[lv]
        if track.status == "ok":
            T = track.matrix
            st.prev_good = st.good if st.fails == 0 else None
            st.good = T
            st.pose = T
            st.ok_streak = st.ok_streak + 1 if st.fails == 0 else 1
            st.fails = 0
            st.ref_inliers = (st.ref_inliers + [st.last_near])[-15:]
            st.ref_rmse = (st.ref_rmse + [track.rmse_mm])[-15:]
        else:
            st.fails += 1
            st.ok_streak = 0

    def status_summary(self) -> dict[str, int]:
        """Consecutive lost frames per level (0 = tracking)."""
        return {lv: self._state[lv].fails for lv in self.levels}

