"""Per-level refinement: tissue left on the bone must not bias the fit, an unstable fit must
show it (spread), and the gate's per-level and single-level rules."""

from __future__ import annotations

import numpy as np
import pytest
from fresh_scans import fresh_scan, level_tre
from test_registration_views import rot, ssm_surfaces

from arspine.registration import prepare_model
from arspine.registration._pc import unit
from arspine.registration.gate import GateConfig, gate_level, single_level_suffices
from arspine.registration.icp import icp_point_to_plane
from arspine.registration.multibody import (
    _LevelView,
    _rotation_about,
    _support,
    _target_rms,
    level_targets,
    refine_levels,
)


@pytest.fixture(scope="module")
def ssm_model(data_dir):
    return prepare_model(surfaces=ssm_surfaces(data_dir))


def _posterior_patch(m, level: int, seed: int, tissue_fraction: float = 0.3,
                     tissue_mm: float = 1.5, noise_mm: float = 0.8):
    """Scan of one level's posterior shell (ct frame): noisy bone, and coherent patches of
    "tissue" lying ``tissue_mm`` in front of the bone (as left after dissection)."""
    rng = np.random.default_rng(seed)
    sel = (m.level_index == level) & (m.normals @ m.posterior_ct > 0.2)
    p, n = m.points[sel], m.normals[sel]
    # Patches: the points nearest to a few random centres, ~tissue_fraction of the level.
    centres = p[rng.choice(len(p), 6, replace=False)]
    d = np.min(np.linalg.norm(p[:, None] - centres[None], axis=2), axis=1)
    tissue = d < np.quantile(d, tissue_fraction)
    off = rng.normal(0, noise_mm, len(p)) + np.where(tissue, tissue_mm, 0.0)
    return p + off[:, None] * n, n, tissue


def _to_sensor(p, n, T_ct_from_sensor):
    R, t = T_ct_from_sensor[:3, :3], T_ct_from_sensor[:3, 3]
    return (p - t) @ R, n @ R


def _pose(seed):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = rot(rng.normal(size=3), rng.uniform(20, 160))
    T[:3, 3] = rng.uniform(-300, 300, 3)
    return T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_patch_trimming_removes_the_tissue_bias(ssm_model, seed):
    m = ssm_model
    i = 1  # L3
    p, n, _ = _posterior_patch(m, i, seed)
    T_true = _pose(seed)
    s, sn = _to_sensor(p, n, T_true)
    # Start 2 degrees / 1.5 mm off, as after the whole-spine fit.
    D = np.eye(4)
    D[:3, :3] = rot([0.2, 1.0, 0.4], 2.0)
    D[:3, 3] = [1.0, -0.8, 0.7]
    T0 = D @ T_true
    view = _LevelView(m, i)
    targets = level_targets(m, i)

    def fit(**kw):
        r = icp_point_to_plane(s, sn, view.nearest, m.points, m.normals, T0,
                               schedule_mm=(3.0, 2.0, 1.5), tukey_c_mm=2.0,
                               motion_center=m.centroids[i], **kw)
        return _target_rms(r.T_ct_from_sensor, T_true, targets)

    plain = fit()
    trimmed = fit(patch_mm=4.0, patch_offset_mm=0.45, front_c_mm=1.5)
    # Tissue 1.5 mm proud of 30 % of the bone pulls the plain fit off; trimmed patches
    # leave the bone's own fit.
    # (measured: plain 0.47-0.55 mm, trimmed 0.19-0.25 mm at the targets)
    assert trimmed < 0.35, (plain, trimmed)
    assert trimmed < 0.7 * plain, (plain, trimmed)


def test_patch_trimming_costs_nothing_on_clean_bone(ssm_model):
    m = ssm_model
    i = 2
    p, n, _ = _posterior_patch(m, i, 5, tissue_fraction=0.0)
    T_true = _pose(5)
    s, sn = _to_sensor(p, n, T_true)
    view = _LevelView(m, i)
    r = icp_point_to_plane(s, sn, view.nearest, m.points, m.normals, T_true,
                           schedule_mm=(3.0, 2.0, 1.5), tukey_c_mm=2.0, patch_mm=4.0,
                           patch_offset_mm=0.45, front_c_mm=1.5)
    assert _target_rms(r.T_ct_from_sensor, T_true, level_targets(m, i)) < 0.3


