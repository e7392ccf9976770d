"""Guidance: where the tracked tool is relative to the planned screw, frame by frame.

The numbers are computed in the ``ct`` frame (where the plan and the cortex live) from
``T_ct_from_<tool>``, usually composed by a :class:`FrameGraph`
(``T_ct_from_sensor @ T_sensor_from_tracker @ T_tracker_from_pointer``). Distances and
angles do not depend on the frame; the points do, and :meth:`Guidance.expressed_in` maps them
into the frame a consumer needs (``world`` for the headset, ``tracker`` for a robot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import FrameGraph, RigidTransform
from arspine.navigation.geometry import Mesh
from arspine.navigation.plan import CortexIndex, ScrewTrajectory
from arspine.navigation.tools import ToolDefinition

__all__ = ["Guidance", "Guide", "compute_guidance", "guidance_from_graph"]


@dataclass(frozen=True)
class Guidance:
    """The tool relative to one planned trajectory at one instant.

    Attributes
    ----------
    frame : str
        Frame of the point and direction attributes.
    tip_mm, tool_axis : (3,)
        Tool tip (mm) and unit pointing direction.
    entry_mm, target_mm, planned_axis : (3,)
        Planned entry, target (mm) and unit axis.
    tip_to_entry_mm : float
        Distance from the tip to the planned entry point.
    angle_deg : float
        Angle between the tool axis and the planned axis.
    depth_mm : float
        Tip position along the planned axis from the entry (positive = inside, past entry).
    lateral_offset_mm : float
        Distance of the tip from the planned axis line.
    remaining_mm : float
        Planned screw length minus depth (how far to go to the planned tip).
    distance_to_cortex_mm : float
        Distance from the tip to the nearest cortical wall (NaN without a surface).
    warnings : tuple of str
    timestamp_s : float or None
    """

    frame: str
    trajectory_key: str
    tip_mm: np.ndarray
    tool_axis: np.ndarray
    entry_mm: np.ndarray
    target_mm: np.ndarray
    planned_axis: np.ndarray
    tip_to_entry_mm: float
    angle_deg: float
    depth_mm: float
    lateral_offset_mm: float
    remaining_mm: float
    distance_to_cortex_mm: float
    warnings: tuple[str, ...] = ()
    timestamp_s: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def on_track(self) -> bool:
        """No warning raised."""
        return not self.warnings

    def expressed_in(self, T_new_from_frame: RigidTransform) -> Guidance:
        """The same guidance with its points and directions in another frame."""
        if not isinstance(T_new_from_frame, RigidTransform):
            raise InputError(f"T_new_from_frame must be a RigidTransform, got "
                             f"{type(T_new_from_frame).__name__}")
        if T_new_from_frame.from_frame != self.frame:
            raise InputError(f"{T_new_from_frame.name} does not apply to guidance in frame "
                             f"'{self.frame}'")
        T = T_new_from_frame

        def p(x):
            return T.apply(x[None])[0]

        return Guidance(T.to_frame, self.trajectory_key, p(self.tip_mm),
                        T.apply_vectors(self.tool_axis), p(self.entry_mm), p(self.target_mm),
                        T.apply_vectors(self.planned_axis), self.tip_to_entry_mm,
                        self.angle_deg, self.depth_mm, self.lateral_offset_mm,
                        self.remaining_mm, self.distance_to_cortex_mm, self.warnings,
                        self.timestamp_s, dict(self.extra))

    def to_dict(self) -> dict:
        out = {}
        for k in ("frame", "trajectory_key", "tip_to_entry_mm", "angle_deg", "depth_mm",
                  "lateral_offset_mm", "remaining_mm", "distance_to_cortex_mm", "timestamp_s"):
            v = getattr(self, k)
            out[k] = None if isinstance(v, float) and math.isnan(v) else v
        for k in ("tip_mm", "tool_axis", "entry_mm", "target_mm", "planned_axis"):
            out[k] = getattr(self, k).tolist()
        out["warnings"] = list(self.warnings)
        return out


class Guide:
    """Per-frame guidance for one tool and one trajectory (the cortex index is built once).

    Parameters
    ----------
    tool : ToolDefinition
    trajectory : ScrewTrajectory
    cortex : Mesh or CortexIndex, optional
        The planned vertebra's surface in the ``ct`` frame.
    max_angle_deg, max_offset_mm : float
        Beyond these the tool is off the plan (warning); defaults follow the 5 deg / 2 mm
        margins of navigated pedicle screws.
    min_cortex_mm : float
        Inside the bone (past the entry), a tip closer than the tool radius plus this to the
        cortex warns of an imminent breach.
    """

    def __init__(self, tool: ToolDefinition, trajectory: ScrewTrajectory,
                 cortex: Mesh | CortexIndex | None = None, *, max_angle_deg: float = 5.0,
                 max_offset_mm: float = 2.0, min_cortex_mm: float = 1.0):
        if not isinstance(tool, ToolDefinition):
            raise InputError(f"tool must be a ToolDefinition, got {type(tool).__name__}")
        if not isinstance(trajectory, ScrewTrajectory):
            raise InputError(f"trajectory must be a ScrewTrajectory, got "
                             f"{type(trajectory).__name__}")
        self.tool = tool
        self.trajectory = trajectory
        if isinstance(cortex, Mesh):
            if cortex.frame != "ct":
                raise InputError(f"cortex must be in frame 'ct', got '{cortex.frame}'")
            cortex = CortexIndex(cortex)
        self.cortex = cortex
        self.max_angle_deg = max_angle_deg
        self.max_offset_mm = max_offset_mm
        self.min_cortex_mm = min_cortex_mm

    def update(self, T_ct_from_tool: RigidTransform,
               timestamp_s: float | None = None) -> Guidance:
        """Guidance for one tool pose ``T_ct_from_<tool>``."""
        if not isinstance(T_ct_from_tool, RigidTransform):
            raise InputError(f"T_ct_from_tool must be a RigidTransform, got "
                             f"{type(T_ct_from_tool).__name__}")
        if T_ct_from_tool.to_frame != "ct":
            raise InputError(f"tool pose must map into 'ct', got {T_ct_from_tool.name}")
        traj = self.trajectory
        tip = self.tool.tip_in(T_ct_from_tool)
        axis = self.tool.axis_in(T_ct_from_tool)
        d = traj.direction
        e = traj.entry_ct_mm
        rel = tip - e
        depth = float(rel @ d)
        lateral = float(np.linalg.norm(rel - depth * d))
        angle = math.degrees(math.acos(max(-1.0, min(1.0, float(axis @ d)))))
        cortex = math.nan
        if self.cortex is not None:
            cortex = float(self.cortex.distance(tip[None])[0])
        warnings = []
        if angle > self.max_angle_deg:
            warnings.append(f"angle {angle:.1f} deg off the planned axis "
                            f"(> {self.max_angle_deg} deg)")
        if lateral > self.max_offset_mm:
            warnings.append(f"tip {lateral:.1f} mm off the planned axis "
                            f"(> {self.max_offset_mm} mm)")
        if depth > traj.length_mm:
            warnings.append(f"tip {depth - traj.length_mm:.1f} mm past the planned screw tip")
        # Past the entry by more than rounding (a tip exactly on the entry is not inside).
        if depth > 1e-6 and not math.isnan(cortex) and \
                cortex < 0.5 * self.tool.diameter_mm + self.min_cortex_mm:
            warnings.append(f"tip {cortex:.1f} mm from the cortex: breach risk")
        return Guidance("ct", traj.key, tip, axis, e.copy(), traj.target_ct_mm.copy(), d,
                        float(np.linalg.norm(rel)), angle, depth, lateral,
                        float(traj.length_mm - depth), cortex, tuple(warnings), timestamp_s)


def compute_guidance(tool: ToolDefinition, T_ct_from_tool: RigidTransform,
                     trajectory: ScrewTrajectory, cortex: Mesh | CortexIndex | None = None,
                     **kwargs) -> Guidance:
    """One-shot :meth:`Guide.update` (build a :class:`Guide` for a stream of poses)."""
    return Guide(tool, trajectory, cortex, **kwargs).update(T_ct_from_tool)


def guidance_from_graph(graph: FrameGraph, guide: Guide, frame: str = "ct",
                        timestamp_s: float | None = None) -> Guidance:
    """Guidance with the tool pose taken from ``graph`` and the result expressed in ``frame``.

    The graph must connect ``ct`` to the tool's frame (e.g. ``ct - sensor - tracker -
    pointer``) and to ``frame``.
    """
    if not isinstance(graph, FrameGraph):
        raise InputError(f"graph must be a FrameGraph, got {type(graph).__name__}")
    g = guide.update(graph.get("ct", guide.tool.frame), timestamp_s)
    if frame == "ct":
        return g
    return g.expressed_in(graph.get(frame, "ct"))
