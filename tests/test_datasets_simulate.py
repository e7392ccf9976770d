"""Simulated scans agree with their truth, on the real shape model and the real CT."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.datasets.scene import LABELS, SceneConfig, bone_label, is_bone
from arspine.datasets.sensors import get_sensor
from arspine.datasets.simulate import simulate_scan, simulate_sequence
from arspine.datasets.suites import load_anatomy
from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform


@pytest.fixture(scope="session")
def ssm(data_dir):
    # The suites' in-process cache: one load shared by every datasets test module.
    return load_anatomy("ssm")


@pytest.fixture(scope="session")
def real_ct(data_dir):
    return load_anatomy("ct")


@pytest.fixture(scope="session")
def ssm_scan(ssm):
    return simulate_scan(ssm, "structured-light", seed=3, levels=["L2", "L3", "L4"],
                         outlier_fraction=0.10)


def _surface_distance(mesh, points):
    import open3d as o3d

    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                     o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return sc.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def _check_bone_on_truth(anatomy, scan, k_sigma=4.0):
    sigma = scan.sensor.noise_sigma_mm(scan.config["wound_distance_mm"] * 1.3)
    n_checked = 0
    for lv in scan.truth:
        pts = scan.cloud.points[scan.cloud.labels == bone_label(lv)]
        if len(pts) < 20:
            continue
        ct_pts = scan.truth[lv].inv().apply(pts)
        d = _surface_distance(anatomy.surfaces[lv], ct_pts)
        # Noise is along the ray, so the distance to the surface is at most |noise|.
        assert np.percentile(d, 99) < k_sigma * sigma + 0.05, (lv, np.percentile(d, 99), sigma)
        assert np.median(d) < 1.0 * sigma + 0.05
        # Any other level's truth puts the same points clearly off that surface.
        n_checked += 1
    return n_checked


def test_bone_points_lie_within_noise_of_truth_surface_ssm(ssm, ssm_scan):
    assert _check_bone_on_truth(ssm, ssm_scan) >= 3


def test_bone_points_lie_within_noise_of_truth_surface_real_ct(real_ct):
    scan = simulate_scan(real_ct, "test-320", seed=5, levels=["L2", "L3", "L4"])
    assert scan.exposed_levels == ["L2", "L3", "L4"]
    assert _check_bone_on_truth(real_ct, scan) >= 2
    assert scan.fraction("bone") > 0.002


def test_wrong_truth_is_detectably_wrong(ssm, ssm_scan):
    """A 2 mm shift of the truth moves bone points off the surface: the check has teeth."""
    lv = "L3"
    pts = ssm_scan.cloud.points[ssm_scan.cloud.labels == bone_label(lv)]
    shifted = RigidTransform.from_rt(np.eye(3), [2.0, 0, 0], "sensor", "sensor") @ \
        ssm_scan.truth[lv]
    d_ok = _surface_distance(ssm.surfaces[lv], ssm_scan.truth[lv].inv().apply(pts))
    d_bad = _surface_distance(ssm.surfaces[lv], shifted.inv().apply(pts))
    assert np.median(d_bad) > np.median(d_ok) + 0.3


def test_noise_free_scan_is_exact(ssm):
    s = simulate_scan(ssm, "test-320", seed=1, noise_scale=0.0, outlier_fraction=0.0,
                      dropout_scale=0.0, scene=SceneConfig(tool=False, hand=False),
                      levels=["L3", "L4"])
    s.sensor.flying_pixel_fraction  # noqa: B018 - attribute exists
    bone = is_bone(s.cloud.labels)
    assert bone.sum() > 200
    for lv in ("L3", "L4"):
        pts = s.cloud.points[s.cloud.labels == bone_label(lv)]
        d = _surface_distance(ssm.surfaces[lv], s.truth[lv].inv().apply(pts))
        # flying pixels are labelled separately; bone returns are exact up to float32
        assert np.percentile(d, 99) < 0.05


def test_only_posterior_elements_inside_the_wound_are_seen(ssm, ssm_scan):
    """Bone points are on the posterior surface (never the bodies) and near the midline."""
    axes = ssm.axes  # columns left, posterior, cranial in ct
    for lv in ssm_scan.truth:
        pts = ssm_scan.cloud.points[ssm_scan.cloud.labels == bone_label(lv)]
        if len(pts) < 20:
            continue
        local = (ssm_scan.truth[lv].inv().apply(pts) - ssm.surfaces[lv].centroid()) @ axes
        # posterior of the vertebra's centroid (the body is anterior of it)
        assert np.percentile(local[:, 1], 1) > 0.0, lv
        # inside the wound: lateral offset below the half-width plus wall and motion
        assert np.percentile(np.abs(local[:, 0]), 99) < SceneConfig().wound_half_width_mm + 8


def test_label_fractions_match_configuration(ssm, ssm_scan):
    lab = ssm_scan.cloud.labels
    assert abs(np.mean(lab == LABELS["outlier"]) - 0.10) < 0.002
    assert np.mean(lab == LABELS["skin"]) > 0.01
    assert np.mean(lab == LABELS["drape"]) > 0.05
    assert 0.001 < ssm_scan.fraction("bone") < 0.2
    s30 = simulate_scan(ssm, "test-320", seed=3, outlier_fraction=0.30,
                        scene=SceneConfig(drapes=False, retractors=False, tool=False))
    lab = s30.cloud.labels
    assert abs(np.mean(lab == LABELS["outlier"]) - 0.30) < 0.003
    for what in ("drape", "retractor", "tool", "hand"):
        assert not np.any(lab == LABELS[what]), what


def test_same_seed_same_bytes_and_other_seed_differs(ssm, tmp_path):
    from arspine.datasets.io import write_points

    a = simulate_scan(ssm, "test-320", seed=11)
    b = simulate_scan(ssm, "test-320", seed=11)
    c = simulate_scan(ssm, "test-320", seed=12)
    write_points(tmp_path / "a.ply", a.cloud)
    write_points(tmp_path / "b.ply", b.cloud)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    assert len(a.cloud) != len(c.cloud) or not np.allclose(a.cloud.points, c.cloud.points)


def test_truth_composes_sensor_pose_and_vertebra_motion(ssm_scan):
    for lv, T in ssm_scan.truth.items():
        assert T.name == "T_sensor_from_ct"
        comp = ssm_scan.T_sensor_from_patient @ ssm_scan.T_patient_from_ct[lv]
        assert T.isclose(comp, atol_mm=1e-9, atol_deg=1e-9)
    # neighbours moved relative to each other (a few deg / mm), not identically
    Ts = [ssm_scan.T_patient_from_ct[lv] for lv in ssm_scan.truth]
    rel = [a.inv() @ b for a, b in zip(Ts[:-1], Ts[1:])]
    degs = [r.angle_deg for r in rel]
    assert max(degs) > 0.2 and max(degs) < 20


def test_motion_none_moves_all_levels_together(ssm):
    s = simulate_scan(ssm, "test-320", seed=2, motion="none")
    Ts = list(s.truth.values())
    for T in Ts[1:]:
        assert T.isclose(Ts[0], atol_mm=1e-9, atol_deg=1e-9)


def test_sensor_looks_down_on_the_back(ssm_scan, ssm):
    """The sensor's optical axis points anteriorly (within the tilt bound)."""
    T_ps = ssm_scan.T_sensor_from_patient.inv()
    z_axis = T_ps.rotation[:, 2]
    posterior = ssm.axes[:, 1]
    tilt = np.degrees(np.arccos(np.clip(-z_axis @ posterior, -1, 1)))
    assert tilt < 26.0


