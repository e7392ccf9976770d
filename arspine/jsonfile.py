"""Reading the JSON files users hand to arspine, with one clear error for each way it fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from arspine.errors import InputError

__all__ = ["read_json"]


def read_json(path: str | os.PathLike, what: str = "JSON file", *,
              object_only: bool = False) -> Any:
    """Parse the JSON file at ``path``.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for messages (``"--result"``, ``"head pose file"``).
    object_only : bool
        Require a JSON object (dict) at the top level.

    Raises
    ------
    InputError
        ``"<what> not found: <path>"``, ``"<what> is not valid JSON: <path>: ..."``, or
        ``"<what> must hold a JSON object: <path>"``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON: {p}: {exc}") from None
    if object_only and not isinstance(data, dict):
        raise InputError(f"{what} must hold a JSON object: {p}")
    return data
