"""Guidance maths (distance, angle, depth, cortex distance) and frame handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import FrameGraph, RigidTransform
from arspine.navigation.geometry import Mesh
from arspine.navigation.guidance import Guide, compute_guidance, guidance_from_graph
from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan, check_breach
from arspine.navigation.tools import ToolDefinition


def uv_sphere(radius=20.0, center=(0, 0, 0), n=48):
    th = np.linspace(0, np.pi, n)
    ph = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    t, p = np.meshgrid(th[1:-1], ph, indexing="ij")
    v = np.c_[np.sin(t).ravel() * np.cos(p).ravel(), np.sin(t).ravel() * np.sin(p).ravel(),
              np.cos(t).ravel()]
    v = np.vstack([[0, 0, 1], v, [0, 0, -1]]) * radius + np.asarray(center)
    rows, cols = len(th) - 2, len(ph)
    idx = lambda i, j: 1 + i * cols + (j % cols)  # noqa: E731
    f = []
    for j in range(cols):
        f.append([0, idx(0, j), idx(0, j + 1)])
        f.append([len(v) - 1, idx(rows - 1, j + 1), idx(rows - 1, j)])
        for i in range(rows - 1):
            f.append([idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)])
            f.append([idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)])
    return Mesh(v, np.array(f), name="L3")


# entry on the sphere's posterior pole (+y is posterior in LPS), axis anterior (-y)
TRAJ = ScrewTrajectory("L3", "left", [0, 20, 0], [0, -15, 0], 6.0, 35.0)
POINTER = ToolDefinition("pointer", "pointer", [0, 0, 100.0], [0, 0, 1], 2.0, 100.0)


def pose_with_tip(tip, axis):
    """T_ct_from_pointer with the pointer's tip at ``tip`` pointing along ``axis``."""
    z = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.cross([0, 0, 1.0], z) if abs(z[2]) < 0.9 else np.cross([1.0, 0, 0], z)
    x /= np.linalg.norm(x)
    R = np.c_[x, np.cross(z, x), z]
    return RigidTransform.from_rt(R, np.asarray(tip) - R @ [0, 0, 100.0], "ct", "pointer")


def test_trajectory_angles_and_validation():
    t = ScrewTrajectory("L4", "left", [20, 40, 0], [20 - 35 * math.sin(math.radians(20)),
                                                    40 - 35 * math.cos(math.radians(20)), 0], 6.5)
    assert abs(t.medial_angle_deg - 20) < 1e-9 and abs(t.length_mm - 35) < 1e-9
    r = ScrewTrajectory("L4", "right", [-20, 40, 0], [-10, 10, 5], 6.5)
    assert r.medial_angle_deg > 0 and r.cranial_angle_deg > 0
    with pytest.raises(InputError, match="vertebra"):
        ScrewTrajectory("L9", "left", [0, 0, 0], [0, 1, 0])
    with pytest.raises(InputError, match="side"):
        ScrewTrajectory("L3", "middle", [0, 0, 0], [0, 1, 0])
    with pytest.raises(InputError, match="entry_ct_mm"):
        ScrewTrajectory("L3", "left", [0, np.nan, 0], [0, 1, 0])
    with pytest.raises(InputError, match="differ"):
        ScrewTrajectory("L3", "left", [0, 0, 0], [0, 0, 0])
    plan = SurgicalPlan([t, r])
    assert SurgicalPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(InputError, match="edited"):
        t.edited(colour="red")
    moved = t.edited(diameter_mm=5.5)
    assert moved.diameter_mm == 5.5 and t.diameter_mm == 6.5


