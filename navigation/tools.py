"""Tracked tools: definitions (pointer, drill guide), pivot calibration, pose streams.

A tracker reports ``T_tracker_from_<tool>``; the tool definition says where the tip is and
which way the tool points in the tool's own frame. Pivot calibration finds the tip offset from
poses recorded while the tip rests in a divot and the tool is swivelled about it.

Pivot calibration refuses degenerate input with an :class:`InputError` instead of returning a
silently wrong tip (the failure reported against SlicerIGT in its issues #61, #74 and #95):
too few poses, a static tool, or motion about a single axis (planar motion leaves the tip
component along that axis undetermined).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import as_vector3

__all__ = [
    "ToolDefinition",
    "POINTER",
    "DRILL_GUIDE",
    "PivotCalibrationResult",
    "pivot_calibration",
    "ToolPoseStream",
]

_KINDS = ("pointer", "drill_guide", "other")


def _vec3(value: object, name: str) -> np.ndarray:
    return as_vector3(value, name)


@dataclass(frozen=True, eq=False)
class ToolDefinition:
    """A rigid tracked tool.

    Attributes
    ----------
    name : str
        Tool name; also its frame name (``T_tracker_from_<name>``), e.g. ``"pointer"``.
    kind : str
        ``"pointer"``, ``"drill_guide"`` or ``"other"``.
    tip_offset_mm : (3,) float64
        Tip position in the tool frame, mm (from :func:`pivot_calibration`).
    axis : (3,) float64
        Unit direction the tool points along (from the handle towards the tip), tool frame.
    diameter_mm, length_mm : float
        Shaft (or guide bore) diameter and shaft length, mm; for drawing and guidance.
    """

    name: str
    kind: str = "pointer"
    tip_offset_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    axis: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    diameter_mm: float = 2.0
    length_mm: float = 150.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "_from_" in self.name:
            raise InputError(f"name must be a non-empty frame name without '_from_', "
                             f"got {self.name!r}")
        if self.kind not in _KINDS:
            raise InputError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        tip = _vec3(self.tip_offset_mm, "tip_offset_mm")
        axis = _vec3(self.axis, "axis")
        n = float(np.linalg.norm(axis))
        if n < 1e-9:
            raise InputError(f"axis must be a non-zero direction, got {axis.tolist()}")
        for arg in ("diameter_mm", "length_mm"):
            v = getattr(self, arg)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{arg} must be a positive number (mm), got {v!r}")
        object.__setattr__(self, "tip_offset_mm", tip)
        object.__setattr__(self, "axis", axis / n)

    @property
    def frame(self) -> str:
        """The tool's frame name (its ``name``)."""
        return self.name

    def with_tip(self, tip_offset_mm: object) -> ToolDefinition:
        """A copy with another tip offset (e.g. after pivot calibration)."""
        return ToolDefinition(self.name, self.kind, _vec3(tip_offset_mm, "tip_offset_mm"),
                              self.axis, self.diameter_mm, self.length_mm)

    def tip_in(self, T_x_from_tool: RigidTransform) -> np.ndarray:
        """Tip position (3,) mm in the frame ``T_x_from_tool`` maps to."""
        self._check_pose(T_x_from_tool)
        return T_x_from_tool.apply(self.tip_offset_mm[None])[0]

    def axis_in(self, T_x_from_tool: RigidTransform) -> np.ndarray:
        """Unit pointing direction (3,) in the frame ``T_x_from_tool`` maps to."""
        self._check_pose(T_x_from_tool)
        return T_x_from_tool.apply_vectors(self.axis)

    def _check_pose(self, T: RigidTransform) -> None:
        if not isinstance(T, RigidTransform):
            raise InputError(f"pose must be a RigidTransform, got {type(T).__name__}")
        if T.from_frame != self.frame:
            raise InputError(f"pose {T.name} does not start at tool frame '{self.frame}'")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind,
                "tip_offset_mm": self.tip_offset_mm.tolist(), "axis": self.axis.tolist(),
                "diameter_mm": float(self.diameter_mm), "length_mm": float(self.length_mm)}

    @classmethod
    def from_dict(cls, d: dict) -> ToolDefinition:
        try:
            return cls(d["name"], d.get("kind", "pointer"), d.get("tip_offset_mm", [0, 0, 0]),
                       d.get("axis", [0, 0, 1]), d.get("diameter_mm", 2.0),
                       d.get("length_mm", 150.0))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"tool definition needs at least 'name', got {d!r}") from exc


