"""Read CT DICOM the way a PACS-grade reader does.

- Slices sorted by position along the slice normal (ImagePositionPatient projected on the
  cross product of the ImageOrientationPatient vectors), never by InstanceNumber or name.
- RescaleSlope/Intercept applied (per slice), any orientation (oblique), both slice
  directions, compressed transfer syntaxes through pydicom's plugins (pylibjpeg for JPEG 2000).
- Several series in one folder: pick with ``series=``, list with :func:`list_series`, default
  the CT series with the most slices (with a warning saying so).
- Detected and reported: missing slices (where), gantry tilt (loaded with a sheared affine and
  a warning), mixed orientations / sizes, non-CT modality, unreadable files (skipped with a
  warning naming the file when the rest is consistent), empty folders.
- Patient identifiers stay in the files unless ``include_patient=True``.

Uncompressed pixel data is read straight from the end of the file with numpy (the header was
already parsed); anything else goes through ``pydicom.Dataset.pixel_array``.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.imaging._dicom_fast import FastHeader, read_fast_header
from arspine.imaging.volume import CtVolume

__all__ = ["DicomWarning", "list_series", "load_dicom", "is_dicom_file"]

_PROGRESS_MIN_FILES = 200
_KEEP_BYTES = 2 << 30
_UNCOMPRESSED = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": False,
                 "1.2.840.10008.1.2.2": True}  # uid -> big endian


class DicomWarning(UserWarning):
    """Something odd in a DICOM series that the loader handled (and says how)."""


@dataclass
class _Slice:
    """One image plane (a file, or one frame of a multi-frame file)."""

    source: str                # file name (and frame) for messages
    path: Path
    frame: int | None          # frame index in a multi-frame file
    iop: np.ndarray            # (6,)
    ipp: np.ndarray            # (3,)
    pixel_spacing: tuple[float, float]   # (row spacing, column spacing)
    rows: int
    cols: int
    slope: float
    intercept: float
    header: object             # pydicom Dataset (no pixels)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file has the DICM preamble marker."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _list_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for n in sorted(names):
            if n.startswith(".") or n.upper() == "DICOMDIR":
                continue
            files.append(Path(root) / n)
    return files


def _read_header(path: Path, keep_data: bool = True):
    """Header of one file (no pixels) or raise the reading error.

    The fast walker handles ordinary little-endian files; pydicom everything else.
    """
    import pydicom

    fast = read_fast_header(path, keep_data=keep_data)
    if fast is not None:
        return fast
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        # Files without the 128-byte preamble are still DICOM when they parse to image tags.
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "ImagePositionPatient" not in ds and "SOPClassUID" not in ds:
            raise
        return ds


def _scan_headers(files: list[Path], progress: bool,
                  keep_data: bool = True) -> tuple[list, list[tuple[Path, str]]]:
    headers, bad = [], []
    it = files
    if progress and len(files) >= _PROGRESS_MIN_FILES:
        from tqdm import tqdm

        it = tqdm(files, desc="DICOM headers", unit="file", disable=not sys.stderr.isatty())
    kept = 0
    for f in it:
        try:
            # Keep file bytes for the pixel pass while memory stays reasonable.
            h = _read_header(f, keep_data=keep_data and kept < _KEEP_BYTES)
            kept += len(getattr(h, "data", None) or b"")
            headers.append((f, h))
        except Exception as exc:  # noqa: BLE001 - any parse failure means "unreadable"
            bad.append((f, f"{type(exc).__name__}: {exc}"))
    return headers, bad


def _series_key(ds) -> str:
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    return uid


def _describe(uid: str, items: list) -> dict:
    ds = items[0][1]
    n_frames = sum(int(d.get("NumberOfFrames", 1) or 1) for _, d in items)
    return {
        "series_uid": uid,
        "modality": str(ds.get("Modality", "") or ""),
        "description": str(ds.get("SeriesDescription", "") or ""),
        "series_number": ds.get("SeriesNumber", None),
        "n_files": len(items),
        "n_slices": n_frames,
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "folder": str(items[0][0].parent),
    }


def _group(headers: list) -> dict[str, list]:
    groups: dict[str, list] = {}
    for f, ds in headers:
        if "PixelData" not in ds and "Rows" not in ds:
            continue  # not an image (structured report, presentation state, ...)
        groups.setdefault(_series_key(ds), []).append((f, ds))
    return groups


def list_series(folder: str | os.PathLike, progress: bool = True) -> list[dict]:
    """Describe every image series in a DICOM folder (recursively).

    Returns
    -------
    list of dict
        One per series, most slices first: ``series_uid``, ``modality``, ``description``,
        ``series_number``, ``n_files``, ``n_slices``, ``rows``, ``columns``, ``folder``.
        No patient identifiers.
    """
    folder = _check_folder(folder)
    headers, _ = _scan_headers(_list_files(folder), progress, keep_data=False)
    out = [_describe(uid, items) for uid, items in _group(headers).items()]
    out.sort(key=lambda d: (-d["n_slices"], d["series_uid"]))
    return out


def _check_folder(folder) -> Path:
    p = Path(folder)
    if not p.exists():
        raise InputError(f"DICOM path does not exist: {p}")
    if not p.is_dir():
        raise InputError(f"DICOM folder expected, got a file: {p}")
    return p


def _float_list(ds, name: str, n: int, source: str) -> np.ndarray:
    v = ds.get(name, None)
    if v is None:
        raise InputError(f"{source}: missing {name}")
    try:
        a = np.array([float(x) for x in v], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: {name} is not numeric: {v!r}") from exc
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise InputError(f"{source}: {name} must have {n} finite values, got {v!r}")
    return a


def _rescale(ds) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", None)
    icpt = ds.get("RescaleIntercept", None)
    return (1.0 if slope in (None, "") else float(slope),
            0.0 if icpt in (None, "") else float(icpt))


def _slices_from_file(path: Path, ds) -> list[_Slice]:
    """One `_Slice` per image plane of the file (frames of an enhanced multi-frame file)."""
    name = path.name
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if nframes == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        ps = _float_list(ds, "PixelSpacing", 2, name)
        slope, icpt = _rescale(ds)
        return [_Slice(name, path, None, _float_list(ds, "ImageOrientationPatient", 6, name),
                       _float_list(ds, "ImagePositionPatient", 3, name), (ps[0], ps[1]),
                       rows, cols, slope, icpt, ds)]
    # Enhanced multi-frame: geometry lives in the functional groups.
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    per = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per is None or len(per) != nframes:
        raise InputError(f"{name}: multi-frame file without per-frame geometry "
                         f"(PerFrameFunctionalGroupsSequence), cannot place its {nframes} frames")

    def find(fg, seq, attr):
        for g in (fg, shared):
            if g is not None and seq in g and len(g.get(seq)) and attr in g.get(seq)[0]:
                return g.get(seq)[0]
        return None

    out = []
    for f, fg in enumerate(per):
        src = f"{name} frame {f + 1}"
        pos = find(fg, "PlanePositionSequence", "ImagePositionPatient")
        ori = find(fg, "PlaneOrientationSequence", "ImageOrientationPatient")
        meas = find(fg, "PixelMeasuresSequence", "PixelSpacing")
        if pos is None or ori is None or meas is None:
            raise InputError(f"{src}: missing plane position, orientation or pixel spacing")
        trans = find(fg, "PixelValueTransformationSequence", "RescaleSlope")
        slope, icpt = _rescale(trans if trans is not None else ds)
        ps = _float_list(meas, "PixelSpacing", 2, src)
        out.append(_Slice(src, path, f, _float_list(ori, "ImageOrientationPatient", 6, src),
                          _float_list(pos, "ImagePositionPatient", 3, src), (ps[0], ps[1]),
                          rows, cols, slope, icpt, ds))
    return out


def _check_consistent(slices: list[_Slice], uid: str) -> None:
    first = slices[0]
    sizes = {(s.rows, s.cols) for s in slices}
    if len(sizes) > 1:
        counts = {sz: sum((s.rows, s.cols) == sz for s in slices) for sz in sizes}
        raise InputError(f"series {uid!r} mixes image sizes (rows x columns: count) "
                         + ", ".join(f"{r}x{c}: {n}" for (r, c), n in counts.items()))
    bad = [s for s in slices if np.abs(s.iop - first.iop).max() > 1e-4]
    if bad:
        raise InputError(f"series {uid!r} mixes orientations: {len(bad)} of {len(slices)} "
                         f"slices (e.g. {bad[0].source}: {np.round(bad[0].iop, 4).tolist()}) "
                         f"differ from {first.source}: {np.round(first.iop, 4).tolist()}")
    bad = [s for s in slices if np.abs(np.subtract(s.pixel_spacing, first.pixel_spacing)).max()
           > 1e-4]
    if bad:
        raise InputError(f"series {uid!r} mixes pixel spacings: {bad[0].source} has "
                         f"{bad[0].pixel_spacing}, {first.source} has {first.pixel_spacing}")
    r, c = first.iop[:3], first.iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or \
            abs(r @ c) > 1e-3:
        raise InputError(f"{first.source}: ImageOrientationPatient is not two orthonormal "
                         f"vectors: {first.iop.tolist()}")


def _order_and_geometry(slices: list[_Slice], uid: str) -> tuple[list[_Slice], np.ndarray]:
    """Sort along the slice normal, check the spacing, build the affine."""
    first = slices[0]
    r = first.iop[:3] / np.linalg.norm(first.iop[:3])
    c = first.iop[3:] / np.linalg.norm(first.iop[3:])
    n = np.cross(r, c)
    pos = np.array([s.ipp @ n for s in slices])
    order = np.argsort(pos, kind="stable")
    slices = [slices[i] for i in order]
    pos = pos[order]
    ipp = np.array([s.ipp for s in slices])
    if len(slices) > 1:
        steps = np.diff(pos)
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            a, b = slices[dup[0]], slices[dup[0] + 1]
            raise InputError(f"series {uid!r} has {dup.size} duplicate slice position(s), e.g. "
                             f"{a.source} and {b.source} both at {pos[dup[0]]:.3f} mm along "
                             f"the normal (several acquisitions or echoes in one series?)")
        step = float(np.min(steps))
        tol = max(0.01, 0.01 * step)
        if np.abs(steps - step).max() > tol:
            ratio = steps / step
            gaps = np.flatnonzero(np.abs(steps - step) > tol)
            if np.all(np.abs(ratio - np.round(ratio)) < 0.05):
                parts = []
                for g in gaps[:5]:
                    m = int(round(ratio[g])) - 1
                    parts.append(f"{m} missing between {slices[g].source} ({pos[g]:.2f} mm) "
                                 f"and {slices[g + 1].source} ({pos[g + 1]:.2f} mm)")
                nmiss = int(np.round(ratio[gaps]).sum() - gaps.size)
                raise InputError(
                    f"series {uid!r} has non-uniform slice spacing: {nmiss} missing slice(s) "
                    f"at {step:.3f} mm spacing: " + "; ".join(parts)
                    + (" ..." if gaps.size > 5 else ""))
            raise InputError(f"series {uid!r} has non-uniform slice spacing: steps from "
                             f"{steps.min():.3f} to {steps.max():.3f} mm along the normal "
                             f"(first irregular step after {slices[gaps[0]].source})")
        v = (ipp[-1] - ipp[0]) / (len(slices) - 1)
        # Every slice must sit on the line IPP_0 + k v (a gantry tilt keeps them on a line).
        resid = ipp - (ipp[0] + np.arange(len(slices))[:, None] * v)
        if np.abs(resid).max() > max(0.05, 0.02 * step):
            k = int(np.argmax(np.abs(resid).max(axis=1)))
            raise InputError(f"series {uid!r}: slice {slices[k].source} is off the line of "
                             f"the others by {np.abs(resid[k]).max():.2f} mm")
        inplane = v - (v @ n) * n
        tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(inplane), v @ n)))
        if tilt_deg > 0.05:
            warnings.warn(f"series {uid!r} is gantry-tilted by {tilt_deg:.2f} deg: loaded "
                          "with a sheared affine, geometry exact (resample before tools that "
                          "assume orthogonal axes)", DicomWarning, stacklevel=3)
    else:
        ds = first.header
        thick = ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None) or 1.0
        v = n * float(thick)
    T = np.eye(4)
    T[:3, 0] = r * first.pixel_spacing[1]   # along i (columns): column spacing
    T[:3, 1] = c * first.pixel_spacing[0]   # along j (rows): row spacing
    T[:3, 2] = v
    T[:3, 3] = ipp[0]
    return slices, T


def _fast_pixels(s: _Slice) -> np.ndarray | None:
    """Uncompressed single-frame pixels read from the file tail, or None to use pydicom."""
    ds = s.header
    if isinstance(ds, FastHeader):
        return _fast_header_pixels(s, ds)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if s.frame is not None or str(ts) not in _UNCOMPRESSED or _UNCOMPRESSED[str(ts)]:
        return None
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("BitsAllocated", 0)) != 16:
        return None
    bits_stored = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    nbytes = s.rows * s.cols * 2
    try:
        size = os.path.getsize(s.path)
        with open(s.path, "rb") as fh:
            fh.seek(size - nbytes - 12)
            head = fh.read(12)
            data = fh.read(nbytes)
    except OSError:
        return None
    length = nbytes.to_bytes(4, "little")
    explicit = head[:4] == b"\xe0\x7f\x10\x00" and head[4:6] in (b"OW", b"OB") \
        and head[8:12] == length
    implicit = head[4:8] == b"\xe0\x7f\x10\x00" and head[8:12] == length
    if not (explicit or implicit) or len(data) != nbytes:
        return None
    arr = np.frombuffer(data, dtype="<i2" if signed else "<u2").reshape(s.rows, s.cols)
    if bits_stored < 16:
        if signed:  # sign-extend from bits_stored
            shift = 16 - bits_stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << bits_stored) - 1)
    return arr


def _fast_header_pixels(s: _Slice, ds: FastHeader) -> np.ndarray | None:
    """Native pixels at the offset the header walker found (None: let pydicom decode)."""
    if ds.pixel_offset is None or int(ds.get("SamplesPerPixel") or 1) != 1:
        return None
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16, 32):
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    count = s.rows * s.cols
    if ds.pixel_length < count * dtype.itemsize:
        raise ValueError(f"pixel data holds {ds.pixel_length} bytes, {count * dtype.itemsize} "
                         "needed")
    if ds.data is not None:
        arr = np.frombuffer(ds.data, dtype=dtype, count=count, offset=ds.pixel_offset)
    else:
        arr = np.fromfile(s.path, dtype=dtype, count=count, offset=ds.pixel_offset)
    arr = arr.reshape(s.rows, s.cols)
    stored = int(ds.get("BitsStored") or bits)
    if stored < bits:
        if signed:  # sign-extend from the stored bits
            shift = bits - stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & np.array((1 << stored) - 1, dtype=dtype)
    return arr


def _pixels(s: _Slice, cache: dict) -> np.ndarray:
    a = _fast_pixels(s)
    if a is not None:
        return a
    import pydicom

    if s.path not in cache:
        cache.clear()
        ds = pydicom.dcmread(s.path, force=True)
        cache[s.path] = ds.pixel_array
    arr = cache[s.path]
    if s.frame is not None:
        arr = arr[s.frame]
    if arr.shape != (s.rows, s.cols):
        raise ValueError(f"pixel array shape {arr.shape} != {(s.rows, s.cols)}")
    return arr


def _meta(ds, uid: str, n: int, files: int, include_patient: bool, path: Path) -> dict:
    def g(name):
        v = ds.get(name, None)
        return None if v in (None, "") else str(v)

    meta = {
        "source": str(path),
        "format": "dicom",
        "series_uid": uid,
        "series_description": g("SeriesDescription") or "",
        "series_number": g("SeriesNumber"),
        "modality": g("Modality"),
        "patient_position": g("PatientPosition"),
        "manufacturer": g("Manufacturer"),
        "manufacturer_model": g("ManufacturerModelName"),
        "slice_thickness_mm": float(ds.SliceThickness) if g("SliceThickness") else None,
        "kvp": g("KVP"),
        "convolution_kernel": g("ConvolutionKernel"),
        "transfer_syntax": str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")),
        "frame_of_reference_uid": g("FrameOfReferenceUID"),
        "n_slices": n,
        "n_files": files,
    }
    if include_patient:
        meta["patient"] = {"name": g("PatientName"), "id": g("PatientID"),
                           "birth_date": g("PatientBirthDate"), "sex": g("PatientSex")}
    return meta


def _pick_series(groups: dict, series: str | None, where: Path) -> tuple[str, list]:
    if series is not None:
        if series not in groups:
            avail = ", ".join(repr(u) for u in groups) or "none"
            raise InputError(f"series {series!r} not found in {where}; available: {avail}")
        return series, groups[series]
    if len(groups) == 1:
        uid = next(iter(groups))
        return uid, groups[uid]
    desc = sorted((_describe(u, it) for u, it in groups.items()),
                  key=lambda d: -d["n_slices"])
    cts = [d for d in desc if d["modality"] == "CT"]
    listing = "; ".join(f"{d['series_uid']!r} {d['modality']} '{d['description']}' "
                        f"{d['n_slices']} slices" for d in desc)
    if not cts:
        raise InputError(f"{where} holds {len(desc)} series and none is CT: {listing}")
    if len(cts) > 1 and cts[0]["n_slices"] == cts[1]["n_slices"]:
        raise InputError(f"{where} holds several CT series with {cts[0]['n_slices']} slices; "
                         f"pick one with series=<SeriesInstanceUID>: {listing}")
    uid = cts[0]["series_uid"]
    warnings.warn(f"{where} holds {len(desc)} series ({listing}); loading the CT series with "
                  f"the most slices, {uid!r}; pass series= to choose", DicomWarning,
                  stacklevel=3)
    return uid, groups[uid]


def load_dicom(path: str | os.PathLike, series: str | None = None, progress: bool = True,
               include_patient: bool = False, allow_non_ct: bool = False) -> CtVolume:
    """Load a CT series from a DICOM folder or file into a :class:`CtVolume`.

    Parameters
    ----------
    path : path
        A folder (searched recursively), a single-frame file (its series is loaded from the
        file's folder) or an enhanced multi-frame file.
    series : str, optional
        SeriesInstanceUID to load when the folder holds several series.
    progress : bool
        tqdm bar for series of more than a few hundred files (only on a terminal).
    include_patient : bool
        Copy patient name, ID, birth date and sex into ``meta["patient"]``.
    allow_non_ct : bool
        Load a non-CT modality anyway (values are then not Hounsfield units).

    Returns
    -------
    CtVolume
        ``hu[i, j, k]`` (column, row, slice; slices ascending along the slice normal) and
        ``T_ct_from_ijk`` to LPS mm.

    Raises
    ------
    InputError
        Empty folder, no readable images, unknown series, mixed sizes or orientations,
        missing slices, duplicate positions, non-CT modality.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"DICOM path does not exist: {p}")
    if p.is_file():
        headers, bad = _scan_headers([p], False)
        if bad:
            raise InputError(f"cannot read DICOM file {p}: {bad[0][1]}")
        ds = headers[0][1]
        if int(ds.get("NumberOfFrames", 1) or 1) == 1:
            # A single slice stands for its series in the same folder.
            return load_dicom(p.parent, series=_series_key(ds), progress=progress,
                              include_patient=include_patient, allow_non_ct=allow_non_ct)
        where = p
    else:
        files = _list_files(p)
        if not files:
            raise InputError(f"DICOM folder is empty: {p}")
        headers, bad = _scan_headers(files, progress)
        where = p
        if not headers:
            raise InputError(f"no readable DICOM file in {p} ({len(bad)} file(s) tried, e.g. "
                             f"{bad[0][0].name}: {bad[0][1]})")
    groups = _group(headers)
    if not groups:
        raise InputError(f"no DICOM image in {where} ({len(headers)} non-image file(s))")
    uid, items = _pick_series(groups, series, where)
    ds0 = items[0][1]
    modality = str(ds0.get("Modality", "") or "")
    if modality != "CT" and not allow_non_ct:
        raise InputError(f"series {uid!r} in {where} has modality {modality or 'unknown'!r}, "
                         "not CT (pass allow_non_ct=True to load it anyway)")
    slices = []
    for f, ds in items:
        slices.extend(_slices_from_file(f, ds))
    _check_consistent(slices, uid)
    # Read pixels first: a truncated file is dropped before the geometry is checked, so a
    # hole it leaves is reported as a missing slice naming it.
    cache: dict = {}
    pix, kept, dropped = [], [], []
    it = slices
    if progress and len(slices) >= _PROGRESS_MIN_FILES:
        from tqdm import tqdm

        it = tqdm(slices, desc="DICOM pixels", unit="slice", disable=not sys.stderr.isatty())
    for s in it:
        try:
            pix.append(_pixels(s, cache))
            kept.append(s)
        except Exception as exc:  # noqa: BLE001 - undecodable pixels: drop the slice
            dropped.append((s, exc))
    if not kept:
        s, exc = dropped[0]
        raise InputError(f"no slice of series {uid!r} could be decoded, e.g. {s.source}: "
                         f"{type(exc).__name__}: {exc}")
    index = {id(s): a for s, a in zip(kept, pix)}
    try:
        ordered, T = _order_and_geometry(kept, uid)
    except InputError as exc:
        skipped = [s.source for s, _ in dropped] + [f.name for f, _ in bad]
        if skipped:
            raise InputError(f"{exc} (unreadable file(s) skipped: {', '.join(skipped[:5])})"
                             ) from None
        raise
    for s, exc in dropped:
        warnings.warn(f"skipped unreadable DICOM file {s.source}: {type(exc).__name__}: {exc}",
                      DicomWarning, stacklevel=2)
    for f, msg in bad:
        warnings.warn(f"skipped unreadable file {f}: {msg}", DicomWarning, stacklevel=2)
    hu = _stack(ordered, index)
    if isinstance(ds0, FastHeader):
        import pydicom

        ds0 = pydicom.dcmread(items[0][0], stop_before_pixels=True, force=True)
    meta = _meta(ds0, uid, len(ordered), len(items), include_patient, p)
    tilt = ds0.get("GantryDetectorTilt", None)
    meta["gantry_tilt_deg"] = float(tilt) if tilt not in (None, "") else 0.0
    return CtVolume(hu, T, meta)


