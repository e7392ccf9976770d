"""Shared fixtures: the real-data folder (skip with a clear reason when absent)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ARSPINE_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache"))

from arspine.datasets.paths import shared_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    """``../shared/data`` (the real CT, shape model and phantom fiducials)."""
    d = shared_data_dir(required=False)
    if d is None:
        pytest.skip("real data folder ../shared/data not found (set ARSPINE_DATA)")
    return d