def test_spread_is_small_for_a_well_seen_level_and_large_for_a_sliver(ssm_model):
    m = ssm_model
    i = 1
    T_true = _pose(7)
    p, n, _ = _posterior_patch(m, i, 7, tissue_fraction=0.0)
    s, sn = _to_sensor(p, n, T_true)
    good = refine_levels(T_true, s, sn, m, stability=True, search=False)[m.levels[i]]
    # A sliver along the midline (the spinous process's crest only): its roll about the
    # spine axis is barely pinned.
    lat = unit(np.cross(m.axis_ct, m.posterior_ct))
    crest = np.abs((p - m.centroids[i]) @ lat) < 3.0
    crest &= (p - m.centroids[i]) @ m.posterior_ct > np.quantile(
        (p - m.centroids[i]) @ m.posterior_ct, 0.6)
    s2, sn2 = _to_sensor(p[crest], n[crest], T_true)
    bad = refine_levels(T_true, s2, sn2, m, stability=True, search=False)[m.levels[i]]
    assert good["spread_mm"] < 0.5, good["spread_mm"]
    assert bad["spread_mm"] > 1.0 or bad["predicted_tre_mm"] > 1.0 or bad["n_inliers"] < 150
    assert bad["spread_mm"] > 2 * good["spread_mm"]


def test_support_prefers_the_true_pose_over_a_nearby_minimum(ssm_model):
    m = ssm_model
    i = 2
    p, n, _ = _posterior_patch(m, i, 11)
    T_true = _pose(11)
    s, sn = _to_sensor(p, n, T_true)
    view = _LevelView(m, i)
    at_truth = _support(T_true, s, sn, view, m)
    lat = unit(np.cross(m.axis_ct, m.posterior_ct))
    for axis in (lat, m.axis_ct, m.posterior_ct):
        off = _rotation_about(axis, np.radians(4.0), m.centroids[i]) @ T_true
        # A pose 4 degrees off is clearly worse (below refine_levels' 0.95 of the best).
        assert _support(off, s, sn, view, m) < 0.9 * at_truth


def test_a_restart_ending_in_a_worse_minimum_is_not_instability():
    # Fresh scan phantom:1 seed 33119: L5 (514 inliers) lies 0.10 mm from the truth, but a
    # tilted restart ended 5.5 mm away in a minimum with clearly less support; counted, it
    # refused the level as "not stable". Only restarts that fit about as well count now.
    from arspine.registration import register

    model, sim = fresh_scan("phantom:1", 33119, ["L3", "L4", "L5"])
    r = register(model, sim.cloud)
    q = r.quality["levels"]["L5"]
    tre = level_tre(r, sim, "L5")
    assert tre < 0.5 and q["spread_restart_mm"] < 0.5, (tre, q)
    assert r.status == "ok" and r.vertebrae["L5"].status == "ok", r.vertebrae["L5"].reason


def test_a_level_with_few_but_clean_inliers_is_judged_by_its_checks():
    cfg = GateConfig()
    clean = {"coverage": 0.11, "n_inliers": 120, "rmse_mm": 0.7, "motion_mm": 2.0,
             "motion_deg": 3.0, "predicted_tre_mm": 0.72, "spread_mm": 0.46,
             "jackknife_mm": 0.91}
    # phantom:0 seed 32042's L3 (0.32 mm off): 120 inliers, each check under its bound.
    assert gate_level("L3", clean, cfg) is None
    why = gate_level("L3", {**clean, "n_inliers": 90}, cfg)
    assert why is not None and "too few bone points (90 < 100)" in why
    why = gate_level("L3", {**clean, "jackknife_mm": 1.2}, cfg)
    assert why is not None and "one part" in why


@pytest.mark.parametrize("anatomy, seed, levels, level, max_tre", [
    ("phantom:0", 35018, ["L2", "L3", "L4"], "L3", 0.8),
    ("ssm", 33053, ["L3", "L4", "L5"], "L4", 0.9)])
def test_thin_but_well_pinned_fresh_levels_are_accepted(anatomy, seed, levels, level,
                                                        max_tre):
    # 113 and 133 inliers, 0.44 and 0.58 mm off: refused by the old 150-inlier floor although
    # their predicted error, spread and jackknife were all clean.
    from arspine.registration import register

    model, sim = fresh_scan(anatomy, seed, levels)
    r = register(model, sim.cloud)
    v = r.vertebrae[level]
    assert r.quality["levels"][level]["n_inliers"] < 150
    assert r.status == "ok" and v.status == "ok", (r.reason, v.reason)
    assert level_tre(r, sim, level) < max_tre
    for lv, w in r.vertebrae.items():  # and nothing accepted is wrong
        if w.status == "ok" and lv in sim.exposed_levels:
            assert level_tre(r, sim, lv) < 2.0, lv


