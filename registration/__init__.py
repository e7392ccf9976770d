"""Registration: fiducial (paired-point) and markerless surface registration of a CT to an
intraoperative scan, per-vertebra refinement, quality gate, metrics, tracking.

Submodules load lazily so ``import arspine.registration`` stays light.
"""

from __future__ import annotations

import importlib

__all__ = ["register", "prepare_model", "PreparedModel", "RegistrationResult",
           "VertebraResult", "RegisterConfig", "register_fiducials", "predict_tre",
           "FiducialResult", "metrics", "fiducial", "tracking", "gate"]

_LAZY = {
    "register": ("pipeline", "register"),
    "RegisterConfig": ("pipeline", "RegisterConfig"),
    "prepare_model": ("model", "prepare_model"),
    "PreparedModel": ("model", "PreparedModel"),
    "RegistrationResult": ("result", "RegistrationResult"),
    "VertebraResult": ("result", "VertebraResult"),
    "register_fiducials": ("fiducial", "register_fiducials"),
    "predict_tre": ("fiducial", "predict_tre"),
    "FiducialResult": ("fiducial", "FiducialResult"),
}
_SUBMODULES = {"metrics", "fiducial", "tracking", "gate", "model", "pipeline", "result",
               "preprocess", "global_", "icp", "multibody", "bonelike",
               "template"}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"arspine.registration.{mod}"), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"arspine.registration.{name}")
    raise AttributeError(f"module 'arspine.registration' has no attribute {name!r}")
