"""Depth images on disk: 16-bit PNG (the RealSense / Azure Kinect convention, one unit per
pixel, usually 1 mm), float TIFF, and ``.npy``. 0 means "no return".

Back-projection into the sensor frame is :func:`arspine.datasets.io.depth_to_points`.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from arspine.datasets.io_common import atomic_write, file_error, read_bytes
from arspine.errors import InputError

__all__ = ["read_depth_image", "write_depth_image", "DEPTH_FORMATS"]

#: extensions :func:`read_depth_image` / :func:`write_depth_image` accept
DEPTH_FORMATS = (".png", ".tif", ".tiff", ".npy")


def read_depth_image(path: str | os.PathLike, *, depth_scale_mm: float = 1.0) -> np.ndarray:
    """Read a depth image as millimetres.

    Parameters
    ----------
    path : str or path-like
        ``.png`` (8/16-bit, single channel), ``.tif``/``.tiff`` (integer or float), ``.npy``.
    depth_scale_mm : float
        Millimetres per stored unit (1.0 for the usual 16-bit mm PNG; 1000.0 for metres).

    Returns
    -------
    numpy.ndarray, (H, W) float64
        Depth along the optical axis in mm; 0 (or NaN from float files) = no return.

    Raises
    ------
    InputError
        Missing/empty/unreadable file, unknown extension, more than one channel, negative
        depths.
    """
    p = Path(path)
    s = p.suffix.lower()
    if s not in DEPTH_FORMATS:
        raise file_error(p, f"unknown depth-image extension {p.suffix or '(none)'!r}; "
                            f"supported: {' '.join(DEPTH_FORMATS)}")
    raw = read_bytes(p, "depth image")
    if s == ".npy":
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise file_error(p, f"not a readable .npy array ({exc})") from exc
    else:
        import SimpleITK as sitk

        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise file_error(p, f"not a readable image ({first[:120]})") from exc
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise file_error(p, f"a depth image must have one channel (H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise file_error(p, f"depth values must be numbers, got {arr.dtype}")
    if not (np.isfinite(depth_scale_mm) and depth_scale_mm > 0):
        raise InputError(f"depth_scale_mm must be positive, got {depth_scale_mm!r}")
    depth = arr.astype(np.float64) * float(depth_scale_mm)
    with np.errstate(invalid="ignore"):
        if np.any(depth < 0):
            raise file_error(p, f"{int(np.sum(depth < 0))} negative depth values")
    return depth


def write_depth_image(path: str | os.PathLike, depth_mm: np.ndarray, *,
                      depth_scale_mm: float = 1.0) -> Path:
    """Write a depth image atomically.

    ``.png``: 16-bit unsigned, ``round(depth_mm / depth_scale_mm)``, NaN/inf -> 0 (refuses
    values above 65535 units). ``.tif``/``.tiff``: float32 mm. ``.npy``: float64 mm.
    """
    p = Path(path)
    s = p.suffix.lower()
    if s not in DEPTH_FORMATS:
        raise file_error(p, f"unknown depth-image extension {p.suffix or '(none)'!r}; "
                            f"supported: {' '.join(DEPTH_FORMATS)}")
    d = np.asarray(depth_mm, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise InputError(f"depth_mm must be a 2-D (H, W) image, got shape {d.shape}")
    if s == ".npy":
        return atomic_write(p, lambda f: np.save(f, d, allow_pickle=False))
    import SimpleITK as sitk

    if s == ".png":
        units = np.where(np.isfinite(d), d / float(depth_scale_mm), 0.0)
        if units.min() < 0 or units.max() > 65535:
            raise InputError(f"depth_mm / depth_scale_mm must fit 0..65535 for a 16-bit PNG, "
                             f"got {units.min():g}..{units.max():g}")
        img = sitk.GetImageFromArray(np.rint(units).astype(np.uint16))
    else:
        img = sitk.GetImageFromArray(d.astype(np.float32))
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{p}: output folder {folder} does not exist")
    # SimpleITK picks the format from the suffix: write a temp file with the same suffix.
    tmp_dir = tempfile.mkdtemp(prefix=f".{p.name}.", dir=folder)
    try:
        tmp = Path(tmp_dir) / f"depth{s}"
        sitk.WriteImage(img, str(tmp))
        os.replace(tmp, p)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return p
