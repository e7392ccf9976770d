"""DICOM reading and writing: real JPEG 2000 series, synthetic round trips, every bad input."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pydicom
import pytest

from arspine.errors import InputError
from arspine.imaging import (
    CtVolume,
    DicomWarning,
    list_series,
    load_ct,
    write_dicom_series,
)
from arspine.navigation.frames import RigidTransform


def _volume(shape=(24, 20, 12), T=None, seed=0) -> CtVolume:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 2500, size=shape).astype(np.int16)
    if T is None:
        T = np.diag([0.8, 0.9, 2.5, 1.0])
        T[:3, 3] = [-40.0, -30.0, 100.0]
    return CtVolume(hu, T, {})


def _oblique_T(flip_k: bool = True) -> np.ndarray:
    R = RigidTransform.from_euler("xyz", [20, -10, 35], [0, 0, 0], "a", "b").rotation
    T = np.eye(4)
    T[:3, :3] = R @ np.diag([0.8, 0.9, -2.5 if flip_k else 2.5])
    T[:3, 3] = [10.0, -20.0, 30.0]
    return T


def _same_voxels(a: CtVolume, b: CtVolume, n: int = 200, seed: int = 1) -> None:
    """Every sampled voxel of ``a`` is found at the same mm position in ``b`` with the same HU."""
    rng = np.random.default_rng(seed)
    ijk = np.stack([rng.integers(0, s, n) for s in a.shape], axis=1)
    q = b.ct_to_ijk(a.ijk_to_ct(ijk.astype(float)))
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)
    qi = np.round(q).astype(int)
    assert np.all((qi >= 0) & (qi < np.array(b.shape)))
    np.testing.assert_array_equal(a.hu[tuple(ijk.T)], b.hu[tuple(qi.T)])


# ---------------------------------------------------------------- real data (JPEG 2000)
@pytest.fixture(scope="module")
def real_dicom(data_dir):
    folder = data_dir / "totalsegmentator" / "example_ct_dicom"
    return folder, load_ct(folder, progress=False)


def test_real_series_geometry_equals_headers(real_dicom):
    folder, ct = real_dicom
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    assert ct.shape == (512, 512, 20)
    np.testing.assert_allclose(ct.spacing_mm, [0.9765625, 0.9765625, 2.0], atol=1e-6)
    np.testing.assert_allclose(ct.direction, np.eye(3), atol=1e-9)  # LPS axes
    # Slices ascend along the normal (0, 0, 1): voxel 0 sits at the lowest IPP.
    ipps = np.array([[float(v) for v in h.ImagePositionPatient] for h in heads])
    first = ipps[np.argmin(ipps[:, 2])]
    np.testing.assert_allclose(ct.origin_mm, first, atol=1e-6)
    np.testing.assert_allclose(ct.origin_mm, [-249.51171875, -437.51171875, -804.5])
    assert ct.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert ct.meta["series_description"] == "CT Body 3.0"
    assert ct.meta["patient_position"] == "HFS"


def test_real_series_hu_equal_pydicom_rescaled(real_dicom):
    folder, ct = real_dicom
    rng = np.random.default_rng(3)
    for f in sorted(folder.iterdir())[::6]:
        ds = pydicom.dcmread(f)
        ref = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
            ds.RescaleIntercept)
        k = ct.ct_to_ijk(np.array([[float(v) for v in ds.ImagePositionPatient]]))[0]
        np.testing.assert_allclose(k[:2], 0, atol=1e-6)
        kk = int(round(k[2]))
        rows, cols = rng.integers(0, 512, 50), rng.integers(0, 512, 50)
        np.testing.assert_array_equal(ct.hu[cols, rows, kk], ref[rows, cols])
    assert ct.hu.min() == -1024 and ct.hu.max() > 1000  # bone present


def test_list_series_real_folder(real_dicom):
    folder, _ = real_dicom
    (only,) = list_series(folder)
    assert only["modality"] == "CT" and only["n_slices"] == 20 and only["rows"] == 512
    assert only["series_uid"] == ""  # this export blanked the UID; still one series
    assert set(only) == {"series_uid", "modality", "description", "series_number", "n_files",
                         "n_slices", "rows", "columns", "folder"}


def test_no_patient_identifiers_unless_asked(real_dicom, tmp_path):
    _, ct = real_dicom
    assert "patient" not in ct.meta
    flat = repr(ct.meta).lower()
    assert "patientname" not in flat and "birth" not in flat
    files = write_dicom_series(_volume(shape=(6, 5, 4)), tmp_path, patient_name="DOE^JANE",
                               patient_id="P123")
    plain = load_ct(tmp_path, progress=False)
    assert "DOE" not in repr(plain.meta) and "P123" not in repr(plain.meta)
    asked = load_ct(files[2], include_patient=True, progress=False)  # a file: its series
    assert asked.shape == (6, 5, 4)
    assert asked.meta["patient"]["name"] == "DOE^JANE" and asked.meta["patient"]["id"] == "P123"


# ---------------------------------------------------------------- synthetic round trips
def test_round_trip_oblique_reversed_shuffled(tmp_path):
    ct = _volume(T=_oblique_T())
    files = write_dicom_series(ct, tmp_path, reverse_slices=True, shuffle_names=True, seed=4)
    assert len(files) == ct.shape[2]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names != sorted(p.name for p in files) or names[0] != files[0].name
    back = load_ct(tmp_path, progress=False)
    assert back.shape == ct.shape
    np.testing.assert_allclose(back.spacing_mm, ct.spacing_mm, atol=1e-6)
    _same_voxels(ct, back)
    # Slice axis flipped to ascend along the normal; the other columns are unchanged.
    np.testing.assert_allclose(back.T_ct_from_ijk[:3, :2], ct.T_ct_from_ijk[:3, :2], atol=1e-9)
    np.testing.assert_allclose(back.T_ct_from_ijk[:3, 2], -ct.T_ct_from_ijk[:3, 2], atol=1e-9)
    inst = {int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files}
    assert inst == set(range(1, ct.shape[2] + 1))


def test_round_trip_read_by_simpleitk_same_geometry(tmp_path):
    import SimpleITK as sitk

    ct = _volume(T=_oblique_T(flip_k=False))
    write_dicom_series(ct, tmp_path, shuffle_names=True)
    ours = load_ct(tmp_path, progress=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    np.testing.assert_allclose(img.GetOrigin(), ours.origin_mm, atol=1e-5)
    np.testing.assert_allclose(img.GetSpacing(), ours.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), ours.direction,
                               atol=1e-6)
    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    np.testing.assert_array_equal(arr.transpose(2, 1, 0), ours.hu)


def test_missing_slice_is_located(tmp_path):
    ct = _volume()
    files = write_dicom_series(ct, tmp_path, shuffle_names=True, seed=2)
    files[5].unlink()
    # Slice 5 sat at z = 100 + 5 * 2.5 = 112.5 mm, between slices 4 and 6.
    with pytest.raises(InputError, match=rf"1 missing slice\(s\).*between {files[4].name} "
                                         rf"\(110\.00 mm\) and {files[6].name} \(115\.00 mm\)"):
        load_ct(tmp_path, progress=False)


def test_float_hu_round_trip_within_rescale_step(tmp_path):
    ct = _volume()
    f = CtVolume(ct.hu.astype(np.float32) + 0.25, ct.T_ct_from_ijk)
    write_dicom_series(f, tmp_path)
    back = load_ct(tmp_path, progress=False)
    assert back.hu.dtype == np.float32
    step = (float(f.hu.max()) - float(f.hu.min())) / 65000
    assert np.abs(back.hu - f.hu).max() <= step


def test_gantry_tilt_loads_sheared_with_warning(tmp_path):
    T = np.diag([0.8, 0.8, 2.0, 1.0])
    tilt = np.radians(15)
    T[:3, 2] = [0.0, 2.0 * np.sin(tilt), 2.0 * np.cos(tilt)]  # slices slide along y
    ct = _volume(T=T)
    write_dicom_series(ct, tmp_path)
    with pytest.warns(DicomWarning, match=r"gantry-tilted by 15\.00 deg"):
        back = load_ct(tmp_path, progress=False)
    assert back.is_sheared
    np.testing.assert_allclose(back.T_ct_from_ijk, T, atol=1e-6)
    _same_voxels(ct, back)


def test_multiframe_enhanced_file(tmp_path):
    """A single enhanced multi-frame file: per-frame positions, shared orientation."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ct = _volume(shape=(16, 12, 5))
    T = ct.T_ct_from_ijk
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 12, 16
    ds.NumberOfFrames = 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas = Dataset()
    meas.PixelSpacing = [0.9, 0.8]
    meas.SliceThickness = 2.5
    tr = Dataset()
    tr.RescaleSlope, tr.RescaleIntercept, tr.RescaleType = 1, 0, "HU"
    shared.PlaneOrientationSequence = Sequence([ori])
    shared.PixelMeasuresSequence = Sequence([meas])
    shared.PixelValueTransformationSequence = Sequence([tr])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    order = [3, 0, 4, 1, 2]  # frames stored out of position order
    for k in order:
        fg, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [float(v) for v in T[:3, :3] @ [0, 0, k] + T[:3, 3]]
        fg.PlanePositionSequence = Sequence([pos])
        per.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = np.stack([ct.hu[:, :, k].T for k in order]).astype("<i2").tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    back = load_ct(path, progress=False)
    np.testing.assert_allclose(back.T_ct_from_ijk, T, atol=1e-9)
    np.testing.assert_array_equal(back.hu, ct.hu)


