"""Surface meshes of vertebrae and bone, in the ``ct`` frame (LPS mm).

Each level is cropped to its bounding box (padded with background so the surface closes),
contoured with vtkDiscreteFlyingEdges3D in voxel-index space, smoothed with
vtkWindowedSincPolyDataFilter, decimated with vtkQuadricDecimation to a target triangle
count, and only then mapped to millimetres with the full ``T_ct_from_ijk`` (vtkImageData's
origin/spacing cannot express a direction matrix, a flip or a gantry shear). Faces are
oriented outward after the mapping (a mirroring affine reverses them) and vertex normals are
computed in mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh

__all__ = ["vertebra_surfaces", "bone_surface", "mask_surface"]

_PAD = 2


def _vtk_image(mask: np.ndarray):
    """uint8 vtkImageData of a (I, J, K) mask, unit spacing, origin 0 (index space)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    img = vtkImageData()
    img.SetDimensions(*mask.shape)
    flat = np.ascontiguousarray(mask.transpose(2, 1, 0), dtype=np.uint8).ravel()
    arr = numpy_to_vtk(flat, deep=True)
    arr.SetName("mask")
    img.GetPointData().SetScalars(arr)
    return img


def _polydata_arrays(poly) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if poly.GetNumberOfPoints() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    pts = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    polys = poly.GetPolys()
    conn = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    off = vtk_to_numpy(polys.GetOffsetsArray())
    if not np.all(np.diff(off) == 3):
        raise RuntimeError("surface extraction returned non-triangle cells")
    return pts, conn.reshape(-1, 3)


def _contour(mask: np.ndarray, target_faces: int | None, smooth: bool,
             smooth_iterations: int, pass_band: float):
    """Closed surface of a padded boolean mask in its own index space."""
    from vtkmodules.vtkFiltersCore import (
        vtkQuadricDecimation,
        vtkWindowedSincPolyDataFilter,
    )
    from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D

    fe = vtkDiscreteFlyingEdges3D()
    fe.SetInputData(_vtk_image(mask))
    fe.SetValue(0, 1)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    out = fe.GetOutput()
    if smooth and out.GetNumberOfPolys():
        sm = vtkWindowedSincPolyDataFilter()
        sm.SetInputData(out)
        sm.SetNumberOfIterations(int(smooth_iterations))
        sm.SetPassBand(float(pass_band))
        sm.BoundarySmoothingOff()
        sm.FeatureEdgeSmoothingOff()
        sm.NonManifoldSmoothingOn()
        sm.NormalizeCoordinatesOn()
        sm.Update()
        out = sm.GetOutput()
    n = out.GetNumberOfPolys()
    if target_faces is not None and n > target_faces > 0:
        dec = vtkQuadricDecimation()
        dec.SetInputData(out)
        dec.SetTargetReduction(1.0 - float(target_faces) / n)
        dec.VolumePreservationOn()
        dec.Update()
        out = dec.GetOutput()
    return _polydata_arrays(out)


def _to_mesh(pts_ijk: np.ndarray, faces: np.ndarray, T: np.ndarray, name: str | None,
             extra: dict) -> Mesh:
    v = pts_ijk @ T[:3, :3].T + T[:3, 3]
    m = Mesh(v, faces, name=name, frame="ct", extra=extra)
    if m.n_faces and m.enclosed_volume() < 0:
        m = Mesh(v, faces[:, ::-1].copy(), name=name, frame="ct", extra=extra)
    if m.n_faces:
        m = Mesh(m.vertices, m.faces, normals=m.vertex_normals(), name=name, frame="ct",
                 extra=extra)
    return m


def mask_surface(mask: np.ndarray, T_ct_from_ijk: np.ndarray, *, name: str | None = None,
                 target_faces: int | None = 20000, smooth: bool = True,
                 smooth_iterations: int = 20, pass_band: float = 0.1,
                 bbox: tuple[slice, slice, slice] | None = None) -> Mesh:
    """Closed surface of a boolean ``(I, J, K)`` mask, vertices in the ``ct`` frame (mm).

    Parameters
    ----------
    mask : (I, J, K) bool
    T_ct_from_ijk : (4, 4) voxel-to-LPS-mm affine of the mask's grid
    name : str, optional
        Stored as ``Mesh.name``.
    target_faces : int or None
        Decimate to about this many triangles (None: keep all).
    smooth, smooth_iterations, pass_band :
        Windowed-sinc smoothing (pass band in normalized frequency; lower is smoother).
    bbox : tuple of slices, optional
        Bounding box of the mask when already known.
    """
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask.astype(bool)
    if mask.ndim != 3:
        raise InputError(f"mask must be a 3D (I, J, K) array, got shape {mask.shape}")
    if bbox is None:
        nz = np.argwhere(mask) if mask.size < 2_000_000 else None
        if nz is not None:
            if not len(nz):
                raise InputError(f"mask{'' if name is None else ' of ' + name} is empty")
            lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
        else:
            from scipy import ndimage

            objs = ndimage.find_objects(mask.astype(np.uint8))
            if not objs or objs[0] is None:
                raise InputError(f"mask{'' if name is None else ' of ' + name} is empty")
            lo = np.array([s.start for s in objs[0]])
            hi = np.array([s.stop for s in objs[0]])
    else:
        lo = np.array([s.start for s in bbox])
        hi = np.array([s.stop for s in bbox])
    sub = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return _crop_surface(sub, lo, T_ct_from_ijk, name, target_faces, smooth,
                         smooth_iterations, pass_band)


