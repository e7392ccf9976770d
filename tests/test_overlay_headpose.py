"""Head-pose trajectories: seeded, plausible speeds, JSON round trip, interpolation."""

import json

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.overlay.headpose import (
    TRAJECTORIES,
    HeadTrajectory,
    load_head_poses,
    look_at,
    simulate_head_trajectory,
)


def test_look_at_points_head_z_at_the_target_with_y_down():
    m = look_at([0, -300, 400], [0, 0, 0])
    z = m[:3, 2]
    np.testing.assert_allclose(z, np.array([0, 300, -400]) / 500.0)
    assert m[:3, 1] @ [0, 0, 1] < 0  # image down points downwards in the room
    np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-12)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", TRAJECTORIES)
def test_trajectories_are_seeded_and_look_at_the_wound(kind):
    a = simulate_head_trajectory(kind, duration_s=4.0, rate_hz=90, seed=3)
    b = simulate_head_trajectory(kind, duration_s=4.0, rate_hz=90, seed=3)
    c = simulate_head_trajectory(kind, duration_s=4.0, rate_hz=90, seed=4)
    assert len(a) == 361 and a.rate_hz == pytest.approx(90.0)
    np.testing.assert_array_equal(a.T_world_from_head, b.T_world_from_head)
    if kind != "static":
        assert not np.allclose(a.T_world_from_head, c.T_world_from_head)
    wound = np.array(a.meta["wound_world_mm"])
    to_wound = wound - a.T_world_from_head[:, :3, 3]
    cosang = np.einsum("ni,ni->n", a.T_world_from_head[:, :3, 2], to_wound) \
        / np.linalg.norm(to_wound, axis=1)
    frac_on_wound = np.mean(cosang > np.cos(np.radians(10)))
    assert frac_on_wound > (0.4 if kind == "wound_screen" else 0.99)
    dist = np.linalg.norm(to_wound, axis=1)
    assert 300 < dist.min() and dist.max() < 560


def test_speeds_are_those_of_a_head():
    lin, ang = simulate_head_trajectory("standing", 10, 90, seed=0).speeds()
    assert 2 < np.median(lin) < 40 and 0.5 < np.median(ang) < 15
    assert ang.max() < 100
    _, ang = simulate_head_trajectory("wound_screen", 10, 90, seed=0).speeds()
    assert 100 < ang.max() < 400  # saccade-like head turns
    lin, _ = simulate_head_trajectory("static", 1, 60).speeds()
    assert lin.max() == 0


def test_json_round_trip_and_interpolation(tmp_path):
    tr = simulate_head_trajectory("leaning", 2.0, 60, seed=1)
    path = tr.save(tmp_path / "traj.json")
    back = load_head_poses(path)
    np.testing.assert_allclose(back.T_world_from_head, tr.T_world_from_head, atol=1e-9)
    np.testing.assert_allclose(back.T_world_from_sensor, tr.T_world_from_sensor)
    # samples are reproduced exactly, midpoints lie between their neighbours
    np.testing.assert_allclose(tr.poses_at(tr.timestamps_s[5]), tr.T_world_from_head[5:6],
                               atol=1e-9)
    mid = tr.poses_at((tr.timestamps_s[5] + tr.timestamps_s[6]) / 2)[0, :3, 3]
    np.testing.assert_allclose(mid, tr.T_world_from_head[5:7, :3, 3].mean(axis=0), atol=1e-9)
    assert json.loads(path.read_text())["poses"][0]["timestamp_s"] == 0.0


def test_single_pose_file(tmp_path):
    p = tmp_path / "pose.json"
    m = look_at([0, -250, 450], [0, 0, 0])
    p.write_text(json.dumps({"T_world_from_head": m.tolist(),
                             "T_world_from_sensor": np.eye(4).tolist()}))
    tr = load_head_poses(p)
    assert len(tr) == 1 and tr.sensor_pose().name == "T_world_from_sensor"
    np.testing.assert_allclose(tr.pose(0).as_matrix(), m, atol=1e-9)


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_head_poses(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_head_poses(tmp_path / "bad.json")
    nan_pose = {"T_world_from_head": [[1, 0, 0, float("nan")]] * 4}
    (tmp_path / "nan.json").write_text(json.dumps(nan_pose))
    with pytest.raises(InputError, match="nan.json"):
        load_head_poses(tmp_path / "nan.json")
    with pytest.raises(InputError, match="kind"):
        simulate_head_trajectory("running")
    with pytest.raises(InputError, match="strictly increasing"):
        HeadTrajectory(np.array([0.0, 0.0]), np.stack([np.eye(4)] * 2))


def test_float32_poses_are_accepted_and_non_rigid_ones_refused(tmp_path):
    m = look_at([0, -250, 450], [0, 0, 0]).astype(np.float32).astype(np.float64)
    p = tmp_path / "pose.json"
    p.write_text(json.dumps({"T_world_from_head": m.tolist()}))
    back = load_head_poses(p).T_world_from_head[0]
    np.testing.assert_allclose(back, m, atol=1e-6)
    np.testing.assert_allclose(back[:3, :3].T @ back[:3, :3], np.eye(3), atol=1e-12)
    m[0, 0] *= 2.0
    p.write_text(json.dumps({"T_world_from_head": m.tolist()}))
    with pytest.raises(InputError, match="not a rigid transform"):
        load_head_poses(p)
