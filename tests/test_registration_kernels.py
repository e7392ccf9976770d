"""The compiled kernels (registration/_kernels.py) against plain NumPy on the same data."""

import numpy as np
import pytest

from arspine.registration import prepare_model
from arspine.registration.global_ import proxy_scores
from arspine.registration.icp import icp_point_to_plane, small_rigid
from arspine.registration.multibody import _LevelView


@pytest.fixture(scope="module")
def model():
    from arspine.datasets.phantom import make_phantom

    return prepare_model(surfaces=make_phantom(seed=0, spacing_mm=2.5).anatomy().surfaces)


def _numpy_nearest_sq(model, q, max_mm):
    idx = model.grid.lookup(q)
    diff = q - model.points[np.maximum(idx, 0)]
    d2 = np.einsum("ij,ij->i", diff, diff)
    far = (idx < 0) | (d2 > max_mm * max_mm)
    return np.where(far, np.inf, d2), np.where(far, -1, idx)


def _numpy_scores(model, Ts, P, Pn, tau, level=-1):
    R = Ts[:, :3, :3]
    q = (np.matmul(P[None], R.transpose(0, 2, 1)) + Ts[:, None, :3, 3]).reshape(-1, 3)
    d2, idx = _numpy_nearest_sq(model, q, tau)
    if level >= 0:
        other = (idx >= 0) & (model.level_index[np.maximum(idx, 0)] != level)
        d2, idx = np.where(other, np.inf, d2), np.where(other, -1, idx)
    nb = np.matmul(Pn[None], R.transpose(0, 2, 1)).reshape(-1, 3)
    agree = np.einsum("ij,ij->i", model.normals[np.maximum(idx, 0)], nb) > 0.3
    w = np.where(agree & np.isfinite(d2), 1.0 - d2 / tau**2, 0.0)
    return w.reshape(len(Ts), -1).sum(axis=1)


def _scan_of(model, rng, n=800):
    """Shell points near the model (jittered) with their normals, and poses around truth."""
    pick = rng.choice(len(model.points), n, replace=False)
    P = model.points[pick] + rng.normal(0, 0.7, (n, 3))
    Pn = model.normals[pick]
    Ts = np.array([small_rigid(np.r_[rng.normal(0, 0.05, 3), rng.normal(0, 3.0, 3)])
                   for _ in range(12)])
    return P, Pn, Ts


def test_nearest_matches_numpy_grid_lookup(model):
    rng = np.random.default_rng(1)
    q = model.points.mean(axis=0) + rng.normal(0, 60.0, (4000, 3))
    q[:5] = np.nan          # the border cell: no neighbour
    q[5:10] = 1e9           # far outside the grid
    d2, idx = model.nearest_sq(q, 6.0)
    d2_ref, idx_ref = _numpy_nearest_sq(model, np.nan_to_num(q, nan=-1e9), 6.0)
    assert np.array_equal(idx, idx_ref)
    assert np.allclose(d2[np.isfinite(d2)], d2_ref[np.isfinite(d2_ref)], rtol=0, atol=1e-9)
    assert (idx[:10] == -1).all() and np.isinf(d2[:10]).all()
    assert 100 < np.isfinite(d2).sum() < 4000      # both cases were exercised


@pytest.mark.parametrize("tau", [3.0, 8.0])
def test_proxy_scores_match_numpy(model, tau):
    rng = np.random.default_rng(2)
    P, Pn, Ts = _scan_of(model, rng)
    got = proxy_scores(Ts, P, Pn, model, tau)
    ref = _numpy_scores(model, Ts, P, Pn, tau)
    assert ref.max() > 100
    assert np.allclose(got, ref, rtol=0, atol=1e-9)


def test_proxy_scores_of_one_level_match_numpy(model):
    rng = np.random.default_rng(3)
    P, Pn, Ts = _scan_of(model, rng)
    for i in range(len(model.levels)):
        got = proxy_scores(Ts, P, Pn, _LevelView(model, i), 5.0)
        ref = _numpy_scores(model, Ts, P, Pn, 5.0, level=i)
        assert np.allclose(got, ref, rtol=0, atol=1e-9)
    whole = proxy_scores(Ts, P, Pn, model, 5.0)
    per_level = sum(proxy_scores(Ts, P, Pn, _LevelView(model, i), 5.0)
                    for i in range(len(model.levels)))
    assert np.allclose(whole, per_level, atol=1e-9)


@pytest.mark.parametrize("level", [None, 2])
def test_icp_compiled_path_equals_numpy_path(model, level):
    rng = np.random.default_rng(4)
    P, Pn, _ = _scan_of(model, rng, 1500)
    target = model if level is None else _LevelView(model, level)
    T0 = small_rigid(np.r_[np.radians([2.0, -1.5, 1.0]), 2.0, -1.0, 1.5])
    kw = dict(schedule_mm=(4.0, 3.0, 2.0), tukey_c_mm=2.0, patch_mm=4.0, front_c_mm=1.5)
    a = icp_point_to_plane(P, Pn, target.nearest, model.points, model.normals, T0, **kw)
    b = icp_point_to_plane(P, Pn, target.nearest, model.points, model.normals, T0,
                           grid_model=target, **kw)
    assert a.n_inliers == b.n_inliers > 100
    assert np.allclose(a.T_ct_from_sensor, b.T_ct_from_sensor, atol=1e-9)
    assert abs(a.rmse_mm - b.rmse_mm) < 1e-9
    # and the fit itself went home: the points were sampled on the model at identity, so
    # the fit brings the fitted part's centre to within 1 mm from more than 3 mm
    c = model.points.mean(axis=0) if level is None else model.centroids[level]
    T = b.T_ct_from_sensor
    assert np.linalg.norm(T0[:3, :3] @ c + T0[:3, 3] - c) > 3.0
    assert np.linalg.norm(T[:3, :3] @ c + T[:3, 3] - c) < 1.0
