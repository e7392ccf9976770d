"""The parts of the global search: posterior from the mirror plane, Hough-voted
translations, the score pattern search's basin, the predicted per-level error, and the
suites' realistic scans registered end to end."""

from __future__ import annotations

import numpy as np
import pytest
from test_registration_views import make_view, rot, ssm_surfaces

from arspine.registration import prepare_model
from arspine.registration._pc import voxel_downsample
from arspine.registration.global_ import (
    hough_translations,
    pattern_search,
    proxy_scores,
    rotation_candidates,
)
from arspine.registration.model import estimate_posterior
from arspine.registration.multibody import level_targets, predicted_tre, refine_levels


@pytest.fixture(scope="module")
def ssm_model(data_dir):
    return prepare_model(surfaces=ssm_surfaces(data_dir))


def _angle_deg(A, B):
    return float(np.degrees(np.arccos(np.clip((np.trace(A[:3, :3] @ B[:3, :3].T) - 1) / 2,
                                              -1, 1))))


def test_posterior_from_the_mirror_plane_on_the_phantom():
    from arspine import imaging
    from arspine.datasets.phantom import make_phantom
    from arspine.registration.model import _sample_surface

    ph = make_phantom(("L2", "L3", "L4"), seed=1, spacing_mm=2.0)
    surfaces = imaging.vertebra_surfaces(ph.ct, ph.labels)
    parts = [_sample_surface(surfaces[n], 1.5, i)[0] for i, n in enumerate(surfaces)]
    cents = np.array([p.mean(axis=0) for p in parts])
    axis = (cents[-1] - cents[0]) / np.linalg.norm(cents[-1] - cents[0])
    post, ratio = estimate_posterior(parts, axis, return_confidence=True)
    # The phantom lies square in the scanner: posterior is LPS +y. (The reach-only estimate
    # of the previous version was 63 degrees off here.)
    assert post @ [0.0, 1.0, 0.0] > np.cos(np.radians(10)), post
    assert ratio < 0.6


def test_hough_votes_recover_the_translation_under_clutter(ssm_model):
    m = ssm_model
    rng = np.random.default_rng(0)
    R = rot([0.3, 1.0, 0.2], 40.0)                      # ct_from_sensor rotation
    t = np.array([12.0, -250.0, 480.0])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    # The scan: the exposed L3/L4 shell in the sensor frame, plus 3x as many clutter
    # points on a plane with random normals.
    sel = np.isin(m.level_index, [1, 2])
    bone = (m.points[sel] - t) @ R
    bone_n = m.normals[sel] @ R
    k = rng.choice(len(bone), 150, replace=False)
    clutter = bone.mean(axis=0) + rng.uniform(-60, 60, (450, 3)) * [1, 1, 0.1]
    cn = rng.normal(size=(450, 3))
    cn /= np.linalg.norm(cn, axis=1, keepdims=True)
    S = np.vstack([bone[k] + rng.normal(0, 0.5, (150, 3)), clutter])
    Sn = np.vstack([bone_n[k], cn])
    M, Mn, _, _ = voxel_downsample(m.points, 5.0, m.normals)
    peaks = hough_translations(R, S, Sn, M, Mn)
    assert peaks, "no vote peak"
    assert np.linalg.norm(peaks[0][0] - t) < 5.0, (peaks[0][0], t)


@pytest.mark.parametrize("deg, mm", [(10.0, 10.0), (12.0, 6.0)])
def test_pattern_search_reaches_the_pose_from_10_deg_10_mm(ssm_model, data_dir, deg, mm):
    """The basin the global search relies on: 10-12 deg / 6-10 mm off, on a view with skin,
    noise, outliers and per-level motion, the search lands within 3 deg / 3 mm."""
    m = ssm_model
    view = make_view(ssm_surfaces(data_dir), seed=2)
    T_true = np.linalg.inv(view["T"].as_matrix())          # ct_from_sensor
    expo = np.isin(view["hit"], list(m.levels))
    P = view["points"][expo]
    from arspine.registration._pc import estimate_normals

    Pn = estimate_normals(P, 4.5, 16, toward=np.zeros(3))
    P, Pn, _, _ = voxel_downsample(P, 3.0, Pn)
    # plus the skin around it, which the search must not follow
    skin = view["points"][view["hit"] == ""][::40]
    P = np.vstack([P, skin])
    Pn = np.vstack([Pn, np.tile([0.0, 0.0, -1.0], (len(skin), 1))])
    c = m.center_ct
    D = np.eye(4)
    D[:3, :3] = rot([1.0, -0.5, 0.3], deg)
    D[:3, 3] = c - D[:3, :3] @ c + mm * np.array([0.6, 0.0, 0.8])
    T0 = D @ T_true
    T = pattern_search(T0, P, Pn, m)
    assert proxy_scores(T[None], P, Pn, m, 3.0)[0] > proxy_scores(T0[None], P, Pn, m, 3.0)[0]
    # Judged where it matters: at the centre of every exposed level, against that level's
    # own truth (the levels moved since the CT, the whole-spine pose is a compromise).
    Ts = np.linalg.inv(T)
    for lv in set(view["hit"][expo]):
        cen = m.centroids[m.levels.index(lv)]
        Tl = view["truth"][lv].as_matrix()
        err = np.linalg.norm(Ts[:3, :3] @ cen + Ts[:3, 3] - (Tl[:3, :3] @ cen + Tl[:3, 3]))
        assert err < 3.0, (lv, err)
        assert _angle_deg(Ts, Tl) < 5.0


