"""Track a sequence case bundle and measure it: the engine of `arspine track` and of the
bench's sequence cases (the `tracking` suite).

The first frame is registered globally (:func:`arspine.registration.register`), the rest are
tracked (:class:`arspine.registration.tracking.Tracker`). With truth per frame, each frame gets
its TRE per level; :func:`evaluate_sequence` turns the trajectory into a bench case record.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from arspine.datasets.bench import FALSE_ACCEPT_TRE_MM
from arspine.errors import InputError

__all__ = ["track_case", "evaluate_sequence"]


def track_case(case_dir: str, progress: bool = True) -> dict:
    """Track a sequence case; returns the trajectory dict of DESIGN.md.

    ``{"frames": [{"index", "timestamp_s", "status", "vertebrae": {"L3": {"T_sensor_from_ct":
    4x4, ...}}, "elapsed_ms", ...}], "version": str, ...}``; ``elapsed_ms`` is the
    registration's / update's own time (file reading excluded). When the case has truth per
    frame, ``"tre_mm"`` (per level, mean over its targets) is added to each frame.
    """
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



def evaluate_sequence(case_dir: str) -> dict:
    """Bench record of a sequence case (see :mod:`arspine.datasets.bench`).

    Per level, ``tre_mm`` is the median TRE over the frames where the level was reported ok;
    ``false_accept`` is set when any frame reported a level ok with TRE above
    :data:`FALSE_ACCEPT_TRE_MM`; ``status`` is ok when at least one frame was ok. Extra keys:
    ``frames``, ``frames_ok``, ``frames_lost``, ``frames_rejected``, ``median_update_ms``,
    ``p95_update_ms``, ``max_tre_ok_mm``, ``loss_reported``.
    """
    t0 = time.perf_counter()
    traj = track_case(case_dir, progress=False)
    frames = traj["frames"]
    per_level: dict[str, list[float]] = {}
    every: dict[str, list[float]] = {}
    worst_ok = 0.0
    false_accept = False
    for f in frames:
        for lv, t in (f.get("tre_mm") or {}).items():
            v = f["vertebrae"].get(lv, {})
            # a level is shown when it is ok (a frame can be "lost" for one occluded level);
            # the first frame's levels count only when the registration itself was ok
            shown = v.get("status", f["status"]) == "ok" and (
                f["index"] != 0 or f["status"] == "ok")
            every.setdefault(lv, []).append(t)
            if shown:
                per_level.setdefault(lv, []).append(t)
                worst_ok = max(worst_ok, t)
                false_accept |= t > FALSE_ACCEPT_TRE_MM
    ms = [f["elapsed_ms"] for f in frames[1:]]
    n_ok = sum(1 for f in frames if f["status"] == "ok")
    # TRE per level over the frames it was shown; never shown: over all frames
    tre = {lv: float(np.median(per_level.get(lv) or v)) for lv, v in every.items()}
    meta_levels = [lv for lv in (traj.get("levels") or list(tre)) if lv in tre]
    vert = {lv: {"status": "ok" if lv in per_level else "rejected",
                 "tre_mm": tre[lv], "rotation_deg": None, "translation_mm": None}
            for lv in meta_levels}
    return {"case": traj.get("case"), "suite": None, "status": "ok" if n_ok else "rejected",
            "reason": None if n_ok else frames[0].get("reason"),
            "tre_mm": {lv: tre[lv] for lv in meta_levels},
            "rotation_deg": None, "translation_mm": None,
            "elapsed_s": time.perf_counter() - t0, "vertebrae": vert,
            "false_accept": bool(false_accept), "error": None,
            "noise_mm": None, "overlap": None, "kind": "sequence",
            "frames": len(frames), "frames_ok": n_ok,
            "frames_lost": sum(1 for f in frames if f["status"] == "lost"),
            "frames_rejected": sum(1 for f in frames if f["status"] == "rejected"),
            "median_update_ms": float(np.median(ms)) if ms else None,
            "p95_update_ms": float(np.percentile(ms, 95)) if ms else None,
            "max_tre_ok_mm": worst_ok if per_level else None}
