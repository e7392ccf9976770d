"""``arspine register``: exit codes, one-line errors, result.json per DESIGN.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arspine.cli import main


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_missing_ct_exits_2(tmp_path, capsys):
    scan = tmp_path / "scan.npy"
    np.save(scan, np.zeros((10, 3)))
    assert main(["register", "--ct", str(tmp_path / "nope.nii.gz"), "--scan", str(scan)]) == 2
    assert "--ct" in _one_line_error(capsys)


def test_missing_scan_exits_2(data_dir, tmp_path, capsys):
    ct = data_dir / "totalsegmentator" / "example_ct.nii.gz"
    assert main(["register", "--ct", str(ct), "--scan", str(tmp_path / "x.ply")]) == 2
    assert "--scan" in _one_line_error(capsys)


def test_bad_scan_format_exits_2(data_dir, tmp_path, capsys):
    ct = data_dir / "totalsegmentator" / "example_ct.nii.gz"
    bad = tmp_path / "scan.ply"
    bad.write_text("this is not a ply file\n")
    assert main(["register", "--ct", str(ct), "--scan", str(bad),
                 "--out", str(tmp_path / "r.json")]) == 2
    _one_line_error(capsys)
    assert not (tmp_path / "r.json").exists()


def test_missing_required_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["register", "--scan", "x.ply"])
    assert exc.value.code == 2


def test_register_writes_result_json(data_dir, tmp_path, capsys):
    from arspine.datasets.case import load_case
    from arspine.datasets.suites import suite_cases

    case = load_case([c for c in suite_cases("quick") if "ssm" in c.name][0])
    out = tmp_path / "result.json"
    rc = main(["register", "--ct", str(case.ct_path), "--scan", str(case.folder / "scan.ply"),
               "--labels", str(case.labels_path), "--label-scheme", case.label_scheme or "verse",
               "--out", str(out), "--model-cache", str(tmp_path / "model.npz")])
    assert rc in (0, 3)
    d = json.loads(out.read_text())
    assert d["status"] == ("ok" if rc == 0 else "rejected")
    assert (d["reason"] is None) == (rc == 0)
    assert np.asarray(d["T_sensor_from_ct"]).shape == (4, 4)
    assert set(d["timing_s"]) >= {"load", "prepare", "register"}
    for v in d["vertebrae"].values():
        assert set(v) >= {"T_sensor_from_ct", "rmse_mm", "inlier_fraction", "status"}
        if rc == 3:
            assert v["status"] == "rejected"
    assert {"margin", "runner_up", "n_inliers", "rmse_mm"} <= set(d["quality"]) or rc == 3
    assert (tmp_path / "model.npz").is_file()
    if rc == 0:  # accuracy where accepted: truth is in the case bundle
        from arspine.registration.metrics import tre_mm

        for lv, v in d["vertebrae"].items():
            if v["status"] == "ok" and lv in case.truth and len(case.truth[lv]["targets_ct_mm"]):
                t = case.truth[lv]
                assert np.max(tre_mm(np.asarray(v["T_sensor_from_ct"]), t["T_sensor_from_ct"],
                                     t["targets_ct_mm"])) < 2.0
