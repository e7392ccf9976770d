"""Bench report machinery: suite figures, baseline comparison naming the regressed cases,
JUnit (one testcase per case), Markdown, plots, report loading."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from arspine.datasets.bench import FALSE_ACCEPT_TRE_MM, build_report, summarize_suite
from arspine.datasets.bench_plots import write_plots
from arspine.datasets.bench_report import (
    compare_to_baseline,
    load_report,
    markdown_summary,
    write_junit,
    write_markdown,
    write_report,
)
from arspine.errors import InputError


def _record(name, suite, tres, status="ok", level_status=None, noise=None, overlap=None,
            error=None):
    level_status = level_status or {}
    vert = {lv: {"status": level_status.get(lv, status), "tre_mm": t, "rotation_deg": t / 2,
                 "translation_mm": t} for lv, t in tres.items()}
    fa = any(v["status"] == "ok" and v["tre_mm"] > FALSE_ACCEPT_TRE_MM for v in vert.values())
    return {"case": name, "suite": suite, "status": status, "reason": None if status == "ok"
            else "gate", "tre_mm": dict(tres), "rotation_deg": max(tres.values()) / 2,
            "translation_mm": max(tres.values()), "elapsed_s": 0.5, "vertebrae": vert,
            "false_accept": fa, "error": error, "noise_mm": noise, "overlap": overlap}


@pytest.fixture()
def records():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(10):
        tres = {lv: float(rng.uniform(0.3, 1.2)) for lv in ("L2", "L3", "L4")}
        recs.append(_record(f"std_{i:02d}", "standard", tres, noise=0.5 + 0.1 * i,
                            overlap=0.3 + 0.05 * i))
    recs.append(_record("std_rej", "standard", {"L3": 9.0}, status="rejected"))
    recs.append(_record("hard_0", "hard", {"L3": 1.5, "L4": 1.8}))
    recs.append(_record("hard_1", "hard", {"L3": 3.0, "L4": 0.4},
                        level_status={"L3": "rejected"}))
    return recs


def test_summary_numbers(records):
    rep = build_report(records)
    assert list(rep["suites"]) == ["standard", "hard"]
    std = rep["suites"]["standard"]
    ok_tres = [v["tre_mm"] for r in records[:10] for v in r["vertebrae"].values()]
    assert std["cases"] == 11 and std["accepted"] == 10
    assert std["median_tre_mm"] == pytest.approx(np.median(ok_tres))
    assert std["p95_tre_mm"] == pytest.approx(np.percentile(ok_tres, 95))
    assert std["max_tre_mm"] == pytest.approx(max(ok_tres))  # the rejected 9 mm is not shown
    assert std["false_accepts"] == 0
    hard = rep["suites"]["hard"]
    # hard_1's L3 (3 mm) was rejected per level: not a false accept, not in the figures
    assert hard["false_accepts"] == 0 and hard["max_tre_mm"] == pytest.approx(1.8)
    assert summarize_suite([])["median_tre_mm"] is None
    # contract keys
    for k in ("median_tre_mm", "p95_tre_mm", "accepted", "cases", "false_accepts"):
        assert k in std
    for c in rep["cases"]:
        for k in ("case", "suite", "status", "tre_mm", "rotation_deg", "translation_mm",
                  "elapsed_s"):
            assert k in c


def test_identical_report_does_not_regress(records):
    rep = build_report(records)
    cmp = compare_to_baseline(rep, copy.deepcopy(rep), 0.1)
    assert not cmp.regressed and cmp.problems == []


def test_worsened_case_is_named(records):
    base = build_report(records)
    worse = copy.deepcopy(records)
    for r in worse[:6]:  # many cases worse by 0.6 mm: the suite median moves too
        for lv in r["tre_mm"]:
            r["tre_mm"][lv] += 0.6
            r["vertebrae"][lv]["tre_mm"] += 0.6
    cmp = compare_to_baseline(build_report(worse), base, 0.25)
    assert cmp.regressed
    assert set(cmp.regressed_cases) == {f"standard/std_{i:02d}" for i in range(6)}
    assert any("p95_tre_mm" in p and "std_00" in p for p in cmp.problems)
    # within tolerance: no regression
    assert not compare_to_baseline(build_report(worse), base, 0.7).regressed


def test_suite_regression_without_single_case_names_largest(records):
    base = build_report(records)
    # new cases (not in the baseline) below the false-accept limit push the p95 up
    now = copy.deepcopy(records) + [_record(f"new_{i}", "standard", {"L3": 1.9, "L4": 1.95})
                                    for i in range(6)]
    cmp = compare_to_baseline(build_report(now), base, 0.25)
    assert cmp.regressed and not cmp.regressed_cases
    assert "p95_tre_mm" in cmp.problems[0] and "new_" in cmp.problems[0]


def test_non_worst_level_worsening_is_named(records):
    base = build_report(records)
    worse = copy.deepcopy(records)
    r = worse[7]
    lv = min(r["tre_mm"], key=r["tre_mm"].get)  # its best level gets worse by 0.3 mm
    r["tre_mm"][lv] += 0.3
    r["vertebrae"][lv]["tre_mm"] += 0.3
    cmp = compare_to_baseline(build_report(worse), base, 0.25)
    assert list(cmp.regressed_cases) == ["standard/std_07"]
    assert lv in cmp.regressed_cases["standard/std_07"]
    assert not compare_to_baseline(build_report(worse), base, 0.35).regressed


def test_new_false_accept_and_new_rejection_regress(records):
    base = build_report(records)
    worse = copy.deepcopy(records)
    worse[2] = _record("std_02", "standard", {"L3": 2.5})
    worse[3] = _record("std_03", "standard", {"L3": 0.5}, status="rejected")
    cmp = compare_to_baseline(build_report(worse), base, 5.0)  # tolerance cannot hide it
    assert cmp.regressed
    assert "false accept" in cmp.regressed_cases["standard/std_02"]
    assert "now rejected" in cmp.regressed_cases["standard/std_03"]


def test_junit_one_testcase_per_case(records, tmp_path):
    recs = copy.deepcopy(records)
    recs[0] = _record("std_00", "standard", {"L3": 2.6})  # false accept
    recs[1] = _record("std_01", "standard", {"L3": 0.5}, error="RuntimeError: x")
    rep = build_report(recs)
    out = write_junit(rep, tmp_path / "bench.xml")
    root = ET.parse(out).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(recs)
    assert {c.get("name") for c in cases} == {r["case"] for r in recs}
    by_name = {c.get("name"): c for c in cases}
    assert by_name["std_00"].find("failure") is not None
    assert by_name["std_01"].find("error") is not None
    assert by_name["std_rej"].find("skipped") is not None
    assert by_name["std_05"].find("failure") is None
    assert root.get("tests") == str(len(recs)) and root.get("failures") == "1"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert suites["arspine.bench.hard"].get("tests") == "2"


def test_markdown_names_regressions(records, tmp_path):
    base = build_report(records)
    worse = copy.deepcopy(records)
    worse[2] = _record("std_02", "standard", {"L3": 2.5})
    rep = build_report(worse)
    cmp = compare_to_baseline(rep, base)
    md = markdown_summary(rep, cmp, base)
    assert "REGRESSION" in md and "std_02" in md
    assert "| standard | 11 | 10 | 1 |" in md
    path = write_markdown(rep, tmp_path / "s.md", cmp, base)
    assert path.read_text() == md


def test_plots_are_written(records, tmp_path):
    import matplotlib.image as mpimg

    files = write_plots(build_report(records), tmp_path / "plots")
    names = sorted(f.name for f in files)
    assert names == ["tre_histogram.png", "tre_per_level.png", "tre_vs_noise.png",
                     "tre_vs_overlap.png"]
    img = mpimg.imread(tmp_path / "plots" / "tre_per_level.png")
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # something is drawn


def test_report_roundtrip_and_bad_files(records, tmp_path):
    rep = build_report(records)
    p = write_report(rep, tmp_path / "r.json")
    assert load_report(p) == json.loads(json.dumps(rep))
    with pytest.raises(InputError, match="not found"):
        load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_report(tmp_path / "bad.json")
    (tmp_path / "shape.json").write_text(json.dumps({"suites": {}, "cases": [{"case": 1}]}))
    with pytest.raises(InputError, match="lacks"):
        load_report(tmp_path / "shape.json")
    with pytest.raises(InputError, match="tolerance"):
        compare_to_baseline(rep, rep, -1.0)