def test_breach_check_clearance_on_sphere():
    sphere = uv_sphere(20.0)
    ok = check_breach(TRAJ, sphere)
    # axis through the centre, tip 15 mm from the anterior pole: clearance = 20 - 3 mm
    # to the wall (sideways), 5 mm at the tip-end minus radius 3 -> limited by the tip cap: 2 mm
    assert not ok.breach
    assert abs(ok.clearance_mm - 2.0) < 0.3
    too_long = TRAJ.edited(length_mm=42.0)  # tip 2 mm from the anterior pole
    rep = check_breach(too_long, sphere)
    assert rep.breach and rep.clearance_mm < 0 and "leaves" in rep.warnings[0]
    off = ScrewTrajectory("L3", "left", [16, 12, 0], [16, -12, 0], 6.0)  # skims the wall
    rep = check_breach(off, sphere, inside=lambda p: np.linalg.norm(p, axis=1) < 20)
    assert rep.breach and rep.outside_fraction > 0


def test_guidance_numbers_on_and_off_plan():
    sphere = uv_sphere(20.0)
    guide = Guide(POINTER, TRAJ, sphere)
    g = guide.update(pose_with_tip([0, 10, 0], [0, -1, 0]))  # 10 mm deep on the axis
    assert abs(g.depth_mm - 10) < 1e-9 and g.lateral_offset_mm < 1e-9
    assert g.angle_deg < 1e-6 and abs(g.tip_to_entry_mm - 10) < 1e-9
    assert abs(g.remaining_mm - 25) < 1e-9
    assert abs(g.distance_to_cortex_mm - 10) < 0.3 and g.on_track
    # 3 mm lateral, tilted 10 deg: both warnings
    tilt = [math.sin(math.radians(10)), -math.cos(math.radians(10)), 0]
    g = guide.update(pose_with_tip([3, 25, 0], tilt))
    assert abs(g.lateral_offset_mm - 3) < 1e-9 and abs(g.depth_mm + 5) < 1e-9
    assert abs(g.angle_deg - 10) < 1e-6 and abs(g.tip_to_entry_mm - math.hypot(3, 5)) < 1e-9
    assert len(g.warnings) == 2
    # near the wall inside the bone
    g = guide.update(pose_with_tip([0, -18.5, 0], [0, -1, 0]))
    assert any("breach" in w for w in g.warnings)
    assert compute_guidance(POINTER, pose_with_tip([0, 10, 0], [0, -1, 0]), TRAJ).depth_mm == \
        pytest.approx(10)
    with pytest.raises(InputError, match="map into 'ct'"):
        guide.update(RigidTransform.identity("tracker", "pointer"))


def test_guidance_through_frame_graph_in_world():
    guide = Guide(POINTER, TRAJ)
    T_ct_from_pointer = pose_with_tip([1, 8, -2], [0.1, -1, 0.05])
    T_sensor_from_ct = RigidTransform.from_euler("xyz", [10, -20, 30], [5, 6, 400], "sensor", "ct")
    T_tracker_from_sensor = RigidTransform.from_euler("xyz", [0, 90, 0], [0, 0, 50], "tracker",
                                                      "sensor")
    T_world_from_tracker = RigidTransform.from_euler("xyz", [5, 5, 5], [100, 0, 0], "world",
                                                     "tracker")
    T_tracker_from_pointer = T_tracker_from_sensor @ T_sensor_from_ct @ T_ct_from_pointer
    graph = FrameGraph([T_sensor_from_ct, T_tracker_from_sensor, T_world_from_tracker,
                        T_tracker_from_pointer])
    direct = guide.update(T_ct_from_pointer)
    via = guidance_from_graph(graph, guide, frame="world")
    assert via.frame == "world"
    for k in ("depth_mm", "angle_deg", "lateral_offset_mm", "tip_to_entry_mm"):
        assert getattr(via, k) == pytest.approx(getattr(direct, k), abs=1e-6)
    T_world_from_ct = T_world_from_tracker @ T_tracker_from_sensor @ T_sensor_from_ct
    np.testing.assert_allclose(via.tip_mm, T_world_from_ct.apply(direct.tip_mm[None])[0],
                               atol=1e-6)
    np.testing.assert_allclose(via.entry_mm, T_world_from_ct.apply(TRAJ.entry_ct_mm[None])[0],
                               atol=1e-6)
    assert via.to_dict()["frame"] == "world"
