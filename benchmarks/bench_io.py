"""Point-cloud I/O speed: arspine.datasets.io against Open3D's readers/writers, same run.

A 250k-point scan with normals and colours (the size the design's registration target is set
for) is written and read in binary PLY, binary PCD and binary_compressed PCD; the real
65k-vertex shape-model mesh is read as PLY. Prints each time and the ratio arspine / Open3D
(below 1 = faster). Run: ``.venv/bin/python benchmarks/bench_io.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    import open3d as o3d

    from arspine.datasets.io import read_mesh, read_points, write_points
    from arspine.datasets.paths import shared_data_dir
    from arspine.navigation.geometry import PointCloud

    rng = np.random.default_rng(0)
    n = 250_000
    pts = rng.normal(scale=100.0, size=(n, 3)) + [0, 0, 500]
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    col = rng.integers(0, 256, size=(n, 3)) / 255.0
    cloud = PointCloud(pts, normals=nrm, colors=col)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.normals = o3d.utility.Vector3dVector(nrm)
    pc.colors = o3d.utility.Vector3dVector(col)

    print(f"{'case':34s} {'arspine ms':>11s} {'open3d ms':>10s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = [("write+read binary PLY", "ply", {}, {}),
                 ("write+read binary PCD", "pcd", {}, {}),
                 ("write+read compressed PCD", "pcd", {"compressed": True},
                  {"compressed": True})]
        for label, ext, ours_kw, o3d_kw in cases:
            ours_path, o3d_path = d / f"ours.{ext}", d / f"o3d.{ext}"

            def ours(ours_path=ours_path, ours_kw=ours_kw):
                write_points(ours_path, cloud, **ours_kw)
                read_points(ours_path)

            def theirs(o3d_path=o3d_path, o3d_kw=o3d_kw):
                o3d.io.write_point_cloud(str(o3d_path), pc, **o3d_kw)
                o3d.io.read_point_cloud(str(o3d_path))

            a, b = best_of(ours), best_of(theirs)
            print(f"{label + f' ({n // 1000}k pts)':34s} {a * 1e3:11.1f} {b * 1e3:10.1f} "
                  f"{a / b:6.2f}")
            # Reading the other library's file too (cross-compatibility, read only).
            a = best_of(lambda o3d_path=o3d_path: read_points(o3d_path))
            b = best_of(lambda ours_path=ours_path: o3d.io.read_point_cloud(str(ours_path)))
            print(f"{'  read the other one' + f' .{ext}':34s} {a * 1e3:11.1f} {b * 1e3:10.1f} "
                  f"{a / b:6.2f}")
    data = shared_data_dir(required=False)
    if data is not None:
        mesh = data / "lumbar_ssm_mean" / "mean_L2-L5.ply"
        a = best_of(lambda: read_mesh(mesh))
        b = best_of(lambda: o3d.io.read_triangle_mesh(str(mesh)))
        print(f"{'read real SSM mesh PLY (65k v)':34s} {a * 1e3:11.1f} {b * 1e3:10.1f} "
              f"{a / b:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
