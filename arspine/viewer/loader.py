"""Open what the surgeon points the viewer at: a DICOM folder, a NIfTI/NRRD file or a case.

Qt-free so it runs in a worker thread and in tests. Each step reports progress through a
callback ``progress(fraction_0_to_1, message)``; all reading is done by the imaging and
datasets packages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError

__all__ = ["ViewerCase", "load_for_viewer", "find_sibling_labels", "ProgressFn"]

ProgressFn = Callable[[float, str], None]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm")


@dataclass
class ViewerCase:
    """Everything the viewer shows for one case (frame ``"ct"`` unless said otherwise).

    Attributes
    ----------
    name : str
    source : Path
    ct : CtVolume
    labels : VertebraLabels or None
    surfaces : dict[str, Mesh]
        Per-vertebra surfaces (``"bone"`` when no labels are known), vertices in ``ct`` mm.
    scan : PointCloud or None
        Intraoperative scan in the ``sensor`` frame.
    truth : dict
        ``{"L3": {"T_sensor_from_ct": RigidTransform, "targets_ct_mm": (K, 3)}}`` when known.
    case : Case or None
        The case bundle, when one was opened.
    """

    name: str
    source: Path
    ct: object
    labels: object | None = None
    surfaces: dict = field(default_factory=dict)
    scan: object | None = None
    truth: dict = field(default_factory=dict)
    case: object | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def levels(self) -> list[str]:
        """Vertebra names shown, cranial to caudal (``["bone"]`` without labels)."""
        if self.labels is not None and getattr(self.labels, "levels", None):
            return [lv for lv in self.labels.levels if lv in self.surfaces]
        return list(self.surfaces)


def _is_volume_file(p: Path) -> bool:
    name = p.name.lower()
    return any(name.endswith(s) for s in _VOLUME_SUFFIXES)


def find_sibling_labels(ct_path: str | Path) -> Path | None:
    """A label map stored next to a CT file: ``<stem>_vertebrae.nii.gz``, ``<stem>_labels``,
    ``<stem>_seg`` or ``labels.nii.gz``."""
    p = Path(ct_path)
    stem = p.name
    for suf in (".nii.gz", ".nii", ".nrrd"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    folder = p.parent
    base = p.name if p.is_dir() else stem
    for cand in (f"{base}_vertebrae.nii.gz", f"{base}_labels.nii.gz", f"{base}_seg.nii.gz",
                 f"{base}_vertebrae.nii", "labels.nii.gz"):
        c = folder / cand
        if c.is_file() and c != p:
            return c
    return None


def _unlabelled_surfaces(ct, target_faces: int, warnings: list[str]) -> tuple:
    """Labels split from the bone mask (or one bone surface when that fails)."""
    from arspine.imaging import bone_surface, segment_bone, split_vertebrae, vertebra_surfaces

    mask = segment_bone(ct)
    if not np.any(mask):
        raise InputError("no bone found in the CT (is it in Hounsfield units?)")
    try:
        lab = split_vertebrae(mask, ct)
        if lab.levels:
            return lab, vertebra_surfaces(ct, lab, target_faces=target_faces)
    except InputError as exc:
        warnings.append(f"vertebrae not separated ({exc}); showing the bone as one surface")
    return None, {"bone": bone_surface(ct, mask, target_faces=8 * target_faces)}


def load_for_viewer(path: str | Path, labels: str | Path | None = None,
                    label_scheme: str | None = None, target_faces: int = 12000,
                    progress: ProgressFn | None = None) -> ViewerCase:
    """Load a case for display.

    Parameters
    ----------
    path : str or Path
        A case bundle folder (with ``case.json``), a DICOM folder or file, or a
        ``.nii``/``.nii.gz``/``.nrrd`` CT.
    labels : str or Path, optional
        Vertebra label map on the CT grid; default: the case's, or a sibling file
        (see :func:`find_sibling_labels`).
    label_scheme : {"verse", "totalsegmentator"}, optional
        Default: the case's, else guessed from the ids by :func:`arspine.imaging.load_labels`.
    target_faces : int
        Triangle budget per vertebra surface (display only).
    progress : callable, optional
        ``progress(fraction, message)``.

    Raises
    ------
    InputError
        Missing path, unreadable file, or a folder that is neither a case nor DICOM.
    """
    def report(f: float, msg: str) -> None:
        if progress is not None:
            progress(float(f), msg)

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"case path not found: {p}")
    report(0.02, f"opening {p.name}")
    from arspine.imaging import load_ct, load_labels, vertebra_surfaces

    case = None
    scan = None
    truth: dict = {}
    warnings: list[str] = []
    if p.is_dir() and (p / "case.json").is_file():
        from arspine.datasets.case import load_case

        case = load_case(p)
        report(0.1, "reading CT")
        ct = case.load_ct()
        name = case.name
        if labels is None and case.labels_path is not None:
            labels = case.labels_path
            label_scheme = label_scheme or case.label_scheme
        scan = case.scan
        truth = dict(case.truth or {})
    elif p.is_dir() or _is_volume_file(p):
        report(0.1, "reading CT")
        ct = load_ct(p, progress=False)
        name = p.name
        for suf in (".nii.gz", ".nii", ".nrrd"):
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
        if labels is None:
            labels = find_sibling_labels(p)
    else:
        raise InputError(f"case path must be a case folder, a DICOM folder or a "
                         f".nii/.nii.gz/.nrrd file, got {p}")
    report(0.45, "CT loaded")

    lab = None
    if labels is not None:
        report(0.5, f"reading labels {Path(labels).name}")
        try:
            lab = load_labels(labels, like=ct, scheme=label_scheme)
        except InputError as exc:
            warnings.append(f"labels not used: {exc}")
            lab = None
    report(0.6, "extracting surfaces")
    if lab is not None and lab.levels:
        surfaces = vertebra_surfaces(ct, lab, target_faces=target_faces)
    else:
        lab, surfaces = _unlabelled_surfaces(ct, target_faces, warnings)
    report(1.0, f"{name}: {len(surfaces)} surface(s)")
    return ViewerCase(name=name, source=p, ct=ct, labels=lab, surfaces=surfaces, scan=scan,
                      truth=truth, case=case, warnings=warnings)
