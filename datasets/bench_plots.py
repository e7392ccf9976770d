"""Bench plots (matplotlib, Agg backend, no display): TRE histogram, per-level box plots,
TRE against noise and against overlap.

Only levels reported ok count (a rejected level shows no overlay).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from arspine.datasets.bench import FALSE_ACCEPT_TRE_MM
from arspine.datasets.bench_report import write_text_atomic

__all__ = ["write_plots", "LEVEL_ORDER"]

#: cranial to caudal, for the per-level axis
LEVEL_ORDER = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + \
    [f"L{i}" for i in range(1, 6)] + ["S1"]


def _ok_levels(report: dict):
    for c in report.get("cases", []):
        for level, v in (c.get("vertebrae") or {}).items():
            if v.get("status") == "ok" and v.get("tre_mm") is not None:
                yield c, level, float(v["tre_mm"])


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return write_text_atomic(path, buf.getvalue())


def write_plots(report: dict, folder: str | os.PathLike) -> list[Path]:
    """Write the bench plots as PNGs into ``folder``.

    Returns
    -------
    list of Path
        ``tre_histogram.png``, ``tre_per_level.png`` and, when cases state them in
        ``case.json``, ``tre_vs_noise.png`` and ``tre_vs_overlap.png``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(_ok_levels(report))
    written = []

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    suites = list(report.get("suites", {}))
    data = [[t for c, _, t in rows if c.get("suite") == s] for s in suites]
    if any(data):
        ax.hist([d for d in data], bins=30, stacked=True,
                label=[f"{s} (n={len(d)})" for s, d in zip(suites, data)])
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no accepted level", ha="center", transform=ax.transAxes)
    ax.axvline(FALSE_ACCEPT_TRE_MM, color="red", linestyle="--", label="clinical limit")
    ax.set_xlabel("TRE per vertebra (mm)")
    ax.set_ylabel("levels reported ok")
    ax.set_title("TRE histogram")
    written.append(_save(fig, out_dir / "tre_histogram.png"))

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    present = {lv for _, lv, _ in rows}
    levels = [lv for lv in LEVEL_ORDER if lv in present] + sorted(present - set(LEVEL_ORDER))
    if levels:
        ax.boxplot([[t for _, lv, t in rows if lv == level] for level in levels])
        ax.set_xticks(range(1, len(levels) + 1), levels)
    ax.axhline(FALSE_ACCEPT_TRE_MM, color="red", linestyle="--")
    ax.set_xlabel("vertebra")
    ax.set_ylabel("TRE (mm)")
    ax.set_title("TRE per level")
    written.append(_save(fig, out_dir / "tre_per_level.png"))

    for key, label, name in (("noise_mm", "sensor noise (mm)", "tre_vs_noise.png"),
                             ("overlap", "overlap / visible fraction", "tre_vs_overlap.png")):
        pts = [(c[key], t, c.get("suite")) for c, _, t in rows if c.get(key) is not None]
        if not pts:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        for s in suites:
            xs = [x for x, _, ss in pts if ss == s]
            ys = [y for _, y, ss in pts if ss == s]
            if xs:
                ax.scatter(xs, ys, s=12, label=s)
        ax.axhline(FALSE_ACCEPT_TRE_MM, color="red", linestyle="--")
        ax.set_xlabel(label)
        ax.set_ylabel("TRE (mm)")
        ax.set_title(f"TRE vs {label}")
        ax.legend()
        written.append(_save(fig, out_dir / name))
    return written
