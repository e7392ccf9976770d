"""STL (ascii and binary) and Wavefront OBJ mesh reader/writer.

STL stores a triangle soup in float32; reading welds exactly equal corners into shared
vertices so connected components and vertex normals work. OBJ polygons are fan-triangulated.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np

from arspine.datasets.io_common import atomic_write, check_finite, file_error, read_bytes
from arspine.navigation.geometry import Mesh

__all__ = ["read_stl", "write_stl", "read_obj", "write_obj"]

_STL_DTYPE = np.dtype([("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def _weld(path: str | os.PathLike, corners: np.ndarray, frame: str) -> Mesh:
    corners = corners.astype(np.float64)
    check_finite(path, corners, "triangle corners")
    if len(corners) == 0:
        raise file_error(path, "holds no triangles")
    verts, inverse = np.unique(corners, axis=0, return_inverse=True)
    return Mesh(verts, inverse.reshape(-1, 3), frame=frame)


def read_stl(path: str | os.PathLike, *, frame: str = "ct") -> Mesh:
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
    tok = np.array(data.lower().split())
    nfacet = int(np.count_nonzero(tok == b"endfacet"))
    if not np.any(tok == b"endsolid"):
        raise file_error(path, "ascii STL has no 'endsolid' line (truncated?)")
    at = np.flatnonzero(tok == b"vertex")
    if len(at) != 3 * nfacet or (len(at) and at[-1] + 3 >= len(tok)):
        raise file_error(path, f"ascii STL has {nfacet} facets but {len(at)} vertices "
                               f"(expected {3 * nfacet})")
    try:
        corners = tok[at[:, None] + np.arange(1, 4)].astype(np.float64)
    except ValueError as exc:
        raise file_error(path, "ascii STL has a non-numeric vertex coordinate") from exc
    return _weld(path, corners, frame)


def write_stl(path: str | os.PathLike, mesh: Mesh, binary: bool = True) -> None:
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
        tri32 = tri.astype(np.float32).astype(np.float64)
        rows = np.concatenate([normals, tri32.reshape(-1, 9)], axis=1)
        facet = (" facet normal %.9g %.9g %.9g\n  outer loop\n"
                 + "   vertex %.9g %.9g %.9g\n" * 3 + "  endloop\n endfacet")
        buf = io.StringIO()
        buf.write(f"solid {name}\n")
        if len(rows):
            np.savetxt(buf, rows, fmt=facet)
        buf.write(f"endsolid {name}\n")
        f.write(buf.getvalue().encode("ascii"))

    atomic_write(path, write)


def _obj_index(path: str | os.PathLike, tok: str, n: int, lineno: int) -> int:
    try:
        i = int(tok)
    except ValueError as exc:
        raise file_error(path, f"line {lineno}: bad vertex index {tok!r}") from exc
    i = i - 1 if i > 0 else n + i  # 1-based, negative = relative to the end
    if not 0 <= i < n:
        raise file_error(path, f"line {lineno}: vertex index {tok} outside 1..{n}")
    return i


def _read_obj_fast(path: str | os.PathLike, lines: list[str], frame: str) -> Mesh | None:
    """Vectorised path for the common case: triangles, positive indices, one normal per
    vertex. Returns None to fall back to the general parser."""
    v = [ln[2:] for ln in lines if ln.startswith("v ")]
    vn = [ln[3:] for ln in lines if ln.startswith("vn ")]
    f = [ln[2:].split() for ln in lines if ln.startswith("f ")]
    if not v or any(len(t) != 3 for t in f) or any("-" in c for t in f for c in t):
        return None
    try:
        verts = np.array(" ".join(v).split(), dtype=np.float64)
    except ValueError:
        return None
    if verts.size != 3 * len(v):
        return None
    verts = verts.reshape(-1, 3)
    corners = [c.split("/") for t in f for c in t]
    if len({len(c) for c in corners}) > 1:
        return None
    try:
        vi = np.array([c[0] for c in corners], dtype=np.int64).reshape(-1, 3) - 1
        ni = np.array([c[2] for c in corners], dtype=np.int64) - 1 \
            if corners and len(corners[0]) == 3 else None
    except ValueError:
        return None
    if vi.size and (vi.min() < 0 or vi.max() >= len(verts)):
        return None  # the general parser reports the bad line
    check_finite(path, verts, "vertices")
    normals = None
    if vn and ni is not None:
        nrm = np.array(" ".join(vn).split(), dtype=np.float64)
        if nrm.size == 3 * len(vn) and ni.min() >= 0 and ni.max() < len(vn):
            nrm = nrm.reshape(-1, 3)
            per_vertex = np.full(len(verts), -1)
            per_vertex[vi.reshape(-1)] = ni
            if (per_vertex >= 0).all() and np.array_equal(per_vertex[vi.reshape(-1)], ni):
                normals = nrm[per_vertex]
                check_finite(path, normals, "normals")
    return Mesh(verts, vi, normals=normals, frame=frame)


def read_obj(path: str | os.PathLike, *, frame: str = "ct") -> Mesh:
    """Read a Wavefront OBJ (``v``, ``vn``, ``f``; polygons fan-triangulated) as a
    :class:`Mesh` (mm, ``frame``). Normals are kept when each vertex has one normal."""
    text = read_bytes(path, "OBJ file").decode("latin-1")
    lines = text.splitlines()
    fast = _read_obj_fast(path, lines, frame)
    if fast is not None:
        return fast
    verts: list[list[str]] = []
    vnorms: list[list[str]] = []
    faces: list[tuple[int, int, int]] = []
    corner_normals: dict[int, int] = {}
    normals_ok = True
    for lineno, line in enumerate(lines, start=1):
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


def write_obj(path: str | os.PathLike, mesh: Mesh) -> None:
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
