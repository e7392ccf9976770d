"""Vertebra label maps: `VertebraLabels`, the VerSe and TotalSegmentator schemes, `load_labels`.

A label map is accepted for a CT when every label voxel centre coincides with a CT voxel
centre: the same grid, possibly stored with axes permuted or flipped (a NIfTI written by a
tool that flips the row axis of a DICOM series). The array is then re-indexed onto the CT
grid; any other grid is refused (resampling labels silently would move the anatomy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.imaging.volume import check_affine

__all__ = ["VertebraLabels", "load_labels", "SCHEMES", "LEVEL_ORDER", "level_rank",
           "detect_scheme"]

#: Clinical names cranial to caudal (T13 and L6 are anatomical variants).
LEVEL_ORDER: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8)) + tuple(f"T{i}" for i in range(1, 14))
    + tuple(f"L{i}" for i in range(1, 7)) + ("S1",)
)

_VERSE = {**{i: f"C{i}" for i in range(1, 8)}, **{7 + i: f"T{i}" for i in range(1, 13)},
          **{19 + i: f"L{i}" for i in range(1, 6)}, 25: "L6", 26: "S1", 28: "T13"}
# TotalSegmentator v2 (total task): 26 S1, 27 L5 ... 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1.
_TOTALSEG = {26: "S1", **{26 + i: f"L{6 - i}" for i in range(1, 6)},
             **{31 + i: f"T{13 - i}" for i in range(1, 13)},
             **{43 + i: f"C{8 - i}" for i in range(1, 8)}}

#: scheme name -> {label id: clinical name}
SCHEMES: dict[str, dict[int, str]] = {"verse": _VERSE, "totalsegmentator": _TOTALSEG}


def level_rank(name: str) -> float:
    """Cranio-caudal rank of a level name (unknown names such as ``V3`` sort after)."""
    try:
        return float(LEVEL_ORDER.index(name))
    except ValueError:
        digits = "".join(ch for ch in name if ch.isdigit())
        return 1000.0 + (float(digits) if digits else 0.0)


@dataclass(frozen=True, eq=False)
class VertebraLabels:
    """An integer label map on a CT grid with clinical names.

    Attributes
    ----------
    array : (I, J, K) int ndarray
        Label id per voxel (0 = background), indexed like ``CtVolume.hu``.
    T_ct_from_ijk : (4, 4) float64
        The grid's voxel-to-LPS-mm affine (equal to the CT's).
    names : dict[int, str]
        Label id -> clinical name (``{29: "L3"}``); ids not in it are not vertebrae.
    meta : dict
        Provenance (scheme, source file, or how :func:`split_vertebrae` named the levels).
    """

    array: np.ndarray
    T_ct_from_ijk: np.ndarray
    names: dict
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        a = np.asarray(self.array)
        if a.ndim != 3:
            raise InputError(f"array must be a 3D (I, J, K) label map, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            if a.size and not np.all(np.mod(a, 1) == 0):
                raise InputError("array must hold integer label ids, got fractional values")
            a = a.astype(np.int32)
        object.__setattr__(self, "array", a)
        object.__setattr__(self, "T_ct_from_ijk", check_affine(self.T_ct_from_ijk))
        names = {int(k): str(v) for k, v in dict(self.names).items()}
        if len(set(names.values())) != len(names):
            raise InputError(f"names must be unique per label id, got {names}")
        object.__setattr__(self, "names", names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    def counts(self) -> np.ndarray:
        """Voxels per label id (index = id); computed once (treat ``array`` as read-only)."""
        c = self.__dict__.get("_counts")
        if c is None:
            c = label_counts(self.array)
            object.__setattr__(self, "_counts", c)
        return c

    @property
    def levels(self) -> list[str]:
        """Names of the levels present (at least one voxel), cranial to caudal."""
        c = self.counts()
        lv = [n for i, n in self.names.items() if i < len(c) and c[i] > 0]
        return sorted(lv, key=level_rank)

    def id_of(self, name: str) -> int:
        """Label id of a level name; InputError when absent."""
        for i, n in self.names.items():
            if n == name:
                return i
        raise InputError(f"level {name!r} is not in this label map; it has "
                         f"{', '.join(self.levels) or 'no levels'}")

    def mask(self, name: str) -> np.ndarray:
        """(I, J, K) bool mask of one level."""
        return self.array == self.id_of(name)

    def voxel_counts(self) -> dict[str, int]:
        """Voxels per level present."""
        c = self.counts()
        return {n: int(c[i]) for i, n in self.names.items() if i < len(c) and c[i] > 0}

    def centroid_mm(self, name: str) -> np.ndarray:
        """(3,) LPS centroid of a level's voxel centres, mm."""
        ijk = np.argwhere(self.mask(name)).astype(float)
        if not len(ijk):
            raise InputError(f"level {name!r} has no voxels")
        c = ijk.mean(axis=0)
        return self.T_ct_from_ijk[:3, :3] @ c + self.T_ct_from_ijk[:3, 3]


