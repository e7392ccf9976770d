"""The side panels of the viewer, each built by a factory ``factory(window) -> QWidget``.

A panel's module is imported only when the window is built, so a missing or broken package
(registration, overlay, planning) costs that one tab, replaced by a message saying why.
"""

from __future__ import annotations

import importlib

__all__ = ["PANELS"]


def _factory(module: str, cls: str):
    def build(window):
        mod = importlib.import_module(f"arspine.viewer.{module}")
        return getattr(mod, cls)(window)
    return build


#: (tab title, factory)
PANELS = [
    ("Plan", _factory("plan_panel", "PlanPanel")),
    ("Register", _factory("register_panel", "RegisterPanel")),
    ("Rehearse", _factory("rehearse_panel", "RehearsePanel")),
]
