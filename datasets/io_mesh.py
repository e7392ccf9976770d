"""STL (ascii and binary) and Wavefront OBJ mesh reader/writer.

STL stores a triangle soup in float32; reading welds exactly equal corners into shared
vertices so connected components and vertex normals work. OBJ polygons are fan-triangulated.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np

from arspine.datasets.io_common import atomic_write, check_finite, file_error, read_bytes
from arspine.navigation.geometry import Mesh

__all__ = ["read_stl", "write_stl", "read_obj", "write_obj"]

_STL_DTYPE = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_VERTEX_RE = re.compile(rb"vertex\s+(" + _FLOAT.encode() + rb")\s+(" + _FLOAT.encode()
                        + rb")\s+(" + _FLOAT.encode() + rb")", re.IGNORECASE)


def _weld(path, corners: np.ndarray, frame: str) -> Mesh:
    corners = corners.astype(np.float64)
    check_finite(path, corners, "triangle corners")
    if len(corners) == 0:
        raise file_error(path, "holds no triangles")
    verts, inverse = np.unique(corners, axis=0, return_inverse=True)
    return Mesh(verts, inverse.reshape(-1, 3), frame=frame)


def read_stl(path, *, frame: str = "ct") -> Mesh:
    """Read a binary or ascii STL as a welded :class:`Mesh` (mm, ``frame``)."""
    data = read_bytes(path, "STL file")
    if len(data) >= 84:
        (n,) = struct.unpack_from("<I", data, 80)
        if len(data) == 84 + 50 * n:
            tri = np.frombuffer(data, dtype=_STL_DTYPE, count=n, offset=84)
            return _weld(path, tri["v"].reshape(-1, 3), frame)
    if data.lstrip()[:5].lower() != b"solid":
        if len(data) >= 84:
            (n,) = struct.unpack_from("<I", data, 80)
            raise file_error(path, f"binary STL declares {n} triangles ({84 + 50 * n} bytes), "
                                   f"file has {len(data)} bytes (truncated or wrong count)")
        raise file_error(path, f"not an STL file ({len(data)} bytes, no 'solid' header)")
    vals = _VERTEX_RE.findall(data)
    nfacet = len(re.findall(rb"\bendfacet\b", data, re.IGNORECASE))
    if not re.search(rb"\bendsolid\b", data, re.IGNORECASE):
        raise file_error(path, "ascii STL has no 'endsolid' line (truncated?)")
    if len(vals) != 3 * nfacet:
        raise file_error(path, f"ascii STL has {nfacet} facets but {len(vals)} vertices "
                               f"(expected {3 * nfacet})")
    corners = np.array(vals, dtype=np.float64).reshape(-1, 3) if vals else np.zeros((0, 3))
    return _weld(path, corners, frame)


def write_stl(path, mesh: Mesh, binary: bool = True) -> None:
    """Write a mesh as STL (float32 coordinates; binary by default)."""
    tri = mesh.vertices[mesh.faces]
    normals = mesh.face_normals()
    name = (mesh.name or "arspine").replace(" ", "_")

    def write(f):
        if binary:
            arr = np.zeros(len(tri), dtype=_STL_DTYPE)
            arr["n"], arr["v"] = normals, tri
            head = f"arspine mesh {name}, mm, frame {mesh.frame}".encode("ascii")[:80]
            f.write(head.ljust(80, b" "))
            f.write(struct.pack("<I", len(tri)))
            f.write(arr.tobytes())
            return
        buf = io.StringIO()
        buf.write(f"solid {name}\n")
        for n, t in zip(normals, tri.astype(np.float32).astype(np.float64)):
            buf.write(f" facet normal {n[0]:.9g} {n[1]:.9g} {n[2]:.9g}\n  outer loop\n")
            for p in t:
                buf.write(f"   vertex {p[0]:.9g} {p[1]:.9g} {p[2]:.9g}\n")
            buf.write("  endloop\n endfacet\n")
        buf.write(f"endsolid {name}\n")
        f.write(buf.getvalue().encode("ascii"))

    atomic_write(path, write)


def _obj_index(path, tok: str, n: int, lineno: int) -> int:
    try:
        i = int(tok)
    except ValueError as exc:
        raise file_error(path, f"line {lineno}: bad vertex index {tok!r}") from exc
    i = i - 1 if i > 0 else n + i  # 1-based, negative = relative to the end
    if not 0 <= i < n:
        raise file_error(path, f"line {lineno}: vertex index {tok} outside 1..{n}")
    return i


def read_obj(path, *, frame: str = "ct") -> Mesh:
    """Read a Wavefront OBJ (``v``, ``vn``, ``f``; polygons fan-triangulated) as a
    :class:`Mesh` (mm, ``frame``). Normals are kept when each vertex has one normal."""
    text = read_bytes(path, "OBJ file").decode("latin-1")
    verts: list[list[str]] = []
    vnorms: list[list[str]] = []
    faces: list[tuple[int, int, int]] = []
    corner_normals: dict[int, int] = {}
    normals_ok = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        key = tok[0]
        if key == "v":
            if len(tok) < 4:
                raise file_error(path, f"line {lineno}: 'v' needs x y z: {line!r}")
            verts.append(tok[1:4])
        elif key == "vn":
            if len(tok) < 4:
                raise file_error(path, f"line {lineno}: 'vn' needs 3 values: {line!r}")
            vnorms.append(tok[1:4])
        elif key == "f":
            if len(tok) < 4:
                raise file_error(path, f"line {lineno}: a face needs at least 3 vertices")
            idx = []
            for t in tok[1:]:
                parts = t.split("/")
                vi = _obj_index(path, parts[0], len(verts), lineno)
                idx.append(vi)
                if len(parts) == 3 and parts[2]:
                    ni = _obj_index(path, parts[2], len(vnorms), lineno)
                    if corner_normals.setdefault(vi, ni) != ni:
                        normals_ok = False
                else:
                    normals_ok = False
            faces += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
    if not verts:
        raise file_error(path, "holds no vertices ('v' lines)")
    try:
        v = np.array(verts, dtype=np.float64)
        vn = np.array(vnorms, dtype=np.float64) if vnorms else None
    except ValueError as exc:
        raise file_error(path, "non-numeric vertex or normal coordinates") from exc
    check_finite(path, v, "vertices")
    normals = None
    if vn is not None and normals_ok and len(corner_normals) == len(v):
        order = np.array([corner_normals[i] for i in range(len(v))])
        normals = vn[order]
        check_finite(path, normals, "normals")
    f = np.array(faces, dtype=np.int64).reshape(-1, 3)
    return Mesh(v, f, normals=normals, frame=frame)


def write_obj(path, mesh: Mesh) -> None:
    """Write a mesh as OBJ (full float64 precision; ``vn`` and ``f i//i`` when it has
    vertex normals)."""

    def write(f):
        buf = io.StringIO()
        buf.write(f"# arspine mesh {mesh.name or ''}, mm, frame {mesh.frame}\n")
        if mesh.n_vertices:
            np.savetxt(buf, mesh.vertices, fmt="v %.17g %.17g %.17g")
        if mesh.normals is not None and mesh.n_vertices:
            np.savetxt(buf, mesh.normals, fmt="vn %.17g %.17g %.17g")
        if mesh.n_faces:
            fi = mesh.faces + 1
            if mesh.normals is not None:
                np.savetxt(buf, np.repeat(fi, 2, axis=1), fmt="f %d//%d %d//%d %d//%d")
            else:
                np.savetxt(buf, fi, fmt="f %d %d %d")
        f.write(buf.getvalue().encode("ascii"))

    atomic_write(path, write)
