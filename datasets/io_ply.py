"""PLY (Stanford polygon format) reader and writer: ascii, binary little and big endian.

Binary bodies are decoded with ``np.frombuffer`` on a structured dtype (one call per element);
list properties (faces) take a fast path when every row has the same length.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from arspine.datasets.io_common import (
    assemble_cloud,
    atomic_write,
    cloud_columns,
    colors_to_u8,
    file_error,
    read_bytes,
)
from arspine.navigation.geometry import Mesh, PointCloud

__all__ = ["PlyElement", "parse_ply", "read_ply_points", "read_ply_mesh", "write_ply_points",
           "write_ply_mesh"]

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int",
          "u4": "uint", "f4": "float", "f8": "double"}
_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class PlyElement:
    """One element of a PLY header: ``name``, row ``count`` and its properties.

    ``props`` holds ``(name, code)`` for scalars and ``(name, (count_code, item_code))`` for
    lists; codes are numpy type codes such as ``"f4"``.
    """

    name: str
    count: int
    props: list

    @property
    def has_lists(self) -> bool:
        return any(isinstance(c, tuple) for _, c in self.props)


def _parse_header(path: str | os.PathLike, data: bytes) -> tuple[str, list[PlyElement], int]:
    if not data.startswith(b"ply"):
        raise file_error(path, "not a PLY file (does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise file_error(path, "PLY header has no 'end_header' line (truncated?)")
    nl = data.find(b"\n", end)
    if nl < 0:
        raise file_error(path, "PLY file ends right after its header")
    header = data[:end].decode("latin-1").replace("\r", "").split("\n")
    fmt = None
    elements: list[PlyElement] = []
    for lineno, line in enumerate(header[1:], start=2):
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        try:
            if tok[0] == "format":
                fmt = tok[1]
                if fmt not in _FORMATS:
                    raise file_error(path, f"unknown PLY format {fmt!r}")
            elif tok[0] == "element":
                count = int(tok[2])
                if count < 0:
                    raise ValueError
                elements.append(PlyElement(tok[1], count, []))
            elif tok[0] == "property":
                if not elements:
                    raise file_error(path, f"header line {lineno}: property before any element")
                if tok[1] == "list":
                    code = (_TYPES[tok[2]], _TYPES[tok[3]])
                    name = tok[4]
                else:
                    code, name = _TYPES[tok[1]], tok[2]
                elements[-1].props.append((name, code))
            else:
                raise file_error(path, f"header line {lineno}: unknown keyword {tok[0]!r}")
        except (IndexError, KeyError, ValueError) as exc:
            raise file_error(path, f"header line {lineno} is malformed: {line!r}") from exc
    if fmt is None:
        raise file_error(path, "PLY header has no 'format' line")
    return fmt, elements, nl + 1


def _read_binary(path: str | os.PathLike, data: bytes, offset: int, el: PlyElement, endian: str
                 ) -> tuple[dict[str, np.ndarray | list], int]:
    def dt(code):
        return np.dtype(endian + code)

    if not el.has_lists:
        dtype = np.dtype([(n, dt(c)) for n, c in el.props])
        need = el.count * dtype.itemsize
        if offset + need > len(data):
            raise file_error(path, f"truncated: element '{el.name}' needs {need} bytes for "
                                   f"{el.count} rows, {len(data) - offset} left")
        arr = np.frombuffer(data, dtype=dtype, count=el.count, offset=offset)
        return {n: arr[n] for n, _ in el.props}, offset + need
    if el.count == 0:
        return {n: np.zeros((0, 3), dtype=np.int64) for n, _ in el.props}, offset
    # Fast path: every list in every row as long as in the first row.
    fields, pos = [], offset
    try:
        for n, c in el.props:
            if isinstance(c, tuple):
                length = int(np.frombuffer(data, dt(c[0]), 1, pos)[0])
                fields += [(f"__n_{n}", dt(c[0])), (n, dt(c[1]), (int(length),))]
                pos += dt(c[0]).itemsize + int(length) * dt(c[1]).itemsize
            else:
                fields.append((n, dt(c)))
                pos += dt(c).itemsize
    except ValueError as exc:
        raise file_error(path, f"truncated inside element '{el.name}'") from exc
    dtype = np.dtype(fields)
    need = el.count * dtype.itemsize
    if offset + need <= len(data):
        arr = np.frombuffer(data, dtype=dtype, count=el.count, offset=offset)
        uniform = all(np.all(arr[f"__n_{n}"] == arr.dtype[n].shape[0])
                      for n, c in el.props if isinstance(c, tuple))
        if uniform:
            return {n: np.array(arr[n]) for n, _ in el.props}, offset + need
    # General path (mixed polygon sizes): row by row.
    out: dict[str, list] = {n: [] for n, _ in el.props}
    pos = offset
    try:
        for _ in range(el.count):
            for n, c in el.props:
                if isinstance(c, tuple):
                    length = int(np.frombuffer(data, dt(c[0]), 1, pos)[0])
                    pos += dt(c[0]).itemsize
                    if length < 0:
                        raise file_error(path, f"negative list length in '{el.name}'")
                    out[n].append(np.frombuffer(data, dt(c[1]), int(length), pos))
                    pos += int(length) * dt(c[1]).itemsize
                else:
                    out[n].append(np.frombuffer(data, dt(c), 1, pos)[0])
                    pos += dt(c).itemsize
    except ValueError as exc:
        raise file_error(path, f"truncated inside element '{el.name}' "
                               f"({el.count} rows declared)") from exc
    return {n: (v if isinstance(c, tuple) else np.array(v))
            for (n, c), v in zip(el.props, out.values())}, pos


def _read_ascii(path: str | os.PathLike, lines: list[bytes], start: int, el: PlyElement
                ) -> tuple[dict[str, np.ndarray | list], int]:
    rows = lines[start:start + el.count]
    if len(rows) < el.count:
        raise file_error(path, f"truncated: element '{el.name}' declares {el.count} rows, "
                               f"found {len(rows)}")
    if not el.has_lists:
        ncol = len(el.props)
        try:
            vals = np.array(b" ".join(rows).split(), dtype=np.float64)
        except ValueError as exc:
            raise file_error(path, f"non-numeric value in element '{el.name}'") from exc
        if vals.size != el.count * ncol:
            raise file_error(path, f"element '{el.name}' should hold {ncol} values per row "
                                   f"x {el.count} rows, found {vals.size} values")
        vals = vals.reshape(el.count, ncol)
        return {n: vals[:, i].astype(c) for i, (n, c) in enumerate(el.props)}, start + el.count
    out: dict[str, list] = {n: [] for n, _ in el.props}
    for r, row in enumerate(rows):
        tok = row.split()
        i = 0
        try:
            for n, c in el.props:
                if isinstance(c, tuple):
                    k = int(tok[i])
                    if k < 0 or i + 1 + k > len(tok):
                        raise ValueError
                    out[n].append(np.array(tok[i + 1:i + 1 + k], dtype=np.float64).astype(c[1]))
                    i += 1 + k
                else:
                    out[n].append(float(tok[i]))
                    i += 1
        except (ValueError, IndexError) as exc:
            raise file_error(path, f"element '{el.name}' row {r} is malformed: "
                                   f"{row.decode('latin-1')!r}") from exc
    res: dict[str, np.ndarray | list] = {}
    for n, c in el.props:
        v = out[n]
        if isinstance(c, tuple):
            lens = {len(x) for x in v}
            res[n] = np.array(v) if len(lens) == 1 else v
        else:
            res[n] = np.array(v).astype(c)
    return res, start + el.count


def parse_ply(path: os.PathLike | str, only: set[str] | None = None
              ) -> dict[str, dict[str, np.ndarray | list]]:
    """Parse a PLY file into ``{element: {property: values}}``.

    Scalar properties come back as ``(count,)`` arrays; list properties as ``(count, L)``
    arrays when every row has ``L`` entries, else as a list of 1-D arrays.
    Every element is read (so wrong header counts are caught); ``only`` filters the result.
    """
    data = read_bytes(path, "PLY file")
    fmt, elements, offset = _parse_header(path, data)
    out: dict[str, dict] = {}
    if fmt == "ascii":
        lines = [ln for ln in data[offset:].split(b"\n") if ln.strip()]
        pos = 0
        for el in elements:
            out[el.name], pos = _read_ascii(path, lines, pos, el)
        if pos < len(lines):
            raise file_error(path, f"{len(lines) - pos} more data lines than the header declares "
                                   f"(wrong element counts?)")
    else:
        for el in elements:
            out[el.name], offset = _read_binary(path, data, offset, el, _FORMATS[fmt])
        if data[offset:].strip():
            raise file_error(path, f"{len(data) - offset} bytes after the last element "
                                   f"(wrong element counts in the header?)")
    return out if only is None else {k: v for k, v in out.items() if k in only}


def read_ply_points(path: str | os.PathLike, *, frame: str = "sensor", drop_invalid: bool = False,
                    allow_empty: bool = False) -> PointCloud:
    """The ``vertex`` element of a PLY file as a :class:`PointCloud` (mm, ``frame``)."""
    elements = parse_ply(path, only={"vertex"})
    if "vertex" not in elements:
        raise file_error(path, "PLY file has no 'vertex' element")
    return assemble_cloud(path, elements["vertex"], frame=frame, drop_invalid=drop_invalid,
                          allow_empty=allow_empty)


def _triangulate(path: str | os.PathLike, faces) -> np.ndarray:
    if isinstance(faces, np.ndarray):
        if faces.ndim != 2 or faces.shape[1] < 3:
            if faces.size == 0:
                return np.zeros((0, 3), dtype=np.int64)
            raise file_error(path, f"faces must have at least 3 vertices, got {faces.shape[1]}")
        if faces.shape[1] == 3:
            return faces.astype(np.int64)
        polys = list(faces)
    else:
        polys = faces
    tris = []
    for p in polys:  # fan triangulation of convex polygons
        if len(p) < 3:
            raise file_error(path, f"a face has {len(p)} vertices (needs at least 3)")
        p = np.asarray(p, dtype=np.int64)
        tris.append(np.stack([np.full(len(p) - 2, p[0]), p[1:-1], p[2:]], axis=1))
    return np.concatenate(tris) if tris else np.zeros((0, 3), dtype=np.int64)


def read_ply_mesh(path: str | os.PathLike, *, frame: str = "ct") -> Mesh:
    """A PLY file with ``vertex`` and ``face`` elements as a :class:`Mesh` (mm)."""
    elements = parse_ply(path, only={"vertex", "face"})
    cloud = assemble_cloud(path, elements.get("vertex", {}), frame=frame)
    face_el = elements.get("face")
    if face_el is None:
        raise file_error(path, "PLY file has no 'face' element (a point cloud, not a mesh; "
                               "use read_points)")
    key = next((k for k in ("vertex_indices", "vertex_index") if k in face_el), None)
    if key is None:
        raise file_error(path, "PLY 'face' element has no 'vertex_indices' list")
    faces = _triangulate(path, face_el[key])
    if faces.size and (faces.min() < 0 or faces.max() >= len(cloud)):
        raise file_error(path, f"face indices {int(faces.min())}..{int(faces.max())} outside "
                               f"the {len(cloud)} vertices")
    extra = {}
    if cloud.colors is not None:
        extra["vertex_colors"] = cloud.colors
    return Mesh(cloud.points, faces, normals=cloud.normals, frame=frame, extra=extra)


def _vertex_table(cols: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, str]]:
    table = []
    for name, v in cols.items():
        if name in ("red", "green", "blue"):
            table.append((name, colors_to_u8(v), "u1"))
        elif name == "label":
            table.append((name, np.asarray(v).astype(np.int32), "i4"))
        else:
            table.append((name, np.asarray(v, dtype=np.float64), "f8"))
    return table


def _write(path: str | os.PathLike, elements: list[tuple[str, list[tuple[str, np.ndarray, str]]]],
           faces: np.ndarray | None, binary: bool, comment: str) -> None:
    fmt = "binary_little_endian" if binary else "ascii"
    head = ["ply", f"format {fmt} 1.0", f"comment {comment}"]
    for name, table in elements:
        head.append(f"element {name} {len(table[0][1]) if table else 0}")
        head += [f"property {_NAMES[c]} {n}" for n, _, c in table]
    if faces is not None:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head.append("end_header")

    def write(f):
        f.write(("\n".join(head) + "\n").encode("ascii"))
        for _, table in elements:
            n = len(table[0][1])
            if binary:
                arr = np.empty(n, dtype=[(nm, "<" + c) for nm, _, c in table])
                for nm, v, _ in table:
                    arr[nm] = v
                f.write(arr.tobytes())
            else:
                buf = io.StringIO()
                fmts = ["%.17g" if c.startswith("f") else "%d" for _, _, c in table]
                np.savetxt(buf, np.column_stack([v.astype(np.float64) for _, v, _ in table]),
                           fmt=fmts)
                f.write(buf.getvalue().encode("ascii"))
        if faces is not None:
            if binary:
                arr = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
                arr["n"], arr["i"] = 3, faces
                f.write(arr.tobytes())
            else:
                buf = io.StringIO()
                np.savetxt(buf, np.column_stack([np.full(len(faces), 3), faces]), fmt="%d")
                f.write(buf.getvalue().encode("ascii"))

    atomic_write(path, write)


def write_ply_points(path: str | os.PathLike, cloud: PointCloud, binary: bool = True) -> None:
    """Write a point cloud as a vertex-only PLY (double xyz/normals, uchar colours)."""
    _write(path, [("vertex", _vertex_table(cloud_columns(cloud)))], None, binary,
           f"arspine point cloud, mm, frame {cloud.frame}")


def write_ply_mesh(path: str | os.PathLike, mesh: Mesh, binary: bool = True) -> None:
    """Write a triangle mesh as PLY (double vertices, int32 triangle indices)."""
    cols = {"x": mesh.vertices[:, 0], "y": mesh.vertices[:, 1], "z": mesh.vertices[:, 2]}
    if mesh.normals is not None:
        cols.update(nx=mesh.normals[:, 0], ny=mesh.normals[:, 1], nz=mesh.normals[:, 2])
    vc = mesh.extra.get("vertex_colors") if isinstance(mesh.extra, dict) else None
    if vc is not None and np.shape(vc) == (mesh.n_vertices, 3):
        cols.update(red=vc[:, 0], green=vc[:, 1], blue=vc[:, 2])
    _write(path, [("vertex", _vertex_table(cols))], mesh.faces, binary,
           f"arspine mesh{' ' + mesh.name if mesh.name else ''}, mm, frame {mesh.frame}")
