"""CT imaging: load DICOM/NIfTI/NRRD into a geometry-true `CtVolume`, vertebra labels, bone
segmentation, per-vertebra surfaces and slices for viewing.

``import arspine.imaging`` stays light: every name is imported from its submodule on first
access (pydicom, nibabel, scipy and VTK load only when used).
"""

from __future__ import annotations

import importlib

__all__ = [
    "CtVolume",
    "load_ct",
    "list_series",
    "DicomWarning",
    "write_dicom_series",
    "save_nifti",
    "VertebraLabels",
    "load_labels",
    "SCHEMES",
    "LEVEL_ORDER",
    "segment_bone",
    "split_vertebrae",
    "vertebra_surfaces",
    "bone_surface",
    "mask_surface",
    "reslice",
    "window_level",
    "WINDOW_PRESETS",
]

_WHERE = {
    "CtVolume": "volume",
    "load_ct": "io",
    "save_nifti": "io",
    "list_series": "dicom",
    "DicomWarning": "dicom",
    "write_dicom_series": "dicom_write",
    "VertebraLabels": "labels",
    "load_labels": "labels",
    "SCHEMES": "labels",
    "LEVEL_ORDER": "labels",
    "segment_bone": "segment",
    "split_vertebrae": "segment",
    "vertebra_surfaces": "surfaces",
    "bone_surface": "surfaces",
    "mask_surface": "surfaces",
    "reslice": "slices",
    "window_level": "slices",
    "WINDOW_PRESETS": "slices",
}


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'arspine.imaging' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"arspine.imaging.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
