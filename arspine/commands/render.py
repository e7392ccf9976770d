"""`arspine render`: per-eye overlay images of a case for a head pose or a head trajectory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from arspine.atomic import atomic_path, atomic_write_json
from arspine.errors import InputError, RegistrationRejected
from arspine.jsonfile import read_json

__all__ = ["HELP", "add_arguments", "run", "write_png", "sensor_poses_from_result",
           "video_scene", "surface_plane"]

HELP = "render the per-eye overlay (RGBA PNGs + eyes.json) for a head pose or trajectory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", required=True, help="case bundle folder")
    parser.add_argument("--result", help="registration result.json (default: the case's "
                        "truth.json poses)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--head-pose", help="head pose or trajectory JSON "
                     "({T_world_from_head, T_world_from_sensor} or {poses: [...], ...})")
    src.add_argument("--trajectory", help="simulate a head trajectory: static, standing, "
                     "leaning, wound_screen")
    parser.add_argument("--display", default="default", help="display preset (default, "
                        "hololens2, magicleap2, waveguide_glasses, quest3)")
    parser.add_argument("--style", default="solid",
                        help="solid, transparent, outline, depth, clip (default solid)")
    parser.add_argument("--duration-s", type=float, default=2.0,
                        help="simulated trajectory length (default 2 s)")
    parser.add_argument("--rate-hz", type=float, default=15.0,
                        help="frames per second rendered from a trajectory (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="trajectory seed")
    parser.add_argument("--latency-s", type=float, default=0.0,
                        help="render each frame from the head pose this long ago")
    parser.add_argument("--predictor", default="none", help="none, constant_velocity, "
                        "constant_acceleration, kalman (with --latency-s)")
    parser.add_argument("--plan", help="surgical plan JSON (screws) to draw")
    parser.add_argument("--propose-screws", action="store_true",
                        help="propose and draw pedicle screws from the CT and labels")
    parser.add_argument("--clip-depth-mm", type=float,
                        help="hide what lies deeper than this below the most posterior bone "
                             "(a surface plane facing the surgeon)")
    parser.add_argument("--render-scale", type=float, default=1.0,
                        help="render at this fraction of the display resolution and upsample "
                             "(0.1-1, default 1; 0.5 is ~40%% cheaper)")
    parser.add_argument("--screws-on-top", action="store_true",
                        help="draw planned screws over the bone even where it hides them "
                             "(always on for --style outline)")
    parser.add_argument("--text", help="guidance text drawn in both eyes")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def write_png(path: Path, rgba) -> Path:
    """Write an RGBA uint8 image atomically (temp file in the same folder + rename)."""
    import numpy as np
    from PIL import Image

    img = np.ascontiguousarray(rgba, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 4:
        raise InputError(f"image must be (H, W, 4) RGBA, got {img.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
    return path


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data)


def sensor_poses_from_result(data: dict, source: str) -> dict:
    """``{level: RigidTransform T_sensor_from_ct}`` from a result.json dict.

    Rejected results raise :class:`RegistrationRejected`; rejected levels are left out (never
    drawn); levels without their own pose are not drawn either.
    """
    from arspine.navigation.frames import RigidTransform

    if not isinstance(data, dict):
        raise InputError(f"{source} must be a JSON object")
    if data.get("status") != "ok":
        raise RegistrationRejected(f"{source}: registration status is "
                                   f"{data.get('status')!r} ({data.get('reason')}); "
                                   f"nothing is drawn from a rejected registration", data)
    poses = {}
    for lv, d in (data.get("vertebrae") or {}).items():
        if not isinstance(d, dict) or d.get("status", "ok") != "ok":
            continue
        try:
            poses[lv] = RigidTransform.from_matrix(d["T_sensor_from_ct"], "sensor", "ct",
                                                   orthonormalize=True)
        except (KeyError, TypeError, InputError) as exc:
            raise InputError(f"{source}: vertebrae.{lv}.T_sensor_from_ct: {exc}") from None
    if not poses and data.get("T_sensor_from_ct") is not None:
        poses["*"] = RigidTransform.from_matrix(data["T_sensor_from_ct"], "sensor", "ct",
                                                orthonormalize=True)
    if not poses:
        raise InputError(f"{source} has no accepted T_sensor_from_ct")
    return poses


def _load_screws(args, case):
    if args.plan:
        from arspine.navigation.plan import SurgicalPlan

        return list(SurgicalPlan.from_dict(read_json(args.plan, "--plan file")))
    if args.propose_screws:
        if case.ct_path is None or case.labels_path is None:
            raise InputError("--propose-screws needs a case with a CT and labels.nii.gz")
        from arspine.navigation.plan import propose_screws

        ct = case.load_ct()
        return list(propose_screws(ct, case.load_labels(ct)))
    return []


def video_scene(surfaces: dict, T_world_from_ct, seed: int = 0) -> list:
    """The surgical scene around the vertebrae (skin, wound walls, drapes, retractors; no
    bone) in the world frame: the camera view of a video see-through display.

    Built by :func:`arspine.datasets.scene.build_scene` around the posed levels; an empty list
    when it cannot be built (e.g. a single level gives no spine axis).
    """
    import numpy as np

    from arspine.datasets.anatomy import estimate_axes
    from arspine.datasets.scene import SceneConfig, build_scene
    from arspine.navigation.geometry import Mesh

    if len(surfaces) < 2:
        return []
    parts, _ = build_scene(surfaces, sorted(surfaces), estimate_axes(surfaces), None,
                           SceneConfig(), np.random.default_rng(seed))
    out = []
    for part in parts:
        if part.level is not None or part.mesh.n_faces == 0:
            continue  # bone is the overlay's job
        out.append(Mesh(T_world_from_ct.apply(part.mesh.vertices), part.mesh.faces,
                        name=f"scene{part.label}", frame="world"))
    return out


def surface_plane(surfaces: dict, T_world_from_ct: dict, depth_mm: float):
    """``(point_world, normal_world)``: a plane facing posterior (towards the surgeon of a
    prone patient), ``depth_mm`` below the most posterior bone; what lies deeper is hidden."""
    import numpy as np

    from arspine.datasets.anatomy import estimate_axes

    if len(surfaces) < 2:
        raise InputError("--clip-depth-mm needs two or more posed levels (for the spine axes)")
    posterior_ct = estimate_axes(surfaces)[:, 1]
    pts = np.concatenate([T_world_from_ct[lv].apply(m.vertices) for lv, m in surfaces.items()])
    post = np.mean([T_world_from_ct[lv].apply_vectors(posterior_ct) for lv in surfaces], axis=0)
    post /= np.linalg.norm(post)
    top = pts[np.argmax(pts @ post)]
    return top - depth_mm * post, post


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from arspine.datasets.case import load_case
    from arspine.navigation.frames import RigidTransform
    from arspine.overlay.display import get_display
    from arspine.overlay.headpose import (
        HeadTrajectory,
        default_T_world_from_sensor,
        load_head_poses,
        simulate_head_trajectory,
    )
    from arspine.overlay.latency import delayed_poses
    from arspine.overlay.renderer import STYLES, OverlayRenderer

    display = get_display(args.display)
    if args.style not in STYLES:
        raise InputError(f"--style must be one of {', '.join(STYLES)}, got {args.style!r}")
    if args.style == "clip" and args.clip_depth_mm is None:
        raise InputError("--style clip needs --clip-depth-mm")
    if args.clip_depth_mm is not None and not args.clip_depth_mm > 0:
        raise InputError(f"--clip-depth-mm must be > 0, got {args.clip_depth_mm}")
    if not 0.1 <= args.render_scale <= 1.0:
        raise InputError(f"--render-scale must be in 0.1..1, got {args.render_scale}")
    if not (args.rate_hz > 0 and args.duration_s > 0):
        raise InputError(f"--rate-hz and --duration-s must be > 0, got {args.rate_hz}, "
                         f"{args.duration_s}")
    case = load_case(args.case, load_scan=False)
    if args.result:
        rp = Path(args.result)
        data = read_json(rp, "--result file")
        sensor_poses = sensor_poses_from_result(data, str(rp))
    elif case.truth:
        sensor_poses = {lv: d["T_sensor_from_ct"] for lv, d in case.truth.items()}
    else:
        raise InputError(f"case {case.folder} has no truth.json: pass --result result.json")

    # Head poses (read first: a bad file fails before any heavy work).
    traj = load_head_poses(args.head_pose) if args.head_pose else None
    surfaces = case.load_surfaces()
    if "*" not in sensor_poses:
        surfaces = {lv: m for lv, m in surfaces.items() if lv in sensor_poses}
        if not surfaces:
            raise InputError(f"no vertebra surface matches the posed levels "
                             f"{sorted(sensor_poses)}")
    screws = _load_screws(args, case)

    # Where the sensor sits in the room.
    T_world_from_sensor = traj.sensor_pose() if traj is not None \
        else default_T_world_from_sensor()
    T_world_from_ct = {lv: T_world_from_sensor @ T for lv, T in sensor_poses.items()}
    if "*" in T_world_from_ct:
        T_world_from_ct = T_world_from_ct["*"]
        T_any = T_world_from_ct
    else:
        T_any = None
    cents = [(T_any or T_world_from_ct[lv]).apply(m.vertices.mean(axis=0))
             for lv, m in surfaces.items()]
    wound = np.mean(cents, axis=0)
    if traj is None:
        kind = args.trajectory or "static"
        duration = args.duration_s if args.trajectory else 1.0 / args.rate_hz
        traj = simulate_head_trajectory(kind, duration, max(60.0, args.rate_hz), args.seed,
                                        wound_world_mm=wound,
                                        distance_mm=display.focal_plane_mm
                                        if display.focal_plane_mm < 1000 else 500.0,
                                        T_world_from_sensor=T_world_from_sensor)
        if not args.trajectory:  # one still frame from the standard viewpoint
            traj = HeadTrajectory(np.zeros(1), traj.T_world_from_head[:1],
                                  traj.T_world_from_sensor, "pose", traj.meta)
        else:  # resample to the output frame rate
            times = np.arange(0.0, traj.duration_s + 1e-9, 1.0 / args.rate_hz)
            traj = HeadTrajectory(times, traj.poses_at(times), traj.T_world_from_sensor,
                                  traj.name, traj.meta)

    times = traj.timestamps_s
    heads = traj.T_world_from_head
    if args.latency_s > 0 and len(traj) > 1:
        times, heads, _ = delayed_poses(traj, args.latency_s, args.predictor)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    single = len(times) == 1
    frames = []
    from tqdm import tqdm

    clip_plane = None
    if args.clip_depth_mm is not None:
        clip_plane = surface_plane(surfaces, T_world_from_ct if T_any is None else
                                   {lv: T_any for lv in surfaces}, args.clip_depth_mm)
    scene = None
    if display.see_through == "video":
        T_scene = T_any or T_world_from_ct[sorted(T_world_from_ct)[len(T_world_from_ct) // 2]]
        scene = video_scene(surfaces, T_scene, args.seed) or None
    with OverlayRenderer(display, surfaces, screws, style=args.style, scene=scene,
                         clip_plane=clip_plane, render_scale=args.render_scale,
                         screws_on_top=True if args.screws_on_top else None) as ren:
        ren.set_poses(T_world_from_ct)
        bar = tqdm(total=len(times), desc="render", unit="frame",
                   disable=args.no_progress or single or not os.isatty(2))
        for i, (t, m) in enumerate(zip(times, heads)):
            T_wh = RigidTransform.from_matrix(m, "world", "head", orthonormalize=True)
            frame = ren.render(T_wh, text=args.text)
            entry = {"index": i, "timestamp_s": float(t)}
            for side in ("left", "right"):
                name = f"{side}.png" if single else f"{side}_{i:04d}.png"
                write_png(out / name, frame.images[side])
                entry[side] = frame.eye_dict(side, name)
            entry["T_world_from_head"] = T_wh.as_matrix().tolist()
            frames.append(entry)
            bar.update(1)
        bar.close()
        n_tri = ren.n_triangles
    eyes = {"frames": frames, "display": display.to_dict(), "style": args.style,
            "T_world_from_sensor": T_world_from_sensor.as_matrix().tolist(),
            "levels": sorted(surfaces), "latency_s": args.latency_s,
            "T_world_from_ct": {lv: (T_any or T_world_from_ct[lv]).as_matrix().tolist()
                                for lv in sorted(surfaces)},
            "predictor": args.predictor if args.latency_s > 0 else None,
            "convention": "eye x right, y down, z forward; pixel (u, v) = K @ (x/z, y/z, 1), "
                          "pixel centres at integers, (0, 0) top-left"}
    _write_json(out / "eyes.json", eyes)
    print(f"arspine render: {len(frames)} frame(s), {len(surfaces)} vertebrae "
          f"({n_tri} triangles), {len(screws)} screws, display {display.name} "
          f"{display.width_px}x{display.height_px} -> {out}")
    return 0
