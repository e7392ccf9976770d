"""`load_ct` for DICOM, NIfTI and NRRD, and `save_nifti`.

NIfTI stores a RAS+ world affine; the project's ``ct`` frame is DICOM LPS, so the affine is
left-multiplied by ``diag(-1, -1, 1, 1)`` on load and on save. NRRD states its space; RAS
spaces are converted the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arspine.atomic import atomic_path
from arspine.errors import InputError
from arspine.imaging.volume import CtVolume, check_affine

__all__ = ["load_ct", "load_nifti_array", "save_nifti", "RAS_FROM_LPS", "atomic_path"]

#: diag(-1, -1, 1, 1): flips x and y between RAS and LPS (its own inverse).
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _kind(p: Path) -> str:
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return "dicom"


def load_nifti_array(path: str | os.PathLike, name: str = "path") -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI file.

    Returns
    -------
    data : (I, J, K) ndarray (scaled by the file's slope/intercept when present)
    T_ct_from_ijk : (4, 4) LPS affine
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name}: NIfTI file not found: {p}")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - any nibabel/gzip failure is a broken file
        raise InputError(f"{name}: cannot read NIfTI file {p}: {type(exc).__name__}: "
                         f"{exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{name}: {p} must hold a 3D volume, got shape {data.shape}")
    T = RAS_FROM_LPS @ np.asarray(img.affine, dtype=np.float64)
    return data, check_affine(T, f"affine of {p.name}")


def _load_nifti(p: Path) -> CtVolume:
    data, T = load_nifti_array(p)
    if np.issubdtype(data.dtype, np.floating):
        hu = data.astype(np.float32, copy=False)
    elif data.size and data.min() >= -32768 and data.max() <= 32767:
        hu = data.astype(np.int16, copy=False)
    else:
        hu = data.astype(np.float32)
    if np.issubdtype(hu.dtype, np.floating) and not np.all(np.isfinite(hu)):
        raise InputError(f"path: {p} holds NaN or inf voxels")
    return CtVolume(hu, T, {"source": str(p), "format": "nifti", "series_description": p.name})


def _load_nrrd(p: Path) -> CtVolume:
    import nrrd

    try:
        data, hdr = nrrd.read(str(p))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"path: cannot read NRRD file {p}: {type(exc).__name__}: "
                         f"{exc}") from None
    if data.ndim != 3:
        raise InputError(f"path: {p} must hold a 3D volume, got shape {data.shape}")
    dirs = hdr.get("space directions")
    origin = hdr.get("space origin")
    T = np.eye(4)
    if dirs is not None:
        d = np.array(dirs, dtype=np.float64)
        if d.shape != (3, 3) or not np.all(np.isfinite(d)):
            raise InputError(f"path: {p} 'space directions' must be three 3-vectors, got "
                             f"{dirs!r}")
        T[:3, :3] = d.T  # rows of 'space directions' are the axis vectors
    elif "spacings" in hdr:
        T[:3, :3] = np.diag(np.asarray(hdr["spacings"], dtype=float))
    if origin is not None:
        T[:3, 3] = np.asarray(origin, dtype=np.float64)
    space = str(hdr.get("space", "left-posterior-superior")).lower()
    if space in ("right-anterior-superior", "ras", "scanner-xyz"):
        T = RAS_FROM_LPS @ T
    elif space not in ("left-posterior-superior", "lps"):
        raise InputError(f"path: {p} has NRRD space {space!r}; expected LPS or RAS")
    hu = data.astype(np.float32) if np.issubdtype(data.dtype, np.floating) else \
        data.astype(np.int16) if data.min() >= -32768 and data.max() <= 32767 else \
        data.astype(np.float32)
    return CtVolume(hu, check_affine(T, f"affine of {p.name}"),
                    {"source": str(p), "format": "nrrd", "series_description": p.name})


def load_ct(path: str | os.PathLike, series: str | None = None, progress: bool = True,
            include_patient: bool = False, allow_non_ct: bool = False) -> CtVolume:
    """Load a CT from a DICOM folder or file, ``.nii``/``.nii.gz`` or ``.nrrd``.

    Parameters
    ----------
    path : path
        DICOM folder (recursive), DICOM file (single-frame: its series; enhanced
        multi-frame: that file), NIfTI or NRRD file.
    series : str, optional
        DICOM SeriesInstanceUID when the folder holds several series.
    progress : bool
        Progress bar for long DICOM series (only on a terminal).
    include_patient : bool
        Keep patient identifiers in ``meta["patient"]`` (DICOM only; off by default).
    allow_non_ct : bool
        Accept a non-CT DICOM modality.

    Returns
    -------
    CtVolume
        ``hu`` indexed ``[i, j, k]`` and ``T_ct_from_ijk`` to LPS mm.

    Raises
    ------
    InputError
        Missing path, unreadable or inconsistent data (the message names the file).
    """
    if path is None:
        raise InputError("path must be a DICOM folder or a .nii/.nii.gz/.nrrd file, got None")
    p = Path(path)
    if not p.exists():
        raise InputError(f"path does not exist: {p}")
    kind = _kind(p)
    if kind == "nifti":
        return _load_nifti(p)
    if kind == "nrrd":
        return _load_nrrd(p)
    from arspine.imaging.dicom import load_dicom

    return load_dicom(p, series=series, progress=progress, include_patient=include_patient,
                      allow_non_ct=allow_non_ct)


def save_nifti(ct_or_labels, path: str | os.PathLike) -> Path:
    """Write a :class:`CtVolume` or :class:`VertebraLabels` as NIfTI (RAS affine), atomically.

    Parameters
    ----------
    ct_or_labels : CtVolume or VertebraLabels
        ``hu`` (or ``array``) is written with ``T_ct_from_ijk`` converted to RAS.
    path : path
        ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"path must end with .nii or .nii.gz, got {p.name}")
    if hasattr(ct_or_labels, "hu"):
        data = np.asarray(ct_or_labels.hu)
    elif hasattr(ct_or_labels, "array"):
        data = np.asarray(ct_or_labels.array)
        data = data.astype(np.uint8 if data.max(initial=0) < 256 and data.min(initial=0) >= 0
                           else np.int16)
    else:
        raise InputError(f"ct_or_labels must be a CtVolume or VertebraLabels, got "
                         f"{type(ct_or_labels).__name__}")
    affine = RAS_FROM_LPS @ ct_or_labels.T_ct_from_ijk
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(p) as tmp:
        nib.save(img, str(tmp))
    return p
