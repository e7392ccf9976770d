"""arspine: augmented-reality surgical navigation of the spine.

Subpackages (import them explicitly; importing ``arspine`` stays light and never opens a
display):

- :mod:`arspine.navigation` -- frames (:class:`RigidTransform`, :class:`FrameGraph`),
  planning, tools, guidance, sessions, OpenIGTLink, exports
- :mod:`arspine.imaging` -- CT loading, bone and vertebra segmentation, surfaces, slices
- :mod:`arspine.registration` -- fiducial and markerless surface registration, tracking
- :mod:`arspine.overlay` -- head-mounted display model, head poses, renderer, overlay error
- :mod:`arspine.datasets` -- point-cloud/mesh I/O, phantoms, scan simulator, case bundles
"""

import importlib

from arspine._version import __version__
from arspine.errors import ArspineError, InputError, RegistrationRejected

__all__ = ["__version__", "ArspineError", "InputError", "RegistrationRejected"]

_SUBPACKAGES = ("navigation", "imaging", "registration", "overlay", "datasets")


def __getattr__(name: str):
    # `import arspine; arspine.registration.register(...)` imports the subpackage on first use.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"arspine.{name}")
    raise AttributeError(f"module 'arspine' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBPACKAGES])
