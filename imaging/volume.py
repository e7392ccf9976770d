"""`CtVolume`: Hounsfield units on a voxel grid whose geometry is one 4x4 affine.

The affine ``T_ct_from_ijk`` maps voxel indices ``(i, j, k)`` (column, row, slice) to DICOM
patient LPS millimetres. Spacing, origin and direction are derived from it, never stored a
second time, so they cannot disagree. A gantry-tilted series has a sheared affine (the slice
column is not perpendicular to the in-plane columns); everything that maps voxels to mm uses
the full affine and stays correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.geometry import as_matrix4, as_points

__all__ = ["CtVolume", "check_affine"]


def check_affine(matrix: object, name: str = "T_ct_from_ijk") -> np.ndarray:
    """Validate a voxel-to-mm affine: finite 4x4, last row ``[0, 0, 0, 1]``, invertible."""
    m = as_matrix4(matrix, name)
    if not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError(f"{name} last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise InputError(f"{name} is singular (a zero spacing or collinear axes): "
                         f"{m[:3, :3].tolist()}")
    return m


@dataclass(frozen=True, eq=False)
class CtVolume:
    """A CT volume in Hounsfield units with its voxel-to-patient affine.

    Attributes
    ----------
    hu : (I, J, K) ndarray, int16 or float32
        Hounsfield units indexed ``[i, j, k]`` = column, row, slice. Often a transposed view
        of a C-ordered ``(K, J, I)`` buffer, which is the memory order VTK wants.
    T_ct_from_ijk : (4, 4) float64
        Maps homogeneous voxel indices to LPS mm (frame ``"ct"``).
    meta : dict
        Non-identifying metadata (series UID, description, patient position, manufacturer,
        slice thickness, source). Patient identifiers only when the loader was asked.
    """

    hu: np.ndarray
    T_ct_from_ijk: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        hu = np.asarray(self.hu)
        if hu.ndim != 3:
            raise InputError(f"hu must be a 3D (I, J, K) array, got shape {hu.shape}")
        if min(hu.shape) < 1:
            raise InputError(f"hu is empty, got shape {hu.shape}")
        if not (np.issubdtype(hu.dtype, np.integer) or np.issubdtype(hu.dtype, np.floating)):
            raise InputError(f"hu must be numeric, got dtype {hu.dtype}")
        if np.issubdtype(hu.dtype, np.floating) and not np.isfinite(hu).all():
            raise InputError(f"hu holds {int(np.count_nonzero(~np.isfinite(hu)))} NaN or inf "
                             f"voxels of {hu.size}")
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "T_ct_from_ijk", check_affine(self.T_ct_from_ijk))
        object.__setattr__(self, "meta", dict(self.meta or {}))

    # Geometry, all derived from the one affine.
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(I, J, K)`` voxel counts."""
        return tuple(int(s) for s in self.hu.shape)

    @property
    def spacing_mm(self) -> np.ndarray:
        """(3,) voxel step along i, j, k in mm (column norms of the affine)."""
        return np.linalg.norm(self.T_ct_from_ijk[:3, :3], axis=0)

    @property
    def origin_mm(self) -> np.ndarray:
        """(3,) LPS position of voxel (0, 0, 0), mm."""
        return self.T_ct_from_ijk[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) unit columns: LPS direction of increasing i, j, k."""
        return self.T_ct_from_ijk[:3, :3] / self.spacing_mm

    @property
    def is_sheared(self) -> bool:
        """True when the axes are not orthogonal (gantry tilt)."""
        d = self.direction
        return bool(np.abs(d.T @ d - np.eye(3)).max() > 1e-4)

    def ijk_to_ct(self, ijk: object) -> np.ndarray:
        """Map ``(N, 3)`` voxel indices (float allowed) to ``(N, 3)`` LPS mm."""
        p = as_points(ijk, "ijk", allow_empty=True)
        return p @ self.T_ct_from_ijk[:3, :3].T + self.T_ct_from_ijk[:3, 3]

    def ct_to_ijk(self, points: object) -> np.ndarray:
        """Map ``(N, 3)`` LPS mm points to ``(N, 3)`` float voxel indices."""
        p = as_points(points, "points", allow_empty=True)
        a = self.T_ct_from_ijk
        return np.linalg.solve(a[:3, :3], (p - a[:3, 3]).T).T

    def corners_mm(self) -> np.ndarray:
        """(8, 3) LPS positions of the corner voxel centres."""
        s = np.array(self.shape) - 1
        c = np.array([[i, j, k] for i in (0, s[0]) for j in (0, s[1]) for k in (0, s[2])],
                     dtype=float)
        return self.ijk_to_ct(c)

    def __repr__(self) -> str:
        sp = ", ".join(f"{v:.3f}" for v in self.spacing_mm)
        return (f"CtVolume(shape={self.shape}, spacing_mm=({sp}), dtype={self.hu.dtype}, "
                f"series={self.meta.get('series_description', '')!r})")