def test_gate_level_rejects_an_unstable_fit_and_names_it():
    cfg = GateConfig()
    ok = {"coverage": 0.3, "n_inliers": 400, "rmse_mm": 0.5, "motion_mm": 1.0,
          "motion_deg": 1.0, "predicted_tre_mm": 0.4, "spread_mm": 0.3, "jackknife_mm": 0.3}
    assert gate_level("L3", ok, cfg) is None
    why = gate_level("L3", {**ok, "spread_mm": 1.7}, cfg)
    assert why is not None and "not stable" in why and "1.7 mm" in why
    why = gate_level("L3", {**ok, "jackknife_mm": 1.11}, cfg)
    assert why is not None and "one part of the vertebra" in why
    why = gate_level("L3", {**ok, "predicted_tre_mm": 1.2}, cfg)
    assert why is not None and "predicted target error 1.2 mm" in why
    # Missing or non-finite evidence is a rejection, never a pass.
    assert gate_level("L3", {**ok, "spread_mm": float("inf")}, cfg) is not None
    assert gate_level("L3", {**ok, "spread_mm": float("nan")}, cfg) is not None


def test_gate_level_refuses_a_level_barely_pinned_on_every_count():
    # phantom:0 seed 32018, L1 accepted 2.34 mm off: each indicator just under its bound.
    cfg = GateConfig()
    v = {"coverage": 0.12, "n_inliers": 174, "rmse_mm": 0.43, "motion_mm": 1.67,
         "motion_deg": 4.87, "predicted_tre_mm": 0.84, "spread_mm": 0.56, "jackknife_mm": 1.0}
    why = gate_level("L1", v, cfg)
    assert why is not None and "barely pinned" in why and "1.42 mm" in why
    # A typical right level is not touched by the combined bound.
    assert gate_level("L1", {**v, "predicted_tre_mm": 0.6, "spread_mm": 0.5,
                             "jackknife_mm": 0.7}, cfg) is None


def test_single_level_must_agree_with_the_spine_pose():
    # phantom:1 seed 30063: a flipped pose 104 mm off, margin 0.50, one passing level with
    # 262 inliers that had moved 11.0 deg from the spine's pose. Accepted before this rule.
    cfg = GateConfig()
    wrong = {"n_inliers": 262, "motion_deg": 11.04}
    assert not single_level_suffices(wrong, 0.495, cfg)
    assert single_level_suffices({**wrong, "motion_deg": 4.0}, 0.495, cfg)
    assert not single_level_suffices({**wrong, "motion_deg": 4.0}, 0.3, cfg)
    assert not single_level_suffices({"n_inliers": 200, "motion_deg": 4.0}, 0.495, cfg)


def test_nearest_grid_lookup_against_a_kd_tree():
    from scipy.spatial import cKDTree

    from arspine.registration.model import NearestGrid

    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 60, (3000, 3))
    grid = NearestGrid.build(pts, voxel_mm=1.0, margin_mm=10.0)
    q = rng.uniform(-25, 85, (20000, 3))
    idx = grid.lookup(q)
    d_exact, _ = cKDTree(pts).query(q)
    inside = idx >= 0
    # Far outside the grid (beyond the margin) nothing is returned ...
    assert not inside[d_exact > 10.0 + 2 * np.sqrt(3)].any()
    # ... and inside, the returned point is the nearest up to the cell size.
    d_grid = np.linalg.norm(q[inside] - pts[idx[inside]], axis=1)
    assert np.all(d_grid <= d_exact[inside] + 2 * np.sqrt(3))
    assert inside[d_exact < 5.0].all()
    # Same answer for a (K, N, 3) batch.
    assert np.array_equal(grid.lookup(q.reshape(4, -1, 3)).ravel(), idx)


def test_gate_whole_low_margin_needs_the_levels_to_outvote_the_runner_up():
    from arspine.registration.gate import gate_whole

    q = {"n_inliers": 900, "score": 100.0, "support": 800, "violations": 10,
         "facing_deg": 10.0, "rmse_mm": 0.8, "margin": 0.2, "runner_up": "shift+1",
         "runner_up_desc": "level ambiguous: L3 vs L4 (pose shifted by +1 level)"}
    cfg = GateConfig()
    assert "fits within 20%" in gate_whole(q, cfg)
    assert gate_whole({**q, "levels_outvote_runner_up": False}, cfg) is not None
    assert gate_whole({**q, "levels_outvote_runner_up": True}, cfg) is None