#: A straight pointer whose tip is 150 mm along +z of its marker frame (before calibration).
POINTER = ToolDefinition("pointer", "pointer", [0.0, 0.0, 150.0], [0, 0, 1], 2.0, 150.0)
#: A drill guide: a 6.5 mm bore along +z, the bore's distal opening 120 mm from the markers.
DRILL_GUIDE = ToolDefinition("drill_guide", "drill_guide", [0.0, 0.0, 120.0], [0, 0, 1],
                             6.5, 120.0)


@dataclass(frozen=True)
class PivotCalibrationResult:
    """Pivot calibration outcome.

    Attributes
    ----------
    tip_offset_mm : (3,) float64
        Tip in the tool frame, mm.
    pivot_mm : (3,) float64
        Pivot point in the tracker frame, mm.
    rms_mm : float
        RMS distance of the per-pose tip positions to the pivot, mm.
    residuals_mm : (N,) float64
        Per-pose distance of the tip to the pivot, mm.
    rotation_spread_deg : (3,) float64
        Spread of the tool's rotation about three principal axes (ascending), degrees:
        the smallest one says how well the tip is determined.
    n_poses : int
    """

    tip_offset_mm: np.ndarray
    pivot_mm: np.ndarray
    rms_mm: float
    residuals_mm: np.ndarray
    rotation_spread_deg: np.ndarray
    n_poses: int

    def to_dict(self) -> dict:
        return {"tip_offset_mm": self.tip_offset_mm.tolist(), "pivot_mm": self.pivot_mm.tolist(),
                "rms_mm": self.rms_mm, "rotation_spread_deg": self.rotation_spread_deg.tolist(),
                "n_poses": self.n_poses}


def _pose_arrays(poses: object) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(poses, np.ndarray):
        mats = poses
    else:
        try:
            items = list(poses)  # type: ignore[call-overload]
        except TypeError as exc:
            raise InputError(f"poses must be a sequence of 4x4 poses, got "
                             f"{type(poses).__name__}") from exc
        mats = np.array([p.as_matrix() if isinstance(p, RigidTransform) else
                         np.asarray(p, dtype=np.float64) for p in items], dtype=np.float64)
    mats = np.asarray(mats, dtype=np.float64)
    if mats.ndim != 3 or mats.shape[1:] != (4, 4):
        raise InputError(f"poses must be (N, 4, 4) T_tracker_from_tool matrices, "
                         f"got shape {mats.shape}")
    if not np.all(np.isfinite(mats)):
        raise InputError("poses has NaN or inf")
    r = mats[:, :3, :3]
    err = np.abs(np.einsum("nji,njk->nik", r, r) - np.eye(3)).max(axis=(1, 2))
    if np.any(err > 1e-3):
        raise InputError(f"poses must be rigid; pose {int(np.argmax(err))} has a non-orthonormal "
                         f"rotation (max |R^T R - I| = {err.max():.2e})")
    return r, mats[:, :3, 3]


