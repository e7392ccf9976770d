"""Overlay rendering benchmark: both eyes at 1280x720, five vertebrae + two screws.

Project: one :class:`arspine.overlay.OverlayRenderer` kept alive across frames (meshes
decimated to the display's resolution, only actor matrices and the camera change per frame).
Anchor (the naive approach): a fresh VTK pipeline per frame on the full-resolution meshes
(new render window, mappers, actors; render both eyes; read the pixels back).

Both run in the same process, interleaved in rounds so a shared machine's load hits both
alike; the script prints frames per second (wall clock, median over rounds), CPU seconds per
frame, and the ratio. Bar: >= 30 frames/s for both eyes on 2 CPU cores via EGL/llvmpipe.

Usage: .venv/bin/python benchmarks/bench_overlay.py [--frames 40] [--rounds 3] [--style solid]
       [--render-scale 0.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def five_vertebrae():
    """The real shape-model L2-L5 plus an L1 (L2 moved one level up the spine), in ct mm;
    the sensor above the back, the world as in arspine.overlay.headpose."""
    from arspine.datasets.anatomy import anatomy_from_mesh
    from arspine.datasets.paths import real_data_path
    from arspine.navigation.frames import RigidTransform
    from arspine.navigation.geometry import Mesh
    from arspine.overlay.headpose import default_T_world_from_sensor

    an = anatomy_from_mesh(real_data_path("lumbar_ssm_mean", "mean_L2-L5.ply"))
    s = an.surfaces
    step = s["L2"].centroid() - s["L3"].centroid()
    surfaces = {"L1": Mesh(s["L2"].vertices + step, s["L2"].faces, name="L1"), **s}
    ax = an.axes  # left, posterior, cranial
    c3 = s["L3"].centroid()
    screws = [(c3 + 25 * ax[:, 1] + 20 * sgn * ax[:, 0], c3 - 15 * ax[:, 1] + 8 * sgn * ax[:, 0],
               6.5, "L3") for sgn in (1, -1)]
    c = np.mean([m.centroid() for m in surfaces.values()], axis=0)
    R = np.stack([-ax[:, 0], -ax[:, 2], -ax[:, 1]], axis=1)
    T_sensor_from_ct = RigidTransform.from_rt(R, c + 600 * ax[:, 1], "ct", "sensor").inv()
    T_world_from_ct = default_T_world_from_sensor() @ T_sensor_from_ct
    return surfaces, screws, T_world_from_ct, T_world_from_ct.apply(c)


def naive_frame(display, surfaces, screws, T_world_from_ct, T_world_from_head):
    """The anchor: build everything from scratch, full-resolution meshes, render both eyes."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    from arspine.overlay.meshprep import mesh_to_polydata, screw_polydata
    from arspine.overlay.renderer import set_camera_from_K

    rw = vtk.vtkRenderWindow()
    rw.SetOffScreenRendering(1)
    rw.SetSize(display.width_px, display.height_px)
    rw.SetAlphaBitPlanes(1)
    ren = vtk.vtkRenderer()
    ren.SetBackgroundAlpha(0.0)
    rw.AddRenderer(ren)
    m = vtk.vtkMatrix4x4()
    m.DeepCopy(T_world_from_ct.as_matrix().ravel().tolist())
    polys = [mesh_to_polydata(s) for s in surfaces.values()]
    polys += [screw_polydata(e, t, d) for e, t, d, _ in screws]
    for pd in polys:
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(pd)
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.SetUserMatrix(m)
        ren.AddActor(actor)
    images = {}
    arr = vtk.vtkUnsignedCharArray()
    for side, T in display.eye_poses(T_world_from_head).items():
        set_camera_from_K(ren.GetActiveCamera(), display.K, display.width_px,
                          display.height_px, T)
        ren.ResetCameraClippingRange()
        rw.Render()
        rw.GetRGBACharPixelData(0, 0, display.width_px - 1, display.height_px - 1, 0, arr)
        images[side] = vtk_to_numpy(arr).reshape(display.height_px, display.width_px,
                                                 4)[::-1].copy()
    rw.Finalize()
    return images


