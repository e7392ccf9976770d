"""Tool definitions, pivot calibration (incl. degenerate input) and pose streams."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.tools import (
    POINTER,
    ToolDefinition,
    ToolPoseStream,
    pivot_calibration,
)


def _pivot_poses(tip, pivot, rotvecs_deg, noise_mm=0.0, seed=0):
    """Poses T_tracker_from_tool whose tip (tool frame) sits at pivot (tracker frame)."""
    rng = np.random.default_rng(seed)
    out = []
    for rv in rotvecs_deg:
        R = RigidTransform.from_rotvec(np.radians(rv), [0, 0, 0], "tracker", "tool").rotation
        t = pivot - R @ tip + rng.normal(0, noise_mm, 3)
        out.append(RigidTransform.from_rt(R, t, "tracker", "tool"))
    return out


def _cone_rotvecs(n, max_deg, seed=0):
    rng = np.random.default_rng(seed)
    rv = rng.uniform(-max_deg, max_deg, size=(n, 3))
    rv[:, 2] *= 0.5
    return rv


def test_pivot_recovers_known_tip_exactly():
    tip = np.array([1.5, -2.0, 152.3])
    pivot = np.array([100.0, -40.0, 900.0])
    res = pivot_calibration(_pivot_poses(tip, pivot, _cone_rotvecs(40, 25)))
    np.testing.assert_allclose(res.tip_offset_mm, tip, atol=1e-6)
    np.testing.assert_allclose(res.pivot_mm, pivot, atol=1e-6)
    assert res.rms_mm < 1e-6
    assert res.n_poses == 40


def test_pivot_with_noise_rms_and_error_bounded():
    tip = np.array([0.0, 0.0, 150.0])
    pivot = np.array([10.0, 20.0, -1500.0])
    res = pivot_calibration(_pivot_poses(tip, pivot, _cone_rotvecs(200, 30, 1), 0.25, 2))
    assert np.linalg.norm(res.tip_offset_mm - tip) < 0.5
    # per-axis noise 0.25 mm -> 3D RMS ~0.43 mm
    assert 0.25 < res.rms_mm < 0.6
    assert res.residuals_mm.shape == (200,)


def test_pivot_static_tool_fails_clearly():
    poses = _pivot_poses(np.array([0, 0, 150.0]), np.zeros(3), [[0.5, 0.2, 0.0]] * 30)
    with pytest.raises(InputError, match="static"):
        pivot_calibration(poses)


def test_pivot_planar_motion_fails_clearly():
    rv = [[a, 0.0, 0.0] for a in np.linspace(-30, 30, 30)]  # about x only
    poses = _pivot_poses(np.array([0, 0, 150.0]), np.zeros(3), rv)
    with pytest.raises(InputError, match="single axis"):
        pivot_calibration(poses)


def test_pivot_bad_input():
    with pytest.raises(InputError, match="at least 10"):
        pivot_calibration(_pivot_poses(np.zeros(3), np.zeros(3), _cone_rotvecs(5, 20)))
    with pytest.raises(InputError, match=r"\(N, 4, 4\)"):
        pivot_calibration(np.zeros((10, 3, 4)))
    m = np.tile(np.eye(4), (12, 1, 1))
    m[3, 0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        pivot_calibration(m)
    poses = _pivot_poses(np.array([0, 0, 150.0]), np.zeros(3), _cone_rotvecs(30, 25), 3.0)
    with pytest.raises(InputError, match="max_rms_mm"):
        pivot_calibration(poses, max_rms_mm=1.0)


def test_tool_definition_tip_and_roundtrip():
    tool = POINTER.with_tip([0, 0, 160.0])
    T = RigidTransform.from_euler("xyz", [90, 0, 0], [1, 2, 3], "tracker", "pointer")
    np.testing.assert_allclose(tool.tip_in(T), [1, 2 - 160.0, 3], atol=1e-9)
    np.testing.assert_allclose(tool.axis_in(T), [0, -1, 0], atol=1e-12)
    assert ToolDefinition.from_dict(tool.to_dict()) == tool
    with pytest.raises(InputError, match="tool frame"):
        tool.tip_in(RigidTransform.identity("tracker", "drill_guide"))
    with pytest.raises(InputError, match="kind"):
        ToolDefinition("x", kind="scalpel")
    with pytest.raises(InputError, match="axis"):
        ToolDefinition("x", axis=[0, 0, 0])


def test_pose_stream_interpolation_jitter_and_roundtrip():
    s = ToolPoseStream("pointer", "tracker")
    a = RigidTransform.from_euler("xyz", [0, 0, 0], [0, 0, 0], "tracker", "pointer")
    b = RigidTransform.from_euler("xyz", [0, 0, 40], [10, 0, 0], "tracker", "pointer")
    s.add(a, 0.0)
    s.add(b, 1.0)
    mid = s.at(0.25)
    assert abs(mid.angle_deg - 10.0) < 1e-9
    np.testing.assert_allclose(mid.translation_mm, [2.5, 0, 0], atol=1e-12)
    assert s.at(5.0) == b
    with pytest.raises(InputError, match="backwards"):
        s.add(a, 0.5)
    with pytest.raises(InputError, match="T_tracker_from_pointer"):
        s.add(RigidTransform.identity("world", "pointer"), 2.0)
    back = ToolPoseStream.from_dict(s.to_dict())
    assert len(back) == 2 and back.latest()[1] == b
    # a still tool with 0.1 mm noise per axis: jitter ~0.17 mm
    rng = np.random.default_rng(0)
    still = ToolPoseStream("pointer")
    for i in range(500):
        still.add(RigidTransform.from_rt(np.eye(3), rng.normal(0, 0.1, 3), "tracker",
                                         "pointer"), i / 60)
    assert 0.14 < still.jitter_mm() < 0.2


def test_pivot_from_a_recorded_stream():
    tip = np.array([0.5, 0.0, 148.0])
    poses = _pivot_poses(tip, np.array([5.0, 5.0, 800.0]), _cone_rotvecs(60, 20, 3), 0.1, 4)
    stream = ToolPoseStream("tool", "tracker")
    for i, T in enumerate(poses):
        stream.add(T, i / 30)
    res = pivot_calibration(stream.poses())
    assert np.linalg.norm(res.tip_offset_mm - tip) < 0.5 and res.rms_mm < 0.3
