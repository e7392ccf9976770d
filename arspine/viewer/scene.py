"""VTK actors for the viewer's 3D view: vertebrae, scan points, screws, tool (no Qt).

Everything is drawn in the ``ct`` frame (mm); callers transform other frames first.
"""

from __future__ import annotations

import numpy as np
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkTubeFilter
from vtkmodules.vtkFiltersSources import vtkConeSource, vtkLineSource, vtkSphereSource
from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

from arspine.navigation.geometry import Mesh, as_points

__all__ = ["BONE_RGB", "SELECTED_RGB", "SCAN_RGB", "level_color", "mesh_polydata",
           "mesh_actor", "points_actor", "segment_actor", "sphere_actor", "cone_actor",
           "set_color"]

#: bone as rendered in the 3D view (ivory); the screenshot test looks for it
BONE_RGB = (0.89, 0.85, 0.72)
SELECTED_RGB = (0.98, 0.80, 0.35)
SCAN_RGB = (0.25, 0.75, 1.0)
_LEVEL_TINTS = [(0.89, 0.85, 0.72), (0.86, 0.82, 0.66), (0.91, 0.87, 0.76),
                (0.84, 0.80, 0.70)]


def level_color(index: int) -> tuple[float, float, float]:
    """A bone-like colour, slightly different per level so neighbours can be told apart."""
    return _LEVEL_TINTS[index % len(_LEVEL_TINTS)]


def mesh_polydata(mesh: Mesh) -> vtkPolyData:
    """``vtkPolyData`` with the mesh's vertices (mm) and triangles, with point normals."""
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(mesh.vertices, dtype=np.float64), deep=True))
    faces = np.asarray(mesh.faces, dtype=np.int64)
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells = vtkCellArray()
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(faces.ravel().copy(), deep=True))
    pd = vtkPolyData()
    pd.SetPoints(pts)
    pd.SetPolys(cells)
    norm = vtkPolyDataNormals()
    norm.SetInputData(pd)
    norm.SplittingOff()
    norm.Update()
    return norm.GetOutput()


def set_color(actor: vtkActor, rgb, opacity: float = 1.0) -> None:
    actor.GetProperty().SetColor(*rgb)
    actor.GetProperty().SetOpacity(float(opacity))


def mesh_actor(mesh: Mesh, rgb=BONE_RGB, opacity: float = 1.0) -> vtkActor:
    """A shaded surface actor for a mesh."""
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(mesh_polydata(mesh))
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    set_color(actor, rgb, opacity)
    prop = actor.GetProperty()
    prop.SetSpecular(0.15)
    prop.SetSpecularPower(20)
    return actor


def points_actor(points, rgb=SCAN_RGB, size_px: float = 2.0, max_points: int = 200_000,
                 seed: int = 0) -> vtkActor:
    """Point cloud as vertices, ``(N, 3)`` mm; randomly thinned to ``max_points``."""
    p = as_points(points, "points", allow_empty=True)
    if len(p) > max_points:
        p = p[np.random.default_rng(seed).choice(len(p), max_points, replace=False)]
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(p), deep=True))
    n = len(p)
    verts = vtkCellArray()
    verts.SetData(numpy_to_vtkIdTypeArray(np.arange(n + 1, dtype=np.int64), deep=True),
                  numpy_to_vtkIdTypeArray(np.arange(n, dtype=np.int64), deep=True))
    pd = vtkPolyData()
    pd.SetPoints(pts)
    pd.SetVerts(verts)
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(pd)
    actor = vtkActor()
    actor.SetMapper(mapper)
    set_color(actor, rgb)
    actor.GetProperty().SetPointSize(size_px)
    actor.GetProperty().LightingOff()
    return actor


def segment_actor(start_mm, end_mm, radius_mm: float = 2.25, rgb=(0.3, 0.9, 0.4),
                  opacity: float = 1.0) -> tuple[vtkActor, vtkLineSource]:
    """A tube from ``start_mm`` to ``end_mm`` (a screw, a tool shaft); returns the actor and
    its line source so callers can move the ends."""
    line = vtkLineSource()
    line.SetPoint1(*np.asarray(start_mm, float))
    line.SetPoint2(*np.asarray(end_mm, float))
    tube = vtkTubeFilter()
    tube.SetInputConnection(line.GetOutputPort())
    tube.SetRadius(float(radius_mm))
    tube.SetNumberOfSides(16)
    tube.CappingOn()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(tube.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    set_color(actor, rgb, opacity)
    return actor, line


def sphere_actor(center_mm, radius_mm: float = 2.0, rgb=(1.0, 0.3, 0.3)
                 ) -> tuple[vtkActor, vtkSphereSource]:
    src = vtkSphereSource()
    src.SetCenter(*np.asarray(center_mm, float))
    src.SetRadius(float(radius_mm))
    src.SetThetaResolution(16)
    src.SetPhiResolution(16)
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(src.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    set_color(actor, rgb)
    return actor, src


def cone_actor(tip_mm, direction, length_mm: float = 20.0, radius_mm: float = 3.0,
               rgb=(0.8, 0.8, 0.9)) -> tuple[vtkActor, vtkConeSource]:
    """A cone whose tip is at ``tip_mm`` pointing along ``direction`` (a tool tip)."""
    d = np.asarray(direction, float)
    d = d / max(np.linalg.norm(d), 1e-12)
    src = vtkConeSource()
    src.SetHeight(float(length_mm))
    src.SetRadius(float(radius_mm))
    src.SetResolution(24)
    src.SetDirection(*d)
    src.SetCenter(*(np.asarray(tip_mm, float) - d * length_mm / 2))
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(src.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    set_color(actor, rgb)
    return actor, src
