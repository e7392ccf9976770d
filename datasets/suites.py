"""Named, seeded, versioned benchmark suites of case bundles, generated on demand.

``suite_cases("standard")`` returns the case folders of the suite, generating any that are
missing into ``cache_dir("suites", "<name>-v<version>-<hash>")``. The folder name carries a
hash of the suite's specification and of the simulator's defaults (scene, sensors, motion
presets), so a changed suite never reuses stale cases.

Suites
------
quick     3 cases (real CT, shape model, coarse phantom), structured light: CI, seconds.
standard  real CT + phantom + shape model; structured light (~1 mm noise at 0.5 m), 10 %
          outliers, moderate inter-level motion.
hard      low overlap (one or two exposed levels, narrow wound), 30 % outliers, clutter,
          large motion, ToF / stereo / LiDAR sensors, steep tilt.
tracking  sequences (breathing ~2 mm, camera drift) on the real CT, shape model and phantom.
real      every real anatomy in ../shared/data (TotalSegmentator NIfTI CT at three level
          ranges, its DICOM series at T11-T12, lumbar shape model) under the default sensor.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from arspine.errors import InputError

__all__ = ["SUITE_VERSION", "SUITES", "suite_specs", "suite_cases", "generate_case",
           "load_anatomy"]

SUITE_VERSION = 2  # bump when the simulator changes in a way the defaults do not show

_CT = ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_ct_vertebrae.nii.gz")
_SSM = "lumbar_ssm_mean/mean_L2-L5.ply"
_DICOM = ("totalsegmentator/example_ct_dicom", "totalsegmentator/example_ct_dicom_labels.nii.gz")


def _case(name, anatomy, seed, sensor="structured-light", **kw) -> dict:
    return {"name": name, "anatomy": anatomy, "seed": seed, "sensor": sensor, **kw}


def _standard() -> list[dict]:
    out = []
    ct_levels = [["L2", "L3", "L4"], ["L1", "L2", "L3"], ["L3", "L4", "L5"], ["L2", "L3"]]
    for i, lv in enumerate(ct_levels):
        out.append(_case(f"ct-{i:02d}", "ct", 100 + i, levels=lv, outlier_fraction=0.10,
                         motion="moderate"))
    for i, lv in enumerate([["L2", "L3", "L4"], ["L3", "L4", "L5"], ["L1", "L2", "L3"],
                            ["L2", "L3", "L4"]]):
        out.append(_case(f"phantom-{i:02d}", f"phantom:{i % 2}", 200 + i, levels=lv,
                         outlier_fraction=0.10, motion="moderate"))
    for i, lv in enumerate([["L2", "L3", "L4"], ["L3", "L4", "L5"], ["L2", "L3"],
                            ["L3", "L4"]]):
        out.append(_case(f"ssm-{i:02d}", "ssm", 300 + i, levels=lv, outlier_fraction=0.10,
                         motion="moderate"))
    return out


def _hard() -> list[dict]:
    narrow = {"wound_half_width_mm": 17.0, "drape_fold_mm": 9.0, "clutter": 3,
              "tool_probability": 1.0}
    sensors = ["tof", "stereo-zedmini", "lidar-64", "structured-light"]
    out = []
    for i in range(4):
        out.append(_case(f"ct-{i:02d}", "ct", 400 + i, sensor=sensors[i % 4],
                         levels=[["L3"], ["L2", "L3"], ["L4"], ["L1", "L2"]][i],
                         outlier_fraction=0.30, motion="large", tilt_deg_max=40.0,
                         scene=narrow))
        out.append(_case(f"phantom-{i:02d}", f"phantom:{2 + i % 2}", 500 + i,
                         sensor=sensors[(i + 1) % 4],
                         levels=[["L3"], ["L4", "L5"], ["L2"], ["L3", "L4"]][i],
                         outlier_fraction=0.30, motion="large", tilt_deg_max=40.0,
                         scene=narrow))
        out.append(_case(f"ssm-{i:02d}", "ssm", 600 + i, sensor=sensors[(i + 2) % 4],
                         levels=[["L3"], ["L4"], ["L2", "L3"], ["L5"]][i],
                         outlier_fraction=0.30, motion="large", tilt_deg_max=40.0,
                         scene=narrow))
    return out


def _tracking() -> list[dict]:
    return [
        _case("ct-seq-00", "ct", 700, levels=["L2", "L3", "L4"], frames=20,
              outlier_fraction=0.05),
        _case("ssm-seq-00", "ssm", 701, levels=["L3", "L4"], frames=20, outlier_fraction=0.05),
        _case("phantom-seq-00", "phantom:0", 702, levels=["L2", "L3", "L4"], frames=20,
              outlier_fraction=0.05),
    ]


def _real() -> list[dict]:
    return [
        _case("totalseg-ct-L2L4", "ct", 800, levels=["L2", "L3", "L4"], outlier_fraction=0.05),
        _case("totalseg-ct-L1L3", "ct", 801, levels=["L1", "L2", "L3"],
              outlier_fraction=0.05),
        _case("totalseg-ct-L4S1", "ct", 802, levels=["L4", "L5", "S1"], outlier_fraction=0.05),
        _case("totalseg-dicom-T11T12", "ct-dicom", 805, levels=["T11", "T12"],
              outlier_fraction=0.05),
        _case("ssm-mean-L2L4", "ssm", 803, levels=["L2", "L3", "L4"], outlier_fraction=0.05),
        _case("ssm-mean-L3L5", "ssm", 804, levels=["L3", "L4", "L5"], outlier_fraction=0.05),
    ]


def _quick() -> list[dict]:
    return [
        _case("ct-quick", "ct", 900, levels=["L2", "L3", "L4"], outlier_fraction=0.05),
        _case("ssm-quick", "ssm", 901, levels=["L3", "L4"], outlier_fraction=0.05),
        _case("phantom-quick", "phantom-coarse:0", 902, levels=["L2", "L3", "L4"],
              outlier_fraction=0.05),
    ]


#: name -> function returning the case specifications.
SUITES = {"quick": _quick, "standard": _standard, "hard": _hard, "tracking": _tracking,
          "real": _real}


def suite_specs(name: str) -> list[dict]:
    """Case specifications of a suite (dicts: name, anatomy, seed, sensor, options)."""
    if name not in SUITES:
        raise InputError(f"suite must be one of {sorted(SUITES)}, got {name!r}")
    return SUITES[name]()


@lru_cache(maxsize=8)
def load_anatomy(key: str):
    """Anatomy for a spec key (cached in-process).

    ``"ct"`` (real TotalSegmentator CT), ``"ct-dicom"`` (its real DICOM series, T11-T12,
    20 slices), ``"ssm"`` (real shape model), ``"phantom:<seed>"`` (1.5 mm) or
    ``"phantom-coarse:<seed>"`` (2.5 mm).
    """
    from arspine.datasets.anatomy import anatomy_from_ct, anatomy_from_mesh
    from arspine.datasets.paths import real_data_path

    if key == "ct":
        return anatomy_from_ct(real_data_path(*_CT[0].split("/")),
                               real_data_path(*_CT[1].split("/")), "totalsegmentator")
    if key == "ct-dicom":
        return anatomy_from_ct(real_data_path(*_DICOM[0].split("/")),
                               real_data_path(*_DICOM[1].split("/")), "totalsegmentator")
    if key == "ssm":
        return anatomy_from_mesh(real_data_path(*_SSM.split("/")),
                                 levels=("L2", "L3", "L4", "L5"))
    if key.startswith(("phantom:", "phantom-coarse:")):
        from arspine.datasets.phantom import make_phantom

        kind, seed = key.split(":")
        spacing = 2.5 if kind == "phantom-coarse" else 1.5
        return make_phantom(seed=int(seed), spacing_mm=spacing).anatomy()
    raise InputError(f"unknown anatomy key {key!r}")


def generate_case(spec: dict, folder: str | os.PathLike, overwrite: bool = True) -> Path:
    """Generate one case bundle from a suite specification."""
    from arspine.datasets.case import write_case
    from arspine.datasets.scene import SceneConfig
    from arspine.datasets.simulate import simulate_scan, simulate_sequence

    anatomy = load_anatomy(spec["anatomy"])
    kw = {k: spec[k] for k in ("levels", "motion", "outlier_fraction", "noise_scale",
                               "tilt_deg_max") if k in spec}
    if spec.get("scene"):
        kw["scene"] = SceneConfig(**spec["scene"])
    if spec.get("frames"):
        scan = simulate_sequence(anatomy, int(spec["frames"]), spec["sensor"], spec["seed"],
                                 **kw)
    else:
        scan = simulate_scan(anatomy, spec["sensor"], spec["seed"], **kw)
    return write_case(folder, scan, anatomy=anatomy, name=spec["name"],
                      ct_format="nifti" if spec["anatomy"].startswith("phantom") else "auto",
                      overwrite=overwrite, meta={"suite_spec": spec})


def _digest(specs: list[dict]) -> str:
    """Hash of the specs and of every simulator default they rely on (scene, sensors,
    motion presets), so a changed generator never reuses stale cached cases."""
    import dataclasses

    from arspine.datasets.scene import SceneConfig
    from arspine.datasets.sensors import SENSORS
    from arspine.datasets.simulate import MOTION_PRESETS

    key = {"specs": specs, "scene": dataclasses.asdict(SceneConfig()),
           "sensors": {k: dataclasses.asdict(v) for k, v in SENSORS.items()},
           "motion": MOTION_PRESETS, "version": SUITE_VERSION}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def suite_cases(name: str, cache: str | os.PathLike | None = None,
                progress: bool = False) -> list[Path]:
    """Case folders of a suite, generating missing ones.

    Parameters
    ----------
    name : {"quick", "standard", "hard", "tracking", "real"}
    cache : path, optional
        Root folder (default ``arspine.datasets.paths.cache_dir("suites")``).
    progress : bool
        tqdm bar while generating.

    Returns
    -------
    list[Path]
        One folder per case, in the suite's order.
    """
    from tqdm.auto import tqdm

    from arspine.datasets.paths import cache_dir

    specs = suite_specs(name)
    digest = _digest(specs)
    root = Path(cache) if cache is not None else cache_dir("suites")
    folder = root / f"{name}-v{SUITE_VERSION}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    missing = [s for s in specs if not (folder / s["name"] / "case.json").is_file()]
    for spec in tqdm(missing, disable=not progress, desc=f"suite {name}"):
        try:
            generate_case(spec, folder / spec["name"], overwrite=False)
        except (OSError, InputError):
            # Another process generated the same case at the same time: use its copy.
            if not (folder / spec["name"] / "case.json").is_file():
                raise
    for spec in specs:
        out.append(folder / spec["name"])
    manifest = folder / "suite.json"
    if not manifest.is_file():
        tmp = folder / ".suite.json.tmp"
        tmp.write_text(json.dumps({"name": name, "version": SUITE_VERSION, "hash": digest,
                                   "cases": specs}, indent=1))
        os.replace(tmp, manifest)
    return out