def pivot_calibration(poses: Sequence[RigidTransform] | np.ndarray, *, min_poses: int = 10,
                      min_rotation_deg: float = 5.0, max_rms_mm: float | None = None
                      ) -> PivotCalibrationResult:
    """Tip offset of a tool swivelled about a fixed pivot (algebraic least squares).

    Solves ``R_i @ tip + p_i = pivot`` for all poses in the least-squares sense.

    Parameters
    ----------
    poses : sequence of RigidTransform or (N, 4, 4) array
        ``T_tracker_from_tool`` while the tip rests in a divot, mm.
    min_poses : int
        Fewer poses is an error.
    min_rotation_deg : float
        Minimum spread (RMS about the mean) of the tool's rotation about every axis
        perpendicular to the tip direction; less means the tip is not determined.
    max_rms_mm : float, optional
        When given, an RMS above it is an error (the tip slipped or the tool is bent).

    Returns
    -------
    PivotCalibrationResult

    Raises
    ------
    InputError
        Too few poses, non-rigid or NaN poses, a static tool ("static"), motion about a single
        axis ("planar"), or an RMS above ``max_rms_mm``.
    """
    r, p = _pose_arrays(poses)
    n = len(r)
    if n < min_poses:
        raise InputError(f"poses: pivot calibration needs at least {min_poses} poses, got {n}")
    # Eliminating the pivot leaves sum_i (R_i - Rbar)^T (R_i - Rbar) as the normal matrix of
    # the tip: its eigenvalues are the rotation spread about each axis.  A static tool makes it
    # ~0; rotation about one axis leaves that axis's eigenvalue ~0.
    rbar = r.mean(axis=0)
    dr = r - rbar
    s = np.einsum("nji,njk->ik", dr, dr) / n
    evals = np.clip(np.linalg.eigvalsh(s), 0.0, None)
    spread_deg = np.degrees(np.sqrt(evals))
    if spread_deg[-1] < min_rotation_deg:
        raise InputError(f"poses: the tool is static (rotation spread {spread_deg[-1]:.2f} deg < "
                         f"{min_rotation_deg} deg); swivel it about the pivot in two directions")
    if spread_deg[0] < min_rotation_deg:
        raise InputError(f"poses: the tool rotates about a single axis (planar motion: spread "
                         f"{spread_deg[0]:.2f} deg about one axis < {min_rotation_deg} deg), so "
                         f"the tip along that axis is undetermined; swivel it in two directions")
    a = np.zeros((3 * n, 6))
    a[:, :3] = r.reshape(3 * n, 3)
    a[:, 3:] = -np.tile(np.eye(3), (n, 1))
    b = -p.reshape(3 * n)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    tip, pivot = x[:3], x[3:]
    tips = np.einsum("nij,j->ni", r, tip) + p
    res = np.linalg.norm(tips - pivot, axis=1)
    rms = float(np.sqrt(np.mean(res ** 2)))
    if max_rms_mm is not None and rms > max_rms_mm:
        raise InputError(f"poses: pivot calibration RMS {rms:.2f} mm exceeds max_rms_mm "
                         f"{max_rms_mm} mm (did the tip slip out of the divot?)")
    return PivotCalibrationResult(tip, pivot, rms, res, spread_deg, n)


def _exact(m, to: str, frm: str) -> RigidTransform:
    # Bit-exact for stored rigid matrices; re-orthonormalise only what needs it.
    try:
        return RigidTransform(m, to, frm)
    except InputError:
        return RigidTransform.from_matrix(m, to, frm, orthonormalize=True)


