"""Atomic file output: write to a temp file in the target folder, then ``os.replace``.

A reader never sees a half-written file and an interrupted write leaves the old file intact.
Final files get the usual permissions (``0o666 & ~umask``), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, makedirs: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.png``) so writers that pick
    a format from the extension still work. On an exception the temporary file is removed
    and ``path`` is left as it was.
    """
    final = Path(path)
    folder = final.parent if str(final.parent) else Path(".")
    if makedirs:
        folder.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the final path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the final path."""
    return atomic_write_bytes(path, text.encode() if isinstance(text, str) else text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically; returns the final path."""
    return atomic_write_text(path, json.dumps(data, indent=indent))
