"""Case bundles (DESIGN.md): a folder with the CT, labels, the scan and the truth.

```
case.json      name, source, description, sensor, units "mm", label_scheme, frame_rate_hz,
               labels ({code: what a point hit}), exposed_levels, generator (seed, version)
ct/ | ct.nii.gz | ct.nrrd     the CT (DICOM series or one file)
labels.nii.gz  vertebra label map on the CT grid (optional)
surfaces/L3.ply  vertebra surfaces in ct mm (only for cases without a CT, e.g. a shape model)
scan.ply       point cloud in the sensor frame, mm, with a per-point "label" field
depth.png      the organised depth image behind scan.ply (camera sensors; 16-bit, units of
               case.json depth_image.depth_scale_mm; intrinsics depth_image.K)
frames/0000.ply, ...  a sequence instead of (or besides) scan.ply
truth.json     {"vertebrae": {"L3": {"T_sensor_from_ct": 4x4, "targets_ct_mm": [[x,y,z],...]}},
                "frames": [{"index", "timestamp_s", "vertebrae": {"L3": {"T_sensor_from_ct"}}}]}
```

:func:`write_case` writes the whole folder into a temporary sibling and renames it into
place, so a reader never sees half a case.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.errors import InputError
from arspine.jsonfile import read_json
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import PointCloud

__all__ = ["Case", "write_case", "load_case", "CASE_FORMAT_VERSION"]

CASE_FORMAT_VERSION = 1
_CT_NAMES = ("ct", "ct.nii.gz", "ct.nii", "ct.nrrd")


def _dump_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, RigidTransform):
        return o.as_matrix().tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _sensor_meta(sensor) -> dict:
    return {"name": sensor.name, "kind": sensor.kind, "width": sensor.width,
            "height": sensor.height, "hfov_deg": sensor.hfov_deg, "vfov_deg": sensor.vfov_deg,
            "K": sensor.K.tolist(), "noise_sigma_at_500mm": float(sensor.noise_sigma_mm(500.0))}


def _copy_ct(src: Path, dst_folder: Path) -> str:
    name = src.name.lower()
    if src.is_dir():
        shutil.copytree(src, dst_folder / "ct")
        return "ct"
    for ext in (".nii.gz", ".nii", ".nrrd"):
        if name.endswith(ext):
            shutil.copyfile(src, dst_folder / f"ct{ext}")
            return f"ct{ext}"
    # A single DICOM file or another format: the folder holding it is the series.
    shutil.copytree(src.parent, dst_folder / "ct")
    return "ct"


def write_case(folder: str | os.PathLike, scan=None, *, anatomy=None, name: str | None = None,
               description: str | None = None, ct_format: str = "auto",
               overwrite: bool = False, meta: dict | None = None,
               progress: bool = False) -> Path:
    """Write a case bundle.

    Parameters
    ----------
    folder : path
        Case folder to create (its parent is created too).
    scan : SimulatedScan, SimulatedSequence or PointCloud, optional
        The intraoperative data: a scan gives ``scan.ply`` + truth; a sequence gives
        ``frames/NNNN.ply`` + per-frame truth; a bare PointCloud (sensor frame) gives
        ``scan.ply`` only.
    anatomy : Anatomy, optional
        Where the CT, labels and targets come from. A CT file is copied as is (``auto``), a
        CT in memory (the phantom) is written as a DICOM series (``ct_format="dicom"``, the
        default for it) or NIfTI (``"nifti"``); an anatomy without a CT writes its surfaces.
    name, description : str, optional
    ct_format : {"auto", "dicom", "nifti"}
    overwrite : bool
        Replace an existing case folder (else InputError).
    meta : dict, optional
        Extra keys merged into case.json.

    Returns
    -------
    Path
        The case folder.
    """
    from arspine._version import __version__
    from arspine.datasets.io import write_mesh, write_points

    folder = Path(folder)
    if ct_format not in ("auto", "dicom", "nifti"):
        raise InputError(f"ct_format must be 'auto', 'dicom' or 'nifti', got {ct_format!r}")
    if folder.exists() and not overwrite:
        raise InputError(f"case folder already exists (pass overwrite=True): {folder}")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"case path exists and is not a folder: {folder}")
    if scan is None and anatomy is None:
        raise InputError("write_case needs a scan, an anatomy, or both")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(tmp, 0o755)
    try:
        case = {"name": name or folder.name, "description": description or "",
                "units": "mm", "format_version": CASE_FORMAT_VERSION,
                "arspine_version": __version__}
        truth: dict = {}
        if anatomy is not None:
            case["source"] = anatomy.source
            if not case["description"]:
                case["description"] = anatomy.description
            if anatomy.ct_path is not None and ct_format == "auto":
                case["ct"] = _copy_ct(Path(anatomy.ct_path), tmp)
            elif anatomy.ct is not None:
                from arspine import imaging

                if ct_format == "nifti":
                    imaging.save_nifti(anatomy.ct, tmp / "ct.nii.gz")
                    case["ct"] = "ct.nii.gz"
                else:
                    imaging.write_dicom_series(anatomy.ct, tmp / "ct",
                                               series_description=case["name"],
                                               progress=progress)
                    case["ct"] = "ct"
            if anatomy.labels_path is not None and str(anatomy.labels_path).endswith(".nii.gz") \
                    and ct_format == "auto":
                shutil.copyfile(anatomy.labels_path, tmp / "labels.nii.gz")
                case["labels"] = "labels.nii.gz"
            elif anatomy.labels is not None:
                from arspine import imaging

                imaging.save_nifti(anatomy.labels, tmp / "labels.nii.gz")
                case["labels"] = "labels.nii.gz"
            if case.get("labels"):
                case["label_scheme"] = anatomy.label_scheme
            if anatomy.ct is None and anatomy.ct_path is None:
                # A mesh-only anatomy (shape model): store the exact surfaces, plus a CT and
                # labels voxelised from them so every case can be registered the same way.
                from arspine import imaging
                from arspine.datasets.anatomy import mesh_to_ct

                (tmp / "surfaces").mkdir()
                for lv, m in anatomy.surfaces.items():
                    write_mesh(tmp / "surfaces" / f"{lv}.ply", m)
                case["surfaces"] = {lv: f"surfaces/{lv}.ply" for lv in anatomy.surfaces}
                vct, vlab = mesh_to_ct(anatomy)
                imaging.save_nifti(vct, tmp / "ct.nii.gz")
                imaging.save_nifti(vlab, tmp / "labels.nii.gz")
                case.update(ct="ct.nii.gz", labels="labels.nii.gz", label_scheme="verse",
                            ct_note="voxelised from the surfaces (1 mm)")
            case["anatomy_levels"] = list(anatomy.levels)
        if scan is not None:
            _write_scan(tmp, scan, case, truth, write_points)
        if meta:
            case.update(meta)
        _dump_json(tmp / "case.json", case)
        if truth:
            _dump_json(tmp / "truth.json", truth)
        # Swap into place: the old case (if any) goes only after the new one is complete.
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / "case")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _write_scan(tmp: Path, scan, case: dict, truth: dict, write_points) -> None:
    from arspine.datasets.scene import label_names
    from arspine.datasets.simulate import SimulatedScan, SimulatedSequence

    if isinstance(scan, PointCloud):
        write_points(tmp / "scan.ply", scan)
        return
    if isinstance(scan, SimulatedScan):
        first, frames = scan, None
    elif isinstance(scan, SimulatedSequence):
        first, frames = scan.frames[0], scan.frames
    else:
        raise InputError(f"scan must be a SimulatedScan, SimulatedSequence or PointCloud, got "
                         f"{type(scan).__name__}")
    case["sensor"] = _sensor_meta(first.sensor)
    case["exposed_levels"] = list(first.exposed_levels)
    case["levels"] = list(first.exposed_levels)  # what the registration should solve for
    case["noise_mm"] = float(first.config.get("noise_mm", 0.0))
    case["overlap_fraction"] = float(first.fraction("bone"))
    codes = np.unique(np.concatenate([f.cloud.labels for f in (frames or [first])]))
    case["point_labels"] = {str(k): v for k, v in label_names(codes).items()}
    case["generator"] = dict(scan.config)
    # Truth for the exposed levels (what the scan shows); the other levels' poses are kept
    # under "hidden_vertebrae" (covered by soft tissue: not registrable from this scan).
    truth["vertebrae"] = {
        lv: {"T_sensor_from_ct": first.truth[lv].as_matrix().tolist(),
             "targets_ct_mm": np.asarray(first.targets_ct_mm[lv]).tolist()}
        for lv in first.exposed_levels}
    truth["hidden_vertebrae"] = {
        lv: {"T_sensor_from_ct": first.truth[lv].as_matrix().tolist()}
        for lv in first.truth if lv not in first.exposed_levels}
    truth["target_kinds"] = ["screw_entry_left", "screw_tip_left", "screw_entry_right",
                             "screw_tip_right", "interior...", "centroid"]
    truth["T_sensor_from_patient"] = first.T_sensor_from_patient.as_matrix().tolist()
    if frames is None:
        write_points(tmp / "scan.ply", first.cloud)
        case["scan"] = "scan.ply"
        if first.sensor.kind == "pinhole" and first.depth_mm is not None:
            # The organised image behind scan.ply, for depth-image methods: 16-bit PNG in
            # units of depth_scale_mm; depth_to_points(image, K, depth_scale_mm=...) gives the
            # scan's points back (to the quantisation).
            from arspine.datasets.io import write_depth_image

            zmax = float(np.nanmax(first.depth_mm)) if np.isfinite(first.depth_mm).any() else 0
            scale = 0.1 if zmax < 6500 else 1.0
            write_depth_image(tmp / "depth.png", first.depth_mm, depth_scale_mm=scale)
            case["depth_image"] = {"file": "depth.png", "depth_scale_mm": scale,
                                   "K": first.sensor.K.tolist()}
        return
    (tmp / "frames").mkdir()
    case["frames"] = "frames"
    case["n_frames"] = len(frames)
    case["frame_rate_hz"] = float(scan.frame_rate_hz)
    truth["frames"] = []
    for i, f in enumerate(frames):
        write_points(tmp / "frames" / f"{i:04d}.ply", f.cloud)
        truth["frames"].append({
            "index": i, "timestamp_s": float(f.timestamp_s),
            "vertebrae": {lv: {"T_sensor_from_ct": f.truth[lv].as_matrix().tolist()}
                          for lv in f.exposed_levels}})


@dataclass
class Case:
    """A loaded case bundle (see the module docstring for the layout).

    Attributes
    ----------
    name : str
    folder : Path
    ct_path, labels_path : Path or None
    label_scheme : str or None
    scan : PointCloud or None
        ``scan.ply`` in the ``sensor`` frame (labels when simulated).
    frames : list[Path]
        ``frames/NNNN.ply`` of a sequence, in order.
    truth : dict[str, dict]
        ``{"L3": {"T_sensor_from_ct": RigidTransform, "targets_ct_mm": (K, 3)}}``.
    frame_truth : list[dict]
        Per frame ``{"index", "timestamp_s", "vertebrae": {"L3": RigidTransform}}``.
    hidden_truth : dict[str, RigidTransform]
        ``T_sensor_from_ct`` of the levels not exposed (under soft tissue), to check a level
        a registration accepted beyond the exposed ones.
    meta : dict
        case.json.
    surface_paths : dict[str, Path]
        Vertebra surfaces stored in the bundle (cases without a CT).
    """

    name: str
    folder: Path
    ct_path: Path | None
    labels_path: Path | None
    label_scheme: str | None
    scan: PointCloud | None
    frames: list[Path]
    truth: dict[str, dict]
    frame_truth: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    surface_paths: dict[str, Path] = field(default_factory=dict)
    hidden_truth: dict = field(default_factory=dict)

    @property
    def frame_rate_hz(self) -> float:
        return float(self.meta.get("frame_rate_hz", 30.0))

    @property
    def exposed_levels(self) -> list[str]:
        return list(self.meta.get("exposed_levels") or self.truth)

    def load_ct(self, progress: bool = False):
        """The CT as ``arspine.imaging.CtVolume``."""
        if self.ct_path is None:
            raise InputError(f"case {self.folder} has no CT")
        from arspine.imaging import load_ct

        return load_ct(self.ct_path, progress=progress)

    def load_labels(self, ct=None):
        """The vertebra label map as ``arspine.imaging.VertebraLabels`` (on the CT grid)."""
        if self.labels_path is None:
            raise InputError(f"case {self.folder} has no labels.nii.gz")
        from arspine.imaging import load_labels

        return load_labels(self.labels_path, like=ct if ct is not None else self.load_ct(),
                           scheme=self.label_scheme)

    def load_surfaces(self) -> dict:
        """Vertebra surfaces (``ct`` frame): stored ones, else extracted from CT + labels."""
        if self.surface_paths:
            from arspine.datasets.io import read_mesh

            out = {}
            for lv, p in self.surface_paths.items():
                m = read_mesh(p, frame="ct")
                from arspine.navigation.geometry import Mesh

                out[lv] = Mesh(m.vertices, m.faces, normals=m.normals, name=lv, frame="ct")
            return out
        from arspine.imaging import vertebra_surfaces

        ct = self.load_ct()
        return vertebra_surfaces(ct, self.load_labels(ct))

    def load_frame(self, index: int) -> PointCloud:
        """Point cloud of frame ``index`` of a sequence (sensor frame)."""
        from arspine.datasets.io import read_points

        if not 0 <= index < len(self.frames):
            raise InputError(f"index must be in [0, {len(self.frames)}), got {index}")
        return read_points(self.frames[index], frame="sensor")

    def targets(self, level: str) -> np.ndarray:
        """(K, 3) TRE targets of ``level`` in ct mm."""
        if level not in self.truth:
            raise InputError(f"level must be one of {list(self.truth)}, got {level!r}")
        return self.truth[level]["targets_ct_mm"]


def _read_json(path: Path, what: str) -> dict:
    return read_json(path, what, object_only=True)


def _matrix(value, where: str) -> RigidTransform:
    try:
        return RigidTransform.from_matrix(value, "sensor", "ct", orthonormalize=False)
    except (InputError, ValueError) as exc:
        raise InputError(f"{where}: T_sensor_from_ct is not a rigid 4x4 matrix ({exc})") from exc


def load_case(folder: str | os.PathLike, load_scan: bool = True) -> Case:
    """Load a case bundle.

    Parameters
    ----------
    folder : path
        The case folder (holding case.json).
    load_scan : bool
        Read ``scan.ply`` now (else ``Case.scan`` is None).

    Raises
    ------
    InputError
        Missing folder or case.json, broken JSON, truth that is not rigid.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"case folder not found: {folder}")
    meta_path = folder / "case.json"
    if not meta_path.is_file():
        raise InputError(f"not a case bundle (no case.json): {folder}")
    meta = _read_json(meta_path, "case.json")
    ct_path = None
    if meta.get("ct"):
        ct_path = folder / meta["ct"]
    else:
        for n in _CT_NAMES:
            if (folder / n).exists():
                ct_path = folder / n
                break
    if ct_path is not None and not ct_path.exists():
        raise InputError(f"case.json names a CT that is missing: {ct_path}")
    labels_path = folder / meta.get("labels", "labels.nii.gz")
    labels_path = labels_path if labels_path.is_file() else None
    scan = None
    scan_path = folder / meta.get("scan", "scan.ply")
    if load_scan and scan_path.is_file():
        from arspine.datasets.io import read_points

        scan = read_points(scan_path, frame="sensor")
    frames = sorted((folder / "frames").glob("*.ply")) if (folder / "frames").is_dir() else []
    truth: dict[str, dict] = {}
    hidden: dict = {}
    frame_truth: list[dict] = []
    tpath = folder / "truth.json"
    if tpath.is_file():
        t = _read_json(tpath, "truth.json")
        for lv, d in (t.get("vertebrae") or {}).items():
            entry = {"T_sensor_from_ct": _matrix(d.get("T_sensor_from_ct"),
                                                 f"truth.json vertebrae.{lv}")}
            tg = d.get("targets_ct_mm")
            if tg is not None:
                from arspine.navigation.geometry import as_points

                entry["targets_ct_mm"] = as_points(tg, f"truth.json vertebrae.{lv}.targets_ct_mm")
            truth[lv] = entry
        hidden = {lv: _matrix(d.get("T_sensor_from_ct"), f"truth.json hidden_vertebrae.{lv}")
                  for lv, d in (t.get("hidden_vertebrae") or {}).items()}
        for fr in t.get("frames") or []:
            frame_truth.append({
                "index": int(fr["index"]), "timestamp_s": float(fr.get("timestamp_s", 0.0)),
                "vertebrae": {lv: _matrix(d["T_sensor_from_ct"],
                                          f"truth.json frames[{fr['index']}].{lv}")
                              for lv, d in fr.get("vertebrae", {}).items()}})
    surfaces = {lv: folder / p for lv, p in (meta.get("surfaces") or {}).items()}
    return Case(name=meta.get("name", folder.name), folder=folder, ct_path=ct_path,
                labels_path=labels_path, label_scheme=meta.get("label_scheme"), scan=scan,
                frames=frames, truth=truth, frame_truth=frame_truth, meta=meta,
                surface_paths=surfaces, hidden_truth=hidden)