# ---------------------------------------------------------------- several series
def test_several_series_pick_and_list(tmp_path):
    big, small = _volume(shape=(16, 12, 9)), _volume(shape=(16, 12, 5), seed=9)
    write_dicom_series(big, tmp_path / "a", series_description="big")
    write_dicom_series(small, tmp_path / "b", series_description="small")
    listed = list_series(tmp_path)
    assert [d["n_slices"] for d in listed] == [9, 5]
    assert [d["description"] for d in listed] == ["big", "small"]
    with pytest.warns(DicomWarning, match=r"holds 2 series.*most slices"):
        ct = load_ct(tmp_path, progress=False)
    assert ct.shape == (16, 12, 9)
    ct = load_ct(tmp_path, series=listed[1]["series_uid"], progress=False)
    np.testing.assert_array_equal(ct.hu, small.hu)
    with pytest.raises(InputError, match=r"series '1\.2\.3' not found.*available"):
        load_ct(tmp_path, series="1.2.3", progress=False)


def test_two_series_of_equal_size_is_ambiguous(tmp_path):
    write_dicom_series(_volume(shape=(8, 8, 4)), tmp_path / "a")
    write_dicom_series(_volume(shape=(8, 8, 4), seed=5), tmp_path / "b")
    with pytest.raises(InputError, match=r"several CT series with 4 slices; pick one with "
                                         r"series="):
        load_ct(tmp_path, progress=False)


