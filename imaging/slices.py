"""Axial, coronal and sagittal slices in patient axes, and window/level presets.

Slices are resampled on planes aligned with the LPS axes (whatever the scan's direction
matrix), displayed in the radiological convention: patient right on the image left, anterior
up (axial), superior up (coronal, sagittal), anterior on the left (sagittal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arspine.errors import InputError

__all__ = ["reslice", "window_level", "WINDOW_PRESETS", "SliceImage", "PLANES"]

#: preset -> (center HU, width HU)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "bone": (400.0, 1800.0),
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "spine": (300.0, 1500.0),
}

# plane -> (normal axis, image column LPS direction, image row LPS direction)
PLANES: dict[str, tuple[int, np.ndarray, np.ndarray]] = {
    "axial": (2, np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
    "coronal": (1, np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
    "sagittal": (0, np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
}


@dataclass(frozen=True)
class SliceImage:
    """A resampled slice and where its pixels are.

    Attributes
    ----------
    image : (rows, cols) float32, HU (NaN outside the volume when ``fill`` is NaN)
    T_ct_from_pixel : (4, 4) maps ``(col, row, 0, 1)`` to LPS mm
    spacing_mm : float, pixel size
    position_mm : float, LPS coordinate of the plane along its normal axis
    """

    image: np.ndarray
    T_ct_from_pixel: np.ndarray
    spacing_mm: float
    position_mm: float


def reslice(ct, plane: str = "axial", index: int | None = None, *,
            position_mm: float | None = None, spacing_mm: float | None = None,
            order: int = 1, fill: float = -1024.0, return_geometry: bool = False):
    """Resample one axial, coronal or sagittal slice.

    Parameters
    ----------
    ct : CtVolume
    plane : {"axial", "coronal", "sagittal"}
    index : int, optional
        Voxel index along the volume axis closest to the plane normal (the slice number a
        viewer shows). Default: the middle.
    position_mm : float, optional
        LPS coordinate of the plane instead of ``index`` (z for axial, y coronal, x sagittal).
    spacing_mm : float, optional
        Pixel size (default: the smallest voxel spacing).
    order : int
        Interpolation order (0 nearest, 1 linear).
    fill : float
        Value outside the volume.
    return_geometry : bool
        Return a :class:`SliceImage` instead of the bare array.

    Returns
    -------
    (rows, cols) float32 ndarray of HU, or SliceImage
    """
    from scipy.ndimage import map_coordinates

    if plane not in PLANES:
        raise InputError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    axis, u, v = PLANES[plane]
    corners = ct.corners_mm()
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if position_mm is None:
        # Volume axis closest to the plane normal.
        d = np.abs(ct.direction[axis, :])
        vax = int(np.argmax(d))
        n = ct.shape[vax]
        idx = n // 2 if index is None else int(index)
        if not 0 <= idx < n:
            raise InputError(f"index must be in 0..{n - 1} for the {plane} plane, got {index}")
        ijk = (np.array(ct.shape, dtype=float) - 1) / 2
        ijk[vax] = idx
        position_mm = float(ct.ijk_to_ct(ijk[None])[0, axis])
    elif not np.isfinite(position_mm):
        raise InputError(f"position_mm must be finite, got {position_mm}")
    step = float(spacing_mm) if spacing_mm is not None else float(ct.spacing_mm.min())
    if not step > 0:
        raise InputError(f"spacing_mm must be > 0, got {spacing_mm}")
    ucol, vrow = int(np.argmax(np.abs(u))), int(np.argmax(np.abs(v)))
    start_u = lo[ucol] if u[ucol] > 0 else hi[ucol]
    start_v = lo[vrow] if v[vrow] > 0 else hi[vrow]
    ncols = int(np.floor((hi[ucol] - lo[ucol]) / step)) + 1
    nrows = int(np.floor((hi[vrow] - lo[vrow]) / step)) + 1
    origin = np.zeros(3)
    origin[axis] = position_mm
    origin[ucol] = start_u
    origin[vrow] = start_v
    T = np.eye(4)
    T[:3, 0] = u * step
    T[:3, 1] = v * step
    T[:3, 2] = np.cross(u, v)
    T[:3, 3] = origin
    cc, rr = np.meshgrid(np.arange(ncols, dtype=float), np.arange(nrows, dtype=float))
    pts = origin + cc.reshape(-1, 1) * (u * step) + rr.reshape(-1, 1) * (v * step)
    ijk = ct.ct_to_ijk(pts)
    vals = map_coordinates(np.asarray(ct.hu, dtype=np.float32), ijk.T, order=order,
                           mode="constant", cval=fill, prefilter=False)
    img = vals.reshape(nrows, ncols).astype(np.float32)
    if return_geometry:
        return SliceImage(img, T, step, float(position_mm))
    return img


def window_level(hu: np.ndarray, preset: str | tuple[float, float] = "bone",
                 dtype: str = "float") -> np.ndarray:
    """Map HU to display intensity with a window.

    Parameters
    ----------
    hu : ndarray
        Hounsfield units (any shape).
    preset : str or (center, width)
        A name from :data:`WINDOW_PRESETS` or an explicit window in HU.
    dtype : {"float", "uint8"}
        ``float``: float32 in [0, 1]; ``uint8``: 0..255.
    """
    if isinstance(preset, str):
        if preset not in WINDOW_PRESETS:
            raise InputError(f"preset must be one of {sorted(WINDOW_PRESETS)} or (center, "
                             f"width), got {preset!r}")
        center, width = WINDOW_PRESETS[preset]
    else:
        try:
            center, width = (float(x) for x in preset)
        except (TypeError, ValueError):
            raise InputError(f"preset must be a name or (center, width), got {preset!r}") \
                from None
    if not width > 0:
        raise InputError(f"window width must be > 0, got {width}")
    a = np.asarray(hu, dtype=np.float32)
    out = np.clip((a - (center - width / 2)) / width, 0.0, 1.0)
    if dtype == "uint8":
        return np.round(out * 255).astype(np.uint8)
    if dtype != "float":
        raise InputError(f"dtype must be 'float' or 'uint8', got {dtype!r}")
    return out.astype(np.float32)