def test_rotation_candidates_include_the_true_rotation(ssm_model, data_dir):
    m = ssm_model
    view = make_view(ssm_surfaces(data_dir), seed=1)
    T_true = np.linalg.inv(view["T"].as_matrix())
    E = view["points"][np.isin(view["hit"], list(m.levels))]
    skin = view["points"][view["hit"] == ""]
    c = E.mean(axis=0)
    ring = skin[np.linalg.norm(skin - c, axis=1) < 120]
    n = np.linalg.svd(ring - ring.mean(axis=0), full_matrices=False)[2][2]
    n = n if n[2] < 0 else -n
    Rs = rotation_candidates(E, n, m)
    best = min(_angle_deg(np.r_[np.c_[R, np.zeros(3)], [[0, 0, 0, 1]]], T_true) for R in Rs)
    assert best < 12.0   # inside the pattern search's basin


def test_predicted_tre_small_for_a_spine_large_for_a_flat_patch(ssm_model):
    m = ssm_model
    targets = level_targets(m, 1)
    assert targets.shape == (5, 3)

    def info(P, N):
        J = np.hstack([np.cross(P, N), N])
        return J.T @ J + 1e-6 * np.eye(6)

    sel = m.level_index == 1
    good = predicted_tre(info(m.points[sel], m.normals[sel]), 0.5, targets)
    # A flat patch does not pin the pose in its own plane: the error is unbounded there.
    flat = np.c_[np.random.default_rng(0).uniform(-20, 20, (500, 2)), np.zeros(500)]
    bad = predicted_tre(info(flat + targets[0], np.tile([0, 0, 1.0], (500, 1))), 0.5,
                        targets)
    assert good < 0.5 < bad
    assert predicted_tre(None, 0.5, targets) == float("inf")
    # fewer points, larger error
    few = predicted_tre(info(m.points[sel][::20], m.normals[sel][::20]), 0.5, targets)
    assert few > 2 * good


def test_first_exposure_pose_gets_its_look_alikes_when_a_drape_pose_outscores_it(data_dir):
    # Suite case standard/ct-02 (real CT, L3-L5 exposed): a pose on a drape region scored
    # 308 rigidly against 104 for the wound's best template pose, whose right level is two
    # shifts away. Only the overall best pose's look-alikes used to be tried, so the
    # registration was rejected; the first exposure's best pose now gets its look-alikes
    # too, the two-level shift wins (1045 articulated) and L3, L4 are accepted.
    from arspine.datasets.case import load_case
    from arspine.datasets.suites import suite_cases
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm

    case = load_case([c for c in suite_cases("standard") if c.name == "ct-02"][0])
    ct = case.load_ct()
    model = prepare_model(ct, case.load_labels())
    r = register(model, case.scan)
    assert r.status == "ok", r.reason
    for lv in ("L3", "L4"):
        v = r.vertebrae[lv]
        truth = case.truth[lv]
        tre = tre_mm(v.T_sensor_from_ct, truth["T_sensor_from_ct"], truth["targets_ct_mm"])
        assert v.status == "ok" and np.sqrt(np.mean(tre ** 2)) < 1.0, (lv, tre)


