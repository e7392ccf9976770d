"""Anatomy sources: patient axes, level naming of the shape model, TRE targets."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.datasets.anatomy import (
    _Occupancy,
    anatomy_from_mesh,
    estimate_axes,
    sort_levels,
)
from arspine.datasets.suites import load_anatomy
from arspine.errors import InputError


def test_axes_estimated_from_real_ct_vertebrae_match_lps(data_dir):
    """On the real CT (known LPS axes), the shape-only estimate agrees within 15 deg."""
    ct = load_anatomy("ct")
    est = estimate_axes(ct.surfaces)
    for k in range(3):
        ang = np.degrees(np.arccos(np.clip(est[:, k] @ np.eye(3)[:, k], -1, 1)))
        assert ang < 15.0, (k, ang)
    assert np.linalg.det(est) == pytest.approx(1.0)


def test_shape_model_split_into_named_levels(data_dir):
    ssm = load_anatomy("ssm")
    assert ssm.levels == ["L2", "L3", "L4", "L5"]
    cran = ssm.axes[:, 2]
    heights = [ssm.centroid(lv) @ cran for lv in ssm.levels]
    assert all(a > b for a, b in zip(heights[:-1], heights[1:]))  # L2 is cranial
    # neighbouring lumbar vertebrae are 30-45 mm apart
    gaps = np.diff(heights)
    assert np.all((-45 < gaps) & (gaps < -25))
    with pytest.raises(InputError, match="connected components"):
        anatomy_from_mesh(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply", levels=("L2", "L3"))


@pytest.mark.parametrize("key", ["ssm", "ct"])
def test_screw_targets_run_from_posterior_entry_into_the_body(data_dir, key):
    anat = load_anatomy(key)
    lv = "L3"
    t = anat.targets(lv)
    c = anat.centroid(lv)
    loc = (t - c) @ anat.axes  # left, posterior, cranial
    entry_l, tip_l, entry_r, tip_r = loc[:4]
    assert entry_l[1] > tip_l[1] + 20 and entry_r[1] > tip_r[1] + 20  # posterior -> anterior
    assert entry_l[0] > 8 and entry_r[0] < -8                        # lateral entries
    assert abs(tip_l[0]) < entry_l[0] and abs(tip_r[0]) < -entry_r[0]  # medial convergence
    inside = _Occupancy(anat.surfaces[lv])(t[4:-1])
    assert inside.mean() > 0.9                                          # interior points
    assert np.linalg.norm(t[1] - t[0]) > 30                             # screw length


def test_sort_levels():
    assert sort_levels(["L3", "T12", "S1", "L1"]) == ["T12", "L1", "L3", "S1"]
    with pytest.raises(InputError, match="clinical vertebra names"):
        sort_levels(["L7"])
