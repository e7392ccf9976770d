"""Global pose candidates by dense template matching of the exposure's normal field."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.datasets.scene import is_bone
from arspine.datasets.simulate import simulate_scan
from arspine.registration import prepare_model
from arspine.registration.preprocess import prepare_scan
from arspine.registration.template import template_candidates, view_directions


def _hit_rank(anatomy, model, seed: int):
    """Rank of the first candidate within 10 deg / 10 mm (at the exposed bone's centre) of
    the middle exposed level's true pose, or None."""
    from scipy.spatial import cKDTree

    sim = simulate_scan(anatomy, seed=seed, levels=["L2", "L3", "L4"], outlier_fraction=0.1,
                        motion="moderate")
    ps = prepare_scan(sim.cloud)
    mask = ps.regions[0][0]
    E, En = ps.fine[mask], ps.fine_normals[mask]
    T_true = np.linalg.inv(sim.truth["L3"].as_matrix())
    _, j = cKDTree(sim.cloud.points).query(E)
    bone = is_bone(np.asarray(sim.cloud.labels)[j])
    c = np.median(E[bone], axis=0)
    for k, (T, _) in enumerate(template_candidates(E, En, model, n_out=8)):
        ang = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3].T @ T_true[:3, :3]) - 1) / 2,
                                           -1, 1)))
        move = np.linalg.norm(T[:3, :3] @ c + T[:3, 3] - (T_true[:3, :3] @ c + T_true[:3, 3]))
        if ang < 10 and move < 10:
            return k
    return None


@pytest.fixture(scope="module")
def phantom():
    from arspine.datasets.phantom import make_phantom

    anatomy = make_phantom(seed=0, spacing_mm=1.5).anatomy()
    return anatomy, prepare_model(surfaces=anatomy.surfaces)


def test_template_finds_the_pose_first_on_most_phantom_scans(phantom):
    # Unknown sensor pose (any roll, tilt up to 25 deg), drapes, retractors, a hand or tool
    # on some, 10 % outliers, vertebrae moved since the CT: over 24 scans the best candidate
    # is within 10 deg / 10 mm on 19 and one of the 8 returned on 20 (with hand-made point
    # weights instead of the bone likelihood: 16 and 18; before the exposure ignored a hand
    # in front of the back: 15 and 16).
    anatomy, model = phantom
    ranks = [_hit_rank(anatomy, model, seed) for seed in range(1, 25)]
    assert sum(r == 0 for r in ranks) >= 18, ranks
    assert sum(r is not None for r in ranks) >= 19, ranks


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_template_finds_the_pose_first_on_shape_model_scans(data_dir, seed):
    from arspine.datasets.suites import load_anatomy

    anatomy = load_anatomy("ssm")
    assert _hit_rank(anatomy, prepare_model(surfaces=anatomy.surfaces), seed) == 0


def test_view_directions_cover_the_cap_evenly():
    c = np.array([0.0, 1.0, 0.0])
    v = view_directions(c, 35.0, 12.0)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    ang = np.degrees(np.arccos(np.clip(v @ c, -1, 1)))
    assert ang.max() <= 35.0 + 1e-6 and ang.min() == pytest.approx(0.0)
    # Any direction in the cap is within about one step of a sample.
    rng = np.random.default_rng(0)
    for _ in range(200):
        t, a = np.radians(rng.uniform(0, 35)), rng.uniform(0, 2 * np.pi)
        d = np.array([np.sin(t) * np.cos(a), np.cos(t), np.sin(t) * np.sin(a)])
        assert np.degrees(np.arccos(np.clip(v @ d, -1, 1))).min() < 12.0


def test_template_returns_nothing_for_degenerate_exposures(phantom):
    _, model = phantom
    rng = np.random.default_rng(0)
    # Two clusters 300 mm apart: nothing within the matching radius of their median.
    far = np.r_[rng.normal([-150, 0, 500], 1, (20, 3)), rng.normal([150, 0, 500], 1, (20, 3))]
    up = np.tile([0.0, 0.0, -1.0], (len(far), 1))
    assert template_candidates(far, up, model) == []
    # Points without normals carry no weight.
    blob = rng.normal([0, 0, 500], 10, (200, 3))
    assert template_candidates(blob, np.zeros_like(blob), model) == []
