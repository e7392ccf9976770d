"""Loaders for public spine CT datasets by folder layout: VerSe and TotalSegmentator.

VerSe (Sekuboyina et al. 2021; Löffler et al. 2020), either layout:

- 2020 (BIDS-like): ``rawdata/sub-X/sub-X[_...]_ct.nii.gz`` and
  ``derivatives/sub-X/sub-X[_...]_seg-vert_msk.nii.gz`` + ``..._seg-subreg_ctd.json``;
- 2019 (flat): ``sub-X_ct.nii.gz``, ``sub-X_seg-vert_msk.nii.gz``, ``sub-X_seg-vert_ctd.json``.

The centroid JSON is a list: ``[{"direction": ["P", "I", "R"]}, {"label": 20, "X": x,
"Y": y, "Z": z}, ...]`` with coordinates in voxel units along the axes named by
``direction`` (a reoriented copy of the image grid); labels use the VerSe ids (20 = L1).

TotalSegmentator (Wasserthal et al. 2023): ``<subject>/ct.nii.gz`` with
``<subject>/segmentations/vertebrae_L3.nii.gz`` (one binary mask per structure), or a
multi-label map (``segmentations.nii.gz`` / ``<subject>.nii.gz``) with the v2 ids
(31 = L1 ... 27 = L5, 26 = S1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.jsonfile import read_json

__all__ = ["DatasetCase", "load_verse_case", "load_totalsegmentator_case",
           "read_verse_centroids", "list_verse_subjects"]


@dataclass
class DatasetCase:
    """One subject of a public dataset.

    Attributes
    ----------
    subject : str
    ct_path : Path
    labels_path : Path or None
        Multi-label map (None for TotalSegmentator per-structure masks: use
        :meth:`load_labels`).
    label_scheme : str
        ``"verse"`` or ``"totalsegmentator"``.
    centroids_ct_mm : dict[str, (3,) ndarray]
        Vertebra centroids in the ``ct`` frame (LPS mm) when the dataset provides them.
    mask_paths : dict[str, Path]
        Per-level binary masks (TotalSegmentator layout).
    """

    subject: str
    ct_path: Path
    labels_path: Path | None
    label_scheme: str
    centroids_ct_mm: dict[str, np.ndarray] = field(default_factory=dict)
    mask_paths: dict[str, Path] = field(default_factory=dict)

    def load_ct(self, progress: bool = False):
        """The CT (``arspine.imaging.CtVolume``)."""
        from arspine.imaging import load_ct

        return load_ct(self.ct_path, progress=progress)

    def load_labels(self, ct=None):
        """The vertebra labels on the CT grid (``arspine.imaging.VertebraLabels``)."""
        from arspine.imaging import VertebraLabels, load_labels
        from arspine.imaging.io import load_nifti_array
        from arspine.imaging.labels import SCHEMES

        ct = ct if ct is not None else self.load_ct()
        if self.labels_path is not None:
            return load_labels(self.labels_path, like=ct, scheme=self.label_scheme)
        ids = {v: k for k, v in SCHEMES["totalsegmentator"].items()}
        arr = np.zeros(ct.shape, np.uint8)
        for lv, p in self.mask_paths.items():
            data, T = load_nifti_array(p, name=f"mask {p.name}")
            if data.shape != ct.shape or not np.allclose(T, ct.T_ct_from_ijk, atol=1e-3):
                raise InputError(f"mask {p} is not on the CT grid ({data.shape} vs "
                                 f"{ct.shape})")
            arr[(np.asarray(data) > 0) & (arr == 0)] = ids[lv]
        names = {ids[lv]: lv for lv in self.mask_paths}
        return VertebraLabels(arr, ct.T_ct_from_ijk, names,
                              meta={"scheme": "totalsegmentator", "source": str(self.ct_path)})

    def anatomy(self, levels=None, target_faces: int = 20000):
        """An :class:`arspine.datasets.anatomy.Anatomy` for simulation."""
        from arspine.datasets.anatomy import anatomy_from_ct

        ct = self.load_ct()
        a = anatomy_from_ct(ct, self.load_labels(ct), self.label_scheme, levels=levels,
                            target_faces=target_faces)
        a.ct_path, a.labels_path = self.ct_path, self.labels_path
        return a


def _voxel_to_lps(affine_ras: np.ndarray, shape, direction, xyz: np.ndarray) -> np.ndarray:
    """VerSe centroid voxel coordinates (axes ``direction``) -> LPS mm."""
    import nibabel.orientations as nio

    from arspine.imaging.io import RAS_FROM_LPS

    ornt_img = nio.io_orientation(affine_ras)
    ornt_ctd = nio.axcodes2ornt(tuple(direction))
    # Transform taking the centroid axes to the image's axes (as VerSe's reorient code does).
    trans = nio.ornt_transform(ornt_ctd, ornt_img).astype(int)
    out = np.empty_like(xyz)
    shp = np.asarray(shape)
    for src, (dst, flip) in enumerate(trans):
        v = xyz[:, src]
        out[:, dst] = (shp[dst] - v) if flip == -1 else v
    ras = out @ affine_ras[:3, :3].T + affine_ras[:3, 3]
    return ras @ RAS_FROM_LPS[:3, :3].T  # RAS <-> LPS is its own inverse


def read_verse_centroids(path: str | os.PathLike, ct_path: str | os.PathLike
                         ) -> dict[str, np.ndarray]:
    """Vertebra centroids of a VerSe ``*_ctd.json`` in the ``ct`` frame (LPS mm).

    Parameters
    ----------
    path : path
        The centroid JSON.
    ct_path : path
        The CT NIfTI the centroids belong to (its grid and affine).
    """
    import nibabel as nib

    from arspine.imaging.labels import SCHEMES

    p = Path(path)
    data = read_json(p, "centroid file")
    if not isinstance(data, list) or not data:
        raise InputError(f"centroid file must hold a non-empty JSON list: {p}")
    direction = None
    rows = []
    for d in data:
        if not isinstance(d, dict):
            raise InputError(f"centroid file entries must be objects: {p}")
        if "direction" in d:
            direction = d["direction"]
        elif all(k in d for k in ("label", "X", "Y", "Z")):
            if "nan" in str(d).lower():
                continue
            rows.append((int(d["label"]), float(d["X"]), float(d["Y"]), float(d["Z"])))
    if direction is None:
        raise InputError(f"centroid file has no 'direction' entry: {p}")
    img = nib.load(str(ct_path))
    if not rows:
        return {}
    arr = np.array(rows)
    lps = _voxel_to_lps(np.asarray(img.affine, float), img.shape[:3], direction, arr[:, 1:])
    names = SCHEMES["verse"]
    return {names[int(lab)]: lps[i] for i, lab in enumerate(arr[:, 0]) if int(lab) in names}


def list_verse_subjects(root: str | os.PathLike) -> list[str]:
    """Subject ids (``sub-verse004``) with a CT under a VerSe folder."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"VerSe folder not found: {root}")
    subs = {f.name.split("_")[0] for f in root.rglob("*_ct.nii.gz")}
    return sorted(subs)


