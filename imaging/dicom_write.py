"""Write a `CtVolume` as a real CT Image Storage DICOM series (uncompressed, explicit VR LE).

Geometry comes from the affine: ImageOrientationPatient = unit i and j columns, PixelSpacing =
(row spacing, column spacing) = (|j column|, |i column|), ImagePositionPatient of slice k =
``T_ct_from_ijk @ (0, 0, k, 1)``. An oblique or sheared (gantry-tilted) affine is written as
is. Options reorder InstanceNumber against position and shuffle file names, so readers that
sort by either are caught out.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from arspine.errors import InputError

__all__ = ["write_dicom_series", "CT_IMAGE_STORAGE"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _ds_str(x: float) -> str:
    """A DICOM DS value (at most 16 characters) as exact as it allows."""
    for prec in range(12, 3, -1):
        s = f"{x:.{prec}g}"
        if len(s) <= 16:
            return s
    return f"{x:.4g}"


def _storage(hu: np.ndarray) -> tuple[np.ndarray, float, float, bool]:
    """Stored pixel values, slope, intercept, signed. Integer HU are stored exactly."""
    lo, hi = float(hu.min()), float(hu.max())
    integral = np.issubdtype(hu.dtype, np.integer) or bool(np.all(np.mod(hu, 1) == 0))
    if integral and lo >= -1024 and hi <= 65535 - 1024:
        return (hu.astype(np.int32) + 1024).astype(np.uint16), 1.0, -1024.0, False
    if integral and lo >= -32768 and hi <= 32767:
        return hu.astype(np.int16), 1.0, 0.0, True
    slope = max((hi - lo) / 65000.0, 1e-6)
    q = np.round((hu.astype(np.float64) - lo) / slope)
    return q.astype(np.uint16), slope, lo, False


def write_dicom_series(ct, folder: str | os.PathLike, *, series_description: str = "arspine CT",
                       patient_position: str = "HFS", reverse_slices: bool = False,
                       shuffle_names: bool = False, seed: int = 0,
                       patient_name: str = "ANONYMOUS", patient_id: str = "ARSPINE",
                       series_number: int = 1, study_uid: str | None = None,
                       frame_of_reference_uid: str | None = None,
                       manufacturer: str = "arspine", progress: bool = True) -> list[Path]:
    """Write ``ct`` as one file per slice into ``folder``.

    Parameters
    ----------
    ct : CtVolume
        Volume to write; its affine gives every geometry tag (oblique and sheared allowed).
    folder : path
        Created if missing. Each file is written atomically (temp name, then rename).
    series_description, patient_position, patient_name, patient_id, series_number,
    manufacturer : header values. No real identifiers are invented.
    reverse_slices : bool
        Number instances from the last slice (InstanceNumber 1 at k = K-1).
    shuffle_names : bool
        Random file names unrelated to position or InstanceNumber (seeded by ``seed``).
    study_uid, frame_of_reference_uid : str, optional
        Reuse UIDs (e.g. to put several series in one study); fresh ones otherwise.

    Returns
    -------
    list[Path]
        Written files in slice order k = 0..K-1.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    if not hasattr(ct, "hu") or not hasattr(ct, "T_ct_from_ijk"):
        raise InputError(f"ct must be a CtVolume, got {type(ct).__name__}")
    hu = np.asarray(ct.hu)
    if np.issubdtype(hu.dtype, np.floating) and not np.all(np.isfinite(hu)):
        raise InputError("ct.hu holds NaN or inf; cannot write DICOM")
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"folder must be a directory, got an existing file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    T = np.asarray(ct.T_ct_from_ijk, dtype=np.float64)
    sx, sy = np.linalg.norm(T[:3, 0]), np.linalg.norm(T[:3, 1])
    r, c = T[:3, 0] / sx, T[:3, 1] / sy
    if abs(r @ c) > 1e-4:
        raise InputError("ct.T_ct_from_ijk has non-orthogonal i and j axes; DICOM rows and "
                         "columns must be perpendicular")
    n = np.cross(r, c)
    vz = T[:3, 2]
    thickness = abs(float(vz @ n))
    tilt_deg = float(np.degrees(np.arccos(np.clip(abs(vz @ n) / np.linalg.norm(vz), -1, 1))))
    I, J, K = hu.shape
    stored, slope, icpt, signed = _storage(hu)
    rng = np.random.default_rng(seed)
    names = [f"IM{k + 1:05d}.dcm" for k in range(K)]
    if shuffle_names:
        codes = rng.permutation(K)
        names = [f"{rng.integers(0, 16**8):08x}_{codes[k]:05d}.dcm" for k in range(K)]
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    iop = [_ds_str(v) for v in (*r, *c)]
    ps = [_ds_str(sy), _ds_str(sx)]
    wc, ww = 400, 1800  # bone window
    it = range(K)
    if progress and K >= 200:
        import sys

        from tqdm import tqdm

        it = tqdm(it, desc="write DICOM", unit="slice", disable=not sys.stderr.isatty())
    paths = []
    for k in it:
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = _EXPLICIT_LE
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = manufacturer
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.SliceThickness = _ds_str(thickness)
        ds.KVP = "120"
        ds.GantryDetectorTilt = _ds_str(tilt_deg)
        ds.PatientPosition = patient_position
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = int(series_number)
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = (K - k) if reverse_slices else (k + 1)
        ipp = T[:3, :3] @ np.array([0.0, 0.0, k]) + T[:3, 3]
        ds.ImagePositionPatient = [_ds_str(v) for v in ipp]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_str(float(ipp @ n))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = J
        ds.Columns = I
        ds.PixelSpacing = ps
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.WindowCenter = str(wc)
        ds.WindowWidth = str(ww)
        ds.RescaleIntercept = _ds_str(icpt)
        ds.RescaleSlope = _ds_str(slope)
        ds.RescaleType = "HU"
        # Stored [i, j] -> DICOM (rows = j, columns = i).
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(
            "<i2" if signed else "<u2").tobytes()
        final = out / names[k]
        tmp = out / f".{names[k]}.tmp"
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, final)
        paths.append(final)
    return paths
