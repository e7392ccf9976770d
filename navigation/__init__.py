"""The shared 3D frame and everything that turns registration into guidance.

Eager (numpy only): :class:`RigidTransform`, :class:`FrameGraph`, geometry containers.
Heavier modules (planning, tools, guidance, session, igtl, export) are imported on first
attribute access so ``import arspine.navigation`` stays light.
"""

from arspine.errors import FrameMismatchError
from arspine.navigation.frames import (
    FrameGraph,
    FrameInconsistencyError,
    FrameNotConnectedError,
    RigidTransform,
    parse_transform_name,
    rotation_angle_deg,
)
from arspine.navigation.geometry import Mesh, PointCloud, as_matrix4, as_points

__all__ = [
    "RigidTransform",
    "FrameGraph",
    "FrameMismatchError",
    "FrameNotConnectedError",
    "FrameInconsistencyError",
    "parse_transform_name",
    "rotation_angle_deg",
    "Mesh",
    "PointCloud",
    "as_points",
    "as_matrix4",
    "plan",
    "tools",
    "guidance",
    "session",
    "igtl",
    "export",
]

_LAZY_MODULES = ("plan", "tools", "guidance", "session", "igtl", "export")


def __getattr__(name: str):
    # Heavy submodules load on first access so `import arspine.navigation` stays numpy-only.
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"arspine.navigation.{name}")
    raise AttributeError(f"module 'arspine.navigation' has no attribute {name!r}")
