"""PCD (Point Cloud Library) reader and writer: ``DATA ascii``, ``binary`` and
``binary_compressed`` (LZF, column-major), fields ``x y z`` plus normals, packed ``rgb``/``rgba``,
``label`` and any extras (kept in ``PointCloud.extra``).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from arspine.datasets.io_common import (
    assemble_cloud,
    atomic_write,
    cloud_columns,
    colors_to_u8,
    file_error,
    read_bytes,
)
from arspine.navigation.geometry import PointCloud

__all__ = ["read_pcd_points", "write_pcd_points", "lzf_decompress", "lzf_compress_literal"]

_TYPE = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
         ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def lzf_decompress(src: bytes, out_len: int) -> bytes:
    """Decompress liblzf data (the format of PCD ``binary_compressed``).

    Raises
    ------
    ValueError
        On corrupt input (a back reference before the start, or a size mismatch).
    """
    fast = _literal_only(src, out_len)
    if fast is not None:
        return fast
    out = bytearray(out_len)
    ip, op, n = 0, 0, len(src)
    while ip < n:
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            ctrl += 1
            if op + ctrl > out_len or ip + ctrl > n:
                raise ValueError("literal run past the end")
            out[op:op + ctrl] = src[ip:ip + ctrl]
            ip += ctrl
            op += ctrl
            continue
        length = ctrl >> 5  # back reference
        ref = op - ((ctrl & 0x1F) << 8) - 1
        if length == 7:
            if ip >= n:
                raise ValueError("truncated back reference")
            length += src[ip]
            ip += 1
        if ip >= n:
            raise ValueError("truncated back reference")
        ref -= src[ip]
        ip += 1
        length += 2
        if ref < 0 or op + length > out_len:
            raise ValueError("back reference outside the output")
        if ref + length <= op:
            out[op:op + length] = out[ref:ref + length]
        else:  # an overlapping copy repeats the last op - ref bytes
            period = out[ref:op]
            out[op:op + length] = (period * (length // len(period) + 1))[:length]
        op += length
    if op != out_len:
        raise ValueError(f"decompressed {op} bytes, header says {out_len}")
    return bytes(out)


def _literal_only(src: bytes, out_len: int) -> bytes | None:
    """Decode a stream of 32-byte literal runs (what :func:`lzf_compress_literal` writes) in
    one numpy step; None when the stream is anything else. Parsing is deterministic, so
    control bytes of 31 at every 33rd byte plus a valid tail mean literal runs only."""
    nfull, rest = divmod(out_len, 32)
    if len(src) != nfull * 33 + (rest + 1 if rest else 0):
        return None
    a = np.frombuffer(src, dtype=np.uint8)
    if nfull and not np.all(a[:nfull * 33:33] == 31):
        return None
    if rest and a[nfull * 33] != rest - 1:
        return None
    body = a[:nfull * 33].reshape(nfull, 33)[:, 1:].tobytes()
    return body + (a[nfull * 33 + 1:].tobytes() if rest else b"")


def lzf_compress_literal(data: bytes) -> bytes:
    """A valid LZF stream of literal runs only (no back references).

    Readers decode it like any LZF data; it is 1/32 larger than the input, which keeps the
    writer simple and fast in pure numpy.
    """
    n = len(data)
    if n == 0:
        return b""
    nfull, rest = divmod(n, 32)
    body = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(nfull * 33 + (rest + 1 if rest else 0), dtype=np.uint8)
    if nfull:
        blocks = out[:nfull * 33].reshape(nfull, 33)
        blocks[:, 0] = 31
        blocks[:, 1:] = body[:nfull * 32].reshape(nfull, 32)
    if rest:
        out[nfull * 33] = rest - 1
        out[nfull * 33 + 1:] = body[nfull * 32:]
    return out.tobytes()


def _parse_header(path: str | os.PathLike, data: bytes) -> tuple[dict[str, list[str]], int]:
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise file_error(path, "PCD header has no DATA line (truncated or not a PCD file)")
        line = data[pos:nl].decode("latin-1").strip()
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        header[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            return header, pos
        if len(header) > 20:
            raise file_error(path, "not a PCD file (no DATA line in the header)")


def _int(path: str | os.PathLike, header, key, default=None) -> int:
    vals = header.get(key)
    if vals is None:
        if default is None:
            raise file_error(path, f"PCD header has no {key} line")
        return default
    try:
        v = int(vals[0])
    except (ValueError, IndexError) as exc:
        raise file_error(path, f"PCD header {key} is not an integer: {' '.join(vals)!r}") from exc
    if v < 0:
        raise file_error(path, f"PCD header {key} is negative: {v}")
    return v


def _unpack_rgb(values: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(values).view(np.uint32) if values.dtype.itemsize == 4 \
        else values.astype(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1).astype(np.float64) / 255


def read_pcd_points(path: str | os.PathLike, *, frame: str = "sensor", drop_invalid: bool = False,
                    allow_empty: bool = False) -> PointCloud:
    """Read a PCD file as a :class:`PointCloud` (mm, ``frame``); see the module docstring."""
    data = read_bytes(path, "PCD file")
    header, offset = _parse_header(path, data)
    fields = header.get("FIELDS")
    if not fields:
        raise file_error(path, "PCD header has no FIELDS line")
    nf = len(fields)
    sizes = header.get("SIZE", [])
    types = header.get("TYPE", [])
    counts = header.get("COUNT", ["1"] * nf)
    if not (len(sizes) == len(types) == len(counts) == nf):
        raise file_error(path, f"PCD header FIELDS ({nf}), SIZE ({len(sizes)}), TYPE "
                               f"({len(types)}) and COUNT ({len(counts)}) differ in length")
    try:
        codes = [_TYPE[(t.upper(), int(s))] for t, s in zip(types, sizes)]
        counts_i = [int(c) for c in counts]
    except (KeyError, ValueError) as exc:
        raise file_error(path, f"PCD header has an unknown TYPE/SIZE pair: "
                               f"{list(zip(types, sizes))}") from exc
    width = _int(path, header, "WIDTH")
    height = _int(path, header, "HEIGHT", 1)
    n = _int(path, header, "POINTS", width * height)
    if n != width * height:
        raise file_error(path, f"PCD header POINTS {n} != WIDTH {width} x HEIGHT {height}")
    kind = (header["DATA"] or ["?"])[0].lower()
    dtype = np.dtype([(f"f{i}", "<" + c, (k,) if k > 1 else ()) for i, (c, k)
                      in enumerate(zip(codes, counts_i))])
    if kind == "ascii":
        ncol = sum(counts_i)
        lines = [ln for ln in data[offset:].split(b"\n") if ln.strip()]
        if len(lines) != n:
            raise file_error(path, f"PCD header declares {n} points, found {len(lines)} data "
                                   f"lines")
        try:
            vals = np.array(b" ".join(lines).split(), dtype=np.float64)
        except ValueError as exc:
            raise file_error(path, "non-numeric value in the PCD data") from exc
        if vals.size != n * ncol:
            raise file_error(path, f"PCD data should hold {ncol} values per point x {n} points, "
                                   f"found {vals.size}")
        vals = vals.reshape(n, ncol)
        arr = np.empty(n, dtype=dtype)
        col = 0
        for i, k in enumerate(counts_i):
            v = vals[:, col:col + k] if k > 1 else vals[:, col]
            if fields[i].lower() in ("rgb", "rgba") and codes[i] == "f4":
                v = v.astype(np.float32)  # packed colour bits survive via float32
            arr[f"f{i}"] = v
            col += k
    elif kind == "binary":
        need = n * dtype.itemsize
        if offset + need > len(data):
            raise file_error(path, f"truncated: {n} points need {need} bytes of binary data, "
                                   f"found {len(data) - offset}")
        if data[offset + need:].strip():
            raise file_error(path, f"{len(data) - offset - need} bytes after the {n} declared "
                                   f"points (wrong POINTS/WIDTH in the header?)")
        arr = np.frombuffer(data, dtype=dtype, count=n, offset=offset)
    elif kind == "binary_compressed":
        if offset + 8 > len(data):
            raise file_error(path, "truncated: no compressed-size header after DATA")
        csize, usize = struct.unpack_from("<II", data, offset)
        if usize != n * dtype.itemsize:
            raise file_error(path, f"PCD compressed block holds {usize} bytes, {n} points need "
                                   f"{n * dtype.itemsize}")
        if usize > 200 * csize + 64:  # LZF expands at most ~130x: the sizes are corrupt
            raise file_error(path, f"corrupt compressed block: {usize} bytes from {csize}")
        if offset + 8 + csize > len(data):
            raise file_error(path, f"truncated: compressed block of {csize} bytes, "
                                   f"{len(data) - offset - 8} present")
        try:
            raw = lzf_decompress(data[offset + 8:offset + 8 + csize], usize)
        except ValueError as exc:
            raise file_error(path, f"corrupt LZF data: {exc}") from exc
        arr = np.empty(n, dtype=dtype)
        pos = 0
        for i in range(nf):  # column-major: all values of field 0, then field 1, ...
            sub = dtype[f"f{i}"]
            arr[f"f{i}"] = np.frombuffer(raw, dtype=sub.base, count=n * max(1, counts_i[i]),
                                         offset=pos).reshape(arr[f"f{i}"].shape)
            pos += n * sub.itemsize
    else:
        raise file_error(path, f"unknown PCD DATA kind {kind!r} (ascii, binary, "
                               f"binary_compressed)")
    columns: dict[str, np.ndarray] = {}
    colors = None
    for i, name in enumerate(fields):
        v = arr[f"f{i}"]
        if name == "_":  # PCL padding
            continue
        if name.lower() in ("rgb", "rgba") and counts_i[i] == 1:
            colors = _unpack_rgb(v)
            continue
        columns[name] = v
    if colors is not None:
        columns.update(red=colors[:, 0], green=colors[:, 1], blue=colors[:, 2])
    return assemble_cloud(path, columns, colors_are_u8=False, frame=frame,
                          drop_invalid=drop_invalid, allow_empty=allow_empty)


def write_pcd_points(path: str | os.PathLike, cloud: PointCloud, binary: bool = True,
                     compressed: bool = False) -> None:
    """Write a PCD v0.7 file readable by PCL and Open3D: ``x y z`` and ``normal_x..`` as
    float32 (F 4, as PCL's point types: ~1e-5 mm at 100 mm; use PLY or NPY for exact float64),
    packed ``rgb`` (F 4), ``label`` (U 4) and numeric 1-D extras (F 8); ``DATA binary`` (or
    ``binary_compressed`` with ``compressed=True``) or ``ascii``."""
    cols = cloud_columns(cloud)
    names, arrays, codes = [], [], []
    rename = {"nx": "normal_x", "ny": "normal_y", "nz": "normal_z"}
    for name, v in cols.items():
        if name in ("red", "green", "blue"):
            continue
        if name == "label":
            names.append("label")
            arrays.append(np.asarray(v).astype(np.uint32))
            codes.append("u4")
        elif name in ("x", "y", "z", "nx", "ny", "nz"):
            # float32 as PCL's point types; Open3D 0.20 misreads binary F 8 coordinates.
            names.append(rename.get(name, name))
            arrays.append(np.asarray(v, dtype=np.float32))
            codes.append("f4")
        else:
            names.append(name)
            arrays.append(np.asarray(v, dtype=np.float64))
            codes.append("f8")
    if cloud.colors is not None:
        c = colors_to_u8(cloud.colors).astype(np.uint32)
        packed = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32)
        names.append("rgb")
        arrays.append(packed.view(np.float32))
        codes.append("f4")
    n = len(cloud)
    kind = ("binary_compressed" if compressed else "binary") if binary else "ascii"
    head = ["# .PCD v0.7 - Point Cloud Data file format (arspine, mm, frame "
            f"{cloud.frame})", "VERSION 0.7",
            "FIELDS " + " ".join(names),
            "SIZE " + " ".join(c[1] for c in codes),
            "TYPE " + " ".join(c[0].upper() for c in codes),
            "COUNT " + " ".join("1" for _ in codes),
            f"WIDTH {n}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {n}", f"DATA {kind}"]

    def write(f):
        f.write(("\n".join(head) + "\n").encode("ascii"))
        if kind == "ascii":
            cells = []
            for v, c in zip(arrays, codes):
                if c == "u4":
                    cells.append(np.char.mod("%d", v))
                elif c == "f4":
                    cells.append(np.char.mod("%.9g", v.astype(np.float64)))
                else:
                    cells.append(np.char.mod("%.17g", v))
            rows = [" ".join(r) for r in zip(*cells)]
            f.write(("\n".join(rows) + ("\n" if rows else "")).encode("ascii"))
            return
        if kind == "binary":
            arr = np.empty(n, dtype=[(nm, "<" + c) for nm, c in zip(names, codes)])
            for nm, v in zip(names, arrays):
                arr[nm] = v
            f.write(arr.tobytes())
            return
        raw = b"".join(np.ascontiguousarray(v.astype("<" + c)).tobytes()
                       for v, c in zip(arrays, codes))
        comp = lzf_compress_literal(raw)
        f.write(struct.pack("<II", len(comp), len(raw)))
        f.write(comp)

    atomic_write(path, write)
