"""Mesh preparation for the overlay: numpy <-> VTK polydata, decimation to a triangle budget.

The renderer draws every vertebra every frame on a CPU rasteriser (llvmpipe), so triangles
cost time; a vertebra that covers ~150 px on screen does not need 30k triangles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh, as_points

__all__ = [
    "mesh_to_polydata",
    "polydata_to_mesh",
    "decimate",
    "triangle_budget",
    "screw_polydata",
    "tool_mesh",
    "is_closed",
    "oriented_outward",
]


def mesh_to_polydata(mesh: Mesh):
    """A ``vtkPolyData`` of the mesh's triangles (vertices copied, mm)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray

    if not isinstance(mesh, Mesh):
        raise InputError(f"mesh must be an arspine Mesh, got {type(mesh).__name__}")
    if mesh.n_faces == 0:
        raise InputError(f"mesh {mesh.name!r} has no triangles")
    pts = vtk.vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(mesh.vertices), deep=True))
    f = mesh.faces.astype(np.int64)
    offsets = np.arange(0, 3 * len(f) + 1, 3, dtype=np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(f.ravel()), deep=True))
    pd = vtk.vtkPolyData()
    pd.SetPoints(pts)
    pd.SetPolys(cells)
    return pd


def polydata_to_mesh(pd, name: str | None = None, frame: str = "ct") -> Mesh:
    """A :class:`Mesh` from a triangle ``vtkPolyData``."""
    from vtk.util.numpy_support import vtk_to_numpy

    v = vtk_to_numpy(pd.GetPoints().GetData()).astype(np.float64)
    conn = vtk_to_numpy(pd.GetPolys().GetConnectivityArray()).astype(np.int64)
    return Mesh(v, conn.reshape(-1, 3), name=name, frame=frame)


def is_closed(mesh: Mesh) -> bool:
    """True when every edge is shared by exactly two triangles (a watertight surface)."""
    if mesh.n_faces == 0:
        return False
    f = mesh.faces
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool(np.all(counts == 2))


def oriented_outward(mesh: Mesh) -> Mesh:
    """The mesh with its faces wound outward (positive enclosed volume)."""
    if mesh.enclosed_volume() < 0:
        from dataclasses import replace
        return replace(mesh, faces=mesh.faces[:, ::-1].copy())
    return mesh


def triangle_budget(width_px: int, height_px: int, n_objects: int) -> int:
    """Triangles per vertebra for a display: ~1500 per vertebra at 1280x720, scaled with the
    square root of the pixel count (silhouette detail grows with linear resolution) and
    shared when many vertebrae are shown."""
    scale = math.sqrt(width_px * height_px / (1280.0 * 720.0))
    per = 1500.0 * scale * min(1.0, 5.0 / max(1, n_objects)) ** 0.5
    return int(max(300, per))


def decimate(mesh: Mesh, target_triangles: int) -> Mesh:
    """Quadric decimation of ``mesh`` to about ``target_triangles`` (no-op when smaller)."""
    import vtk

    if target_triangles < 4:
        raise InputError(f"target_triangles must be >= 4, got {target_triangles}")
    if mesh.n_faces <= target_triangles:
        return mesh
    dec = vtk.vtkQuadricDecimation()
    dec.SetInputData(mesh_to_polydata(mesh))
    dec.SetTargetReduction(1.0 - target_triangles / mesh.n_faces)
    dec.VolumePreservationOn()
    dec.Update()
    out = polydata_to_mesh(dec.GetOutput(), name=mesh.name, frame=mesh.frame)
    if out.n_faces == 0:  # degenerate input: keep the original rather than show nothing
        return mesh
    return out


def screw_polydata(entry_mm: Sequence[float], target_mm: Sequence[float], diameter_mm: float,
                   sides: int = 10):
    """A capped cylinder from ``entry_mm`` to ``target_mm`` (a planned screw), vtkPolyData."""
    import vtk

    seg = as_points(np.array([entry_mm, target_mm], dtype=np.float64), "screw entry/target")
    if not (math.isfinite(diameter_mm) and diameter_mm > 0):
        raise InputError(f"screw diameter_mm must be > 0, got {diameter_mm!r}")
    if np.linalg.norm(seg[1] - seg[0]) < 1e-6:
        raise InputError("screw entry and target are the same point")
    line = vtk.vtkLineSource()
    line.SetPoint1(*seg[0])
    line.SetPoint2(*seg[1])
    tube = vtk.vtkTubeFilter()
    tube.SetInputConnection(line.GetOutputPort())
    tube.SetRadius(diameter_mm / 2.0)
    tube.SetNumberOfSides(sides)
    tube.CappingOn()
    tri = vtk.vtkTriangleFilter()
    tri.SetInputConnection(tube.GetOutputPort())
    tri.Update()
    return tri.GetOutput()


def tool_mesh(length_mm: float = 150.0, diameter_mm: float = 3.0, sides: int = 10) -> Mesh:
    """A pointer in its ``tool`` frame: tip at the origin, shaft along +z (mm)."""
    pd = screw_polydata([0.0, 0.0, 0.0], [0.0, 0.0, length_mm], diameter_mm, sides)
    return polydata_to_mesh(pd, name="tool", frame="tool")