class ToolPoseStream:
    """Timestamped poses of one tool (``T_<reference>_from_<tool>``), in arrival order.

    Parameters
    ----------
    tool : str
        Tool frame name.
    reference : str
        Frame the poses map into (``"tracker"``).
    maxlen : int, optional
        Keep only the last ``maxlen`` samples (a live stream); None keeps all.
    """

    def __init__(self, tool: str, reference: str = "tracker", maxlen: int | None = None):
        self.tool = tool
        self.reference = reference
        self.maxlen = maxlen
        self._t: list[float] = []
        self._m: list[np.ndarray] = []

    def add(self, pose: RigidTransform, timestamp_s: float) -> None:
        """Append a pose; timestamps must not go backwards."""
        if not isinstance(pose, RigidTransform):
            raise InputError(f"pose must be a RigidTransform, got {type(pose).__name__}")
        if (pose.to_frame, pose.from_frame) != (self.reference, self.tool):
            raise InputError(f"pose must be T_{self.reference}_from_{self.tool}, got {pose.name}")
        t = float(timestamp_s)
        if not math.isfinite(t):
            raise InputError(f"timestamp_s must be finite, got {timestamp_s!r}")
        if self._t and t < self._t[-1]:
            raise InputError(f"timestamp_s went backwards: {t} after {self._t[-1]}")
        self._t.append(t)
        self._m.append(pose.as_matrix())
        if self.maxlen is not None and len(self._t) > self.maxlen:
            del self._t[0], self._m[0]

    def extend(self, samples: Iterable[tuple[float, RigidTransform]]) -> None:
        for t, pose in samples:
            self.add(pose, t)

    def __len__(self) -> int:
        return len(self._t)

    def __iter__(self) -> Iterator[tuple[float, RigidTransform]]:
        for t, m in zip(self._t, self._m):
            yield t, RigidTransform(m, self.reference, self.tool)

    def poses(self) -> list[RigidTransform]:
        """The recorded poses in order (e.g. for :func:`pivot_calibration`)."""
        return [T for _, T in self]

    @property
    def timestamps_s(self) -> np.ndarray:
        return np.array(self._t)

    def latest(self) -> tuple[float, RigidTransform]:
        if not self._t:
            raise InputError(f"pose stream of '{self.tool}' is empty")
        return self._t[-1], RigidTransform(self._m[-1], self.reference, self.tool)

    def at(self, timestamp_s: float) -> RigidTransform:
        """Pose at ``timestamp_s``: linear translation, spherical rotation interpolation
        between the neighbouring samples (held constant outside the recorded span)."""
        if not self._t:
            raise InputError(f"pose stream of '{self.tool}' is empty")
        t = float(timestamp_s)
        ts = self._t
        j = int(np.searchsorted(ts, t))
        if j <= 0:
            return RigidTransform(self._m[0], self.reference, self.tool)
        if j >= len(ts):
            return RigidTransform(self._m[-1], self.reference, self.tool)
        t0, t1 = ts[j - 1], ts[j]
        w = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        a = RigidTransform(self._m[j - 1], self.reference, self.tool)
        b = RigidTransform(self._m[j], self.reference, self.tool)
        d = RigidTransform.from_rt(a.rotation.T @ b.rotation, [0, 0, 0], "b", "a")
        step = RigidTransform.from_rotvec(d.as_rotvec() * w, [0, 0, 0], "b", "a")
        rot = a.rotation @ step.rotation
        trans = (1 - w) * a.translation_mm + w * b.translation_mm
        return RigidTransform.from_rt(rot, trans, self.reference, self.tool)

    def jitter_mm(self, point_tool_mm: object = (0.0, 0.0, 0.0)) -> float:
        """RMS distance of a tool-frame point (e.g. the tip) to its mean position, mm —
        the jitter of a tool held still."""
        if not self._t:
            raise InputError(f"pose stream of '{self.tool}' is empty")
        q = _vec3(point_tool_mm, "point_tool_mm")
        m = np.array(self._m)
        pts = np.einsum("nij,j->ni", m[:, :3, :3], q) + m[:, :3, 3]
        return float(np.sqrt(np.mean(np.sum((pts - pts.mean(axis=0)) ** 2, axis=1))))

    def to_dict(self) -> dict:
        return {"tool": self.tool, "reference": self.reference,
                "samples": [{"timestamp_s": t, "matrix": m.tolist()}
                            for t, m in zip(self._t, self._m)]}

    @classmethod
    def from_dict(cls, d: dict) -> ToolPoseStream:
        try:
            s = cls(d["tool"], d.get("reference", "tracker"))
            for item in d.get("samples", []):
                s.add(_exact(item["matrix"], s.reference, s.tool), item["timestamp_s"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"pose stream needs 'tool' and 'samples', got keys "
                             f"{sorted(d) if isinstance(d, dict) else type(d).__name__}") from exc
        return s

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