def _crop_surface(sub: np.ndarray, lo: np.ndarray, T: np.ndarray, name: str | None,
                  target_faces: int | None, smooth: bool, smooth_iterations: int,
                  pass_band: float) -> Mesh:
    """Surface of a cropped mask whose voxel [0, 0, 0] is voxel ``lo`` of the grid."""
    crop = np.zeros(tuple(np.array(sub.shape) + 2 * _PAD), dtype=np.uint8)
    crop[_PAD:-_PAD, _PAD:-_PAD, _PAD:-_PAD] = sub
    pts, faces = _contour(crop, target_faces, smooth, smooth_iterations, pass_band)
    pts = pts + (np.asarray(lo) - _PAD)
    return _to_mesh(pts, faces, np.asarray(T, dtype=np.float64), name,
                    {"n_voxels": int(crop.sum(dtype=np.int64))})


def _check_grid(ct, labels) -> None:
    if tuple(labels.array.shape) != tuple(ct.shape):
        raise InputError(f"labels shape {labels.array.shape} differs from the CT shape "
                         f"{ct.shape}; load them with load_labels(path, like=ct)")
    if not np.allclose(labels.T_ct_from_ijk, ct.T_ct_from_ijk, atol=1e-3):
        raise InputError("labels grid (T_ct_from_ijk) differs from the CT grid; load them "
                         "with load_labels(path, like=ct)")


def vertebra_surfaces(ct, labels, target_faces: int | None = 20000, smooth: bool = True,
                      levels: Sequence[str] | None = None, smooth_iterations: int = 20,
                      pass_band: float = 0.1) -> dict[str, Mesh]:
    """One closed surface per vertebra, vertices in the ``ct`` frame (LPS mm).

    Parameters
    ----------
    ct : CtVolume
        Gives the grid (``labels`` must be on it).
    labels : VertebraLabels
        Label map on the CT grid.
    target_faces : int or None
        Triangles per vertebra after decimation (None keeps all).
    smooth : bool
        Windowed-sinc smoothing (``smooth_iterations``, ``pass_band``).
    levels : sequence of str, optional
        Subset of level names (default: all present).

    Returns
    -------
    dict[str, Mesh]
        Level name -> mesh (``Mesh.name`` = level, ``frame="ct"``, outward faces, vertex
        normals), cranial to caudal. ``Mesh.extra`` holds ``label_id`` and ``n_voxels``.
    """
    from scipy import ndimage

    if not hasattr(labels, "array") or not hasattr(labels, "names"):
        raise InputError(f"labels must be VertebraLabels, got {type(labels).__name__}")
    _check_grid(ct, labels)
    present = labels.levels
    if levels is None:
        wanted = present
    else:
        wanted = [str(lv) for lv in levels]
        missing = [lv for lv in wanted if lv not in present]
        if missing:
            raise InputError(f"levels {missing} not in the label map; it has "
                             f"{', '.join(present) or 'no levels'}")
    if not wanted:
        raise InputError("labels hold no vertebra voxels")
    arr = labels.array
    if arr.size and arr.min() < 0:
        raise InputError("labels hold negative ids")
    objs = ndimage.find_objects(arr)
    out: dict[str, Mesh] = {}
    T = ct.T_ct_from_ijk
    for lv in wanted:
        lid = labels.id_of(lv)
        box = objs[lid - 1]
        sub = arr[box] == lid
        lo = np.array([b.start for b in box])
        m = _crop_surface(sub, lo, T, lv, target_faces, smooth, smooth_iterations, pass_band)
        m.extra["label_id"] = lid
        out[lv] = m
    return out


def bone_surface(ct, mask: np.ndarray, target_faces: int | None = 200000, smooth: bool = True,
                 name: str = "bone") -> Mesh:
    """Surface of a bone mask (e.g. from :func:`segment_bone`) in the ``ct`` frame, mm.

    Parameters
    ----------
    ct : CtVolume
    mask : (I, J, K) bool on the CT grid
    target_faces : int or None
        Decimate to about this many triangles.
    """
    mask = np.asarray(mask)
    if mask.shape != ct.shape:
        raise InputError(f"mask shape {mask.shape} differs from the CT shape {ct.shape}")
    return mask_surface(mask.astype(bool, copy=False), ct.T_ct_from_ijk, name=name,
                        target_faces=target_faces, smooth=smooth)
