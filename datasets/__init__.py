"""arspine.datasets: point-cloud I/O, case bundles, spine phantom, depth-sensor simulation,
public dataset loaders and benchmark suites.

Submodules load lazily (``arspine.datasets.simulate_scan`` imports open3d only when used).
"""

from __future__ import annotations

import importlib

__all__ = [
    "read_points", "write_points", "read_mesh", "write_mesh", "depth_to_points",
    "shared_data_dir", "real_data_path", "cache_dir",
    "Anatomy", "anatomy_from_ct", "anatomy_from_mesh", "VERTEBRA_NAMES",
    "SensorModel", "SENSORS", "get_sensor",
    "SceneConfig", "LABELS", "bone_label", "label_name",
    "SimulatedScan", "SimulatedSequence", "simulate_scan", "simulate_sequence",
    "Case", "write_case", "load_case",
    "Phantom", "make_phantom",
    "suite_cases", "SUITES",
    "load_verse_case", "load_totalsegmentator_case",
    "save_scan_figure", "plot_scan",
    "run_study", "open_client",
]

_WHERE = {
    "read_points": "io", "write_points": "io", "read_mesh": "io", "write_mesh": "io",
    "depth_to_points": "io",
    "shared_data_dir": "paths", "real_data_path": "paths", "cache_dir": "paths",
    "Anatomy": "anatomy", "anatomy_from_ct": "anatomy", "anatomy_from_mesh": "anatomy",
    "VERTEBRA_NAMES": "anatomy",
    "SensorModel": "sensors", "SENSORS": "sensors", "get_sensor": "sensors",
    "SceneConfig": "scene", "LABELS": "scene", "bone_label": "scene", "label_name": "scene",
    "SimulatedScan": "simulate", "SimulatedSequence": "simulate", "simulate_scan": "simulate",
    "simulate_sequence": "simulate",
    "Case": "case", "write_case": "case", "load_case": "case",
    "Phantom": "phantom", "make_phantom": "phantom",
    "suite_cases": "suites", "SUITES": "suites",
    "load_verse_case": "loaders", "load_totalsegmentator_case": "loaders",
    "save_scan_figure": "plotting", "plot_scan": "plotting",
    "run_study": "study", "open_client": "study",
}


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'arspine.datasets' has no attribute {name!r}")
    return getattr(importlib.import_module(f"arspine.datasets.{mod}"), name)


def __dir__():
    return sorted(list(globals()) + __all__)
