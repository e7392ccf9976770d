"""``arspine register``: register a CT to an intraoperative scan and write result.json.

Exit codes: 0 ok; 2 bad input (one line); 3 refused by the quality gate (the result is still
written, with ``"status": "rejected"`` and the reason); 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from arspine.errors import InputError, RegistrationRejected

HELP = "register a CT (DICOM/NIfTI/NRRD) to an intraoperative scan (no initial pose needed)"

__all__ = ["HELP", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", required=True, metavar="PATH",
                        help="CT: DICOM folder, .nii/.nii.gz or .nrrd")
    parser.add_argument("--scan", required=True, metavar="PATH",
                        help="scan in sensor mm: .ply/.pcd/.xyz/.npy")
    parser.add_argument("--labels", metavar="PATH", help="vertebra label map on the CT grid")
    parser.add_argument("--label-scheme", choices=["verse", "totalsegmentator"],
                        default=None, help="label ids of --labels (default: guessed)")
    parser.add_argument("--levels", metavar="L2,L3",
                        help="hint: levels expected in the exposure (not needed)")
    parser.add_argument("--out", metavar="result.json", default="result.json",
                        help="where to write the result (default result.json)")
    parser.add_argument("--model-cache", metavar="PATH",
                        help="prepared-model cache file (.npz): read if present, else written")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary")


def _check_path(p: str, arg: str, dir_ok: bool = False) -> Path:
    path = Path(p)
    if not path.exists():
        raise InputError(f"{arg}: file not found: {path}")
    if path.is_dir() and not dir_ok:
        raise InputError(f"{arg}: expected a file, got a folder: {path}")
    return path


def run(args: argparse.Namespace) -> int:
    from arspine.registration.model import PreparedModel, prepare_model
    from arspine.registration.pipeline import register

    ct_path = _check_path(args.ct, "--ct", dir_ok=True)
    scan_path = _check_path(args.scan, "--scan")
    labels_path = _check_path(args.labels, "--labels") if args.labels else None
    levels = [x.strip() for x in args.levels.split(",") if x.strip()] if args.levels else None
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise InputError(f"--out must be a file path, got a folder: {out}")

    t0 = time.perf_counter()
    from arspine.datasets.io import read_points

    scan = read_points(scan_path)
    if len(scan) == 0:
        raise InputError(f"--scan: {scan_path} holds no points")
    model = None
    cache = Path(args.model_cache) if args.model_cache else None
    ct = labels = None
    if cache is not None and cache.is_file():
        model = PreparedModel.load(cache)
    else:
        from arspine import imaging

        ct = imaging.load_ct(ct_path, progress=not args.quiet and sys.stderr.isatty())
        if labels_path is not None:
            labels = imaging.load_labels(labels_path, like=ct, scheme=args.label_scheme)
    t_load = time.perf_counter() - t0

    t1 = time.perf_counter()
    if model is None:
        model = prepare_model(ct, labels)
        if cache is not None:
            model.save(cache)
    t_prep = time.perf_counter() - t1

    result = register(model, scan, levels=levels)
    result.timing_s = {"load": t_load, "prepare": t_prep,
                       "register": result.timing_s.get("register", result.elapsed_s),
                       "prepare_scan": result.timing_s.get("prepare_scan")}
    result.quality["inputs"] = {"ct": str(ct_path), "scan": str(scan_path),
                                "labels": str(labels_path) if labels_path else None}
    result.save(out)
    if not args.quiet:
        levels_txt = ", ".join(f"{k}:{v.status}" for k, v in result.vertebrae.items())
        print(f"{result.status}: register {result.timing_s['register']:.2f} s "
              f"(load {t_load:.2f} s, prepare {t_prep:.2f} s); levels {levels_txt or '-'}; "
              f"wrote {out}")
    if result.status != "ok":
        raise RegistrationRejected(result.reason or "rejected", json.loads(
            json.dumps(result.to_dict())))
    return 0