# ---------------------------------------------------------------- bad input
def _edit(files, index, **changes):
    ds = pydicom.dcmread(files[index])
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(files[index], enforce_file_format=True)


def test_non_ct_modality_refused(tmp_path):
    files = write_dicom_series(_volume(shape=(8, 8, 4)), tmp_path)
    for i in range(len(files)):
        _edit(files, i, Modality="MR")
    with pytest.raises(InputError, match=r"modality 'MR', not CT"):
        load_ct(tmp_path, progress=False)
    assert load_ct(tmp_path, allow_non_ct=True, progress=False).shape == (8, 8, 4)


def test_mixed_sizes_refused(tmp_path):
    files = write_dicom_series(_volume(shape=(8, 8, 4)), tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.Rows, ds.Columns = 4, 4
    ds.PixelData = np.zeros((4, 4), "<u2").tobytes()
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(InputError, match=r"mixes image sizes.*8x8: 3.*4x4: 1|"
                                         r"mixes image sizes.*4x4: 1.*8x8: 3"):
        load_ct(tmp_path, progress=False)


def test_mixed_orientations_refused(tmp_path):
    files = write_dicom_series(_volume(shape=(8, 8, 4)), tmp_path)
    _edit(files, 1, ImageOrientationPatient=[0, 1, 0, 1, 0, 0])
    with pytest.raises(InputError, match=r"mixes orientations: 1 of 4 slices"):
        load_ct(tmp_path, progress=False)


def test_duplicate_positions_refused(tmp_path):
    files = write_dicom_series(_volume(shape=(8, 8, 4)), tmp_path)
    ipp = pydicom.dcmread(files[1]).ImagePositionPatient
    _edit(files, 2, ImagePositionPatient=ipp)
    with pytest.raises(InputError, match=r"duplicate slice position"):
        load_ct(tmp_path, progress=False)


def test_unreadable_files_skipped_with_warning(tmp_path):
    ct = _volume(shape=(8, 8, 5))
    files = write_dicom_series(ct, tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    # A truncated file at the end of the stack: the rest is consistent, so it is skipped.
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) - 40])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        back = load_ct(tmp_path, progress=False)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "notes.txt" in msgs and files[-1].name in msgs
    assert back.shape == (8, 8, 4)
    np.testing.assert_array_equal(back.hu, ct.hu[:, :, :4])


