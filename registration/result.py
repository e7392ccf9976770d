"""Registration results: per level and whole exposure, serialised as DESIGN.md's result.json."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform

__all__ = ["VertebraResult", "RegistrationResult"]


def _version() -> str:
    from arspine._version import __version__

    return __version__


def _T(m: object, name: str) -> RigidTransform:
    try:
        return RigidTransform.from_matrix(m, "sensor", "ct", orthonormalize=True)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc


@dataclass
class VertebraResult:
    """One level's registration.

    Attributes
    ----------
    T_sensor_from_ct : RigidTransform
        Maps ``ct`` points of this vertebra into the sensor frame (mm).
    rmse_mm : float
        RMS point-to-plane residual of this level's inliers (mm).
    inlier_fraction : float
        Fraction (0..1) of this level's sensor-facing exposable surface seen by the scan.
    status : str
        ``"ok"`` or ``"rejected"``.
    reason : str or None
        Why this level was rejected.
    """

    T_sensor_from_ct: RigidTransform
    rmse_mm: float
    inlier_fraction: float
    status: str = "ok"
    reason: str | None = None
    n_inliers: int = 0

    def to_dict(self) -> dict:
        return {"T_sensor_from_ct": self.T_sensor_from_ct.as_matrix().tolist(),
                "rmse_mm": _num(self.rmse_mm), "inlier_fraction": _num(self.inlier_fraction),
                "status": self.status, "reason": self.reason, "n_inliers": int(self.n_inliers)}

    @classmethod
    def from_dict(cls, d: dict, name: str = "vertebra") -> VertebraResult:
        try:
            return cls(_T(d["T_sensor_from_ct"], f"{name}.T_sensor_from_ct"),
                       float(d.get("rmse_mm") or np.nan),
                       float(d.get("inlier_fraction") or 0.0), d.get("status", "ok"),
                       d.get("reason"), int(d.get("n_inliers", 0)))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{name} must hold T_sensor_from_ct, got {d!r}") from exc


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _json_safe(o):
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return _json_safe(o.tolist())
    if isinstance(o, (np.floating, float)):
        return _num(float(o))
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


@dataclass
class RegistrationResult:
    """The outcome of :func:`arspine.registration.register`.

    Attributes
    ----------
    status : ``"ok"`` or ``"rejected"``
    reason : str or None
        A sentence a person understands when rejected.
    T_sensor_from_ct : RigidTransform
        Whole-exposure rigid pose (mm).
    vertebrae : dict[str, VertebraResult]
        Per level (multi-body), cranial to caudal.
    quality : dict
        Gate evidence: inliers, residual, coverage, best alternative and margin.
    timing_s : dict
        ``{"load", "prepare", "register"}`` seconds (``load`` filled by the CLI).
    """

    status: str
    reason: str | None
    T_sensor_from_ct: RigidTransform
    vertebrae: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    timing_s: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    version: str = field(default_factory=_version)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        """``result.json`` of DESIGN.md (+ ``timing_s``)."""
        return _json_safe({
            "status": self.status, "reason": self.reason,
            "T_sensor_from_ct": self.T_sensor_from_ct.as_matrix().tolist(),
            "vertebrae": {k: v.to_dict() for k, v in self.vertebrae.items()},
            "quality": self.quality, "elapsed_s": float(self.elapsed_s),
            "timing_s": self.timing_s, "version": self.version})

    @classmethod
    def from_dict(cls, d: dict) -> RegistrationResult:
        """Inverse of :meth:`to_dict`; clear error on a malformed dict."""
        if not isinstance(d, dict) or "status" not in d or "T_sensor_from_ct" not in d:
            raise InputError("registration result must be a dict with 'status' and "
                             f"'T_sensor_from_ct', got {type(d).__name__}")
        if d["status"] not in ("ok", "rejected"):
            raise InputError(f"status must be 'ok' or 'rejected', got {d['status']!r}")
        verts = {k: VertebraResult.from_dict(v, k) for k, v in (d.get("vertebrae") or {}).items()}
        return cls(d["status"], d.get("reason"), _T(d["T_sensor_from_ct"], "T_sensor_from_ct"),
                   verts, dict(d.get("quality") or {}), dict(d.get("timing_s") or {}),
                   float(d.get("elapsed_s") or 0.0), str(d.get("version", _version())))

    def save(self, path) -> None:
        """Write ``result.json`` atomically."""
        import json
        import os
        import tempfile
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_dict(), fh, indent=1)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
