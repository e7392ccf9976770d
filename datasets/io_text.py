"""Plain point tables: XYZ / CSV / TXT (whitespace or comma separated, optional header) and NPY.

Columns are named by a header line when there is one (``x,y,z,nx,ny,nz,red,green,blue`` or a
``# x y z ...`` comment); without one, 3 columns are ``x y z`` and 6 columns ``x y z`` plus
normals (unit rows) or colours (0..1 or 0..255), further columns become extras ``c6, c7, ...``.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from arspine.datasets.io_common import (
    assemble_cloud,
    atomic_write,
    cloud_columns,
    file_error,
    read_bytes,
)
from arspine.navigation.geometry import PointCloud

__all__ = ["read_text_points", "write_text_points", "read_npy_points", "write_npy_points"]

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$", re.IGNORECASE)


def _guess_names(path: str | os.PathLike, table: np.ndarray, suffix: str) -> list[str]:
    ncol = table.shape[1]
    if ncol < 3:
        raise file_error(path, f"needs at least 3 columns (x y z), found {ncol}")
    names = ["x", "y", "z"]
    if suffix == ".pts" and ncol in (4, 7):  # Leica: x y z intensity [r g b]
        return names + ["intensity"] + (["red", "green", "blue"] if ncol == 7 else [])
    if ncol >= 6:
        six = table[:, 3:6]
        finite = six[np.isfinite(six).all(axis=1)]
        unit = finite.size == 0 or bool(np.all(np.abs(np.linalg.norm(finite, axis=1) - 1) < 1e-3))
        if suffix == ".xyzn" or (suffix != ".xyzrgb" and unit):
            names += ["nx", "ny", "nz"]
        elif suffix == ".xyzrgb" or (finite.min() >= 0 and finite.max() <= 255):
            names += ["red", "green", "blue"]
        else:
            names += ["c3", "c4", "c5"]
    names += [f"c{i}" for i in range(len(names), ncol)]
    return names


def read_text_points(path: str | os.PathLike, *, frame: str = "sensor", drop_invalid: bool = False,
                     allow_empty: bool = False) -> PointCloud:
    """Read an XYZ/CSV/TXT point table as a :class:`PointCloud` (mm, ``frame``)."""
    data = read_bytes(path, "point file").decode("latin-1")
    lines = data.replace(",", " ").replace(";", " ").splitlines()
    header: list[str] | None = None
    start = len(lines)
    for i, line in enumerate(lines):  # header/comment lines before the first number row
        s = line.strip()
        if not s or s.startswith("//"):
            continue
        tok = s.lstrip("#").split()
        if s.startswith("#"):
            if tok and tok[0].lower() == "x" and header is None:
                header = tok
            continue
        if not all(_NUMBER.match(t) for t in tok):
            if header is None:
                header = tok  # first non-comment line with names
                continue
            raise file_error(path, f"line {i + 1} is not numeric: {line[:80]!r}")
        start = i
        break
    # The body in bulk: one split per line, one numpy conversion for everything.
    body = [(i, ln) for i, ln in enumerate(lines[start:], start=start + 1)
            if ln.strip() and not ln.lstrip().startswith(("#", "//"))]
    rows = [ln.split() for _, ln in body]
    try:
        flat = np.array([t for r in rows for t in r], dtype=np.float64)
    except ValueError:
        lineno, line = next((i, ln) for (i, ln), r in zip(body, rows)
                            if not all(_NUMBER.match(t) for t in r))
        raise file_error(path, f"line {lineno} is not numeric: {line[:80]!r}") from None
    if len(rows) > 1 and len(rows[0]) == 1 and rows[0][0].isdigit() \
            and int(rows[0][0]) == len(rows) - 1 and len(rows[1]) >= 3:
        rows = rows[1:]  # Leica .pts: the first line is the point count
    if not rows:
        if allow_empty:
            return PointCloud(np.zeros((0, 3)), frame=frame)
        raise file_error(path, "holds no points")
    ncols = {len(r) for r in rows}
    if len(ncols) != 1:
        first = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise file_error(path, f"rows have different numbers of columns ({sorted(ncols)}; "
                               f"data row {first} has {len(rows[first])}, row 0 has "
                               f"{len(rows[0])})")
    ncol = len(rows[0])
    table = flat[-len(rows) * ncol:].reshape(len(rows), ncol)
    suffix = str(path).lower().rsplit(".", 1)[-1]
    if header is not None:
        names = [h.lower() for h in header]
        if len(names) != table.shape[1]:
            raise file_error(path, f"header names {len(names)} columns ({' '.join(header)}), "
                                   f"rows hold {table.shape[1]}")
    else:
        names = _guess_names(path, table, "." + suffix)
    cols = {nm: table[:, i] for i, nm in enumerate(names)}
    return assemble_cloud(path, cols, frame=frame, drop_invalid=drop_invalid,
                          allow_empty=allow_empty)


def write_text_points(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Write a point table: ``.csv`` with a comma header line, otherwise (``.xyz``, ``.txt``)
    space separated under a ``# x y z ...`` comment line. Values at full float64 precision,
    colours as floats in 0..1 (as Open3D's ``.xyzrgb``)."""
    cols = cloud_columns(cloud)
    comma = str(path).lower().endswith(".csv")
    names = list(cols)
    fmts = ["%d" if nm == "label" else "%.17g" for nm in names]
    table = [np.asarray(cols[nm], dtype=np.float64) for nm in names]
    sep = "," if comma else " "
    head = sep.join(names) if comma else "# " + " ".join(names)

    def write(f):
        buf = io.StringIO()
        buf.write(head + "\n")
        if len(cloud):
            np.savetxt(buf, np.column_stack(table), fmt=fmts, delimiter=sep)
        f.write(buf.getvalue().encode("ascii"))

    atomic_write(path, write)


def read_npy_points(path: str | os.PathLike, *, frame: str = "sensor", drop_invalid: bool = False,
                    allow_empty: bool = False) -> PointCloud:
    """Read ``.npy``: an ``(N, 3+)`` numeric array or a structured array with named fields
    ``x y z [nx ny nz] [red green blue] [label] ...`` (no pickles)."""
    raw = read_bytes(path, "NPY file")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise file_error(path, f"not a readable .npy array ({exc})") from exc
    if arr.dtype.names:
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        cols = {nm: arr[nm] for nm in arr.dtype.names}
    else:
        if not np.issubdtype(arr.dtype, np.number):
            raise file_error(path, f"holds {arr.dtype} values, expected numbers")
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise file_error(path, f"array must be (N, 3) (or (N, 6) with normals/colours), "
                                   f"got {arr.shape}")
        arr = arr.astype(np.float64)
        names = _guess_names(path, arr, ".npy")
        cols = {nm: arr[:, i] for i, nm in enumerate(names)}
    return assemble_cloud(path, cols, frame=frame, drop_invalid=drop_invalid,
                          allow_empty=allow_empty)


def write_npy_points(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Write ``.npy``: a plain ``(N, 3)`` float64 array when the cloud has only points,
    otherwise a structured array with named fields (colours float in 0..1)."""
    cols = cloud_columns(cloud)
    if list(cols) == ["x", "y", "z"]:
        arr = np.ascontiguousarray(cloud.points, dtype=np.float64)
    else:
        dt = [(nm, "<i8" if nm == "label" else "<f8") for nm in cols]
        arr = np.empty(len(cloud), dtype=dt)
        for nm, v in cols.items():
            arr[nm] = v

    def write(f):
        np.save(f, arr, allow_pickle=False)

    atomic_write(path, write)