def label_counts(array: np.ndarray) -> np.ndarray:
    """Voxels per non-negative integer id (index = id).

    8/16-bit maps are counted by numpy's radix sort (stable sort of small integers) in
    chunks, about 20x faster than ``bincount``, which first casts every voxel to int64.
    """
    a = np.asarray(array)
    if a.size == 0:
        return np.zeros(1, dtype=np.int64)
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        a = a.T  # same memory, C order
    flat = a.reshape(-1)
    chunk = 1 << 23
    if a.dtype.itemsize <= 2:
        top = int(flat.max())
        edges = np.arange(top + 2)
        total = np.zeros(top + 1, dtype=np.int64)
        for r in range(0, flat.size, chunk):
            srt = np.sort(flat[r:r + chunk], kind="stable")
            total += np.diff(np.searchsorted(srt, edges))
        return total
    total = np.zeros(1, dtype=np.int64)
    for r in range(0, flat.size, chunk):
        c = np.bincount(flat[r:r + chunk])
        if len(c) > len(total):
            c[:len(total)] += total
            total = c
        else:
            total[:len(c)] += c
    return total


def coarse_ids(array: np.ndarray, stride: int = 4) -> set[int]:
    """Label ids met on a ``stride``-voxel lattice (plus the exact ids of small maps)."""
    a = np.asarray(array)
    if a.size <= 4_000_000:
        sub = a
    else:
        sub = np.ascontiguousarray(a[::stride, ::stride, ::stride])
    return set(np.flatnonzero(label_counts(sub)).tolist())


def detect_scheme(ids: set[int]) -> str | None:
    """Guess the scheme from the ids present, or None when ambiguous."""
    ids = {i for i in ids if i != 0}
    if not ids:
        return None
    if max(ids) > 28:
        return "totalsegmentator"
    if min(ids) < 26:
        return "verse"
    return None


def _reorient_to(data: np.ndarray, T_src: np.ndarray, T_dst: np.ndarray, shape_dst,
                 tol_mm: float) -> np.ndarray | None:
    """Re-index ``data`` (grid ``T_src``) onto grid ``T_dst`` when it is the same set of voxel
    centres with permuted/flipped axes; None otherwise."""
    if np.allclose(T_src, T_dst, atol=tol_mm) and tuple(data.shape) == tuple(shape_dst):
        return data
    A = np.linalg.solve(T_src, T_dst)  # src ijk from dst ijk
    M = A[:3, :3]
    for perm in permutations(range(3)):
        P = np.zeros((3, 3))
        for d, s in enumerate(perm):
            P[s, d] = 1.0
        signs = np.sign(np.round(np.diag(P.T @ M)))
        if np.any(signs == 0):
            continue
        S = P * signs
        if np.abs(M - S).max() > 1e-3:
            continue
        off = A[:3, 3]
        if np.abs(off - np.round(off)).max() > 1e-3:
            return None
        # dst index d maps to src index along axis perm[d] with sign.
        src_axes = [perm[d] for d in range(3)]
        arr = np.transpose(data, src_axes)
        for d in range(3):
            if signs[d] < 0:
                arr = np.flip(arr, axis=d)
        # After flips, dst 0 corresponds to src index off (or its mirror); require full cover.
        for d in range(3):
            o = int(round(off[src_axes[d]]))
            n_src = data.shape[src_axes[d]]
            start = (n_src - 1 - o) if signs[d] < 0 else o
            if start != 0 or n_src != shape_dst[d]:
                return None
        return np.ascontiguousarray(arr)
    return None


