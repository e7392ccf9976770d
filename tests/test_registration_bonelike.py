"""Bone likelihood of exposure points (registration.bonelike)."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.registration.bonelike import (
    FEATURES,
    bone_probability,
    exposure_features,
    fit_bone_odds,
)


def _auc(score, y):
    r = np.empty(len(score))
    r[np.argsort(score)] = np.arange(len(score))
    y = np.asarray(y, bool)
    return (r[y].mean() - (y.sum() - 1) / 2) / (~y).sum()


def test_fit_recovers_a_known_rule():
    # Bone when a > 0.3 (up to 10 % label noise); b is noise: the table must put the odds
    # on a's bins and near zero on b's.
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 20000)
    y = (a > 0.3) ^ (rng.uniform(size=a.size) < 0.1)
    odds = fit_bone_odds({"a": a, "b": b}, y)
    p = bone_probability({"a": np.array([-0.8, 0.0, 0.8]), "b": np.zeros(3)}, odds)
    assert p[0] < 0.15 and p[1] < 0.15 and p[2] > 0.85
    assert np.ptp(odds["terms"]["b"][1]) < 0.3 < np.ptp(odds["terms"]["a"][1])


def test_fit_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        fit_bone_odds({"a": np.arange(10.0)}, np.ones(10, bool))


def test_features_of_a_synthetic_exposure():
    # A flat floor at height 0 with a ridge (a spinous process) 15 mm high along the middle.
    g = 3.5
    u, v = np.meshgrid(np.arange(-40, 40, 1.0), np.arange(-60, 60, 1.0), indexing="ij")
    uv = np.c_[u.ravel(), v.ravel()]
    ridge = np.abs(uv[:, 0]) < 5
    h = np.where(ridge, 15.0, 0.0)
    r = 4 * int(np.ceil((np.linalg.norm(uv, axis=1).max() / g + 2) / 4))
    pix = np.floor(uv / g).astype(np.int64) + r
    f = exposure_features(h, uv, np.ones(len(h)), np.zeros((len(h), 2)), pix,
                          (2 * r + 1, 2 * r + 1), g)
    assert set(f) == set(FEATURES)
    assert np.all([np.isfinite(x).all() for x in f.values()])
    assert np.median(f["hab40"][ridge]) == pytest.approx(15.0)
    assert np.median(f["hab40"][~ridge]) == pytest.approx(0.0)
    # The exposure's long axis is v: the ridge runs along it.
    assert f["lateral"][ridge].max() < 6.0 and f["lateral"].max() > 35.0
    assert f["hplane"][ridge].min() > f["hplane"][~ridge].max()


@pytest.mark.parametrize("seed", [41100, 41101, 41102, 41103])
def test_bone_probability_separates_bone_on_held_out_scans(seed):
    # Scans the table was not fitted on (seeds 40000-40159): on every one bone ranks well
    # above the rest (AUC over the first exposure's points), and weighted by the squared
    # probability, as the template weighs them, bone makes a much larger share of the
    # exposure than it does of its points.
    from scipy.spatial import cKDTree

    from arspine.datasets.scene import is_bone
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration.preprocess import prepare_scan
    from arspine.registration.template import exposure_bone_features

    an = load_anatomy(("phantom:0", "phantom:1")[seed % 2])
    sim = simulate_scan(an, seed=seed, levels=["L2", "L3", "L4"], outlier_fraction=0.1,
                        motion="moderate")
    ps = prepare_scan(sim.cloud)
    mask = ps.regions[0][0]
    keep, f = exposure_bone_features(ps.fine[mask], ps.fine_normals[mask])
    _, j = cKDTree(sim.cloud.points).query(ps.fine[mask][keep])
    y = is_bone(np.asarray(sim.cloud.labels)[j])
    p = bone_probability(f)
    assert _auc(p, y) > 0.8
    w = p ** 2
    assert (w * y).sum() / w.sum() > y.mean() + 0.15
