"""Paired-point registration: real phantom fiducials, known transforms, TRE prediction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.registration.fiducial import kabsch, predict_fre, predict_tre, register_fiducials


def _read_pcd_xyz(path):
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("DATA")) + 1
    return np.array([[float(v) for v in ln.split()[:3]] for ln in lines[start:] if ln.strip()])


@pytest.fixture(scope="module")
def phantom_pairs(data_dir):
    ct = _read_pcd_xyz(data_dir / "ismr24_phantom" / "ct_frame" / "fiducials.pcd")
    us = _read_pcd_xyz(data_dir / "ismr24_phantom" / "us_frame" / "fiducials.pcd")
    assert ct.shape == us.shape == (6, 3)
    return ct, us


def test_phantom_fiducials_match_independent_solution(phantom_pairs):
    ct, us = phantom_pairs
    res = register_fiducials(ct, us, fixed_frame="ct", moving_frame="us")
    assert res.T.name == "T_ct_from_us"
    # Independent solution: scipy's Kabsch on centred points.
    rot, _ = Rotation.align_vectors(ct - ct.mean(0), us - us.mean(0))
    t = ct.mean(0) - rot.apply(us.mean(0))
    np.testing.assert_allclose(res.T.rotation, rot.as_matrix(), atol=1e-9)
    np.testing.assert_allclose(res.T.translation_mm, t, atol=1e-7)
    # FRE is the RMS of the residuals. The ultrasound frame is ~18 % narrower across x than
    # the CT (110 vs 90 mm between the fiducial columns: a real scale error of that phantom),
    # so no rigid fit can do better than ~10 mm at the +-55 mm columns.
    assert res.fre_mm == pytest.approx(np.sqrt(np.mean(res.residuals_mm ** 2)))
    assert 9.5 < res.fre_mm < 11.0
    assert res.T.angle_deg < 5.0


def test_known_transform_recovered_exactly(phantom_pairs):
    ct, _ = phantom_pairs
    T = RigidTransform.from_euler("xyz", [20, -35, 110], [12.0, -40.0, 300.0], "sensor", "ct")
    res = register_fiducials(T.apply(ct), ct, fixed_frame="sensor", moving_frame="ct")
    assert res.T.isclose(T, atol_mm=1e-9, atol_deg=1e-9)
    assert res.fre_mm < 1e-9


def test_weights_downweight_a_bad_fiducial(phantom_pairs):
    ct, _ = phantom_pairs
    T = RigidTransform.from_euler("xyz", [5, 10, -20], [1.0, 2.0, 3.0], "sensor", "ct")
    moved = T.apply(ct)
    moved[0] += [15.0, 0, 0]  # one fiducial badly localised
    w = np.ones(6)
    w[0] = 1e-6
    err_w = register_fiducials(moved, ct, weights=w).T.distance_to(T)
    err_u = register_fiducials(moved, ct).T.distance_to(T)
    assert err_w[1] < 1e-3 < err_u[1]


def test_reflection_guard_returns_a_proper_rotation():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(8, 3)) * [50, 40, 1.0]  # nearly planar
    mirrored = p * [1, 1, -1]
    res = register_fiducials(mirrored, p)
    assert np.linalg.det(res.T.rotation) == pytest.approx(1.0)


@pytest.mark.parametrize("fixed,moving,match", [
    (np.zeros((2, 3)), np.zeros((2, 3)), "at least|min|3"),
    ([[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 0, 0], [1, 1, 1], [2, 2, 2]], "collinear"),
    ([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0]], "NaN|finite"),
    (np.eye(3), np.eye(4)[:, :3], "same number"),
])
def test_degenerate_inputs_raise_clear_errors(fixed, moving, match):
    with pytest.raises(InputError, match=match):
        register_fiducials(fixed, moving)


def test_predicted_tre_matches_simulation(phantom_pairs):
    ct, _ = phantom_pairs
    fle = 1.0
    targets = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 80.0], [120.0, 60.0, -40.0]])
    pred = predict_tre(ct, targets, fle)
    rng = np.random.default_rng(7)
    n = 2000
    sq = np.zeros(len(targets))
    fre_sq = 0.0
    sigma = fle / np.sqrt(3.0)  # isotropic: <FLE^2> = 3 sigma^2
    for _ in range(n):
        noisy = ct + rng.normal(0, sigma, ct.shape)
        m = kabsch(noisy, ct)  # the core of register_fiducials, without the checks
        sq += np.sum((targets @ m[:3, :3].T + m[:3, 3] - targets) ** 2, axis=1)
        fre_sq += np.mean(np.sum((ct @ m[:3, :3].T + m[:3, 3] - noisy) ** 2, axis=1))
    sim = np.sqrt(sq / n)
    # Monte Carlo error of an RMS over 2000 trials is ~2-3 %; eq. 46 is first order.
    np.testing.assert_allclose(sim, pred, rtol=0.08)
    assert np.sqrt(fre_sq / n) == pytest.approx(predict_fre(len(ct), fle), rel=0.05)
    # The far target is predicted (and simulated) worse than the centroid.
    assert pred[2] > pred[1] > pred[0]
