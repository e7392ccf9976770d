"""The surgeon's eye view: head-mounted display model, head-pose trajectories, latency and
prediction, the offscreen per-eye overlay renderer, and the overlay error budget.

Submodules load on first use (the renderer imports VTK; nothing opens a display on import):

- :mod:`~arspine.overlay.display`: :class:`HeadMountedDisplay`, :data:`PRESETS`,
  :func:`get_display`, :func:`project_points`;
- :mod:`~arspine.overlay.headpose`: :class:`HeadTrajectory`, :func:`simulate_head_trajectory`;
- :mod:`~arspine.overlay.latency`: predictors, :func:`latency_overlay_error`;
- :mod:`~arspine.overlay.renderer`: :class:`OverlayRenderer`;
- :mod:`~arspine.overlay.error`: :func:`expected_overlay_error`,
  :func:`simulate_overlay_error`.
"""

from __future__ import annotations

import importlib

__all__ = [
    "HeadMountedDisplay", "PRESETS", "get_display", "project_points",
    "HeadTrajectory", "simulate_head_trajectory", "load_head_poses", "TRAJECTORIES",
    "make_predictor", "latency_overlay_error", "PREDICTORS",
    "OverlayRenderer", "StereoFrame", "STYLES",
    "ErrorSources", "expected_overlay_error", "simulate_overlay_error",
]

_WHERE = {
    "HeadMountedDisplay": "display", "PRESETS": "display", "get_display": "display",
    "project_points": "display",
    "HeadTrajectory": "headpose", "simulate_head_trajectory": "headpose",
    "load_head_poses": "headpose", "TRAJECTORIES": "headpose",
    "make_predictor": "latency", "latency_overlay_error": "latency", "PREDICTORS": "latency",
    "OverlayRenderer": "renderer", "StereoFrame": "renderer", "STYLES": "renderer",
    "ErrorSources": "error", "expected_overlay_error": "error",
    "simulate_overlay_error": "error",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"arspine.overlay.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'arspine.overlay' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