def test_level_whose_search_wandered_off_is_refused(data_dir):
    # Suite case standard/ssm-01 (real shape model, L3-L5 exposed, a tool across the wound):
    # from the whole-spine pose the search found at commit 23dae42 (below), L5's short
    # pattern search wandered 10.9 deg away, to a minimum 4.3 mm (8.6 deg) off its true
    # pose, which lay 2.3 deg from the spine's; the second estimator, the tilted restarts
    # and the jackknife all agreed with it. Fitted from the whole-spine pose too, it moves
    # 1.7 mm and is refused, and L3 passes. (Since the template weighs points by their bone
    # likelihood the search ranks a pose on the other piece of the wound first and the case
    # is refused as ambiguous; the per-level step is tested from the old pose.)
    from arspine.datasets.case import load_case
    from arspine.datasets.suites import suite_cases
    from arspine.registration.gate import gate_level
    from arspine.registration.global_ import DepthImage
    from arspine.registration.metrics import tre_mm
    from arspine.registration.pipeline import RegisterConfig, _level_quality
    from arspine.registration.preprocess import prepare_scan

    case = load_case([c for c in suite_cases("standard") if c.name == "ssm-01"][0])
    model = prepare_model(case.load_ct(), case.load_labels())
    T_sensor_from_ct = np.array([[-0.049785, 0.026733, -0.998402, -28.84807],
                                 [0.004875, 0.999636, 0.026523, 5.19587],
                                 [0.998748, -0.003547, -0.049898, 638.002745],
                                 [0.0, 0.0, 0.0, 1.0]])
    T = np.linalg.inv(T_sensor_from_ct)
    cfg = RegisterConfig()
    ps = prepare_scan(case.scan)
    depth = DepthImage(ps.fine, normals=ps.fine_normals)
    per = refine_levels(T, ps.fine[ps.exposure], ps.fine_normals[ps.exposure], model,
                        stability=True, stability_min_inliers=cfg.gate.min_level_inliers,
                        max_motion_mm=cfg.gate.max_level_motion_mm,
                        max_motion_deg=cfg.gate.max_level_motion_deg)
    why = {lv: gate_level(lv, _level_quality(lv, r, T, model, depth), cfg.gate)
           for lv, r in per.items()}
    rms = {}
    for lv, truth in case.truth.items():
        tre = tre_mm(np.linalg.inv(per[lv]["T"]), truth["T_sensor_from_ct"],
                     truth["targets_ct_mm"])
        rms[lv] = float(np.sqrt(np.mean(tre ** 2)))
        if why[lv] is None:
            assert rms[lv] < 2.0, (lv, rms[lv])
    assert why["L5"] is not None and "not stable" in why["L5"], why["L5"]
    assert why["L3"] is None and rms["L3"] < 1.0, (why["L3"], rms)


@pytest.mark.parametrize("anatomy, seed, levels", [("phantom:1", 30063, ["L3", "L4", "L5"]),
                                                   ("phantom:0", 32018, ["L1", "L2"])])
def test_fresh_scans_once_accepted_wrong_are_not(anatomy, seed, levels):
    # Fresh scans where a committed version accepted a wrong level: 30063, a flipped pose
    # 104 mm off carried by one hidden level (refused now by single_level_max_motion_deg,
    # and the bone-weighted template finds another pose); 32018, L1 2.34 mm off, barely
    # pinned on every count (max_level_combined_mm). Every level accepted, exposed or seen
    # beyond the exposure, must be within 2 mm of the truth.
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm
    from arspine.registration.multibody import level_targets

    an = load_anatomy(anatomy)
    model = prepare_model(surfaces=an.surfaces)
    sim = simulate_scan(an, seed=seed, levels=levels, outlier_fraction=0.10,
                        motion="moderate")
    r = register(model, sim.cloud)
    for lv, v in r.vertebrae.items():
        if r.status == "ok" and v.status == "ok":
            tg = (sim.targets_ct_mm[lv] if lv in sim.exposed_levels
                  else level_targets(model, model.levels.index(lv)))
            tre = tre_mm(v.T_sensor_from_ct, sim.truth[lv], tg)
            assert np.sqrt(np.mean(tre ** 2)) < 2.0, (lv, tre)


def test_a_tie_in_passing_levels_is_decided_by_inliers_only_when_clear():
    # Fresh scan phantom:1 seed 30003 (L2-L4): the right pose and its one-level shift both
    # pass two levels at a 28 % margin; the right pose's levels hold 1.39 times the shift's
    # inliers. Refused before as "level ambiguous"; accepted now, every level right.
    from fresh_scans import fresh_scan, level_tre

    from arspine.registration import register

    model, sim = fresh_scan("phantom:1", 30003, ["L2", "L3", "L4"])
    r = register(model, sim.cloud)
    q = r.quality
    assert q["runner_up_levels_passing"] == len(q["exposed_levels"]) == 2, q
    assert q["levels_tie_inlier_ratio"] >= 1.3, q["levels_tie_inlier_ratio"]
    assert r.status == "ok", r.reason
    for lv, v in r.vertebrae.items():
        if v.status == "ok":
            assert lv in sim.exposed_levels and level_tre(r, sim, lv) < 1.0, lv
    # Asking for a larger lead than the scan shows refuses it as ambiguous again.
    from arspine.registration.gate import GateConfig
    from arspine.registration.pipeline import RegisterConfig

    strict = RegisterConfig(gate=GateConfig(margin_levels_tie_inliers=1.6))
    r2 = register(model, sim.cloud, config=strict)
    assert r2.status == "rejected" and "ambiguous" in r2.reason, r2.reason