def load_verse_case(root: str | os.PathLike, subject: str | None = None) -> DatasetCase:
    """One VerSe subject (2019 flat or 2020 rawdata/derivatives layout).

    Parameters
    ----------
    root : path
        The dataset folder (or a subject folder).
    subject : str, optional
        ``sub-verse004``; required when the folder holds several subjects.
    """
    root = Path(root)
    subs = list_verse_subjects(root)
    if not subs:
        raise InputError(f"no VerSe CT (*_ct.nii.gz) under {root}")
    if subject is None:
        if len(subs) > 1:
            raise InputError(f"{root} holds {len(subs)} subjects; pass subject= one of "
                             f"{subs[:5]}...")
        subject = subs[0]
    elif subject not in subs:
        raise InputError(f"subject {subject!r} not under {root} (found {subs[:5]})")

    def one(pattern: str, what: str, required: bool = True) -> Path | None:
        hits = sorted(root.rglob(f"{subject}*{pattern}"))
        if not hits:
            if required:
                raise InputError(f"VerSe {what} for {subject} not found under {root} "
                                 f"(looked for {subject}*{pattern})")
            return None
        return hits[0]

    ct = one("_ct.nii.gz", "CT")
    msk = one("_msk.nii.gz", "vertebra mask")
    ctd = one("_ctd.json", "centroids", required=False)
    cents = read_verse_centroids(ctd, ct) if ctd is not None else {}
    return DatasetCase(subject=subject, ct_path=ct, labels_path=msk, label_scheme="verse",
                       centroids_ct_mm=cents)


def load_totalsegmentator_case(folder: str | os.PathLike) -> DatasetCase:
    """One TotalSegmentator subject folder (``ct.nii.gz`` + ``segmentations/``).

    Accepts per-structure masks ``segmentations/vertebrae_<L>.nii.gz`` (the dataset's layout)
    or a multi-label file ``segmentations.nii.gz`` / ``<folder>.nii.gz`` with v2 ids.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"TotalSegmentator folder not found: {folder}")
    ct = folder / "ct.nii.gz"
    if not ct.is_file():
        raise InputError(f"TotalSegmentator CT not found: {ct}")
    from arspine.datasets.anatomy import VERTEBRA_NAMES

    masks = {}
    seg = folder / "segmentations"
    if seg.is_dir():
        for f in sorted(seg.glob("vertebrae_*.nii.gz")):
            lv = f.name[len("vertebrae_"):-len(".nii.gz")]
            if lv in VERTEBRA_NAMES:
                masks[lv] = f
    multi = None
    for cand in (folder / "segmentations.nii.gz", folder / f"{folder.name}.nii.gz"):
        if cand.is_file():
            multi = cand
            break
    if not masks and multi is None:
        raise InputError(f"no vertebra segmentation in {folder} (expected "
                         f"segmentations/vertebrae_L1.nii.gz ... or segmentations.nii.gz)")
    if masks:
        import nibabel as nib

        # Per-structure masks that are all empty are common for levels out of the field of
        # view; keep the non-empty ones.
        masks = {lv: p for lv, p in masks.items() if np.any(np.asarray(nib.load(str(p)).dataobj))}
        if not masks:
            raise InputError(f"every vertebra mask in {seg} is empty")
    return DatasetCase(subject=folder.name, ct_path=ct, labels_path=None if masks else multi,
                       label_scheme="totalsegmentator", mask_paths=masks)