def test_sensor_models():
    lidar = get_sensor("lidar-64")
    d = lidar.ray_directions()
    assert d.shape == (64, 1024, 3)
    assert np.allclose(np.linalg.norm(d, axis=-1), 1)
    sl = get_sensor("structured-light")
    assert 0.7 < sl.noise_sigma_mm(500.0) < 1.3  # ~1 mm at 0.5 m
    assert sl.noise_sigma_mm(1000.0) > 2 * sl.noise_sigma_mm(500.0) - 0.3
    K = sl.K
    assert K[0, 0] == pytest.approx(320 / np.tan(np.radians(29)))
    with pytest.raises(InputError, match="sensor must be one of"):
        get_sensor("kinect-99")


def test_tof_has_flying_pixels_at_depth_edges(ssm):
    s = simulate_scan(ssm, "tof", seed=4)
    assert np.sum(s.cloud.labels == LABELS["flying_pixel"]) > 20


def test_bad_inputs_raise_clear_errors(ssm):
    with pytest.raises(InputError, match="levels"):
        simulate_scan(ssm, "test-320", levels=["L9"])
    with pytest.raises(InputError, match="levels"):
        simulate_scan(ssm, "test-320", levels=["T4"])
    with pytest.raises(InputError, match="outlier_fraction"):
        simulate_scan(ssm, "test-320", outlier_fraction=1.0)
    with pytest.raises(InputError, match="anatomy"):
        simulate_scan({}, "test-320")
    with pytest.raises(InputError, match="n_frames"):
        simulate_sequence(ssm, 0, "test-320")


