"""Vertebra label maps: schemes, grid checks (including a flipped-axis NIfTI), bad inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from arspine.errors import InputError
from arspine.imaging import CtVolume, VertebraLabels, load_ct, load_labels, save_nifti


@pytest.fixture(scope="module")
def real(data_dir):
    d = data_dir / "totalsegmentator"
    ct = load_ct(d / "example_ct.nii.gz")
    return d, ct, load_labels(d / "example_ct_vertebrae.nii.gz", like=ct,
                              scheme="totalsegmentator")


def test_totalsegmentator_names(real):
    _, _, lab = real
    assert lab.levels == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    assert lab.names[26] == "S1" and lab.names[29] == "L3" and lab.names[32] == "T12"
    assert lab.id_of("L3") == 29
    # Cranial to caudal really is superior to inferior (LPS z decreasing).
    z = [lab.centroid_mm(lv)[2] for lv in lab.levels]
    assert all(a > b for a, b in zip(z, z[1:]))


def test_scheme_detected_when_unambiguous(real):
    d, ct, lab = real
    auto = load_labels(d / "example_ct_vertebrae.nii.gz", like=ct)
    assert auto.levels == lab.levels and auto.meta["scheme"] == "totalsegmentator"


def test_labels_cover_bone(real):
    _, ct, lab = real
    for lv in ("L1", "L3", "L5"):
        assert np.median(ct.hu[lab.mask(lv)]) > 120  # vertebral bone, not soft tissue


@pytest.fixture(scope="module")
def dicom_ct(data_dir):
    return load_ct(data_dir / "totalsegmentator" / "example_ct_dicom", progress=False)


def test_flipped_grid_is_reindexed_onto_the_ct(data_dir, dicom_ct):
    """The DICOM label map is stored with its row axis flipped; voxels must still match."""
    d = data_dir / "totalsegmentator"
    ct = dicom_ct
    path = d / "example_ct_dicom_labels.nii.gz"
    lab = load_labels(path, like=ct)
    assert lab.levels == ["T11", "T12"]
    assert lab.array.shape == ct.shape
    np.testing.assert_allclose(lab.T_ct_from_ijk, ct.T_ct_from_ijk)
    # Independent check through the file's own affine.
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj)
    src = np.argwhere(raw == 32)[::997]
    lps = (np.diag([-1.0, -1, 1, 1]) @ img.affine @ np.c_[src, np.ones(len(src))].T)[:3].T
    dst = np.round(ct.ct_to_ijk(lps)).astype(int)
    np.testing.assert_array_equal(lab.array[tuple(dst.T)], 32)
    # Organs of the 117-class map are dropped: only vertebra ids remain.
    assert set(np.unique(lab.array[::4, ::4, :]).tolist()) <= {0, 32, 33}
    assert np.median(ct.hu[lab.mask("T12")]) > 120


def test_grid_mismatch_refused(data_dir, dicom_ct):
    d = data_dir / "totalsegmentator"
    ct = dicom_ct
    with pytest.raises(InputError, match=r"labels example_ct_vertebrae\.nii\.gz are not on the "
                                         r"CT grid: labels shape \(122, 101, 112\)"):
        load_labels(d / "example_ct_vertebrae.nii.gz", like=ct)


def test_verse_scheme_and_round_trip(tmp_path):
    T = np.diag([1.0, 1.0, 2.0, 1.0])
    arr = np.zeros((6, 6, 8), np.uint8)
    for n, vid in enumerate([20, 21, 22, 23, 24]):
        arr[1:5, 1:5, n + 1] = vid
    save_nifti(VertebraLabels(arr, T, {}), tmp_path / "v.nii.gz")
    lab = load_labels(tmp_path / "v.nii.gz", like=CtVolume(np.zeros((6, 6, 8)), T))
    assert lab.meta["scheme"] == "verse"
    assert lab.levels == ["L1", "L2", "L3", "L4", "L5"]
    assert lab.voxel_counts()["L3"] == 16
    np.testing.assert_array_equal(lab.mask("L2"), arr == 21)


def test_label_bad_inputs(tmp_path):
    T = np.eye(4)
    with pytest.raises(InputError, match=r"labels file not found"):
        load_labels(tmp_path / "none.nii.gz")
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 27, np.uint8), T), str(tmp_path / "a.nii"))
    with pytest.raises(InputError, match=r"cannot tell the scheme from ids \[27\]"):
        load_labels(tmp_path / "a.nii")
    with pytest.raises(InputError, match=r"scheme must be one of"):
        load_labels(tmp_path / "a.nii", scheme="nnunet")
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 0.5, np.float32), T), str(tmp_path / "f.nii"))
    with pytest.raises(InputError, match=r"non-integer values"):
        load_labels(tmp_path / "f.nii")
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), 90, np.uint8), T), str(tmp_path / "o.nii"))
    with pytest.raises(InputError, match=r"no vertebra ids of the totalsegmentator scheme"):
        load_labels(tmp_path / "o.nii", scheme="totalsegmentator")
    lab = VertebraLabels(np.zeros((2, 2, 2), int), T, {29: "L3"})
    with pytest.raises(InputError, match=r"level 'L4' is not in this label map"):
        lab.mask("L4")
    with pytest.raises(InputError, match=r"array must be a 3D"):
        VertebraLabels(np.zeros((2, 2)), T, {})
