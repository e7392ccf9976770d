"""Suites: specifications, on-demand generation into a cache, reuse; the simulate CLI."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.cli import main
from arspine.datasets.case import load_case
from arspine.datasets.sensors import SENSORS
from arspine.datasets.suites import SUITES, suite_cases, suite_specs
from arspine.errors import InputError


def test_suite_specifications_are_complete_and_seeded():
    for name in SUITES:
        specs = suite_specs(name)
        assert specs, name
        names = [s["name"] for s in specs]
        assert len(set(names)) == len(names)
        for s in specs:
            assert s["sensor"] in SENSORS
            assert isinstance(s["seed"], int)
            assert s["anatomy"] in ("ct", "ct-dicom", "ssm") or s["anatomy"].startswith("phantom")
    std, hard = suite_specs("standard"), suite_specs("hard")
    assert {s["outlier_fraction"] for s in std} == {0.10}
    assert {s["outlier_fraction"] for s in hard} == {0.30}
    assert {s["motion"] for s in hard} == {"large"}
    assert len({s["sensor"] for s in hard}) >= 3
    assert {s["anatomy"].split(":")[0] for s in std} == {"ct", "phantom", "ssm"}
    assert all(s.get("frames", 0) >= 10 for s in suite_specs("tracking"))
    assert 3 <= len(suite_specs("quick")) <= 4
    with pytest.raises(InputError, match="suite must be one of"):
        suite_specs("huge")


def test_quick_suite_generates_once_into_the_cache(data_dir, tmp_path):
    cases = suite_cases("quick", cache=tmp_path)
    assert [c.name for c in cases] == [s["name"] for s in suite_specs("quick")]
    mtimes = []
    for c in cases:
        case = load_case(c)
        assert case.scan is not None and len(case.scan) > 1000
        assert case.truth and case.ct_path is not None and case.labels_path is not None
        for lv in case.meta["levels"]:
            assert lv in case.truth and case.truth[lv]["targets_ct_mm"].shape[1] == 3
        mtimes.append((c / "scan.ply").stat().st_mtime_ns)
    again = suite_cases("quick", cache=tmp_path)
    assert again == cases
    assert [(c / "scan.ply").stat().st_mtime_ns for c in again] == mtimes
    assert (cases[0].parent / "suite.json").is_file()


def test_cli_simulate_mesh_and_phantom(data_dir, tmp_path, capsys):
    out = tmp_path / "case"
    rc = main(["simulate", "--mesh", str(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply"),
               "--out", str(out), "--sensor", "test-320", "--levels", "L3,L4", "--seed", "3",
               "--outliers", "0.2", "--scene", "clean"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    case = load_case(out)
    assert case.exposed_levels == ["L3", "L4"]
    assert abs(np.mean(case.scan.labels == 0) - 0.2) < 0.003
    assert not np.any(case.scan.labels == 4)  # clean scene: no drapes
    # refuses to overwrite without --overwrite; bad inputs exit 2 with one line
    assert main(["simulate", "--mesh", str(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply"),
                 "--out", str(out)]) == 2
    assert main(["simulate", "--ct", str(tmp_path / "nope.nii.gz"), "--out",
                 str(tmp_path / "x")]) == 2
    assert main(["simulate", "--phantom", "--out", str(tmp_path / "y"), "--sensor",
                 "kinect-99"]) == 2
    err = capsys.readouterr().err
    assert "--ct needs --labels" in err and "sensor must be one of" in err
    rc = main(["simulate", "--phantom", "--spacing", "3", "--out", str(tmp_path / "ph"),
               "--sensor", "test-320", "--levels", "L2,L3", "--frames", "2"])
    assert rc == 0
    ph = load_case(tmp_path / "ph")
    assert ph.ct_path.name == "ct" and len(list(ph.ct_path.glob("*.dcm"))) > 10
    assert len(ph.frames) == 2 and len(ph.frame_truth) == 2
    assert ph.meta["source"] == "phantom"
