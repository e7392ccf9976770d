"""Bench report files: the JSON report (a contract), JUnit XML, Markdown, baseline comparison.

JSON report shape (outside tools read it; a baseline file is such a report)::

    {"version": str,
     "suites": {"standard": {"median_tre_mm": x, "p95_tre_mm": x, "accepted": n, "cases": n,
                             "false_accepts": n, ...}},
     "cases": [{"case": name, "suite": s, "status": "ok" | "rejected",
                "tre_mm": {"L3": x, ...}, "rotation_deg": x, "translation_mm": x,
                "elapsed_s": x, ...}]}

A regression against a baseline (:func:`compare_to_baseline`): a suite's median or p95 TRE
worse by more than the tolerance, a level's TRE worse by more than the tolerance, a false
accept that the baseline did not have, or a case / level accepted in the baseline and rejected
now. The comparison names the cases that regressed.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from arspine.atomic import atomic_write_text
from arspine.errors import InputError

__all__ = [
    "Comparison",
    "compare_to_baseline",
    "load_report",
    "write_report",
    "write_junit",
    "write_markdown",
    "markdown_summary",
    "write_text_atomic",
]

_REQUIRED_CASE_KEYS = ("case", "suite", "status", "tre_mm")


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    return atomic_write_text(path, text)


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write the JSON report atomically."""
    return write_text_atomic(path, json.dumps(report, indent=1, sort_keys=False) + "\n")


