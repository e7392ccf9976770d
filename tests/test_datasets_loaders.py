"""VerSe and TotalSegmentator folder layouts, on small files written in those formats."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from arspine.datasets.loaders import (
    list_verse_subjects,
    load_totalsegmentator_case,
    load_verse_case,
    read_verse_centroids,
)
from arspine.errors import InputError


def _volume(shape=(40, 36, 30), seed=0):
    """A small CT and a 2-level label map (VerSe ids L3=22, L4=23) on a RAS grid."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(40, 10, shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    lab[10:20, 12:24, 4:12] = 23   # L4 (caudal: low k = inferior in a RAS+ affine)
    lab[10:20, 12:24, 16:24] = 22  # L3
    ct[lab > 0] = 700
    aff = np.diag([1.5, 1.5, 2.0, 1.0])
    aff[:3, 3] = [-30.0, -20.0, 100.0]
    return ct, lab, aff


def _centroid_ras(lab, aff, lid):
    ijk = np.argwhere(lab == lid).mean(0)
    return aff[:3, :3] @ ijk + aff[:3, 3]


def _write_verse(root, subject, layout):
    ct, lab, aff = _volume()
    if layout == "2020":
        (root / "rawdata" / subject).mkdir(parents=True)
        (root / "derivatives" / subject).mkdir(parents=True)
        ct_p = root / "rawdata" / subject / f"{subject}_dir-ax_ct.nii.gz"
        msk_p = root / "derivatives" / subject / f"{subject}_dir-ax_seg-vert_msk.nii.gz"
        ctd_p = root / "derivatives" / subject / f"{subject}_dir-ax_seg-subreg_ctd.json"
    else:
        root.mkdir(parents=True, exist_ok=True)
        ct_p = root / f"{subject}_ct.nii.gz"
        msk_p = root / f"{subject}_seg-vert_msk.nii.gz"
        ctd_p = root / f"{subject}_seg-vert_ctd.json"
    nib.save(nib.Nifti1Image(ct, aff), str(ct_p))
    nib.save(nib.Nifti1Image(lab, aff), str(msk_p))
    # Centroids in voxel units along ("P", "I", "R") as VerSe stores them: the image axes
    # are (R, A, S), so P = flip(A), I = flip(S), R = R.
    shape = np.array(ct.shape)
    entries = [{"direction": ["P", "I", "R"]}]
    for lid in (22, 23):
        i, j, k = np.argwhere(lab == lid).mean(0)
        entries.append({"label": lid, "X": float(shape[1] - j), "Y": float(shape[2] - k),
                        "Z": float(i)})
    entries.append({"label": 24, "X": "nan", "Y": "nan", "Z": "nan"})
    ctd_p.write_text(json.dumps(entries))
    return ct, lab, aff


@pytest.mark.parametrize("layout", ["2019", "2020"])
def test_verse_layouts(tmp_path, layout):
    root = tmp_path / "verse"
    ct, lab, aff = _write_verse(root, "sub-verse042", layout)
    assert list_verse_subjects(root) == ["sub-verse042"]
    case = load_verse_case(root)
    assert case.label_scheme == "verse"
    vol = case.load_ct()
    labels = case.load_labels(vol)
    assert labels.levels == ["L3", "L4"]
    assert np.array_equal(labels.array, lab)
    # centroids come back in LPS mm, on the label centroids
    for lv, lid in (("L3", 22), ("L4", 23)):
        ras = _centroid_ras(lab, aff, lid)
        lps = ras * np.array([-1, -1, 1])
        assert np.allclose(case.centroids_ct_mm[lv], lps, atol=1e-6)
        assert np.allclose(labels.centroid_mm(lv), lps, atol=1e-6)
    assert "L5" not in case.centroids_ct_mm  # NaN entries skipped
    # L3 lies cranial of L4 in LPS (z up)
    assert case.centroids_ct_mm["L3"][2] > case.centroids_ct_mm["L4"][2]


def test_verse_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_verse_case(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no VerSe CT"):
        load_verse_case(tmp_path / "empty")
    _write_verse(tmp_path / "two", "sub-a", "2019")
    _write_verse(tmp_path / "two", "sub-b", "2019")
    with pytest.raises(InputError, match="2 subjects"):
        load_verse_case(tmp_path / "two")
    assert load_verse_case(tmp_path / "two", "sub-b").subject == "sub-b"
    bad = tmp_path / "two" / "bad_ctd.json"
    bad.write_text("[]")
    with pytest.raises(InputError, match="non-empty"):
        read_verse_centroids(bad, tmp_path / "two" / "sub-a_ct.nii.gz")


def test_totalsegmentator_per_structure_masks(tmp_path):
    ct, lab, aff = _volume(seed=1)
    s = tmp_path / "s0042"
    (s / "segmentations").mkdir(parents=True)
    nib.save(nib.Nifti1Image(ct, aff), str(s / "ct.nii.gz"))
    for name, lid in (("L3", 22), ("L4", 23)):
        nib.save(nib.Nifti1Image((lab == lid).astype(np.uint8), aff),
                 str(s / "segmentations" / f"vertebrae_{name}.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros_like(lab), aff),
             str(s / "segmentations" / "vertebrae_L5.nii.gz"))  # out of view: empty
    nib.save(nib.Nifti1Image(np.zeros_like(lab), aff), str(s / "segmentations" / "liver.nii.gz"))
    case = load_totalsegmentator_case(s)
    assert case.subject == "s0042"
    assert sorted(case.mask_paths) == ["L3", "L4"]
    vol = case.load_ct()
    labels = case.load_labels(vol)
    assert labels.levels == ["L3", "L4"]
    assert labels.id_of("L3") == 29 and labels.id_of("L4") == 28  # TotalSegmentator v2 ids
    assert np.array_equal(labels.mask("L3"), lab == 22)


def test_totalsegmentator_multilabel_and_errors(tmp_path):
    ct, lab, aff = _volume(seed=2)
    s = tmp_path / "s0007"
    s.mkdir()
    nib.save(nib.Nifti1Image(ct, aff), str(s / "ct.nii.gz"))
    ts = np.where(lab == 22, 29, np.where(lab == 23, 28, 0)).astype(np.uint8)
    nib.save(nib.Nifti1Image(ts, aff), str(s / "segmentations.nii.gz"))
    case = load_totalsegmentator_case(s)
    labels = case.load_labels()
    assert labels.levels == ["L3", "L4"]
    assert np.array_equal(labels.mask("L4"), lab == 23)
    (tmp_path / "noseg").mkdir()
    nib.save(nib.Nifti1Image(ct, aff), str(tmp_path / "noseg" / "ct.nii.gz"))
    with pytest.raises(InputError, match="no vertebra segmentation"):
        load_totalsegmentator_case(tmp_path / "noseg")
    with pytest.raises(InputError, match="CT not found"):
        load_totalsegmentator_case(tmp_path)
