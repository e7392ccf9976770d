"""A minimal DICOM header walker for the tags a CT loader needs (speed path).

pydicom builds a full Dataset per file (about 5 ms each here); a 300-slice series only needs
two dozen top-level tags and the offset of the pixel data. This walker reads little-endian
files (explicit or implicit VR, any pixel encoding), skips sequences, and returns ``None``
for anything it does not handle (big endian, deflate, enhanced multi-frame, odd structure),
in which case the caller uses pydicom. Values come back as pydicom would give them for the
loader's purposes: strings, lists of strings for multi-valued DS, ints for US.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["FastHeader", "read_fast_header"]

_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR",
             b"SV", b"UV"}
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_PIXEL = 0x7FE00010
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

# tag -> (keyword, kind): "s" string, "m" multi-valued string, "u" unsigned short
_TAGS = {
    0x00020010: ("TransferSyntaxUID", "s"),
    0x00080016: ("SOPClassUID", "s"),
    0x00080060: ("Modality", "s"),
    0x00080070: ("Manufacturer", "s"),
    0x0008103E: ("SeriesDescription", "s"),
    0x00081090: ("ManufacturerModelName", "s"),
    0x00180050: ("SliceThickness", "s"),
    0x00180060: ("KVP", "s"),
    0x00180088: ("SpacingBetweenSlices", "s"),
    0x00181120: ("GantryDetectorTilt", "s"),
    0x00185100: ("PatientPosition", "s"),
    0x0020000E: ("SeriesInstanceUID", "s"),
    0x00200011: ("SeriesNumber", "s"),
    0x00200013: ("InstanceNumber", "s"),
    0x00200032: ("ImagePositionPatient", "m"),
    0x00200037: ("ImageOrientationPatient", "m"),
    0x00200052: ("FrameOfReferenceUID", "s"),
    0x00280002: ("SamplesPerPixel", "u"),
    0x00280008: ("NumberOfFrames", "s"),
    0x00280010: ("Rows", "u"),
    0x00280011: ("Columns", "u"),
    0x00280030: ("PixelSpacing", "m"),
    0x00280100: ("BitsAllocated", "u"),
    0x00280101: ("BitsStored", "u"),
    0x00280103: ("PixelRepresentation", "u"),
    0x00281052: ("RescaleIntercept", "s"),
    0x00281053: ("RescaleSlope", "s"),
}
_FUNCTIONAL_GROUPS = {0x52009229, 0x52009230}


class _FileMeta:
    def __init__(self, ts: str):
        self.TransferSyntaxUID = ts


class FastHeader(dict):
    """Parsed tags by keyword, plus where the pixel data is.

    Attributes
    ----------
    file_meta : object with ``TransferSyntaxUID``
    pixel_offset, pixel_length : int or None
        Byte range of native (uncompressed) pixel data in the file.
    data : bytes or None
        The file's bytes (kept so pixels need no second read).
    """

    def __init__(self, values: dict, ts: str, pixel_offset, pixel_length, data,
                 has_pixels: bool):
        super().__init__(values)
        self.file_meta = _FileMeta(ts)
        self.pixel_offset = pixel_offset
        self.pixel_length = pixel_length
        self.data = data
        if has_pixels:
            self["PixelData"] = True

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Unsupported(Exception):
    pass


def _value(raw: bytes, kind: str):
    if kind == "u":
        if len(raw) < 2:
            return None
        return struct.unpack_from("<H", raw)[0]
    s = raw.decode("latin-1").strip("\x00 ")
    if kind == "m":
        return [p.strip() for p in s.split("\\")]
    return s


def _walk(b: bytes, pos: int, explicit: bool, out: dict | None, stop: int | None,
          meta_done: list) -> tuple[int, tuple | None]:
    """Walk elements from ``pos``; return (position, pixel (offset, length) or None).

    ``stop`` is the delimiter tag that ends this level (item end), None at top level.
    """
    n = len(b)
    while pos + 8 <= n:
        group, elem = struct.unpack_from("<HH", b, pos)
        tag = (group << 16) | elem
        if stop is not None and tag == stop:
            return pos + 8, None
        if group == 0xFFFE:
            raise _Unsupported("stray item tag")
        exp = explicit or group == 0x0002
        if exp:
            vr = b[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", b, pos + 8)
                hdr = 12
            else:
                (length,) = struct.unpack_from("<H", b, pos + 6)
                hdr = 8
        else:
            vr = None
            (length,) = struct.unpack_from("<I", b, pos + 4)
            hdr = 8
        vpos = pos + hdr
        if out is not None and tag in _FUNCTIONAL_GROUPS:
            raise _Unsupported("enhanced multi-frame")
        if tag == _PIXEL and out is not None:
            return vpos, (vpos, None if length == 0xFFFFFFFF else length)
        if length == 0xFFFFFFFF:
            nested_explicit = exp and vr != b"UN"
            pos = _skip_sequence(b, vpos, nested_explicit, meta_done)
            continue
        if out is not None and tag in _TAGS:
            key, kind = _TAGS[tag]
            out[key] = _value(b[vpos:vpos + length], kind)
        pos = vpos + length
        if out is not None and not meta_done[0] and group != 0x0002:
            meta_done[0] = True
    return pos, None


def _skip_sequence(b: bytes, pos: int, explicit: bool, meta_done: list) -> int:
    n = len(b)
    while pos + 8 <= n:
        tag = (struct.unpack_from("<H", b, pos)[0] << 16) | struct.unpack_from("<H", b, pos + 2)[0]
        (length,) = struct.unpack_from("<I", b, pos + 4)
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unsupported("bad sequence item")
        if length == 0xFFFFFFFF:
            pos, _ = _walk(b, pos, explicit, None, _ITEM_END, meta_done)
        else:
            pos += length
    raise _Unsupported("unterminated sequence")


def read_fast_header(path: str | Path, keep_data: bool = True) -> FastHeader | None:
    """Parse the loader's tags from a Part-10 little-endian file, or None (use pydicom)."""
    with open(path, "rb") as fh:
        b = fh.read()
    if len(b) < 132 or b[128:132] != b"DICM":
        return None
    try:
        # File meta group: explicit VR LE, its length in (0002,0000).
        group, elem = struct.unpack_from("<HH", b, 132)
        if (group, elem) != (0x0002, 0x0000):
            return None
        (glen,) = struct.unpack_from("<I", b, 140)
        meta_end = 144 + glen
        out: dict = {}
        _walk(b[:meta_end], 132, True, out, None, [False])
        ts = str(out.get("TransferSyntaxUID", "") or "")
        if ts == _IMPLICIT_LE:
            explicit = False
        elif ts == _EXPLICIT_LE or (ts.startswith("1.2.840.10008.1.2.4")
                                    or ts.startswith("1.2.840.10008.1.2.5")):
            explicit = True  # encapsulated syntaxes keep an explicit VR LE header
        else:
            return None
        _, pix = _walk(b, meta_end, explicit, out, None, [True])
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None
    if int(out.get("NumberOfFrames") or 1) != 1:
        return None
    offset, length = (pix if pix is not None else (None, None))
    if length is not None and offset + length > len(b):
        raise ValueError(f"truncated file: pixel data needs {length} bytes, "
                         f"{len(b) - offset} present")
    native = ts in (_EXPLICIT_LE, _IMPLICIT_LE)
    return FastHeader(out, ts, offset if native else None, length if native else None,
                      b if keep_data else None, pix is not None)
