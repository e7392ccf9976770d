"""Where the real data lives: ``../shared/data`` beside the repository, or ``$ARSPINE_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

from arspine.errors import InputError

__all__ = ["shared_data_dir", "real_data_path", "cache_dir"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("ARSPINE_DATA")
    if env:
        out.append(Path(env))
    out.append(_REPO_ROOT.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    out.append(Path.cwd() / "shared" / "data")
    return out


def shared_data_dir(required: bool = True) -> Path | None:
    """The real-data folder (see its README), or None / a clear error when absent.

    Looks in ``$ARSPINE_DATA``, then ``../shared/data`` next to the repository and the
    current directory.
    """
    for c in _candidates():
        if (c / "README.md").is_file() or (c / "totalsegmentator").is_dir():
            return c.resolve()
    if required:
        raise InputError("real data folder not found; looked in: "
                         + ", ".join(str(c) for c in _candidates())
                         + " (set ARSPINE_DATA to the shared/data folder)")
    return None


def real_data_path(*parts: str) -> Path:
    """Path of a file under the real-data folder; a clear error when it is missing."""
    p = shared_data_dir().joinpath(*parts)
    if not p.exists():
        raise InputError(f"real data file not found: {p}")
    return p


def cache_dir(*parts: str) -> Path:
    """Cache folder for generated suites and prepared models (``$ARSPINE_CACHE`` or
    ``~/.cache/arspine``), created on demand."""
    base = Path(os.environ.get("ARSPINE_CACHE", Path.home() / ".cache" / "arspine"))
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
