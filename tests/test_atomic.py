"""Atomic writes: content, permissions from the umask, old file kept on failure."""

from __future__ import annotations

import json
import os
import stat

import pytest

from arspine.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_written_file_has_umask_permissions_and_content(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_json(tmp_path / "sub" / "r.json", {"a": [1, 2]})
    finally:
        os.umask(old)
    assert json.loads(p.read_text()) == {"a": [1, 2]}
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = atomic_write_text(tmp_path / "x.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["x.txt"]


def test_temp_keeps_double_suffix(tmp_path):
    with atomic_path(tmp_path / "ct.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "ct.nii.gz").read_bytes() == b"x"
