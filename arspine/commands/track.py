"""`arspine track`: register the first frame of a sequence globally, track the rest."""

from __future__ import annotations

import argparse
import sys

from arspine.errors import InputError

__all__ = ["HELP", "add_arguments", "run", "track_case"]

HELP = ("track every vertebra through a sequence (frames/*.ply of a case bundle): the first "
        "frame registered globally, the rest tracked; writes trajectory.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, metavar="DIR",
                        help="case bundle with frames/0000.ply, 0001.ply, ... (sensor mm)")
    parser.add_argument("--out", metavar="F.json", default=None,
                        help="trajectory file (default: DIR/trajectory.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def track_case(case_dir: str, progress: bool = True) -> dict:
    """Track a sequence case; returns the trajectory dict of DESIGN.md.

    ``{"frames": [{"index", "timestamp_s", "status", "vertebrae": {"L3": {"T_sensor_from_ct":
    4x4, ...}}, "elapsed_ms", ...}], "version": str, ...}``; ``elapsed_ms`` is the
    registration's / update's own time (file reading excluded). When the case has truth per
    frame, ``"tre_mm"`` (per level, mean over its targets) is added to each frame.
    """
    import time

    import numpy as np
    from tqdm.auto import tqdm

    from arspine._version import __version__
    from arspine.datasets.bench import case_model
    from arspine.datasets.case import load_case
    from arspine.registration import register
    from arspine.registration.metrics import tre_mm
    from arspine.registration.tracking import Tracker

    case = load_case(case_dir, load_scan=False)
    if not case.frames:
        raise InputError(f"--case {case_dir}: no frames/NNNN.ply (not a sequence case)")
    model = case_model(case)
    exposed = [lv for lv in case.exposed_levels if lv in model.levels] or list(model.levels)
    rate = case.frame_rate_hz
    truth = {int(f.get("index", i)): f for i, f in enumerate(case.frame_truth or [])}

    def stamp(i: int) -> float:
        t = truth.get(i, {}).get("timestamp_s")
        return float(t) if t is not None else i / rate

    def add_tre(entry: dict, i: int) -> None:
        ft = truth.get(i)
        if not ft:
            return
        out = {}
        for lv, v in entry["vertebrae"].items():
            T_true = ft["vertebrae"].get(lv) if isinstance(ft.get("vertebrae"), dict) else None
            if T_true is None or lv not in case.truth:
                continue
            if isinstance(T_true, dict):
                T_true = T_true["T_sensor_from_ct"]
            out[lv] = float(np.mean(tre_mm(np.asarray(v["T_sensor_from_ct"]), T_true,
                                           case.targets(lv))))
        entry["tre_mm"] = out

    frames_out = []
    first = case.load_frame(0)
    t0 = time.perf_counter()
    result = register(model, first, levels=exposed)
    reg_ms = (time.perf_counter() - t0) * 1e3
    vert = {lv: {"T_sensor_from_ct": v.T_sensor_from_ct.as_matrix().tolist(),
                 "status": v.status} for lv, v in result.vertebrae.items() if lv in exposed}
    entry = {"index": 0, "timestamp_s": stamp(0), "status": result.status,
             "vertebrae": vert, "elapsed_ms": round(reg_ms, 3), "reason": result.reason,
             "relocalized": True}
    add_tre(entry, 0)
    frames_out.append(entry)
    tracker = Tracker(model, result, levels=[lv for lv in exposed
                                             if not result.vertebrae or lv in result.vertebrae]
                      or exposed)
    for i in tqdm(range(1, len(case.frames)), desc="track", unit="frame",
                  disable=not progress or not sys.stderr.isatty()):
        cloud = case.load_frame(i)
        fr = tracker.update(cloud.points, stamp(i))
        entry = fr.to_dict()
        entry["index"] = i
        add_tre(entry, i)
        frames_out.append(entry)
    return {"frames": frames_out, "version": __version__, "case": case.name,
            "levels": tracker.levels, "initial_registration": result.to_dict()}


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from arspine.datasets.bench_report import write_text_atomic
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
