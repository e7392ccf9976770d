"""What the viewer opens (no Qt): NIfTI + sibling labels, DICOM folder, case bundle, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.viewer.loader import find_sibling_labels, load_for_viewer


def test_nifti_with_sibling_labels_gives_one_surface_per_level(data_dir):
    ct = data_dir / "totalsegmentator" / "example_ct.nii.gz"
    assert find_sibling_labels(ct).name == "example_ct_vertebrae.nii.gz"
    steps = []
    vc = load_for_viewer(ct, progress=lambda f, m: steps.append(f))
    assert vc.levels == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    assert steps[-1] == 1.0 and steps == sorted(steps)  # progress only moves forward
    # every surface lies inside the CT's extent (ct frame, mm)
    corners = vc.ct.ijk_to_ct(np.array([[0, 0, 0], np.array(vc.ct.shape) - 1], float))
    lo, hi = corners.min(axis=0) - 3, corners.max(axis=0) + 3
    for lv, m in vc.surfaces.items():
        assert m.frame == "ct" and m.name == lv
        assert np.all(m.vertices >= lo) and np.all(m.vertices <= hi), lv
    # lumbar bodies stack superior to inferior (LPS +z is superior)
    z = [vc.surfaces[lv].vertices[:, 2].mean() for lv in ("L1", "L3", "L5")]
    assert z[0] > z[1] > z[2]


def test_dicom_folder_with_sibling_labels(data_dir):
    vc = load_for_viewer(data_dir / "totalsegmentator" / "example_ct_dicom")
    assert vc.ct.shape == (512, 512, 20)
    assert np.allclose(vc.ct.spacing_mm[:2], 0.977, atol=1e-3)
    assert set(vc.levels) == {"T11", "T12"}


def test_case_bundle_brings_scan_and_labels(data_dir, tmp_path):
    from arspine.datasets.anatomy import anatomy_from_ct
    from arspine.datasets.case import write_case
    from arspine.navigation.geometry import PointCloud

    ts = data_dir / "totalsegmentator"
    anatomy = anatomy_from_ct(ts / "example_ct.nii.gz", ts / "example_ct_vertebrae.nii.gz",
                              levels=["L2", "L3", "L4"])
    pts = np.random.default_rng(0).normal([0, 0, 500], 30, (400, 3))
    folder = write_case(tmp_path / "case", PointCloud(pts), anatomy=anatomy, name="mini")
    vc = load_for_viewer(folder)
    assert vc.case is not None and vc.name == "mini"
    assert vc.scan is not None and np.allclose(vc.scan.points, pts, atol=1e-3)
    assert {"L2", "L3", "L4"} <= set(vc.levels)


def test_bad_paths_raise_input_error_naming_them(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_for_viewer(tmp_path / "missing.nii.gz")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="notes.txt"):
        load_for_viewer(txt)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="broken.nii.gz"):
        load_for_viewer(bad)
