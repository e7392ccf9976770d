"""`arspine export`: a registration as ITK transforms, the plan and targets as Slicer markups,
the vertebra surfaces as PLY/STL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from arspine.jsonfile import read_json

HELP = "export ITK transforms (.tfm/.h5), Slicer markups (.mrk.json) and meshes (PLY/STL)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, metavar="DIR", help="case bundle folder")
    parser.add_argument("--result", required=True, metavar="F",
                        help="registration result.json (from arspine register)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--plan", default="auto", metavar="auto|none|FILE",
                        help="screw plan: 'auto' proposes one per level and side from the CT "
                             "labels (default), 'none' skips it, or a plan JSON file")
    parser.add_argument("--formats", default="ply,stl", help="mesh formats (default ply,stl)")
    parser.add_argument("--allow-rejected", action="store_true",
                        help="export a registration the quality gate rejected (marked as "
                             "such in manifest.json); refused by default (exit 3)")


def _read_result(path: Path) -> dict:

    d = read_json(path, "--result file")
    from arspine.registration import RegistrationResult

    RegistrationResult.from_dict(d)  # validates shape, status and matrices
    return d


def run(args: argparse.Namespace) -> int:
    from arspine.datasets.case import load_case
    from arspine.errors import InputError, RegistrationRejected
    from arspine.navigation.export import atomic_write_text, export_case
    from arspine.navigation.frames import RigidTransform
    from arspine.navigation.plan import SurgicalPlan
    from arspine.navigation.session import NavigationSession, sha256_of

    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("ply", "stl", "obj")]
    if bad:
        raise InputError(f"--formats must list ply, stl or obj, got {bad}")
    result_path = Path(args.result)
    result = _read_result(result_path)
    if result["status"] != "ok" and not args.allow_rejected:
        raise RegistrationRejected(f"{result_path} is a rejected registration "
                                   f"({result.get('reason')}); not exported "
                                   f"(--allow-rejected to export anyway)", result)
    case = load_case(args.case, load_scan=False)
    session = NavigationSession.from_case(case, progress=True)
    transforms = [RigidTransform.from_matrix(result["T_sensor_from_ct"], "sensor", "ct",
                                             orthonormalize=True)]
    for lv, v in (result.get("vertebrae") or {}).items():
        if v.get("status", "ok") == "ok" or args.allow_rejected:
            transforms.append(RigidTransform.from_matrix(v["T_sensor_from_ct"], "sensor",
                                                         f"ct_{lv}", orthonormalize=True))
    plan = None
    if args.plan == "auto":
        if session.ct is not None and session.labels is not None:
            plan = session.plan_screws(progress=True)  # every plannable level; cut ones skipped
            for lv, why in plan.skipped.items():
                print(f"arspine export: {lv} not planned: {why}", file=sys.stderr)
    elif args.plan != "none":
        plan = SurgicalPlan.from_dict(read_json(args.plan, "--plan file"))
    targets = {lv: t["targets_ct_mm"] for lv, t in case.truth.items() if "targets_ct_mm" in t}
    out = Path(args.out)
    written = export_case(out, transforms=transforms, plan=plan, targets_ct_mm=targets,
                          surfaces=session.surfaces, mesh_formats=formats)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["provenance"] = {"case": str(case.folder), "result": str(result_path),
                              "result_sha256": sha256_of(result_path),
                              "result_status": result["status"],
                              "inputs": session.sources}
    if case.ct_path is not None and case.ct_path.is_dir():  # a DICOM CT: add a REG object
        from arspine.navigation.export import write_spatial_registration

        sro = write_spatial_registration(transforms[0].inv(), case.ct_path,
                                         out / "T_ct_from_sensor_REG.dcm",
                                         series_uid=(session.ct.meta or {}).get("series_uid"))
        manifest["dicom"] = [sro.name]
    if plan is not None:
        atomic_write_text(out / "plan.json", json.dumps(plan.to_dict(), indent=1))
        manifest["plan"] = "plan.json"
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    print(f"exported to {out}: {len(written['transforms'])} transform files, "
          f"{len(written['markups'])} markups, {len(written['meshes'])} meshes",
          file=sys.stdout)
    return 0
