"""Navigation session: CT, labels, surfaces, plan, registrations, frame graph, tracking.

A session is saved as a folder::

    session.json     format + version, software version, plan, frame graph, tools,
                     registrations with provenance, file index with SHA-256 of each file
    ct.npz           CT HU + T_ct_from_ijk (lossless)
    labels.npz       vertebra label map + names (lossless)
    surfaces.npz     vertebra surfaces (vertices, faces, normals; lossless)

Saving is atomic at the folder level: everything is written into a temporary sibling folder
which then replaces the target (the previous version is removed only after the swap).
Each registration carries its provenance: the SHA-256 of its inputs (CT, labels, scan), the
parameters it ran with, the software version and the UTC time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.jsonfile import read_json
from arspine.navigation.frames import FrameGraph, RigidTransform
from arspine.navigation.geometry import Mesh
from arspine.navigation.plan import SurgicalPlan
from arspine.navigation.tools import ToolDefinition, ToolPoseStream

__all__ = ["NavigationSession", "RegistrationRecord", "SESSION_FORMAT", "SESSION_VERSION",
           "sha256_of"]

SESSION_FORMAT = "arspine-navigation-session"
SESSION_VERSION = 1


def _software_version() -> str:
    from arspine._version import __version__

    return __version__


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (relative names and contents, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(bytes.fromhex(sha256_of(f)))
        return h.hexdigest()
    if not p.is_file():
        raise InputError(f"cannot hash {p}: no such file or folder")
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_array(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


@dataclass
class RegistrationRecord:
    """One registration with its provenance.

    Attributes
    ----------
    id : str
    result : dict
        ``result.json`` of DESIGN.md (``RegistrationResult.to_dict()``).
    inputs : dict
        ``{"ct": {"path": str, "sha256": str}, "scan": {...}, ...}``.
    parameters : dict
        What the registration ran with (config, levels).
    software_version : str
    created_utc : str
    """

    id: str
    result: dict
    inputs: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    software_version: str = field(default_factory=_software_version)
    created_utc: str = field(default_factory=_utc_now)
    name: str = ""

    @property
    def status(self) -> str:
        return str(self.result.get("status"))

    def as_result(self):
        """The result as :class:`arspine.registration.RegistrationResult`."""
        from arspine.registration import RegistrationResult

        return RegistrationResult.from_dict(self.result)

    def transforms(self) -> list[RigidTransform]:
        """``T_sensor_from_ct`` and one ``T_sensor_from_ct_<level>`` per level."""
        out = [RigidTransform.from_matrix(self.result["T_sensor_from_ct"], "sensor", "ct",
                                          orthonormalize=True)]
        for lv, v in (self.result.get("vertebrae") or {}).items():
            if v.get("status", "ok") == "ok":
                out.append(RigidTransform.from_matrix(v["T_sensor_from_ct"], "sensor",
                                                      f"ct_{lv}", orthonormalize=True))
        return out

    def to_dict(self) -> dict:
        return _jsonable({"id": self.id, "name": self.name, "created_utc": self.created_utc,
                          "software_version": self.software_version, "inputs": self.inputs,
                          "parameters": self.parameters, "result": self.result})

    @classmethod
    def from_dict(cls, d: Mapping) -> RegistrationRecord:
        try:
            return cls(d["id"], dict(d["result"]), dict(d.get("inputs", {})),
                       dict(d.get("parameters", {})), d.get("software_version", "unknown"),
                       d.get("created_utc", ""), d.get("name", ""))
        except (KeyError, TypeError) as exc:
            raise InputError(f"registration record needs 'id' and 'result', got {d!r:.200}") \
                from exc


class NavigationSession:
    """Everything one navigated procedure needs, in one object.

    Attributes
    ----------
    ct : CtVolume or None
    labels : VertebraLabels or None
    surfaces : dict[str, Mesh]
        Vertebra surfaces, ``ct`` frame.
    plan : SurgicalPlan
    registrations : list[RegistrationRecord]
        In the order they were added; the last ``ok`` one drives the frame graph.
    graph : FrameGraph
        ``sensor - ct`` (and ``sensor - ct_<level>``) from the registration, tool and head
        poses from tracking.
    tools : dict[str, ToolDefinition]
    streams : dict[str, ToolPoseStream]
        Recorded poses per tool.
    sources : dict
        Where the CT / labels / scan came from (path and SHA-256).
    """

    def __init__(self, ct=None, labels=None, surfaces: Mapping[str, Mesh] | None = None,
                 plan: SurgicalPlan | None = None, *, name: str = "session",
                 graph: FrameGraph | None = None):
        self.name = name
        self.ct = ct
        self.labels = labels
        self.surfaces: dict[str, Mesh] = dict(surfaces or {})
        self.plan = plan if plan is not None else SurgicalPlan()
        self.registrations: list[RegistrationRecord] = []
        self.graph = graph if graph is not None else FrameGraph()
        self.tools: dict[str, ToolDefinition] = {}
        self.streams: dict[str, ToolPoseStream] = {}
        self.sources: dict = {}
        self.meta: dict = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_case(cls, case_or_folder, *, surfaces: bool = True,
                  progress: bool = False) -> NavigationSession:
        """A session from a case bundle: CT, labels (when present) and their surfaces."""
        from arspine.datasets.case import Case, load_case

        case = case_or_folder if isinstance(case_or_folder, Case) else \
            load_case(case_or_folder, load_scan=False)
        s = cls(name=case.name)
        s.meta["case_folder"] = str(case.folder)
        if case.ct_path is not None:
            s.ct = case.load_ct(progress=progress)
            s.sources["ct"] = {"path": str(case.ct_path), "sha256": sha256_of(case.ct_path)}
            if case.labels_path is not None:
                s.labels = case.load_labels(s.ct)
                s.sources["labels"] = {"path": str(case.labels_path),
                                       "sha256": sha256_of(case.labels_path)}
        scan_path = case.folder / case.meta.get("scan", "scan.ply")
        if scan_path.is_file():
            s.sources["scan"] = {"path": str(scan_path), "sha256": sha256_of(scan_path)}
        if surfaces and case.surface_paths:
            s.surfaces = case.load_surfaces()
        elif surfaces and s.labels is not None:
            s.surfaces = _surfaces(s.ct, s.labels)
        return s

    def plan_screws(self, levels: Iterable[str] | None = None, **kwargs) -> SurgicalPlan:
        """Propose screws (:func:`arspine.navigation.plan.propose_screws`) into :attr:`plan`."""
        from arspine.navigation.plan import propose_screws

        if self.ct is None or self.labels is None:
            raise InputError("planning needs a CT and vertebra labels in the session")
        proposed = propose_screws(self.ct, self.labels, levels,
                                  surfaces=self.surfaces or None, **kwargs)
        for t in proposed:
            self.plan.add(t)
        self.plan.skipped.update(proposed.skipped)
        return self.plan

    # ------------------------------------------------------------------ registration
    def add_registration(self, result, *, inputs: Mapping | None = None,
                         parameters: Mapping | None = None, name: str = "") -> RegistrationRecord:
        """Record a registration result (a ``RegistrationResult`` or its dict) with provenance.

        ``inputs`` maps a role (``"scan"``) to a file path (hashed now) or to a ready
        ``{"path", "sha256"}``; the session's own CT/labels sources are added. An ``ok``
        result updates the frame graph.
        """
        d = result.to_dict() if hasattr(result, "to_dict") else result
        if not isinstance(d, Mapping) or "T_sensor_from_ct" not in d or "status" not in d:
            raise InputError(f"result must be a RegistrationResult or its dict with 'status' "
                             f"and 'T_sensor_from_ct', got {type(result).__name__}")
        prov: dict = {k: dict(v) for k, v in self.sources.items() if k in ("ct", "labels")}
        for role, src in (inputs or {}).items():
            if isinstance(src, Mapping):
                prov[role] = dict(src)
            elif isinstance(src, np.ndarray):
                prov[role] = {"path": None, "sha256": _sha256_array(src)}
            else:
                prov[role] = {"path": str(src), "sha256": sha256_of(src)}
        rec = RegistrationRecord(uuid.uuid4().hex[:12], _jsonable(dict(d)), prov,
                                 _jsonable(dict(parameters or {})), name=name)
        rec.transforms()  # validate before accepting
        self.registrations.append(rec)
        if rec.status == "ok":
            self._apply(rec)
        return rec

    def _apply(self, rec: RegistrationRecord) -> None:
        for f in [f for f in self.graph.frames if f.startswith("ct_")]:
            try:
                self.graph.remove("sensor", f)
            except Exception:  # noqa: BLE001 - edge may link elsewhere; keep it
                pass
        for T in rec.transforms():
            self.graph.add(T)

    @property
    def active_registration(self) -> RegistrationRecord | None:
        """The last ``ok`` registration."""
        for r in reversed(self.registrations):
            if r.status == "ok":
                return r
        return None

    def register(self, scan, *, levels: list | None = None, config=None, model=None,
                 scan_source: str | os.PathLike | None = None) -> RegistrationRecord:
        """Run :func:`arspine.registration.register` on ``scan`` and record it."""
        from dataclasses import asdict, is_dataclass

        from arspine.registration import prepare_model, register

        if model is None:
            if self.ct is None and not self.surfaces:
                raise InputError("registration needs a CT or surfaces in the session")
            model = prepare_model(self.ct, self.labels,
                                  self.surfaces if self.ct is None else None)
        result = register(model, scan, levels=levels, config=config)
        pts = getattr(scan, "points", scan)
        inputs = {"scan": scan_source if scan_source is not None else np.asarray(pts)}
        params = {"levels": levels,
                  "config": asdict(config) if config is not None and is_dataclass(config)
                  else "default"}
        return self.add_registration(result, inputs=inputs, parameters=params,
                                     name="surface registration")

    # ------------------------------------------------------------------ tracking
    def add_tool(self, tool: ToolDefinition) -> None:
        if not isinstance(tool, ToolDefinition):
            raise InputError(f"tool must be a ToolDefinition, got {type(tool).__name__}")
        self.tools[tool.name] = tool

    def update_pose(self, T: RigidTransform, timestamp_s: float | None = None,
                    record: bool = True) -> None:
        """Put a tracked pose (``T_tracker_from_pointer``, ``T_world_from_head``) into the
        graph; tool poses are also appended to the tool's stream."""
        if not isinstance(T, RigidTransform):
            raise InputError(f"T must be a RigidTransform, got {type(T).__name__}")
        self.graph.add(T, timestamp_s)
        if record and T.from_frame in self.tools and timestamp_s is not None:
            st = self.streams.setdefault(T.from_frame,
                                         ToolPoseStream(T.from_frame, T.to_frame))
            if st.reference == T.to_frame:
                st.add(T, timestamp_s)

    def guidance(self, tool: str, trajectory_key: str, frame: str = "ct"):
        """Guidance of ``tool`` against a planned screw, expressed in ``frame``.

        Uses the vertebra's own frame (``ct_<level>``) when a per-level registration exists.
        """
        from arspine.navigation.guidance import Guide

        if tool not in self.tools:
            raise InputError(f"unknown tool {tool!r} (have {sorted(self.tools)})")
        traj = self.plan[trajectory_key]
        level_frame = f"ct_{traj.vertebra}"
        ref = level_frame if level_frame in self.graph else "ct"
        T = self.graph.get(ref, tool)
        cortex = self.surfaces.get(traj.vertebra)
        g = Guide(self.tools[tool], traj, cortex).update(
            RigidTransform(T.as_matrix(), "ct", tool))
        if frame == "ct":
            return g
        T_frame_from_ref = self.graph.get(frame, ref)
        return g.expressed_in(RigidTransform(T_frame_from_ref.as_matrix(), frame, "ct"))

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        """The JSON part of the saved session (without the volume/surface files)."""
        return _jsonable({
            "format": SESSION_FORMAT, "format_version": SESSION_VERSION,
            "software_version": _software_version(), "saved_utc": _utc_now(),
            "name": self.name, "meta": self.meta, "sources": self.sources,
            "plan": self.plan.to_dict(),
            "registrations": [r.to_dict() for r in self.registrations],
            "frame_graph": self.graph.to_dict(),
            "tools": {k: t.to_dict() for k, t in self.tools.items()},
            "streams": {k: s.to_dict() for k, s in self.streams.items()},
        })

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the session folder atomically; returns its path."""
        folder = Path(folder)
        parent = folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        if folder.exists() and not (folder / "session.json").is_file():
            raise InputError(f"{folder} exists and is not a session folder; refusing to "
                             f"replace it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=parent))
        try:
            files: dict[str, dict] = {}
            if self.ct is not None:
                np.savez_compressed(tmp / "ct.npz", hu=np.asarray(self.ct.hu),
                                    T_ct_from_ijk=np.asarray(self.ct.T_ct_from_ijk))
                files["ct"] = {"file": "ct.npz", "meta": _jsonable(dict(self.ct.meta or {}))}
            if self.labels is not None:
                np.savez_compressed(tmp / "labels.npz", array=np.asarray(self.labels.array),
                                    T_ct_from_ijk=np.asarray(self.labels.T_ct_from_ijk))
                files["labels"] = {"file": "labels.npz",
                                   "names": {str(k): v for k, v in self.labels.names.items()},
                                   "meta": _jsonable(dict(self.labels.meta or {}))}
            if self.surfaces:
                arrays, index = {}, {}
                for i, (lv, m) in enumerate(self.surfaces.items()):
                    arrays[f"v{i}"], arrays[f"f{i}"] = m.vertices, m.faces
                    if m.normals is not None:
                        arrays[f"n{i}"] = m.normals
                    index[lv] = {"i": i, "name": m.name, "frame": m.frame,
                                 "extra": _jsonable(dict(m.extra))}
                np.savez_compressed(tmp / "surfaces.npz", **arrays)
                files["surfaces"] = {"file": "surfaces.npz", "index": index}
            for v in files.values():
                v["sha256"] = sha256_of(tmp / v["file"])
            doc = self.to_dict()
            doc["files"] = files
            with open(tmp / "session.json", "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            old = None
            if folder.exists():
                old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, verify: bool = True) -> NavigationSession:
        """Load a saved session; checks format, version and (``verify``) file hashes."""
        folder = Path(folder)
        path = folder / "session.json"
        if not path.is_file():
            raise InputError(f"not a navigation session folder (no session.json): {folder}")
        doc = read_json(path, "session.json", object_only=True)
        if doc.get("format") != SESSION_FORMAT:
            raise InputError(f"{path} is not an arspine session (format "
                             f"{doc.get('format')!r})")
        version = doc.get("format_version")
        if not isinstance(version, int) or version > SESSION_VERSION:
            raise InputError(f"{path} has session format version {version!r}; this arspine "
                             f"reads up to {SESSION_VERSION} (upgrade arspine)")
        files = doc.get("files", {})
        for v in files.values():
            f = folder / v["file"]
            if not f.is_file():
                raise InputError(f"session file missing: {f}")
            if verify and sha256_of(f) != v.get("sha256"):
                raise InputError(f"session file {f} does not match its SHA-256 in "
                                 f"session.json (modified or corrupted)")
        s = cls(name=doc.get("name", folder.name))
        s.meta = dict(doc.get("meta", {}))
        s.sources = dict(doc.get("sources", {}))
        if "ct" in files:
            from arspine.imaging import CtVolume

            with np.load(folder / files["ct"]["file"]) as z:
                s.ct = CtVolume(z["hu"], z["T_ct_from_ijk"], dict(files["ct"].get("meta", {})))
        if "labels" in files:
            from arspine.imaging import VertebraLabels

            with np.load(folder / files["labels"]["file"]) as z:
                names = {int(k): v for k, v in files["labels"]["names"].items()}
                s.labels = VertebraLabels(z["array"], z["T_ct_from_ijk"], names,
                                          dict(files["labels"].get("meta", {})))
        if "surfaces" in files:
            with np.load(folder / files["surfaces"]["file"]) as z:
                for lv, ent in files["surfaces"]["index"].items():
                    i = ent["i"]
                    s.surfaces[lv] = Mesh(z[f"v{i}"], z[f"f{i}"],
                                          z[f"n{i}"] if f"n{i}" in z else None,
                                          name=ent.get("name"), frame=ent.get("frame", "ct"),
                                          extra=dict(ent.get("extra", {})))
        s.plan = SurgicalPlan.from_dict(doc.get("plan", {}))
        s.registrations = [RegistrationRecord.from_dict(r) for r in doc.get("registrations", [])]
        s.graph = _graph_from_dict(doc.get("frame_graph", {}))
        s.tools = {k: ToolDefinition.from_dict(v) for k, v in doc.get("tools", {}).items()}
        s.streams = {k: ToolPoseStream.from_dict(v) for k, v in doc.get("streams", {}).items()}
        return s


def _exact_transform(m, to: str, frm: str) -> RigidTransform:
    # Bit-exact when the stored matrix is rigid (no re-orthonormalisation on load).
    try:
        return RigidTransform(m, to, frm)
    except InputError:
        return RigidTransform.from_matrix(m, to, frm, orthonormalize=True)


def _graph_from_dict(d: Mapping) -> FrameGraph:
    g = FrameGraph()
    try:
        for e in d.get("edges", []):
            g.add(_exact_transform(e["matrix"], e["to"], e["from"]), e.get("timestamp_s"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"frame_graph in session.json is malformed: {exc}") from exc
    return g


def _surfaces(ct, labels) -> dict[str, Mesh]:
    from arspine.imaging import vertebra_surfaces

    return vertebra_surfaces(ct, labels)