def test_one_level_shift_refused_by_its_own_levels_not_by_the_margin():
    # The real shape model, L3-L4 exposed (seed 31009 of the setting scans): a pose shifted
    # by one level scores within 35 % of the right one (a margin refusal before), but
    # refined and gated like the best, none of its levels passes while both right ones do.
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm

    an = load_anatomy("ssm")
    model = prepare_model(surfaces=an.surfaces)
    sim = simulate_scan(an, seed=31009, levels=["L3", "L4"], outlier_fraction=0.10,
                        motion="moderate")
    r = register(model, sim.cloud)
    q = r.quality
    assert 0.1 <= q["margin"] < GateConfig().min_margin
    assert q["runner_up"] in ("shift+1", "shift-1") and q["runner_up_levels_passing"] == 0
    assert q["levels_outvote_runner_up"] and r.status == "ok"
    for lv in ("L3", "L4"):
        v = r.vertebrae[lv]
        tre = tre_mm(v.T_sensor_from_ct, sim.truth[lv], sim.targets_ct_mm[lv])
        assert v.status == "ok" and np.sqrt(np.mean(tre ** 2)) < 1.0, (lv, tre)


def test_single_passing_level_of_a_shifted_pose_is_refused():
    # A phantom with L2-L4 exposed (seed 33026 of the held-out scans), registered on the
    # exposure as it was found before a hand in front of the back was ignored: the search
    # with hand-made template weights put the scan's L2 on the CT's L3, one level passed its
    # own checks and every look-alike fitted 38 % worse; one level must not decide at that
    # margin (it was accepted at a single-level margin of 0.35). The rule on those numbers:
    cfg = GateConfig()
    assert not single_level_suffices({"n_inliers": 300, "motion_deg": 3.0}, 0.377, cfg)
    # Since the template weighs points by their bone likelihood, the search finds the right
    # pose on that old exposure as on today's: four levels pass, none more than 2 mm off.
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm
    from arspine.registration.pipeline import RegisterConfig
    from arspine.registration.preprocess import ScanConfig

    an = load_anatomy("phantom:0")
    model = prepare_model(surfaces=an.surfaces)
    sim = simulate_scan(an, seed=33026, levels=["L2", "L3", "L4"], outlier_fraction=0.10,
                        motion="moderate")
    for config in (RegisterConfig(scan=ScanConfig(exposure_front_mm=1e9)), None):
        r = register(model, sim.cloud, config=config)
        assert r.status == "ok", r.reason
        for lv in sim.exposed_levels:
            v = r.vertebrae[lv]
            tre = tre_mm(v.T_sensor_from_ct, sim.truth[lv], sim.targets_ct_mm[lv])
            assert v.status != "ok" or np.sqrt(np.mean(tre ** 2)) < 1.5, (lv, tre)
        assert sum(r.vertebrae[lv].status == "ok" for lv in sim.exposed_levels) >= 2


def _assert_no_exposed_level_accepted_beyond_2mm(r, sim):
    from arspine.registration.metrics import tre_mm

    for lv in sim.exposed_levels:
        v = r.vertebrae[lv]
        tre = np.sqrt(np.mean(tre_mm(v.T_sensor_from_ct, sim.truth[lv],
                                     sim.targets_ct_mm[lv]) ** 2))
        assert not (r.status == "ok" and v.status == "ok" and tre > 2.0), (lv, tre)


@pytest.mark.xfail(strict=True, reason="known defect (issue #4): fresh scan seed 32048 of the "
                   "real CT, L3 accepted 2.3-2.4 mm off (3.6 deg of flexion pulled by tissue "
                   "remnants; its predicted error, restarts and jackknife look clean)")
def test_known_tissue_biased_level_is_not_accepted(data_dir):
    # Kept as a strict xfail so the day a change fixes it, this test says so.
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import _CT, load_anatomy
    from arspine.imaging import load_ct, load_labels
    from arspine.registration import register

    an = load_anatomy("ct")
    ct = load_ct(data_dir.joinpath(*_CT[0].split("/")), progress=False)
    model = prepare_model(ct, load_labels(data_dir.joinpath(*_CT[1].split("/")), like=ct),
                          surfaces=an.surfaces)
    sim = simulate_scan(an, seed=32048, levels=["L3", "L4", "L5"], outlier_fraction=0.10,
                        motion="moderate")
    _assert_no_exposed_level_accepted_beyond_2mm(register(model, sim.cloud), sim)


@pytest.mark.xfail(strict=True, reason="known defect (issue #4): fresh scan seed 35113 of the "
                   "shape model, L5 accepted 3.3 mm off (248 inliers, 14 % coverage; predicted "
                   "error 0.68, spread 0.54, jackknife 0.79 mm all look clean); accepted by "
                   "the code before and after the bone-weighted template")
def test_known_thinly_seen_shape_model_level_is_not_accepted(data_dir):
    # Kept as a strict xfail so the day a change fixes it, this test says so.
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration import register

    an = load_anatomy("ssm")
    model = prepare_model(surfaces=an.surfaces)
    sim = simulate_scan(an, seed=35113, levels=["L3", "L4", "L5"], outlier_fraction=0.10,
                        motion="moderate")
    _assert_no_exposed_level_accepted_beyond_2mm(register(model, sim.cloud), sim)
