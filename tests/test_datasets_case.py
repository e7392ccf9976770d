"""Case bundles: write/load round trip for the real CT and the real shape model, sequences,
overwrite semantics and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arspine.datasets.case import load_case, write_case
from arspine.datasets.scene import bone_label
from arspine.datasets.simulate import simulate_scan, simulate_sequence
from arspine.datasets.suites import load_anatomy
from arspine.errors import InputError


@pytest.fixture(scope="session")
def ssm(data_dir):
    # The suites' in-process cache: one load shared by every datasets test module.
    return load_anatomy("ssm")


@pytest.fixture(scope="session")
def ssm_case(ssm, tmp_path_factory):
    scan = simulate_scan(ssm, "test-320", seed=21, levels=["L3", "L4"])
    folder = write_case(tmp_path_factory.mktemp("c") / "ssm", scan, anatomy=ssm)
    return scan, folder


def test_ssm_case_round_trip(ssm, ssm_case):
    scan, folder = ssm_case
    case = load_case(folder)
    assert case.name == "ssm"
    assert case.meta["units"] == "mm"
    assert case.meta["sensor"]["name"] == "test-320"
    assert case.meta["levels"] == ["L3", "L4"] == case.exposed_levels
    assert np.allclose(case.scan.points, scan.cloud.points)
    assert np.array_equal(case.scan.labels, scan.cloud.labels)
    assert set(case.truth) == {"L3", "L4"}
    for lv in ("L3", "L4"):
        assert case.truth[lv]["T_sensor_from_ct"].isclose(scan.truth[lv], atol_mm=1e-9,
                                                          atol_deg=1e-9)
        assert np.allclose(case.targets(lv), scan.targets_ct_mm[lv])
    # targets: screw entry/tip (2 per side) + interior + centroid, all inside the vertebra
    t = case.targets("L3")
    assert t.shape[0] >= 6
    from arspine.datasets.anatomy import _Occupancy

    assert _Occupancy(ssm.surfaces["L3"])(t[1::2][:2]).all()  # screw tips are in bone
    # stored surfaces equal the source meshes
    surf = case.load_surfaces()
    assert np.allclose(surf["L3"].vertices, ssm.surfaces["L3"].vertices)


def test_ssm_case_voxelised_ct_matches_the_surfaces(ssm, ssm_case):
    """Mesh-only anatomy gets a CT + labels whose L3 surface lies on the mesh (< 1 voxel)."""
    from arspine.imaging import vertebra_surfaces

    case = load_case(ssm_case[1])
    ct = case.load_ct()
    labels = case.load_labels(ct)
    assert case.label_scheme == "verse"
    assert set(labels.levels) == {"L2", "L3", "L4", "L5"}
    m = vertebra_surfaces(ct, labels, levels=["L3"], target_faces=5000)["L3"]
    import open3d as o3d

    sc = o3d.t.geometry.RaycastingScene()
    ref = ssm.surfaces["L3"]
    sc.add_triangles(o3d.core.Tensor(ref.vertices.astype(np.float32)),
                     o3d.core.Tensor(ref.faces.astype(np.uint32)))
    d = sc.compute_distance(o3d.core.Tensor(m.vertices.astype(np.float32))).numpy()
    assert np.median(d) < 0.6 and np.percentile(d, 95) < 1.5


def test_real_ct_case_round_trip(data_dir, tmp_path):
    anat = load_anatomy("ct")
    scan = simulate_scan(anat, "test-320", seed=2, levels=["L3", "L4"])
    folder = write_case(tmp_path / "ct", scan, anatomy=anat, name="real-ct")
    case = load_case(folder)
    assert case.ct_path.name == "ct.nii.gz" and case.labels_path.name == "labels.nii.gz"
    assert case.label_scheme == "totalsegmentator"
    ct = case.load_ct()
    assert ct.shape == (122, 101, 112)
    assert np.allclose(ct.spacing_mm, 3.0)
    labels = case.load_labels(ct)
    assert {"L3", "L4"} <= set(labels.levels)
    # the truth maps the CT's L3 label centroid onto bone points of L3 in the scan
    c_ct = labels.centroid_mm("L3")
    c_s = case.truth["L3"]["T_sensor_from_ct"].apply(c_ct[None])[0]
    pts = case.scan.points[case.scan.labels == bone_label("L3")]
    assert len(pts) > 30
    assert np.linalg.norm(pts.mean(0) - c_s) < 45.0  # posterior surface, within a vertebra
    assert 0 < case.meta["noise_mm"] < 3
    assert 0 < case.meta["overlap_fraction"] < 0.5


def test_sequence_case(ssm, tmp_path):
    seq = simulate_sequence(ssm, 3, "test-320", seed=5, frame_rate_hz=15.0)
    folder = write_case(tmp_path / "seq", seq, anatomy=ssm)
    case = load_case(folder)
    assert [p.name for p in case.frames] == ["0000.ply", "0001.ply", "0002.ply"]
    assert case.frame_rate_hz == 15.0
    assert len(case.frame_truth) == 3
    assert case.frame_truth[2]["timestamp_s"] == pytest.approx(2 / 15)
    lv = seq.frames[0].exposed_levels[0]
    assert case.frame_truth[1]["vertebrae"][lv].isclose(seq.frames[1].truth[lv], atol_mm=1e-9,
                                                        atol_deg=1e-9)
    f1 = case.load_frame(1)
    assert np.allclose(f1.points, seq.frames[1].cloud.points)
    with pytest.raises(InputError, match="index"):
        case.load_frame(3)


def test_overwrite_and_no_leftovers(ssm, ssm_case, tmp_path):
    scan, _ = ssm_case
    folder = write_case(tmp_path / "a", scan, anatomy=ssm)
    with pytest.raises(InputError, match="already exists"):
        write_case(folder, scan, anatomy=ssm)
    write_case(folder, scan, anatomy=ssm, name="again", overwrite=True)
    assert load_case(folder).name == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp folders left


def test_load_case_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_case(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="case.json"):
        load_case(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "case.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_case(bad)
    (bad / "case.json").write_text(json.dumps({"name": "x"}))
    (bad / "truth.json").write_text(json.dumps(
        {"vertebrae": {"L3": {"T_sensor_from_ct": [[1, 0], [0, 1]]}}}))
    with pytest.raises(InputError, match="L3"):
        load_case(bad)
    with pytest.raises(InputError, match="needs a scan"):
        write_case(tmp_path / "x")


def test_same_seed_same_case_bytes(ssm, tmp_path):
    a = write_case(tmp_path / "a", simulate_scan(ssm, "test-320", seed=4), anatomy=ssm, name="x")
    b = write_case(tmp_path / "b", simulate_scan(ssm, "test-320", seed=4), anatomy=ssm, name="x")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert {"case.json", "truth.json", "scan.ply", "ct.nii.gz", "labels.nii.gz"} <= \
        {str(f) for f in files}
    for f in files:
        if f.suffix == ".gz":  # gzip headers carry a time stamp; compare the volumes
            import nibabel as nib

            assert np.array_equal(np.asarray(nib.load(str(a / f)).dataobj),
                                  np.asarray(nib.load(str(b / f)).dataobj))
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_depth_image_reproduces_the_scan(ssm_case):
    from arspine.datasets.io import depth_to_points, read_depth_image

    scan, folder = ssm_case
    case = load_case(folder)
    di = case.meta["depth_image"]
    depth = read_depth_image(folder / di["file"], depth_scale_mm=di["depth_scale_mm"])
    assert depth.shape == (scan.sensor.height, scan.sensor.width)
    pts = depth_to_points(depth, np.array(di["K"])).points
    assert len(pts) == len(case.scan)
    # same pixels, same order; quantisation 0.1 mm in z
    assert np.max(np.abs(pts - case.scan.points)) < 0.2