def _stack(ordered: list[_Slice], index: dict) -> np.ndarray:
    """Rescale into a C-ordered (K, J, I) buffer and return its (I, J, K) view.

    int16 when every slice has slope 1 and an integer intercept and the values fit (the
    usual CT case, exact); float32 otherwise.
    """
    slopes = np.array([s.slope for s in ordered])
    icpts = np.array([s.intercept for s in ordered])
    shape = (len(ordered), ordered[0].rows, ordered[0].cols)
    if np.all(slopes == 1) and np.all(icpts == np.round(icpts)):
        ext = [(int(index[id(s)].min()), int(index[id(s)].max())) for s in ordered]
        lo = min(e[0] + int(s.intercept) for e, s in zip(ext, ordered))
        hi = max(e[1] + int(s.intercept) for e, s in zip(ext, ordered))
        if -32768 <= lo and hi <= 32767:
            buf = np.empty(shape, dtype=np.int16)
            shared = bool(np.all(icpts == icpts[0]))
            direct = shared and all(-32768 <= e[0] and e[1] <= 32767 for e in ext)
            shift = np.int16(int(icpts[0]))
            for k, s in enumerate(ordered):
                a = index[id(s)]
                if direct:  # one pass: reinterpret as int16 and add the intercept
                    np.add(a.astype(np.int16, copy=False), shift, out=buf[k])
                else:
                    buf[k] = a.astype(np.int32) + int(s.intercept)
            return buf.transpose(2, 1, 0)
    buf = np.empty(shape, dtype=np.float32)
    for k, s in enumerate(ordered):
        buf[k] = index[id(s)].astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)
    return buf.transpose(2, 1, 0)