def test_sequence_breathing_and_timestamps(ssm):
    seq = simulate_sequence(ssm, 4, "test-320", seed=8, frame_rate_hz=4.0,
                            breathing_amplitude_mm=2.0, breathing_rate_hz=0.5,
                            camera_speed_mm_s=0.0, camera_rot_deg_s=0.0)
    assert [f.timestamp_s for f in seq.frames] == pytest.approx([0, 0.25, 0.5, 0.75])
    lv = seq.frames[0].exposed_levels[0]
    T0 = seq.frames[0].truth[lv]
    shifts = [np.linalg.norm((T0.inv() @ f.truth[lv]).translation_mm) for f in seq.frames]
    assert shifts[0] == pytest.approx(0.0, abs=1e-9)
    # breathing displaces the vertebra by up to ~2 mm peak to peak (x per level 0.7-1.3)
    assert 0.3 < max(shifts) < 2.8
    # the bone points of each frame agree with that frame's truth
    for f in seq.frames[::2]:
        pts = f.cloud.points[f.cloud.labels == bone_label(lv)]
        d = _surface_distance(ssm.surfaces[lv], f.truth[lv].inv().apply(pts))
        assert np.median(d) < 1.0


def test_projector_baseline_casts_shadows(ssm):
    """Structured light loses points the projector cannot reach; a zero baseline does not."""
    import dataclasses

    sl = get_sensor("test-320")
    common = dict(seed=6, noise_scale=0.0, outlier_fraction=0.0, dropout_scale=0.0)
    with_shadow = simulate_scan(ssm, sl, **common)
    no_shadow = simulate_scan(ssm, dataclasses.replace(sl, baseline_mm=0.0), **common)
    assert len(with_shadow.cloud) < len(no_shadow.cloud) - 50


def test_sequence_frame_zero_is_the_single_scan(ssm):
    kw = dict(levels=["L3", "L4"], outlier_fraction=0.1)
    single = simulate_scan(ssm, "test-320", 9, **kw)
    seq = simulate_sequence(ssm, 2, "test-320", 9, **kw)
    assert np.array_equal(seq.frames[0].cloud.points, single.cloud.points)
    assert seq.frames[0].truth["L3"].isclose(single.truth["L3"], atol_mm=1e-12, atol_deg=1e-12)
    with pytest.raises(InputError, match="unknown simulate_sequence options"):
        simulate_sequence(ssm, 2, "test-320", 9, colour="red")


def test_tissue_remnants_cover_the_configured_share_of_bone(ssm):
    kw = dict(seed=13, noise_scale=0.0, outlier_fraction=0.0, dropout_scale=0.0,
              levels=["L3", "L4"])
    clean = simulate_scan(ssm, "test-320", scene=SceneConfig(tissue_remnants=0.0, tool=False,
                                                             hand=False, retractors=False),
                          **kw)
    half = simulate_scan(ssm, "test-320", scene=SceneConfig(tissue_remnants=0.5, tool=False,
                                                            hand=False, retractors=False),
                         **kw)
    n0, n1 = is_bone(clean.cloud.labels).sum(), is_bone(half.cloud.labels).sum()
    assert n0 > 300
    assert 0.3 * n0 < n1 < 0.8 * n0  # about half the exposed bone is now under tissue


def test_structured_light_depth_comes_in_disparity_terraces(ssm):
    s = get_sensor("structured-light")
    scan = simulate_scan(ssm, s, seed=3, noise_scale=1e-6, outlier_fraction=0.0)
    z = scan.cloud.points[:, 2]
    z = np.unique(np.round(z[(z > 480) & (z < 520)], 3))
    step = np.median(np.diff(z))
    expected = 500.0 ** 2 * s.disparity_step_px / (s.K[0, 0] * s.baseline_mm)
    assert step == pytest.approx(expected, rel=0.1)
