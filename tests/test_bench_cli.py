"""`arspine bench` end to end on the real `quick` suite: passes against the committed baseline,
fails (exit 1) naming the cases against a deliberately better baseline, writes JSON / JUnit /
Markdown / plots, rewrites the baseline on request, and refuses bad input with exit 2."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from arspine.cli import main
from arspine.datasets.bench_report import load_report

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "benchmarks" / "baseline.json"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--suite", "quick", "--baseline", str(BASELINE), "--workers", "0",
            "--report", str(out / "report.json"), "--junit", str(out / "junit.xml"),
            "--markdown", str(out / "summary.md"), "--plots", str(out / "plots"),
            "--no-progress"]
    code = main(argv)
    return code, out


def test_quick_suite_passes_against_committed_baseline(quick_run):
    code, out = quick_run
    assert code == 0
    report = load_report(out / "report.json")
    baseline = load_report(BASELINE)
    assert [c["case"] for c in report["cases"]] == [c["case"] for c in baseline["cases"]]
    assert report["suites"]["quick"]["cases"] == len(report["cases"]) == 3
    for c in report["cases"]:
        assert c["suite"] == "quick" and c["status"] in ("ok", "rejected")
        assert set(c["tre_mm"]) and all(v >= 0 for v in c["tre_mm"].values())
        # the clinical safety property the bench exists to guard
        if c["status"] == "ok":
            ok_tres = [v["tre_mm"] for v in c["vertebrae"].values() if v["status"] == "ok"]
            assert c["false_accept"] == any(t > 2.0 for t in ok_tres)


def test_junit_markdown_and_plots_written(quick_run):
    _, out = quick_run
    root = ET.parse(out / "junit.xml").getroot()
    names = [tc.get("name") for tc in root.iter("testcase")]
    assert sorted(names) == sorted(c["case"] for c in json.loads(
        (out / "report.json").read_text())["cases"])
    md = (out / "summary.md").read_text()
    assert "| quick | 3 |" in md and "no regression" in md
    assert (out / "plots" / "tre_histogram.png").stat().st_size > 5000
    assert (out / "plots" / "tre_per_level.png").stat().st_size > 5000


def _better_baseline(report: dict) -> dict:
    """The current run, but every case accepted at 0.0 mm: the current run is worse."""
    base = copy.deepcopy(report)
    for c in base["cases"]:
        c["status"], c["false_accept"] = "ok", False
        c["tre_mm"] = {lv: 0.0 for lv in c["tre_mm"]}
        for v in c["vertebrae"].values():
            v["status"], v["tre_mm"] = "ok", 0.0
    for s in base["suites"].values():
        s.update(median_tre_mm=0.0, p95_tre_mm=0.0, accepted=s["cases"], false_accepts=0)
    return base


def test_worsened_against_baseline_fails_naming_cases(quick_run, tmp_path, capsys):
    _, out = quick_run
    report = load_report(out / "report.json")
    better = _better_baseline(report)
    # make one case clearly the regressed one even if the registration now accepts it
    worst = max(report["cases"], key=lambda c: max(c["tre_mm"].values()))
    path = tmp_path / "better.json"
    path.write_text(json.dumps(better))
    capsys.readouterr()
    code = main(["bench", "--suite", "quick", "--baseline", str(path), "--workers", "0",
                 "--tolerance-mm", "0.05", "--junit", str(tmp_path / "j.xml"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "REGRESSION" in err
    assert f"quick/{worst['case']}" in err
    failed = [tc.get("name") for tc in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
              if tc.find("failure") is not None]
    assert worst["case"] in failed


def test_update_baseline_rewrites(quick_run, tmp_path):
    _, out = quick_run
    target = tmp_path / "new_baseline.json"
    target.write_text(json.dumps(_better_baseline(load_report(out / "report.json"))))
    assert main(["bench", "--suite", "quick", "--baseline", str(target), "--update-baseline",
                 "--workers", "0", "--no-progress"]) == 0
    rewritten = load_report(target)
    current = load_report(out / "report.json")
    assert [c["tre_mm"] for c in rewritten["cases"]] == [c["tre_mm"] for c in current["cases"]]


@pytest.mark.parametrize("argv, needle", [
    (["--suite", "nosuch"], "suite must be one of"),
    (["--cases", "/nonexistent/folder"], "not a folder"),
    (["--suite", "quick", "--baseline", "/nonexistent/baseline.json"], "file not found"),
    (["--suite", "quick", "--update-baseline"], "--update-baseline needs --baseline"),
    (["--suite", "quick", "--tolerance-mm", "-1"], "--tolerance-mm must be >= 0"),
])
def test_bad_input_exits_2(argv, needle, capsys):
    assert main(["bench", *argv, "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
