"""CtVolume geometry, NIfTI (RAS -> LPS) and NRRD loading, save_nifti, bad inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from arspine.errors import InputError
from arspine.imaging import CtVolume, load_ct, save_nifti


def test_ctvolume_geometry_from_one_affine():
    T = np.array([[0.0, 0.0, 2.0, 5.0], [-0.5, 0.0, 0.0, 6.0], [0.0, 0.7, 0.0, 7.0],
                  [0, 0, 0, 1]])
    ct = CtVolume(np.zeros((3, 4, 5), np.int16), T)
    np.testing.assert_allclose(ct.spacing_mm, [0.5, 0.7, 2.0])
    np.testing.assert_allclose(ct.origin_mm, [5, 6, 7])
    np.testing.assert_allclose(ct.direction, [[0, 0, 1], [-1, 0, 0], [0, 1, 0]])
    ijk = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]])
    np.testing.assert_allclose(ct.ijk_to_ct(ijk), [[11, 5.5, 8.4], [13, 5.75, 7]])
    np.testing.assert_allclose(ct.ct_to_ijk(ct.ijk_to_ct(ijk)), ijk)
    assert not ct.is_sheared


@pytest.mark.parametrize("hu, T, match", [
    (np.zeros((3, 4)), np.eye(4), r"hu must be a 3D"),
    (np.zeros((3, 4, 0)), np.eye(4), r"hu is empty"),
    (np.zeros((3, 4, 5), dtype=object), np.eye(4), r"hu must be numeric"),
    (np.full((3, 4, 5), np.nan), np.eye(4), r"hu holds 60 NaN or inf voxels of 60"),
    (np.zeros((3, 4, 5)), np.eye(3), r"T_ct_from_ijk must be 4x4"),
    (np.zeros((3, 4, 5)), np.diag([1.0, 1.0, 0.0, 1.0]), r"T_ct_from_ijk is singular"),
    (np.zeros((3, 4, 5)), np.full((4, 4), np.nan), r"T_ct_from_ijk has NaN"),
])
def test_ctvolume_bad_input(hu, T, match):
    with pytest.raises(InputError, match=match):
        CtVolume(hu, T)


def test_real_nifti_ras_to_lps(data_dir):
    path = data_dir / "totalsegmentator" / "example_ct.nii.gz"
    ct = load_ct(path)
    img = nib.load(str(path))
    assert ct.shape == (122, 101, 112)
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    np.testing.assert_allclose(ct.T_ct_from_ijk, expected)
    np.testing.assert_allclose(ct.T_ct_from_ijk[:3, 3], [177.95632935, -11.31900024,
                                                         94.30175781], atol=1e-6)
    np.testing.assert_array_equal(ct.hu, np.asanyarray(img.dataobj))
    assert ct.hu.dtype == np.int16 and ct.hu.min() == -1207 and ct.hu.max() == 3382


def test_save_nifti_round_trip_oblique(tmp_path):
    rng = np.random.default_rng(0)
    c, s = np.cos(0.3), np.sin(0.3)
    T = np.array([[c * 0.7, -s * 0.8, 0, -10], [s * 0.7, c * 0.8, 0, 20], [0, 0, 1.5, 30],
                  [0, 0, 0, 1]])
    ct = CtVolume(rng.integers(-1000, 2000, (6, 5, 4)).astype(np.int16), T)
    out = save_nifti(ct, tmp_path / "a.nii.gz")
    back = load_ct(out)
    np.testing.assert_allclose(back.T_ct_from_ijk, T, atol=1e-5)
    np.testing.assert_array_equal(back.hu, ct.hu)
    # On disk the affine is RAS: x and y negated.
    np.testing.assert_allclose(nib.load(str(out)).affine[:2], -T[:2], atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temp file left


@pytest.mark.parametrize("space, flip", [("left-posterior-superior", 1.0),
                                         ("right-anterior-superior", -1.0)])
def test_nrrd_spaces(tmp_path, space, flip):
    import nrrd

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    dirs = np.array([[0.5, 0, 0], [0, 0.6, 0], [0, 0, 2.0]])
    hdr = {"space": space, "space directions": dirs, "space origin": np.array([1.0, 2, 3])}
    nrrd.write(str(tmp_path / "v.nrrd"), data, hdr)
    ct = load_ct(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(ct.hu, data)
    np.testing.assert_allclose(ct.T_ct_from_ijk[:3, 3], [flip * 1, flip * 2, 3])
    np.testing.assert_allclose(np.diag(ct.T_ct_from_ijk)[:3], [flip * 0.5, flip * 0.6, 2.0])


def test_io_bad_inputs(tmp_path):
    with pytest.raises(InputError, match=r"path does not exist"):
        load_ct(tmp_path / "missing.nii.gz")
    with pytest.raises(InputError, match=r"got None"):
        load_ct(None)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match=r"cannot read NIfTI file .*broken\.nii\.gz"):
        load_ct(bad)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.int16), np.eye(4)),
             str(tmp_path / "4d.nii"))
    with pytest.raises(InputError, match=r"must hold a 3D volume, got shape \(2, 2, 2, 3\)"):
        load_ct(tmp_path / "4d.nii")
    nanv = np.zeros((2, 2, 2), np.float32)
    nanv[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nanv, np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(InputError, match=r"NaN or inf voxels"):
        load_ct(tmp_path / "nan.nii")
    with pytest.raises(InputError, match=r"must end with \.nii or \.nii\.gz"):
        save_nifti(CtVolume(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "x.nrrd")
