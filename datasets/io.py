"""Point-cloud and mesh I/O: one entry point per job, dispatched on the file extension.

Points: ``.ply`` (ascii / binary little or big endian), ``.pcd`` (ascii, binary,
binary_compressed), ``.xyz`` ``.xyzn`` ``.xyzrgb`` ``.csv`` ``.txt`` (whitespace or comma,
optional header), ``.npy``; the vertices of ``.stl``/``.obj`` meshes. Meshes: ``.ply``,
``.stl`` (ascii / binary), ``.obj``. Depth images: 16-bit ``.png``, ``.tif``, ``.npy``
(:func:`read_depth_image`, then :func:`depth_to_points`). Coordinates are millimetres,
``(N, 3) float64``.

Every parser is our own numpy code (binary bodies through ``np.frombuffer``), so a broken file
raises :class:`~arspine.errors.InputError` naming the file and the problem -- truncated data,
header counts that do not match, NaN/inf coordinates, no points -- instead of silently
returning an empty cloud. Writes are atomic (temp file + ``os.replace``).

Examples
--------
>>> from arspine.datasets.io import read_points, write_points
>>> cloud = read_points("scan.pcd")                       # doctest: +SKIP
>>> write_points("scan.ply", cloud)                       # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from arspine.datasets.io_common import file_error
from arspine.datasets.io_depth import DEPTH_FORMATS, read_depth_image, write_depth_image
from arspine.datasets.io_mesh import read_obj, read_stl, write_obj, write_stl
from arspine.datasets.io_pcd import read_pcd_points, write_pcd_points
from arspine.datasets.io_ply import read_ply_mesh, read_ply_points, write_ply_mesh, write_ply_points
from arspine.datasets.io_text import (
    read_npy_points,
    read_text_points,
    write_npy_points,
    write_text_points,
)
from arspine.errors import InputError
from arspine.navigation.geometry import Mesh, PointCloud, as_points

__all__ = ["read_points", "write_points", "read_mesh", "write_mesh", "depth_to_points",
           "read_depth_image", "write_depth_image", "POINT_FORMATS", "MESH_FORMATS",
           "DEPTH_FORMATS"]

_TEXT = (".xyz", ".xyzn", ".xyzrgb", ".csv", ".txt", ".pts")
#: extensions :func:`read_points` / :func:`write_points` accept
POINT_FORMATS = (".ply", ".pcd", *_TEXT, ".npy", ".stl", ".obj")
#: extensions :func:`read_mesh` / :func:`write_mesh` accept
MESH_FORMATS = (".ply", ".stl", ".obj")


def _path(path: object, arg: str = "path") -> Path:
    if isinstance(path, (str, os.PathLike)) and str(path):
        return Path(path)
    raise InputError(f"{arg} must be a file path, got {type(path).__name__} {path!r}")


def _suffix(p: Path, allowed: tuple[str, ...], what: str) -> str:
    if p.is_dir():
        raise file_error(p, f"is a folder, expected a {what} file")
    s = p.suffix.lower()
    if s not in allowed:
        raise file_error(p, f"unknown {what} extension {p.suffix or '(none)'!r}; "
                            f"supported: {' '.join(allowed)}")
    return s


def read_points(path: str | os.PathLike, *, frame: str = "sensor", drop_invalid: bool = False,
                allow_empty: bool = False) -> PointCloud:
    """Read a point cloud.

    Parameters
    ----------
    path : str or path-like
        ``.ply .pcd .xyz .xyzn .xyzrgb .csv .txt .pts .npy`` (or the vertices of ``.stl``/
        ``.obj``).
    frame : str
        Frame the file's coordinates are in (``"sensor"`` for a scan, ``"ct"`` for a model).
    drop_invalid : bool
        Skip points whose coordinates or normals are NaN/inf (organised depth clouds)
        instead of raising.
    allow_empty : bool
        Return a 0-point cloud instead of raising when the file holds no points.

    Returns
    -------
    PointCloud
        ``points`` ``(N, 3)`` float64 mm in ``frame``; ``normals``/``colors`` (0..1) when
        stored; ``labels`` from a ``label`` field; other per-point fields in ``extra``.

    Raises
    ------
    InputError
        Missing or empty file, unknown extension, truncated data, header counts that do not
        match the data, NaN/inf values, no points. The message starts with the path.
    """
    p = _path(path)
    s = _suffix(p, POINT_FORMATS, "point-cloud")
    kw = dict(frame=frame, drop_invalid=drop_invalid, allow_empty=allow_empty)
    if s == ".ply":
        return read_ply_points(p, **kw)
    if s == ".pcd":
        return read_pcd_points(p, **kw)
    if s == ".npy":
        return read_npy_points(p, **kw)
    if s in _TEXT:
        return read_text_points(p, **kw)
    mesh = read_stl(p, frame=frame) if s == ".stl" else read_obj(p, frame=frame)
    return PointCloud(mesh.vertices, normals=mesh.normals, frame=frame)


def write_points(path: str | os.PathLike, cloud_or_points: PointCloud | np.ndarray,
                 binary: bool = True, *, compressed: bool = False,
                 frame: str = "sensor") -> Path:
    """Write a point cloud atomically.

    Parameters
    ----------
    path : str or path-like
        ``.ply`` (binary little endian or ascii), ``.pcd`` (binary, binary_compressed or
        ascii), ``.xyz``/``.txt`` (space separated, ``# x y z ...`` header), ``.csv`` (comma
        header), ``.npy``.
    cloud_or_points : PointCloud or array_like (N, 3)
        Points in mm (with normals, colours, labels and 1-D numeric extras when a
        PointCloud).
    binary : bool
        Binary PLY/PCD (ignored by the text formats and NPY).
    compressed : bool
        PCD ``binary_compressed`` (LZF).
    frame : str
        Frame recorded for a bare array (a PointCloud keeps its own).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    p = _path(path)
    s = _suffix(p, POINT_FORMATS[:-2], "point-cloud")
    cloud = cloud_or_points if isinstance(cloud_or_points, PointCloud) else \
        PointCloud(as_points(cloud_or_points, "cloud_or_points", allow_empty=True), frame=frame)
    if s == ".ply":
        write_ply_points(p, cloud, binary=binary)
    elif s == ".pcd":
        write_pcd_points(p, cloud, binary=binary, compressed=compressed)
    elif s == ".npy":
        write_npy_points(p, cloud)
    else:
        write_text_points(p, cloud)
    return p


