"""`arspine track`: register the first frame of a sequence globally, track the rest."""

from __future__ import annotations

import argparse

from arspine.errors import InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = ("track every vertebra through a sequence (frames/*.ply of a case bundle): the first "
        "frame registered globally, the rest tracked; writes trajectory.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, metavar="DIR",
                        help="case bundle with frames/0000.ply, 0001.ply, ... (sensor mm)")
    parser.add_argument("--out", metavar="F.json", default=None,
                        help="trajectory file (default: DIR/trajectory.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from arspine.datasets.bench_report import write_text_atomic
    from arspine.datasets.tracking_eval import track_case
    from arspine.errors import RegistrationRejected

    case_dir = Path(args.case)
    if not case_dir.is_dir():
        raise InputError(f"--case {args.case}: not a folder")
    traj = track_case(str(case_dir), progress=not args.no_progress)
    out = Path(args.out) if args.out else case_dir / "trajectory.json"
    write_text_atomic(out, json.dumps(traj, indent=1) + "\n")
    frames = traj["frames"]
    counts = {s: sum(1 for f in frames if f["status"] == s) for s in ("ok", "lost", "rejected")}
    ms = [f["elapsed_ms"] for f in frames[1:]]
    line = (f"{len(frames)} frames: {counts['ok']} ok, {counts['lost']} lost, "
            f"{counts['rejected']} rejected; tracking update median "
            f"{np.median(ms) if ms else float('nan'):.1f} ms (first frame registered in "
            f"{frames[0]['elapsed_ms'] / 1e3:.2f} s)")
    tres = [t for f in frames if f["status"] == "ok" for t in f.get("tre_mm", {}).values()]
    if tres:
        line += (f"; TRE over ok frames median {np.median(tres):.2f} mm, "
                 f"max {np.max(tres):.2f} mm")
    print(line)
    print(f"trajectory: {out}")
    if counts["ok"] == 0:
        raise RegistrationRejected(f"no frame could be registered or tracked "
                                   f"({frames[0].get('reason')})")
    return 0
