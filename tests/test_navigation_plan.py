"""Automatic pedicle screw planning on the real CT (L1..L5) and the breach check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.plan import (
    MEDIAL_ANGLE_RANGE_DEG,
    SCREW_DIAMETERS_MM,
    SCREW_LENGTHS_MM,
    check_breach,
    label_inside,
    propose_screws,
    propose_trajectory,
    vertebra_anatomy,
)

LUMBAR = ["L1", "L2", "L3", "L4", "L5"]


@pytest.fixture(scope="session")
def real_ct(data_dir):
    from arspine.imaging import load_ct, load_labels, vertebra_surfaces

    d = data_dir / "totalsegmentator"
    ct = load_ct(d / "example_ct.nii.gz", progress=False)
    labels = load_labels(d / "example_ct_vertebrae.nii.gz", like=ct, scheme="totalsegmentator")
    surfaces = vertebra_surfaces(ct, labels, levels=LUMBAR)
    return ct, labels, surfaces


@pytest.fixture(scope="session")
def real_plan(real_ct):
    ct, labels, surfaces = real_ct
    return propose_screws(ct, labels, LUMBAR, surfaces=surfaces)


def test_anatomy_frame_and_canal(real_ct):
    _, labels, _ = real_ct
    for lv in LUMBAR:
        an = vertebra_anatomy(labels, lv)
        assert np.allclose(an.axes @ an.axes.T, np.eye(3), atol=1e-9)
        assert an.axes[0] @ [1, 0, 0] > 0.9  # lateral = patient left (+x LPS)
        assert an.axes[2] @ [0, 0, 1] > 0.85  # cranial within ~30 deg of +z (lordosis)
        # the canal is enclosed, 10-30 mm wide, and lies posterior to the body
        assert 5.0 <= an.canal_halfwidth_mm <= 15.0
        assert (an.body_center - an.canal_center) @ an.axes[1] > 10.0
        assert label_inside(labels, lv)(an.canal_center[None])[0] == np.False_


def test_plan_l1_to_l5_inside_bone_and_morphometric(real_ct, real_plan):
    ct, labels, surfaces = real_ct
    assert sorted(real_plan.keys()) == sorted(f"{lv}_{s}" for lv in LUMBAR
                                              for s in ("left", "right"))
    for t in real_plan:
        inside = label_inside(labels, t.vertebra)
        # the whole axis past the posterior cortex is inside the vertebra
        axis = t.axis_points(1.0)[2:]
        assert inside(axis).mean() == 1.0, t.key
        br = t.notes["breach"]
        assert not br["breach"] and br["clearance_mm"] > 0.5, (t.key, br)
        assert MEDIAL_ANGLE_RANGE_DEG[0] - 1 <= t.medial_angle_deg <= \
            MEDIAL_ANGLE_RANGE_DEG[1] + 5, t.key
        assert t.length_mm in SCREW_LENGTHS_MM and 35 <= t.length_mm <= 55
        assert t.diameter_mm in SCREW_DIAMETERS_MM
        # entry posterior to the tip, entry on the screw's own side of the midline
        an = vertebra_anatomy(labels, t.vertebra)
        assert (t.tip_ct_mm - t.entry_ct_mm) @ an.axes[1] > 25.0
        side = 1.0 if t.side == "left" else -1.0
        assert side * (t.entry_ct_mm - an.canal_center) @ an.axes[0] > an.canal_halfwidth_mm
        # converging: the tip is closer to the midline than the entry, not across it
        lat_e = side * (t.entry_ct_mm - an.canal_center) @ an.axes[0]
        lat_t = side * (t.tip_ct_mm - an.canal_center) @ an.axes[0]
        assert -2.0 < lat_t < lat_e, t.key
    # published morphometry: the medial angle grows from L1 to L5
    mean = {lv: np.mean([real_plan[f"{lv}_{s}"].medial_angle_deg for s in ("left", "right")])
            for lv in LUMBAR}
    assert mean["L5"] > mean["L3"] > mean["L1"] - 3
    assert 20 <= mean["L5"] <= 40


def test_auto_levels_skip_vertebrae_cut_by_the_field_of_view(real_ct):
    ct, labels, _ = real_ct
    plan = propose_screws(ct, labels, sides=["left"])
    assert sorted(t.vertebra for t in plan) == sorted(LUMBAR)
    assert set(plan.skipped) == {"T11", "T12"}
    assert "field of view" in plan.skipped["T12"]
    with pytest.raises(InputError, match="T11"):
        propose_screws(ct, labels, ["T11"])


def test_breach_detected_for_misdirected_screw(real_ct, real_plan):
    _, labels, surfaces = real_ct
    good = real_plan["L3_left"]
    iso = np.asarray(good.notes["isthmus_ct_mm"])
    # swing the screw 30 deg further medially about the isthmus: it enters the canal
    R = RigidTransform.from_euler("xyz", [0, 0, -30], [0, 0, 0], "ct", "ct").rotation
    d = R @ good.direction
    if (d[0] > 0) == (good.direction[0] > 0) and abs(d[0]) > abs(good.direction[0]):
        d = R.T @ good.direction
    bad = good.edited(entry_ct_mm=iso - 15 * d, target_ct_mm=iso - 15 * d + good.length_mm * d)
    rep = check_breach(bad, surfaces["L3"], inside=label_inside(labels, "L3"))
    assert rep.breach and rep.outside_fraction > 0.1 and rep.warnings
    ok = check_breach(good, surfaces["L3"], inside=label_inside(labels, "L3"))
    assert not ok.breach  # the default entry zone is the one the planner used
    assert ok.clearance_mm == pytest.approx(good.notes["breach"]["clearance_mm"])
    assert "breach" not in bad.notes  # editing drops the stale report


def test_plan_bad_input(real_ct):
    ct, labels, _ = real_ct
    with pytest.raises(InputError, match="not in the label map"):
        propose_screws(ct, labels, ["C3"])
    with pytest.raises(InputError, match="side"):
        propose_trajectory(labels, "L3", "middle")
    assert math.isfinite(propose_trajectory(labels, "L2", "right").length_mm)


@pytest.fixture(scope="module")
def phantom():
    from arspine.datasets.phantom import make_phantom

    return make_phantom(levels=("L2", "L3", "L4"), seed=0, spacing_mm=2.0)


def test_plan_on_phantom_against_its_known_anatomy(phantom):
    from arspine.imaging import vertebra_surfaces

    surfaces = vertebra_surfaces(phantom.ct, phantom.labels)
    plan = propose_screws(phantom.ct, phantom.labels, surfaces=surfaces)
    assert len(plan) == 6
    for t in plan:
        assert not t.notes["breach"]["breach"], (t.key, t.notes["breach"])
        assert label_inside(phantom.labels, t.vertebra)(t.axis_points(1.0)[2:]).all(), t.key
        # the phantom's own vertebra frame: x patient left, y posterior, origin at the body
        T_vert_from_ct = np.linalg.inv(phantom.poses[t.vertebra])
        e = T_vert_from_ct[:3, :3] @ t.entry_ct_mm + T_vert_from_ct[:3, 3]
        tip = T_vert_from_ct[:3, :3] @ t.tip_ct_mm + T_vert_from_ct[:3, 3]
        side = 1.0 if t.side == "left" else -1.0
        assert side * e[0] > 8.0, (t.key, e)  # entry lateral, on its own side
        assert e[1] > 15.0, (t.key, e)  # entry on the posterior elements
        assert tip[1] < 5.0 and side * tip[0] > -3.0, (t.key, tip)  # tip in the body
    for lv in ("L2", "L3", "L4"):
        left, right = plan[f"{lv}_left"], plan[f"{lv}_right"]
        assert abs(left.medial_angle_deg - right.medial_angle_deg) <= 12.0
        assert abs(left.length_mm - right.length_mm) <= 5.0
