"""`arspine simulate`: write a case bundle with a simulated intraoperative scan and its truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from arspine.errors import InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "write a case bundle (phantom, a CT + labels, or a mesh) with a simulated scan and truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--phantom", action="store_true",
                     help="synthetic lumbar phantom (written as a DICOM series)")
    src.add_argument("--ct", type=Path, help="CT: DICOM folder, .nii/.nii.gz or .nrrd")
    src.add_argument("--mesh", type=Path,
                     help="mesh with one connected component per vertebra (e.g. the lumbar "
                          "shape-model mean_L2-L5.ply); names from --mesh-levels")
    parser.add_argument("--labels", type=Path, help="vertebra label map on the CT grid")
    parser.add_argument("--spacing", type=float, default=1.5,
                        help="phantom voxel size, mm (default 1.5)")
    parser.add_argument("--label-scheme", default="totalsegmentator",
                        choices=["totalsegmentator", "verse"])
    parser.add_argument("--mesh-levels", default="L2,L3,L4,L5",
                        help="names of the mesh components, cranial to caudal")
    parser.add_argument("--out", type=Path, required=True, help="case folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sensor", default="structured-light",
                        help="sensor model (structured-light, tof, stereo-zedmini, lidar-64, "
                             "test-320)")
    parser.add_argument("--levels", default=None, help="exposed levels, e.g. L2,L3,L4")
    parser.add_argument("--frames", type=int, default=0,
                        help="write a sequence of N frames (breathing, camera drift)")
    parser.add_argument("--frame-rate", type=float, default=30.0, help="Hz for --frames")
    parser.add_argument("--outliers", type=float, default=0.05,
                        help="fraction of random outliers (default 0.05)")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="multiplier of the sensor's range noise")
    parser.add_argument("--motion", default="moderate",
                        choices=["none", "small", "moderate", "large"],
                        help="per-vertebra motion relative to the CT")
    parser.add_argument("--scene", default="standard", choices=["clean", "standard", "hard"],
                        help="surgical scene preset (clean: wound and skin only)")
    parser.add_argument("--ct-format", default="auto", choices=["auto", "dicom", "nifti"],
                        help="how the CT is stored in the case (auto: copy the input; "
                             "phantom: DICOM)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing case")


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from arspine.datasets.anatomy import anatomy_from_ct, anatomy_from_mesh
    from arspine.datasets.case import write_case
    from arspine.datasets.sensors import get_sensor
    from arspine.datasets.simulate import simulate_scan, simulate_sequence

    t0 = time.perf_counter()
    sensor = get_sensor(args.sensor)
    levels = None
    if args.levels:
        levels = [s.strip() for s in args.levels.split(",") if s.strip()]
    if args.out.exists() and not args.overwrite:
        raise InputError(f"--out exists (use --overwrite): {args.out}")
    if args.phantom:
        from arspine.datasets.phantom import make_phantom

        anatomy = make_phantom(seed=args.seed, spacing_mm=args.spacing,
                               progress=sys.stderr.isatty()).anatomy()
    elif args.ct is not None:
        if args.labels is None:
            raise InputError("--ct needs --labels (a vertebra label map on the CT grid)")
        anatomy = anatomy_from_ct(args.ct, args.labels, args.label_scheme,
                                  progress=sys.stderr.isatty())
    else:
        anatomy = anatomy_from_mesh(args.mesh, levels=args.mesh_levels.split(","))
    from arspine.datasets.scene import SceneConfig

    kw = dict(levels=levels, motion=args.motion, outlier_fraction=args.outliers,
              noise_scale=args.noise_scale, scene=SceneConfig.preset(args.scene))
    if args.frames and args.frames > 0:
        scan = simulate_sequence(anatomy, args.frames, sensor, args.seed,
                                 frame_rate_hz=args.frame_rate,
                                 progress=sys.stderr.isatty(), **kw)
        first = scan.frames[0]
    else:
        scan = first = simulate_scan(anatomy, sensor, args.seed, **kw)
    out = write_case(args.out, scan, anatomy=anatomy, ct_format=args.ct_format,
                     overwrite=args.overwrite)
    n = sum(len(f.cloud) for f in scan.frames) if args.frames else len(first.cloud)
    print(f"wrote {out}: {anatomy.source} anatomy, levels {', '.join(anatomy.levels)}, exposed "
          f"{', '.join(first.exposed_levels)}; sensor {sensor.name}; "
          f"{args.frames or 1} frame(s), {n} points "
          f"({100 * first.fraction('bone'):.1f}% bone); {time.perf_counter() - t0:.1f} s")
    return 0