def load_labels(path: str | os.PathLike, like=None, scheme: str | None = None,
                keep_other_labels: bool = False) -> VertebraLabels:
    """Load a vertebra label map (NIfTI or NRRD) and name its levels.

    Parameters
    ----------
    path : path
        ``.nii``/``.nii.gz``/``.nrrd`` integer label map.
    like : CtVolume, optional
        The CT the labels belong to: the label grid must be the CT grid (axes may be stored
        permuted or flipped; the array is re-indexed onto the CT grid).
    scheme : {"verse", "totalsegmentator"}, optional
        Label id convention. Guessed from the ids when unambiguous (ids above 28 only exist
        in TotalSegmentator, ids below 26 only in VerSe among vertebra ids).
    keep_other_labels : bool
        Keep non-vertebra ids (organs of a TotalSegmentator "total" map) in ``array``;
        by default they are set to 0.

    Returns
    -------
    VertebraLabels

    Raises
    ------
    InputError
        Missing/broken file, unknown or ambiguous scheme, non-integer labels, grid mismatch.
    """
    p = Path(path) if path is not None else None
    if p is None or not p.is_file():
        raise InputError(f"labels file not found: {p}")
    if scheme is not None and scheme not in SCHEMES:
        raise InputError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from arspine.imaging.io import load_nifti_array

        data, T = load_nifti_array(p, "labels")
    elif name.endswith((".nrrd", ".nhdr")):
        from arspine.imaging.io import load_ct

        v = load_ct(p)
        data, T = v.hu, v.T_ct_from_ijk
    else:
        raise InputError(f"labels must be .nii, .nii.gz or .nrrd, got {p.name}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or not np.all(np.mod(data, 1) == 0):
            raise InputError(f"labels {p.name} holds non-integer values; is it an image, "
                             "not a label map?")
        data = data.astype(np.int32)
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.signedinteger) and data.size and data.min() < 0:
        raise InputError(f"labels {p.name} holds negative ids (min {int(data.min())})")
    # Ids from a 4-voxel lattice: a whole-volume count costs a second on a 512x512x300
    # map, and a "level" too small to meet the lattice is no vertebra.
    ids = coarse_ids(data)
    if scheme is None:
        scheme = detect_scheme(ids)
        if scheme is None:
            raise InputError(f"labels {p.name}: cannot tell the scheme from ids "
                             f"{sorted(ids - {0})}; pass scheme='verse' or 'totalsegmentator'")
    table = SCHEMES[scheme]
    if like is not None:
        tol = 0.01 * float(np.min(np.linalg.norm(like.T_ct_from_ijk[:3, :3], axis=0)))
        out = _reorient_to(data, T, like.T_ct_from_ijk, like.shape, max(tol, 1e-3))
        if out is None:
            raise InputError(
                f"labels {p.name} are not on the CT grid: labels shape {data.shape}, "
                f"spacing {np.round(np.linalg.norm(T[:3, :3], axis=0), 4).tolist()}, origin "
                f"{np.round(T[:3, 3], 3).tolist()} mm; CT shape {like.shape}, spacing "
                f"{np.round(like.spacing_mm, 4).tolist()}, origin "
                f"{np.round(like.origin_mm, 3).tolist()} mm (LPS)")
        data, T = out, like.T_ct_from_ijk
    names = {i: n for i, n in table.items() if i in ids}
    if not names:
        raise InputError(f"labels {p.name} holds no vertebra ids of the {scheme} scheme "
                         f"(ids present: {sorted(ids - {0})[:20]})")
    if not keep_other_labels and set(ids - {0}) - set(names):
        lut = np.zeros(int(max(ids)) + 1 if data.dtype.itemsize > 2 else
                       int(np.iinfo(data.dtype).max) + 1, dtype=data.dtype)
        lut[list(names)] = list(names)
        if data.dtype.itemsize > 2:
            data = np.where(data <= max(ids), data, 0)
        data = lut[data]
    out = VertebraLabels(data, T, names, {"scheme": scheme, "source": str(p)})
    return out