def load_report(path: str | os.PathLike, name: str = "report") -> dict:
    """Read and check a report / baseline file; :class:`InputError` when broken."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name} {p}: file not found")
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{name} {p}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("suites"), dict) \
            or not isinstance(data.get("cases"), list):
        raise InputError(f"{name} {p}: not a bench report (needs 'suites' and 'cases')")
    for c in data["cases"]:
        if not isinstance(c, dict) or any(k not in c for k in _REQUIRED_CASE_KEYS):
            raise InputError(f"{name} {p}: a case lacks one of {_REQUIRED_CASE_KEYS}: {c!r}"[:300])
    return data


@dataclass
class Comparison:
    """Outcome of comparing a report with a baseline.

    Attributes
    ----------
    regressed : bool
        True when anything regressed (the bench exits 1).
    problems : list of str
        One line per regression, naming the suite and the cases.
    regressed_cases : dict
        ``{"suite/case": reason}`` of every case named.
    notes : list of str
        Not regressions: improvements, cases missing from either side, false accepts that
        the baseline already had.
    """

    regressed: bool = False
    problems: list[str] = field(default_factory=list)
    regressed_cases: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tolerance_mm: float = 0.0


def _worst_tre(case: dict) -> float | None:
    v = [x for x in (case.get("tre_mm") or {}).values() if x is not None]
    return max(v) if v else None


def _levels(case: dict) -> dict[str, tuple[str, float | None]]:
    """``{level: (status, tre_mm)}`` of a case record (per-level status when present)."""
    vert = case.get("vertebrae") or {}
    out = {}
    for level, tre in (case.get("tre_mm") or {}).items():
        st = (vert.get(level) or {}).get("status", case.get("status"))
        out[level] = ("ok" if st == "ok" and case.get("status") == "ok" else "rejected", tre)
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def compare_to_baseline(report: dict, baseline: dict, tolerance_mm: float = 0.25) -> Comparison:
    """Compare ``report`` with ``baseline`` suite by suite (suites in both) and case by case.

    Parameters
    ----------
    report, baseline : dict
        Bench reports.
    tolerance_mm : float
        Allowed worsening of a suite's median / p95 TRE and of each level's TRE.

    Returns
    -------
    Comparison
    """
    if not isinstance(tolerance_mm, (int, float)) or not tolerance_mm >= 0:
        raise InputError(f"tolerance_mm must be >= 0, got {tolerance_mm!r}")
    cmp = Comparison(tolerance_mm=float(tolerance_mm))
    base_cases = {(c["suite"], c["case"]): c for c in baseline.get("cases", [])}
    now_cases = {(c["suite"], c["case"]): c for c in report.get("cases", [])}
    for suite, now in report.get("suites", {}).items():
        base = baseline.get("suites", {}).get(suite)
        if base is None:
            cmp.notes.append(f"suite {suite}: not in the baseline (not compared)")
            continue
        # per case first, so suite-level problems can name them
        worsened: list[tuple[float, str]] = []
        for (s, name), c in now_cases.items():
            if s != suite:
                continue
            b = base_cases.get((s, name))
            key = f"{s}/{name}"
            if b is None:
                cmp.notes.append(f"{key}: new case (not in the baseline)")
                if c.get("status") == "ok" and _worst_tre(c) is not None:
                    worsened.append((_worst_tre(c), key))
                if c.get("false_accept"):
                    cmp.regressed_cases[key] = "false accept (new case)"
                continue
            if c.get("false_accept") and not b.get("false_accept"):
                cmp.regressed_cases[key] = (f"false accept: reported ok with TRE "
                                            f"{_fmt(_worst_tre(c))} mm")
            elif c.get("false_accept"):
                cmp.notes.append(f"{key}: false accept, already in the baseline")
            if b.get("status") == "ok" and c.get("status") != "ok":
                why = c.get("error") or c.get("reason") or "rejected"
                cmp.regressed_cases.setdefault(key, f"accepted in the baseline, now rejected "
                                                    f"({why})")
                continue
            # level by level: a level accepted in both whose TRE worsened beyond tolerance,
            # or a level accepted in the baseline and rejected now
            bv, cv = _levels(b), _levels(c)
            worst_delta = None
            for level, (bs, bt) in bv.items():
                cs, ct = cv.get(level, ("missing", None))
                if bs != "ok":
                    continue
                if cs != "ok":
                    cmp.regressed_cases.setdefault(
                        key, f"{level} accepted in the baseline, now {cs}")
                elif bt is not None and ct is not None:
                    d = ct - bt
                    worst_delta = d if worst_delta is None else max(worst_delta, d)
                    if d > tolerance_mm:
                        cmp.regressed_cases.setdefault(
                            key, f"{level} TRE {bt:.3f} -> {ct:.3f} mm")
            if worst_delta is not None:
                worsened.append((worst_delta, key))
        for (s, name) in base_cases:
            if s == suite and (s, name) not in now_cases:
                cmp.notes.append(f"{s}/{name}: in the baseline, not run now")
        for metric in ("median_tre_mm", "p95_tre_mm"):
            b, n = base.get(metric), now.get(metric)
            if b is None:
                continue
            if n is None or n > b + tolerance_mm:
                named = [k for k in cmp.regressed_cases if k.startswith(f"{suite}/")]
                if not named:  # no single case beyond tolerance: name the largest worsenings
                    named = [k for d, k in sorted(worsened, reverse=True)[:3] if d > 0]
                cmp.problems.append(
                    f"suite {suite}: {metric} {_fmt(b)} -> {_fmt(n)} mm (tolerance "
                    f"{tolerance_mm:g} mm); cases: {', '.join(named) or 'none identified'}")
            elif n < b - tolerance_mm:
                cmp.notes.append(f"suite {suite}: {metric} improved {b:.3f} -> {n:.3f} mm")
    for key, why in cmp.regressed_cases.items():
        cmp.problems.append(f"{key}: {why}")
    cmp.regressed = bool(cmp.problems)
    return cmp


def write_junit(report: dict, path: str | os.PathLike,
                comparison: Comparison | None = None) -> Path:
    """JUnit XML with one ``<testcase>`` per case (one ``<testsuite>`` per suite).

    A case fails when it is a false accept or regressed against the baseline; it errors when
    the registration crashed; a rejection (the safe outcome) is reported as skipped.
    """
    regressed = comparison.regressed_cases if comparison is not None else {}
    root = ET.Element("testsuites", name="arspine bench")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for suite in report.get("suites", {}):
        cases = [c for c in report.get("cases", []) if c.get("suite") == suite]
        ts = ET.SubElement(root, "testsuite", name=f"arspine.bench.{suite}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
        for c in cases:
            t = float(c.get("elapsed_s") or 0.0)
            tc = ET.SubElement(ts, "testcase", classname=f"arspine.bench.{suite}",
                               name=str(c["case"]), time=f"{t:.3f}")
            counts["tests"] += 1
            counts["time"] += t
            key = f"{suite}/{c['case']}"
            tre = ", ".join(f"{lv} {v:.3f} mm" for lv, v in (c.get("tre_mm") or {}).items()
                            if v is not None)
            if c.get("error"):
                ET.SubElement(tc, "error", message=str(c["error"])[:500])
                counts["errors"] += 1
            elif c.get("false_accept") or key in regressed:
                msg = regressed.get(key) or "false accept: reported ok with TRE above the limit"
                ET.SubElement(tc, "failure", message=msg).text = f"TRE: {tre}"
                counts["failures"] += 1
            elif c.get("status") != "ok":
                ET.SubElement(tc, "skipped", message=f"rejected: {c.get('reason')}")
                counts["skipped"] += 1
            ET.SubElement(tc, "system-out").text = (
                f"status {c.get('status')}; TRE {tre or 'n/a'}; rotation "
                f"{_fmt(c.get('rotation_deg'))} deg; translation "
                f"{_fmt(c.get('translation_mm'))} mm")
        for k, v in counts.items():
            ts.set(k, f"{v:.3f}" if k == "time" else str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, f"{v:.3f}" if k == "time" else str(v))
    ET.indent(root)
    return write_text_atomic(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def markdown_summary(report: dict, comparison: Comparison | None = None,
                     baseline: dict | None = None, worst: int = 5) -> str:
    """A Markdown summary for a pull-request comment: per-suite table, regressions, worst cases."""
    lines = [f"## arspine bench (version {report.get('version')})", ""]
    if comparison is not None:
        verdict = "**REGRESSION**" if comparison.regressed else "no regression"
        lines += [f"Against the baseline (tolerance {comparison.tolerance_mm:g} mm): "
                  f"{verdict}", ""]
    lines += ["| suite | cases | accepted | false accepts | median TRE mm | p95 TRE mm | "
              "max TRE mm | median time s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s, m in report.get("suites", {}).items():
        b = (baseline or {}).get("suites", {}).get(s, {})

        def cell(key: str, m=m, b=b) -> str:
            v, bv = m.get(key), b.get(key)
            if v is None:
                return "n/a"
            if bv is None:
                return f"{v:.3f}"
            return f"{v:.3f} ({v - bv:+.3f})"

        lines.append(f"| {s} | {m.get('cases')} | {m.get('accepted')} | "
                     f"{m.get('false_accepts')} | {cell('median_tre_mm')} | "
                     f"{cell('p95_tre_mm')} | {cell('max_tre_mm')} | "
                     f"{_fmt(m.get('median_elapsed_s'))} |")
    if comparison is not None and comparison.problems:
        lines += ["", "### Regressions", ""] + [f"- {p}" for p in comparison.problems]
    if comparison is not None and comparison.notes:
        lines += ["", "<details><summary>Notes</summary>", ""]
        lines += [f"- {n}" for n in comparison.notes] + ["", "</details>"]
    ranked = sorted((c for c in report.get("cases", []) if _worst_tre(c) is not None),
                    key=lambda c: -_worst_tre(c))[:worst]
    if ranked:
        lines += ["", f"### Worst {len(ranked)} cases", "",
                  "| case | suite | status | worst TRE mm | rotation deg | translation mm |",
                  "|---|---|---|---:|---:|---:|"]
        for c in ranked:
            fa = " (false accept)" if c.get("false_accept") else ""
            lines.append(f"| {c['case']} | {c['suite']} | {c['status']}{fa} | "
                         f"{_worst_tre(c):.3f} | {_fmt(c.get('rotation_deg'))} | "
                         f"{_fmt(c.get('translation_mm'))} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: str | os.PathLike, comparison: Comparison | None = None,
                   baseline: dict | None = None) -> Path:
    """Write :func:`markdown_summary` atomically."""
    return write_text_atomic(path, markdown_summary(report, comparison, baseline))