def timed(fn, n):
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="project frames per round")
    ap.add_argument("--anchor-frames", type=int, default=6, help="anchor frames per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--style", default="solid")
    ap.add_argument("--render-scale", type=float, default=0.5,
                    help="reduced-cost variant timed besides full resolution")
    args = ap.parse_args(argv)

    from arspine.overlay.display import get_display
    from arspine.overlay.headpose import simulate_head_trajectory
    from arspine.overlay.renderer import OverlayRenderer

    display = get_display("default")
    surfaces, screws, T_world_from_ct, wound = five_vertebrae()
    traj = simulate_head_trajectory("standing", 10.0, 90.0, seed=0, wound_world_mm=wound)
    heads = [traj.pose(i) for i in range(len(traj))]
    full_tri = sum(m.n_faces for m in surfaces.values())

    scales = sorted({1.0, args.render_scale}, reverse=True)
    rens, setup = {}, {}
    for sc in scales:
        t0 = time.perf_counter()
        rens[sc] = OverlayRenderer(display, surfaces, screws, style=args.style,
                                   render_scale=sc)
        setup[sc] = time.perf_counter() - t0
        rens[sc].set_poses(T_world_from_ct)
        rens[sc].render(heads[0])  # warm-up: shader compilation, buffer upload
    # an intermediate: the pipeline kept alive but full-resolution meshes and VTK lighting
    kept = OverlayRenderer(display, surfaces, screws, style=args.style,
                           triangles_per_vertebra=0, lighting="vtk")
    kept.set_poses(T_world_from_ct)
    kept.render(heads[0])
    naive_frame(display, surfaces, screws, T_world_from_ct, heads[0])

    # the same first frame from both, as a sanity check of the comparison
    a = rens[1.0].render(heads[0]).images["left"][..., 3] > 0
    b = naive_frame(display, surfaces, screws, T_world_from_ct, heads[0])["left"][..., 3] > 0
    agree = (a & b).sum() / max(1, (a | b).sum())

    def project(ren, offset):
        return lambda i: ren.render(heads[(offset + i) % len(heads)])

    def anchor(i):
        return naive_frame(display, surfaces, screws, T_world_from_ct, heads[i % len(heads)])

    times = {sc: [] for sc in scales}
    anch, kept_t = [], []
    for r in range(args.rounds):
        for sc in scales:
            times[sc].append(timed(project(rens[sc], r * args.frames), args.frames))
        kept_t.append(timed(project(kept, r * args.frames), max(2, args.frames // 4)))
        anch.append(timed(anchor, args.anchor_frames))
    kept.close()
    kw = float(np.median([p[0] for p in kept_t]))
    kc = float(np.median([p[1] for p in kept_t]))
    n_tri = rens[1.0].n_triangles
    for ren in rens.values():
        ren.close()
    aw = float(np.median([p[0] for p in anch]))
    ac = float(np.median([p[1] for p in anch]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Overlay rendering, both eyes {display.width_px}x{display.height_px}, 5 vertebrae "
          f"+ 2 screws, style {args.style}")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end of the run")
    print(f"  anchor : fresh full-resolution VTK pipeline per frame ({full_tri} triangles): "
          f"{1 / aw:6.1f} frames/s ({aw * 1e3:.1f} ms/frame wall, {ac * 1e3:.1f} ms CPU)")
    print(f"  kept-alive pipeline, full-resolution meshes, VTK lighting: {1 / kw:6.1f} "
          f"frames/s ({kw * 1e3:.1f} ms/frame wall, {kc * 1e3:.1f} ms CPU)")
    for sc in scales:
        pw = float(np.median([p[0] for p in times[sc]]))
        pc = float(np.median([p[1] for p in times[sc]]))
        print(f"  project, render scale {sc}: {n_tri} triangles (decimated from {full_tri}), "
              f"setup {setup[sc]:.2f} s: {1 / pw:6.1f} frames/s ({pw * 1e3:.1f} ms/frame "
              f"wall, {pc * 1e3:.1f} ms CPU)")
        print(f"    ratio to anchor: {aw / pw:.1f}x faster (wall), {ac / pc:.1f}x less CPU; "
              f"bar >= 30 frames/s: {'PASS' if 1 / pw >= 30 else 'FAIL'} at this load; "
              f"CPU-time bound (all threads, what 2 idle cores need at most): "
              f"{1 / pc:.0f} frames/s")
    print(f"  silhouette agreement project vs anchor, first frame (IoU): {agree:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
