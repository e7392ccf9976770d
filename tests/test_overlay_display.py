"""HeadMountedDisplay: intrinsics, eye poses, projection, presets, bad input."""

import math

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.overlay.display import PRESETS, HeadMountedDisplay, get_display, project_points


def test_default_display_matches_the_spec():
    d = get_display()
    assert (d.width_px, d.height_px, d.fov_h_deg, d.ipd_mm, d.focal_plane_mm) == \
        (1280, 720, 43.0, 63.0, 500.0)
    K = d.K
    assert K[0, 0] == pytest.approx(640.0 / math.tan(math.radians(21.5)))
    assert K[1, 1] == pytest.approx(K[0, 0])
    assert (K[0, 2], K[1, 2]) == (639.5, 359.5)
    # a point on the edge of the horizontal field of view lands on the image edge
    x = 500.0 * math.tan(math.radians(21.5))
    uv, z = project_points(K, np.eye(4), [[x, 0.0, 500.0]])
    assert uv[0, 0] == pytest.approx(1279.5) and z[0] == 500.0


def test_eyes_sit_at_half_ipd_along_head_x():
    d = get_display()
    T_wh = RigidTransform.from_euler("xyz", [10, -20, 30], [100, 200, 300], "world", "head")
    eyes = d.eye_poses(T_wh)
    left = eyes["left"].inv().translation_mm
    right = eyes["right"].inv().translation_mm
    assert np.linalg.norm(right - left) == pytest.approx(63.0)
    # left is -x of the head, right +x, both on either side of the head origin
    np.testing.assert_allclose(T_wh.inv().apply(left), [-31.5, 0, 0], atol=1e-9)
    np.testing.assert_allclose(T_wh.inv().apply(right), [31.5, 0, 0], atol=1e-9)
    assert eyes["left"].name == "T_eye_left_from_world"


def test_disparity_of_a_point_straight_ahead():
    d = get_display()
    eyes = d.eye_poses(np.eye(4))
    p = [[0.0, 0.0, 500.0]]
    ul = d.project(p, eyes["left"])[0][0, 0]
    ur = d.project(p, eyes["right"])[0][0, 0]
    # the left eye sees the point to the right of its centre: u_l - u_r = f * IPD / z
    assert ul - ur == pytest.approx(d.fx * 63.0 / 500.0)


def test_non_square_pixels_and_principal_offset():
    d = HeadMountedDisplay(width_px=800, height_px=600, fov_h_deg=40, fov_v_deg=36,
                           principal_offset_px=(12.0, -7.0))
    assert d.fy != pytest.approx(d.fx)
    assert d.fov_v == pytest.approx(36.0)
    np.testing.assert_allclose(d.K[:2, 2], [399.5 + 12.0, 299.5 - 7.0])
    s = d.scaled(0.5)
    assert (s.width_px, s.height_px) == (400, 300)
    assert s.fov_h_deg == d.fov_h_deg and s.fov_v == pytest.approx(36.0)


def test_presets_and_roundtrip():
    assert {"default", "hololens2", "magicleap2", "waveguide_glasses", "quest3"} <= set(PRESETS)
    assert PRESETS["quest3"].see_through == "video"
    assert PRESETS["hololens2"].fov_v == pytest.approx(29.0)
    for d in PRESETS.values():
        back = HeadMountedDisplay.from_dict(d.to_dict())
        np.testing.assert_allclose(back.K, d.K)
        assert back.see_through == d.see_through


def test_points_behind_the_eye_are_nan():
    uv, z = project_points(np.eye(3), np.eye(4), [[0, 0, -10.0], [1, 2, 10.0]])
    assert np.isnan(uv[0]).all() and np.allclose(uv[1], [0.1, 0.2])


@pytest.mark.parametrize("kwargs", [dict(width_px=0), dict(fov_h_deg=float("nan")),
                                    dict(ipd_mm=-1.0), dict(see_through="holo"),
                                    dict(height_px=7.5)])
def test_bad_display_parameters(kwargs):
    with pytest.raises(InputError):
        HeadMountedDisplay(**kwargs)


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputError, match="display must be one of"):
        get_display("hololens9")
    with pytest.raises(InputError, match="T_world_from_head"):
        get_display().eye_poses(np.ones((3, 3)))
    with pytest.raises(InputError, match="T_world_from_head must be T_world_from_head"):
        get_display().eye_poses(RigidTransform.identity("world", "ct"))
    with pytest.raises(InputError, match="points_world"):
        project_points(np.eye(3), np.eye(4), np.zeros((3, 2)))