def read_mesh(path: str | os.PathLike, *, frame: str = "ct") -> Mesh:
    """Read a triangle mesh.

    Parameters
    ----------
    path : str or path-like
        ``.ply`` (vertex + face elements), ``.stl`` (ascii or binary; corners welded),
        ``.obj`` (polygons fan-triangulated).
    frame : str
        Frame of the vertices.

    Returns
    -------
    Mesh
        ``vertices`` ``(V, 3)`` float64 mm, ``faces`` ``(F, 3)`` int64, vertex normals when
        stored (PLY, OBJ).

    Raises
    ------
    InputError
        As :func:`read_points`, plus a PLY without faces and out-of-range face indices.
    """
    p = _path(path)
    s = _suffix(p, MESH_FORMATS, "mesh")
    if s == ".ply":
        return read_ply_mesh(p, frame=frame)
    if s == ".stl":
        return read_stl(p, frame=frame)
    return read_obj(p, frame=frame)


def write_mesh(path: str | os.PathLike, mesh: Mesh, binary: bool = True) -> Path:
    """Write a mesh atomically: ``.ply`` (float64 vertices), ``.stl`` (float32, binary or
    ascii), ``.obj``. Returns the path written."""
    p = _path(path)
    s = _suffix(p, MESH_FORMATS, "mesh")
    if not isinstance(mesh, Mesh):
        raise InputError(f"mesh must be an arspine Mesh, got {type(mesh).__name__}")
    if s == ".ply":
        write_ply_mesh(p, mesh, binary=binary)
    elif s == ".stl":
        write_stl(p, mesh, binary=binary)
    else:
        write_obj(p, mesh)
    return p


def depth_to_points(depth_mm: np.ndarray, K: np.ndarray, *, depth_scale_mm: float = 1.0,
                    min_depth_mm: float = 0.0, max_depth_mm: float = np.inf, stride: int = 1,
                    frame: str = "sensor") -> PointCloud:
    """Back-project a depth image into the sensor frame.

    Sensor axes: x right, y down, z forward (along the optical axis); pixel ``(u, v)`` =
    column, row = ``K @ (x/z, y/z, 1)``.

    Parameters
    ----------
    depth_mm : array_like, (H, W)
        Depth along z per pixel, in units of ``depth_scale_mm`` millimetres (1.0 for mm,
        1000.0 for metres). 0, negative, NaN and inf mean "no return" and are skipped.
    K : array_like, (3, 3)
        Pinhole intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
    depth_scale_mm : float
        Millimetres per depth unit.
    min_depth_mm, max_depth_mm : float
        Keep depths in ``(min_depth_mm, max_depth_mm]``.
    stride : int
        Use every ``stride``-th row and column.
    frame : str
        Frame name of the result.

    Returns
    -------
    PointCloud
        ``(N, 3)`` points in mm, row-major pixel order; ``extra["pixel_uv"]`` ``(N, 2)``
        holds the source pixel (column, row).
    """
    d = np.asarray(depth_mm)
    if d.ndim != 2 or d.size == 0:
        raise InputError(f"depth_mm must be a 2-D (H, W) image, got shape {d.shape}")
    if not (np.issubdtype(d.dtype, np.number) or d.dtype == bool):
        raise InputError(f"depth_mm must be numeric, got dtype {d.dtype}")
    k = np.asarray(K, dtype=np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise InputError(f"K must be a finite 3x3 intrinsic matrix, got shape {k.shape}")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
        raise InputError(f"K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
                         f"got {k.tolist()}")
    if not (isinstance(stride, (int, np.integer)) and stride >= 1):
        raise InputError(f"stride must be a positive integer, got {stride!r}")
    if not (np.isfinite(depth_scale_mm) and depth_scale_mm > 0):
        raise InputError(f"depth_scale_mm must be positive, got {depth_scale_mm!r}")
    v, u = np.mgrid[0:d.shape[0]:stride, 0:d.shape[1]:stride]
    z = d[::stride, ::stride].astype(np.float64) * float(depth_scale_mm)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > max(min_depth_mm, 0.0)) & (z <= max_depth_mm)
    u, v, z = u[ok].astype(np.float64), v[ok].astype(np.float64), z[ok]
    fx, s, cx, fy, cy = k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]
    y = (v - cy) / fy
    x = (u - cx - s * y) / fx
    pts = np.column_stack([x * z, y * z, z])
    return PointCloud(pts, frame=frame, extra={"pixel_uv": np.column_stack([u, v])})
