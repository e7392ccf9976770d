"""Overlay error budget: the first-order prediction agrees with Monte Carlo."""

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.overlay.error import ErrorSources, expected_overlay_error, simulate_overlay_error
from arspine.overlay.headpose import simulate_head_trajectory


@pytest.fixture(scope="module")
def targets():
    w = np.array([0.0, 0.0, -600.0])
    return np.array([w, w + [25.0, 0, 0], w + [0, 35.0, 12.0]])


def test_expected_matches_monte_carlo_per_component(targets):
    tr = simulate_head_trajectory("static", 1, 60, seed=0)
    src = ErrorSources(registration_tre_mm=1.0, tracking_error_mm=0.5, tracking_error_deg=0.2,
                       calibration_error_mm=0.8, calibration_error_deg=0.1, latency_s=0.0)
    exp = expected_overlay_error("default", tr.pose(0), targets, src)
    mc = simulate_overlay_error("default", tr, targets, src, n_samples=4000, seed=1)
    for c in ("registration", "tracking", "calibration", "total"):
        for side in ("left", "right"):
            np.testing.assert_allclose(mc.px[c][side], exp.px[c][side], rtol=0.08)
            np.testing.assert_allclose(mc.mm[c][side], exp.mm[c][side], rtol=0.08)
    assert np.all(exp.px["latency"]["left"] == 0)


def test_registration_error_in_mm_is_its_lateral_part(targets):
    tr = simulate_head_trajectory("static", 1, 60)
    src = ErrorSources(registration_tre_mm=2.0, tracking_error_mm=0, tracking_error_deg=0,
                       calibration_error_mm=0, calibration_error_deg=0, latency_s=0)
    exp = expected_overlay_error("default", tr.pose(0), targets, src)
    # an isotropic 3-D error of RMS 2 mm has a lateral (2 of 3 axes) RMS of 2 sqrt(2/3) mm
    np.testing.assert_allclose(exp.mm["registration"]["left"], 2 * np.sqrt(2 / 3), rtol=0.03)
    np.testing.assert_allclose(exp.mm["total"]["left"], exp.mm["registration"]["left"])


def test_latency_term_follows_head_speed(targets):
    tr = simulate_head_trajectory("standing", 6, 90, seed=0)
    src = ErrorSources(registration_tre_mm=0, tracking_error_mm=0, tracking_error_deg=0,
                       calibration_error_mm=0, calibration_error_deg=0, latency_s=0.03)
    exp = expected_overlay_error("default", tr.pose(0), targets, src, trajectory=tr)
    mc = simulate_overlay_error("default", tr, targets, src, n_samples=3000)
    e, m = exp.summary()["latency"]["left"]["px"], mc.summary()["latency"]["left"]["px"]
    assert m == pytest.approx(e, rel=0.35)
    assert mc.summary()["total"]["left"]["p95_px"] > m
    slow = ErrorSources(**{**src.__dict__, "latency_s": 0.01})
    assert simulate_overlay_error("default", tr, targets, slow, n_samples=3000).summary()[
        "latency"]["left"]["px"] < m / 2


def test_bad_inputs(targets):
    with pytest.raises(InputError, match="registration_tre_mm"):
        ErrorSources(registration_tre_mm=-1)
    tr = simulate_head_trajectory("static", 1, 60)
    with pytest.raises(InputError, match="targets_world_mm"):
        expected_overlay_error(None, tr.pose(0), [[np.nan, 0, 0]])
    with pytest.raises(InputError, match="n_samples"):
        simulate_overlay_error(None, tr, targets, n_samples=1)
