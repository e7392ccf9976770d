"""Helpers shared by the point-cloud and mesh readers/writers of :mod:`arspine.datasets.io`.

Every reader reports a broken file as :class:`~arspine.errors.InputError` whose message starts
with the file's path; every writer goes through :func:`atomic_write` (temp file in the same
folder, then ``os.replace``) so a crash never leaves half a file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from arspine.atomic import atomic_path
from arspine.errors import InputError
from arspine.navigation.geometry import PointCloud

__all__ = ["file_error", "read_bytes", "atomic_write", "assemble_cloud", "colors_to_u8",
           "u8_to_colors", "check_finite", "cloud_columns", "PLY_LIKE_NAMES"]

#: property names mapped onto the PointCloud attributes (lower case).
PLY_LIKE_NAMES = {
    "x": ("points", 0), "y": ("points", 1), "z": ("points", 2),
    "nx": ("normals", 0), "ny": ("normals", 1), "nz": ("normals", 2),
    "normal_x": ("normals", 0), "normal_y": ("normals", 1), "normal_z": ("normals", 2),
    "red": ("colors", 0), "green": ("colors", 1), "blue": ("colors", 2),
    "r": ("colors", 0), "g": ("colors", 1), "b": ("colors", 2),
    "diffuse_red": ("colors", 0), "diffuse_green": ("colors", 1), "diffuse_blue": ("colors", 2),
}


def file_error(path: os.PathLike | str, problem: str) -> InputError:
    """``InputError("<path>: <problem>")``: every message names the file."""
    return InputError(f"{path}: {problem}")


def read_bytes(path: os.PathLike | str, what: str = "file") -> bytes:
    """The whole file, or a clear :class:`InputError` when missing, a folder or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected a {what}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{p}: file is empty (0 bytes)")
    return data


def atomic_write(path: os.PathLike | str, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temp file beside ``path`` and move it into place atomically.

    Returns
    -------
    pathlib.Path
        The final path.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{p}: output folder {folder} does not exist")
    with atomic_path(p, makedirs=False) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return p


def check_finite(path: os.PathLike | str, arr: np.ndarray, what: str) -> None:
    """Raise naming the file and the first bad row when ``arr`` holds NaN or inf."""
    if arr.size and not np.all(np.isfinite(arr)):
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        first = int(np.argmax(bad))
        raise file_error(path, f"{int(bad.sum())} of {len(arr)} {what} hold NaN or inf "
                               f"(first at row {first}); pass drop_invalid=True to skip them")


def u8_to_colors(c: np.ndarray) -> np.ndarray:
    """0..255 integers to float64 colours in [0, 1]."""
    return np.asarray(c, dtype=np.float64) / 255.0


def colors_to_u8(c: np.ndarray) -> np.ndarray:
    """float colours in [0, 1] to uint8 (clipped, rounded)."""
    return np.clip(np.rint(np.asarray(c, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def assemble_cloud(path: os.PathLike | str, columns: dict[str, np.ndarray], *,
                   colors_are_u8: bool | None = None, frame: str = "sensor",
                   drop_invalid: bool = False, allow_empty: bool = False) -> PointCloud:
    """Build a :class:`PointCloud` from named per-point columns.

    Parameters
    ----------
    path : path-like
        File the columns came from (for messages).
    columns : dict of str -> (N,) array
        Property name (case-insensitive) to values. ``x y z`` are required; ``nx..``/
        ``normal_x..`` become normals, ``red green blue``/``r g b`` colours, ``label`` labels,
        everything else goes to ``extra``.
    colors_are_u8 : bool or None
        Colour values are 0..255 (None: decide from the data type / value range).
    frame : str
        Frame the points are in.
    drop_invalid : bool
        Drop rows whose points or normals are NaN/inf instead of raising.
    allow_empty : bool
        Accept a cloud with zero points.
    """
    lower = {k.lower(): np.asarray(v) for k, v in columns.items()}
    for axis in "xyz":
        if axis not in lower:
            raise file_error(path, f"no '{axis}' field/property (found: "
                                   f"{', '.join(columns) or 'none'})")
    n = len(lower["x"])
    groups: dict[str, list[np.ndarray | None]] = {"points": [None] * 3, "normals": [None] * 3,
                                                  "colors": [None] * 3}
    color_dtypes = []
    extra: dict[str, np.ndarray] = {}
    labels = None
    for name, values in lower.items():
        if name in PLY_LIKE_NAMES:
            g, i = PLY_LIKE_NAMES[name]
            groups[g][i] = values
            if g == "colors":
                color_dtypes.append(values.dtype)
        elif name in ("label", "labels"):
            labels = values.astype(np.int64)
        else:
            extra[name] = values
    pts = np.stack(groups["points"], axis=1).astype(np.float64)
    normals = colors = None
    if all(c is not None for c in groups["normals"]):
        normals = np.stack(groups["normals"], axis=1).astype(np.float64)
    elif any(c is not None for c in groups["normals"]):
        raise file_error(path, "has only some of the normal components nx ny nz")
    if all(c is not None for c in groups["colors"]):
        colors = np.stack(groups["colors"], axis=1).astype(np.float64)
        if colors_are_u8 is None:
            colors_are_u8 = any(np.issubdtype(d, np.integer) for d in color_dtypes) or \
                bool(colors.size and np.nanmax(colors) > 1.0)
        if colors_are_u8:
            colors = colors / 255.0
        if colors.size and (np.nanmin(colors) < 0 or np.nanmax(colors) > 1):
            raise file_error(path, f"colours outside 0..1 (or 0..255): range "
                                   f"{np.nanmin(colors):g}..{np.nanmax(colors):g}")
    if drop_invalid:
        ok = np.isfinite(pts).all(axis=1)
        if normals is not None:
            ok &= np.isfinite(normals).all(axis=1)
        if not ok.all():
            pts = pts[ok]
            normals = None if normals is None else normals[ok]
            colors = None if colors is None else colors[ok]
            labels = None if labels is None else labels[ok]
            extra = {k: v[ok] for k, v in extra.items()}
    check_finite(path, pts, "points")
    if normals is not None:
        check_finite(path, normals, "normals")
    if colors is not None:
        check_finite(path, colors, "colours")
    if len(pts) == 0 and not allow_empty:
        raise file_error(path, "holds no points" if n == 0 else "holds no valid points")
    return PointCloud(points=pts, normals=normals, colors=colors, labels=labels, frame=frame,
                      extra=extra)


def cloud_columns(cloud: PointCloud) -> dict[str, np.ndarray]:
    """The inverse of :func:`assemble_cloud`: named (N,) columns, colours as float in [0, 1]."""
    cols = {"x": cloud.points[:, 0], "y": cloud.points[:, 1], "z": cloud.points[:, 2]}
    if cloud.normals is not None:
        cols.update(nx=cloud.normals[:, 0], ny=cloud.normals[:, 1], nz=cloud.normals[:, 2])
    if cloud.colors is not None:
        cols.update(red=cloud.colors[:, 0], green=cloud.colors[:, 1], blue=cloud.colors[:, 2])
    if cloud.labels is not None:
        cols["label"] = np.asarray(cloud.labels)
    for k, v in getattr(cloud, "extra", {}).items():
        v = np.asarray(v)
        if v.shape == (len(cloud),) and np.issubdtype(v.dtype, np.number):
            cols[k] = v
    return cols
