"""`arspine info FILE ...`: what a point-cloud or mesh file holds (counts, fields, bounds)."""

from __future__ import annotations

import argparse

HELP = "summarise point-cloud / mesh files (.ply .pcd .xyz .csv .npy .stl .obj)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE", help="files to summarise")
    parser.add_argument("--mesh", action="store_true",
                        help="read as a mesh (default: a mesh for .stl/.obj and PLY with faces)")


def _fmt_bounds(lo, hi) -> str:
    return (f"[{lo[0]:.2f}, {lo[1]:.2f}, {lo[2]:.2f}] .. "
            f"[{hi[0]:.2f}, {hi[1]:.2f}, {hi[2]:.2f}] mm")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arspine.datasets.io import read_mesh, read_points
    from arspine.datasets.io_ply import parse_ply

    for raw in args.paths:
        path = Path(raw)
        suffix = path.suffix.lower()
        as_mesh = args.mesh or suffix in (".stl", ".obj")
        if suffix == ".ply" and not as_mesh and path.is_file():
            faces = parse_ply(path).get("face") or {}
            as_mesh = any(len(v) for v in faces.values())
        if as_mesh:
            m = read_mesh(path)
            parts = m.connected_components()
            print(f"{path}: mesh, {m.n_vertices} vertices, {m.n_faces} triangles, "
                  f"{len(parts)} connected components, enclosed volume "
                  f"{abs(m.enclosed_volume()) / 1000:.1f} cm^3, "
                  f"bounds {_fmt_bounds(*m.bounds())}")
        else:
            c = read_points(path)
            fields = ["xyz"] + [n for n in ("normals", "colors", "labels")
                                if getattr(c, n) is not None] + sorted(c.extra)
            print(f"{path}: point cloud, {len(c)} points, fields {' '.join(fields)}, "
                  f"bounds {_fmt_bounds(c.points.min(axis=0), c.points.max(axis=0))}")
    return 0
