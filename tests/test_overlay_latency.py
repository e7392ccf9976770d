"""Latency and head-pose prediction: exact on the motions each model assumes, and the overlay
error they cost."""

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.overlay.headpose import HeadTrajectory, look_at, simulate_head_trajectory
from arspine.overlay.latency import (
    PREDICTORS,
    delayed_poses,
    latency_overlay_error,
    make_predictor,
)


def _motion(accel: bool, translate: bool = True) -> HeadTrajectory:
    """Head pitching about its own x axis at 30 deg/s (or accelerating) and translating."""
    from scipy.spatial.transform import Rotation

    t = np.arange(0, 1.0, 1 / 90)
    base = look_at([0, -250, 430], [0, 0, 0])
    mats = []
    for ti in t:
        s = ti * ti if accel else ti
        m = base.copy()
        m[:3, :3] = base[:3, :3] @ Rotation.from_rotvec(np.radians([30, 0, 0]) * s).as_matrix()
        m[:3, 3] += np.array([40.0, -20.0, 10.0]) * s * translate
        mats.append(m)
    return HeadTrajectory(t, np.array(mats), meta={"wound_world_mm": [0.0, 0.0, 0.0]})


def test_zero_latency_costs_nothing():
    tr = simulate_head_trajectory("standing", 2, 90, seed=0)
    s = latency_overlay_error(tr, None, None, 0.0, "none").summary()
    assert s["px"]["max"] < 1e-6


def test_hold_error_grows_with_latency_and_matches_head_motion():
    tr = _motion(accel=False, translate=False)
    r20 = latency_overlay_error(tr, None, None, 0.02, "none")
    e20 = r20.summary()["px"]["rms"]
    e50 = latency_overlay_error(tr, None, None, 0.05, "none").summary()["px"]["rms"]
    assert e50 == pytest.approx(2.5 * e20, rel=0.05)
    # pitching 30 deg/s for 20 ms is 0.6 deg: the wound, near the image centre, moves by
    # about f * tan(0.6 deg) = 17 px
    assert e20 == pytest.approx(1624.7 * np.tan(np.radians(0.6)), rel=0.05)


def test_constant_velocity_predictor_is_exact_on_constant_velocity_motion():
    tr = _motion(accel=False)
    r = latency_overlay_error(tr, None, None, 0.03, "constant_velocity")
    # from the second measurement on (the first one can only be held)
    assert np.nanmax(r.error_px["left"][1:]) < 0.05 and np.nanmax(r.error_mm["right"][1:]) < 0.02
    assert r.error_px["left"][0, 0] > 10
    hold = latency_overlay_error(tr, None, None, 0.03, "none").summary()
    assert hold["px"]["rms"] > 10


def test_constant_acceleration_predictor_is_exact_on_accelerating_motion():
    tr = _motion(accel=True)
    ca = latency_overlay_error(tr, None, None, 0.03, "constant_acceleration")
    cv = latency_overlay_error(tr, None, None, 0.03, "constant_velocity")
    assert np.nanmax(ca.error_px["left"][2:]) < 0.3 < np.nanmean(cv.error_px["left"][2:])


def test_kalman_filters_tracking_noise_better_than_differencing():
    tr = simulate_head_trajectory("standing", 4, 90, seed=2)
    kw = dict(measurement_noise_mm=0.1, measurement_noise_deg=0.03, seed=5)
    kal = latency_overlay_error(tr, None, None, 0.03, "kalman", **kw).summary()["px"]["rms"]
    cv = latency_overlay_error(tr, None, None, 0.03, "constant_velocity",
                               **kw).summary()["px"]["rms"]
    assert kal < cv


def test_every_predictor_beats_holding_on_a_smooth_trajectory():
    tr = simulate_head_trajectory("leaning", 4, 90, seed=1)
    hold = latency_overlay_error(tr, None, None, 0.03, "none").summary()["px"]["rms"]
    for name in PREDICTORS:
        if name != "none":
            e = latency_overlay_error(tr, None, None, 0.03, name).summary()
            assert e["px"]["rms"] < hold, name
            assert e["mm"]["rms"] < e["px"]["rms"]  # ~0.3 mm per pixel at 0.5 m


def test_mm_is_pixels_times_depth_over_f():
    tr = _motion(accel=False)
    r = latency_overlay_error(tr, "default", [[0.0, 0.0, 0.0]], 0.02, "none")
    d = np.linalg.norm(tr.T_world_from_head[0, :3, 3])
    ratio = np.nanmedian(r.error_mm["left"] / r.error_px["left"])
    assert ratio == pytest.approx(d / 1624.7, rel=0.1)


def test_bad_inputs():
    tr = simulate_head_trajectory("static", 0.1, 60)
    with pytest.raises(InputError, match="predictor"):
        make_predictor("oracle")
    with pytest.raises(InputError, match="latency_s"):
        delayed_poses(tr, -0.1)
    with pytest.raises(InputError, match="longer than the trajectory"):
        delayed_poses(tr, 1.0)
    with pytest.raises(InputError, match="trajectory"):
        delayed_poses("traj.json", 0.01)
