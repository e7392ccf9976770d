"""Standard exports: ITK transform files, Slicer markups, surface meshes.

ITK transforms
    A file named ``T_<to>_from_<from>.tfm`` (or ``.h5``) holds the rigid transform whose
    ``TransformPoint`` maps a point of ``<from>`` to ``<to>``, in LPS millimetres (ITK's and
    the ``ct`` frame's convention): ``sitk.ReadTransform("T_ct_from_sensor.tfm")
    .TransformPoint(p_sensor) == p_ct``. Mind the ITK convention: a registration's
    "fixed -> moving" transform maps *fixed* points to *moving* points, the inverse of the
    resampling intuition, and 3D Slicer loads such a file as the node's *FromParent*
    transform. To place the scan (sensor frame) into the CT in Slicer, load
    ``T_sensor_from_ct.tfm`` and put the scan under it (see docs/slicer.md); both
    directions are written.
Slicer markups
    ``.mrk.json`` (schema v1.0.3 structure) with ``"coordinateSystem": "LPS"`` — Slicer
    stores LPS on disk and shows RAS. Trajectories are ``Line`` markups (entry, tip);
    targets and fiducials are ``Fiducial`` markups.
Meshes
    PLY / STL through :func:`arspine.datasets.io.write_mesh`, vertices in the ``ct`` frame
    (LPS mm).

Every file is written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from arspine.atomic import atomic_path, atomic_write_text
from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh, as_points
from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan

__all__ = [
    "MARKUPS_SCHEMA_URL",
    "MARKUPS_SCHEMA",
    "write_itk_transform",
    "read_itk_transform",
    "transform_file_name",
    "markups_fiducials",
    "markups_line",
    "write_markups",
    "read_markups_points",
    "write_surfaces",
    "export_case",
    "atomic_write_text",
    "write_spatial_registration",
    "SPATIAL_REGISTRATION_STORAGE",
]

#: SOP Class UID of DICOM Spatial Registration Storage.
SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"

MARKUPS_SCHEMA_URL = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                      "Markups/Resources/Schema/markups-schema-v1.0.3.json#")

_NUM3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
#: The structure of Slicer's markups schema (v1.0.3) that these files rely on, as a JSON
#: schema (draft-07) for validation with ``jsonschema``.
MARKUPS_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["@schema", "markups"],
    "properties": {
        "@schema": {"type": "string"},
        "markups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["Fiducial", "Line", "Angle", "Curve",
                                                        "ClosedCurve", "Plane", "ROI"]},
                    "name": {"type": "string"},
                    "coordinateSystem": {"type": "string", "enum": ["LPS", "RAS"]},
                    "coordinateUnits": {"type": "string", "enum": ["mm", "um"]},
                    "locked": {"type": "boolean"},
                    "fixedNumberOfControlPoints": {"type": "boolean"},
                    "labelFormat": {"type": "string"},
                    "controlPoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "label": {"type": "string"},
                                "description": {"type": "string"},
                                "associatedNodeID": {"type": "string"},
                                "position": _NUM3,
                                "orientation": {"type": "array", "items": {"type": "number"},
                                                "minItems": 9, "maxItems": 9},
                                "selected": {"type": "boolean"},
                                "locked": {"type": "boolean"},
                                "visibility": {"type": "boolean"},
                                "positionStatus": {"type": "string",
                                                   "enum": ["undefined", "preview", "defined"]},
                            },
                        },
                    },
                    "display": {
                        "type": "object",
                        "properties": {
                            "visibility": {"type": "boolean"},
                            "opacity": {"type": "number", "minimum": 0, "maximum": 1},
                            "color": {"type": "array", "minItems": 3, "maxItems": 3,
                                      "items": {"type": "number", "minimum": 0, "maximum": 1}},
                            "glyphSize": {"type": "number", "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}


# ------------------------------------------------------------------ atomic writes
# ------------------------------------------------------------------ ITK transforms
def transform_file_name(T: RigidTransform, suffix: str = ".tfm") -> str:
    """``"T_ct_from_sensor.tfm"``: the direction the file maps points, in its name."""
    return f"{T.name}{suffix}"


def write_itk_transform(T: RigidTransform, path: str | os.PathLike) -> Path:
    """Write ``T`` as an ITK rigid transform (``.tfm`` text or ``.h5`` HDF5).

    The file's ``TransformPoint`` maps points of ``T.from_frame`` to ``T.to_frame`` (LPS mm).
    """
    import SimpleITK as sitk

    if not isinstance(T, RigidTransform):
        raise InputError(f"T must be a RigidTransform, got {type(T).__name__}")
    path = Path(path)
    if path.suffix.lower() not in (".tfm", ".h5", ".txt", ".hdf5"):
        raise InputError(f"path must end in .tfm, .txt, .h5 or .hdf5, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tx = sitk.Euler3DTransform()
    tx.SetMatrix(T.rotation.ravel().tolist())
    tx.SetTranslation(T.translation_mm.tolist())
    with atomic_path(path) as tmp:
        sitk.WriteTransform(tx, str(tmp))
    return path


def read_itk_transform(path: str | os.PathLike, to_frame: str | None = None,
                       from_frame: str | None = None) -> RigidTransform:
    """Read a rigid ITK transform file; frame names default to the file name's
    ``T_<to>_from_<from>``."""
    import SimpleITK as sitk

    from arspine.navigation.frames import parse_transform_name

    path = Path(path)
    if not path.is_file():
        raise InputError(f"transform file not found: {path}")
    if to_frame is None or from_frame is None:
        to_frame, from_frame = parse_transform_name(path.name.split(".")[0])
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot read ITK transform {path}: {str(exc).splitlines()[0]}") \
            from exc
    # Probe the transform with points: works for any rigid type (Euler, Versor, Affine, ...).
    probe = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = np.array([tx.TransformPoint(p.tolist()) for p in probe])
    m = np.eye(4)
    m[:3, 3] = out[0]
    m[:3, :3] = (out[1:] - out[0]).T
    try:
        return RigidTransform.from_matrix(m, to_frame, from_frame, orthonormalize=False)
    except InputError as exc:
        raise InputError(f"{path} is not a rigid transform: {exc}") from exc


# ------------------------------------------------------------------ Slicer markups
def _control_point(i: int, label: str, position: np.ndarray, description: str = "") -> dict:
    return {"id": str(i + 1), "label": label, "description": description,
            "associatedNodeID": "", "position": [float(x) for x in position],
            "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
            "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}


def _markup(kind: str, name: str, points: np.ndarray, labels: list[str],
            color: tuple[float, float, float], descriptions: list[str] | None = None) -> dict:
    descriptions = descriptions or [""] * len(points)
    return {"type": kind, "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
            "locked": False, "fixedNumberOfControlPoints": kind == "Line",
            "labelFormat": "%N-%d",
            "controlPoints": [_control_point(i, lab, p, d) for i, (p, lab, d)
                              in enumerate(zip(points, labels, descriptions))],
            "measurements": [],
            "display": {"visibility": True, "opacity": 1.0, "color": list(color),
                        "glyphSize": 3.0, "pointLabelsVisibility": True}}


def markups_fiducials(points_ct_mm: object, name: str, labels: Iterable[str] | None = None,
                      color: tuple[float, float, float] = (1.0, 0.5, 0.0)) -> dict:
    """A Slicer ``Fiducial`` markups document for ``(N, 3)`` points in the ``ct`` frame."""
    p = as_points(points_ct_mm, "points_ct_mm")
    labs = list(labels) if labels is not None else [f"{name}-{i + 1}" for i in range(len(p))]
    if len(labs) != len(p):
        raise InputError(f"labels must have {len(p)} entries, got {len(labs)}")
    return {"@schema": MARKUPS_SCHEMA_URL, "markups": [_markup("Fiducial", name, p, labs, color)]}


def markups_line(trajectory: ScrewTrajectory,
                 color: tuple[float, float, float] = (0.2, 0.8, 0.2)) -> dict:
    """A Slicer ``Line`` markups document: the screw axis from entry to tip (``ct`` frame)."""
    t = trajectory
    desc = (f"diameter_mm={t.diameter_mm:g}; length_mm={t.length_mm:g}; "
            f"medial_angle_deg={t.medial_angle_deg:.1f}; cranial_angle_deg="
            f"{t.cranial_angle_deg:.1f}")
    pts = np.stack([t.entry_ct_mm, t.tip_ct_mm])
    return {"@schema": MARKUPS_SCHEMA_URL,
            "markups": [_markup("Line", t.key, pts, [f"{t.key}-entry", f"{t.key}-tip"], color,
                                [desc, desc])]}


def write_markups(doc: dict, path: str | os.PathLike) -> Path:
    """Write a markups document (validated against :data:`MARKUPS_SCHEMA`) atomically."""
    import jsonschema

    path = Path(path)
    if not path.name.endswith(".mrk.json"):
        raise InputError(f"path must end in .mrk.json, got {path.name!r}")
    try:
        jsonschema.validate(doc, MARKUPS_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise InputError(f"markups document is not valid: {exc.message}") from exc
    return atomic_write_text(path, json.dumps(doc, indent=2))


def read_markups_points(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Control points (LPS mm, ``(N, 3)``) and labels of the first markup of a
    ``.mrk.json`` file (RAS files are converted to LPS)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"markups file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        m = doc["markups"][0]
        pts = np.array([cp["position"] for cp in m["controlPoints"]], dtype=np.float64)
        labels = [cp.get("label", "") for cp in m["controlPoints"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"{path} is not a Slicer markups file: {exc}") from exc
    if m.get("coordinateSystem", "LPS") == "RAS" and len(pts):
        pts[:, :2] *= -1
    return pts.reshape(-1, 3), labels


# ------------------------------------------------------------------ meshes
def write_surfaces(surfaces: Mapping[str, Mesh], out_dir: str | os.PathLike,
                   formats: Iterable[str] = ("ply", "stl")) -> list[Path]:
    """Write each surface as ``<level>.<format>`` (``ct`` frame, LPS mm)."""
    from arspine.datasets.io import write_mesh

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, mesh in surfaces.items():
        if not isinstance(mesh, Mesh):
            raise InputError(f"surfaces[{name!r}] must be a Mesh, got {type(mesh).__name__}")
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            write_mesh(p, mesh)
            paths.append(p)
    return paths


# ------------------------------------------------------------------ DICOM registration
def _ct_series_headers(folder: Path, series_uid: str | None) -> list:
    import pydicom

    if not folder.is_dir():
        raise InputError(f"ct_dicom_folder must be a DICOM folder, got {folder}")
    out = []
    for f in sorted(q for q in folder.rglob("*") if q.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: skip
            continue
        if "FrameOfReferenceUID" not in ds:
            continue
        if series_uid and str(ds.get("SeriesInstanceUID", "")) not in ("", series_uid):
            continue
        out.append(ds)
    if not out:
        raise InputError(f"no CT DICOM images with a FrameOfReferenceUID in {folder}")
    fors = {str(d.FrameOfReferenceUID) for d in out}
    if len(fors) > 1:
        raise InputError(f"{folder} holds several frames of reference {sorted(fors)}; "
                         f"pass series_uid")
    return out


def write_spatial_registration(T_ct_from_sensor: RigidTransform,
                               ct_dicom_folder: str | os.PathLike, path: str | os.PathLike, *,
                               series_uid: str | None = None,
                               sensor_frame_of_reference_uid: str | None = None,
                               description: str = "arspine CT to sensor registration"
                               ) -> Path:
    """Write the registration as a DICOM Spatial Registration object (SOP class 1.2.840.
    10008.5.1.4.1.1.66.1) referencing the CT series.

    The object's frame of reference is the CT's. Its first registration item is the CT's
    own frame (identity); the second one maps the sensor's frame of reference (a new UID
    unless given) into the CT: the DICOM Frame of Reference Transformation Matrix maps
    points of the item's frame into the object's frame, i.e. ``T_ct_from_sensor`` (row-major,
    LPS mm).

    Returns
    -------
    Path
        ``path`` (written atomically).
    """
    import datetime

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    if not isinstance(T_ct_from_sensor, RigidTransform) or \
            T_ct_from_sensor.to_frame != "ct":
        raise InputError(f"T_ct_from_sensor must be a RigidTransform into 'ct', got "
                         f"{getattr(T_ct_from_sensor, 'name', type(T_ct_from_sensor).__name__)}")
    headers = _ct_series_headers(Path(ct_dicom_folder), series_uid)
    ref = headers[0]
    ct_for = str(ref.FrameOfReferenceUID)
    now = datetime.datetime.now(datetime.timezone.utc)
    sop_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SPATIAL_REGISTRATION_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SPATIAL_REGISTRATION_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "REG"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, kw, ref.get(kw, ""))
    ds.StudyInstanceUID = str(ref.get("StudyInstanceUID", "")) or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9000
    ds.SeriesDescription = description[:64]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = ct_for
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "arspine"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.ContentLabel = "REGISTRATION"
    ds.ContentDescription = description[:64]
    ds.ContentCreatorName = "arspine"

    def item(frame_uid: str, matrix: np.ndarray, comment: str) -> Dataset:
        m = Dataset()
        m.FrameOfReferenceTransformationMatrixType = "RIGID"
        m.FrameOfReferenceTransformationMatrix = [float(v) for v in matrix.ravel()]
        mr = Dataset()
        mr.MatrixSequence = Sequence([m])
        it = Dataset()
        it.FrameOfReferenceUID = frame_uid
        it.MatrixRegistrationSequence = Sequence([mr])
        it.FrameOfReferenceTransformationComment = comment[:64]
        return it

    sensor_for = sensor_frame_of_reference_uid or generate_uid()
    ds.RegistrationSequence = Sequence([
        item(ct_for, np.eye(4), "CT frame (identity)"),
        item(sensor_for, T_ct_from_sensor.as_matrix(), f"{T_ct_from_sensor.name} (mm)"),
    ])
    refs = []
    for h in headers:
        r = Dataset()
        r.ReferencedSOPClassUID = str(h.get("SOPClassUID", "")) or \
            str(h.file_meta.get("MediaStorageSOPClassUID", ""))
        r.ReferencedSOPInstanceUID = str(h.get("SOPInstanceUID", "")) or \
            str(h.file_meta.get("MediaStorageSOPInstanceUID", ""))
        refs.append(r)
    rs = Dataset()
    rs.SeriesInstanceUID = str(ref.get("SeriesInstanceUID", "")) or (series_uid or "")
    rs.ReferencedInstanceSequence = Sequence(refs)
    ds.ReferencedSeriesSequence = Sequence([rs])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        try:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)  # pydicom >= 3
        except TypeError:
            pydicom.dcmwrite(tmp, ds, write_like_original=False)  # pydicom 2.x
    return path


# ------------------------------------------------------------------ everything
def export_case(out_dir: str | os.PathLike, *, transforms: Iterable[RigidTransform] = (),
                plan: SurgicalPlan | None = None,
                targets_ct_mm: Mapping[str, np.ndarray] | None = None,
                surfaces: Mapping[str, Mesh] | None = None,
                mesh_formats: Iterable[str] = ("ply", "stl")) -> dict[str, list[str]]:
    """Write transforms (both directions, .tfm and .h5), markups and meshes into ``out_dir``.

    Returns
    -------
    dict
        ``{"transforms": [...], "markups": [...], "meshes": [...]}`` file names, also
        written to ``out_dir/manifest.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {"transforms": [], "markups": [], "meshes": []}
    for T in transforms:
        for t in (T, T.inv()):
            for suffix in (".tfm", ".h5"):
                p = write_itk_transform(t, out / transform_file_name(t, suffix))
                written["transforms"].append(p.name)
    if plan is not None:
        for traj in plan:
            p = write_markups(markups_line(traj), out / f"plan_{traj.key}.mrk.json")
            written["markups"].append(p.name)
        if len(plan):
            pts = np.vstack([np.stack([t.entry_ct_mm, t.tip_ct_mm]) for t in plan])
            labels = [f"{t.key}-{w}" for t in plan for w in ("entry", "tip")]
            p = write_markups(markups_fiducials(pts, "plan_points", labels, (0.2, 0.8, 0.2)),
                              out / "plan_points.mrk.json")
            written["markups"].append(p.name)
    for level, pts in (targets_ct_mm or {}).items():
        pts = as_points(pts, f"targets_ct_mm[{level!r}]")
        p = write_markups(markups_fiducials(pts, f"targets_{level}"),
                          out / f"targets_{level}.mrk.json")
        written["markups"].append(p.name)
    if surfaces:
        written["meshes"] = [p.name for p in write_surfaces(surfaces, out, mesh_formats)]
    manifest = dict(written, conventions={
        "transforms": "T_<to>_from_<from>.tfm/.h5: ITK TransformPoint maps <from> points to "
                      "<to> points, LPS mm; in 3D Slicer load T_sensor_from_ct to move sensor "
                      "data into the CT",
        "markups": "Slicer .mrk.json, coordinateSystem LPS, mm, ct frame",
        "meshes": "ct frame, LPS mm"})
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    return written