def test_truncated_middle_file_reported_as_gap_naming_it(tmp_path):
    files = write_dicom_series(_volume(shape=(8, 8, 5)), tmp_path)
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError, match=rf"missing slice.*unreadable file\(s\) skipped: "
                                         rf"{files[2].name}"):
        load_ct(tmp_path, progress=False)


def test_empty_and_missing_paths(tmp_path):
    with pytest.raises(InputError, match=r"DICOM folder is empty"):
        load_ct(tmp_path, progress=False)
    with pytest.raises(InputError, match=r"path does not exist"):
        load_ct(tmp_path / "nope", progress=False)
    (tmp_path / "junk.bin").write_bytes(os.urandom(300))
    with pytest.raises(InputError, match=r"no readable DICOM file"):
        load_ct(tmp_path, progress=False)


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(InputError, match=r"ct must be a CtVolume"):
        write_dicom_series(np.zeros((4, 4, 4)), tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"folder must be a directory, got an existing file"):
        write_dicom_series(_volume(shape=(4, 4, 2)), tmp_path / "file")
    skew = np.eye(4)
    skew[:3, 1] = [0.5, 1.0, 0.0]
    with pytest.raises(InputError, match=r"non-orthogonal i and j axes"):
        write_dicom_series(_volume(shape=(4, 4, 2), T=skew), tmp_path / "s")


def test_fast_header_path_handles_implicit_vr_and_sequences(tmp_path):
    """The speed path (our header walker) must agree with pydicom: implicit VR little endian,
    undefined-length nested sequences before the pixel data, 12-bit stored values."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian

    from arspine.imaging._dicom_fast import FastHeader, read_fast_header

    ct = _volume(shape=(10, 8, 4))
    files = write_dicom_series(ct, tmp_path)
    for f in files:
        ds = pydicom.dcmread(f)
        inner = Dataset()
        inner.CodeValue, inner.CodeMeaning = "113691", "IEC Body Dosimetry Phantom"
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3"
        item.PurposeOfReferenceCodeSequence = Sequence([inner])
        item.is_undefined_length_sequence_item = True
        ds.ReferencedImageSequence = Sequence([item, item])
        ds["ReferencedImageSequence"].is_undefined_length = True
        item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(f, implicit_vr=True, little_endian=True, enforce_file_format=True)
    raw = files[1].read_bytes()
    assert b"\xfe\xff\xdd\xe0" in raw and b"\xfe\xff\x0d\xe0" in raw  # delimiters written
    head = read_fast_header(files[1])
    assert isinstance(head, FastHeader) and head.pixel_offset is not None
    assert [float(v) for v in head["ImagePositionPatient"]] == pytest.approx(
        [float(v) for v in pydicom.dcmread(files[1]).ImagePositionPatient])
    back = load_ct(tmp_path, progress=False)
    np.testing.assert_array_equal(back.hu, ct.hu)
    assert back.meta["transfer_syntax"] == ImplicitVRLittleEndian
