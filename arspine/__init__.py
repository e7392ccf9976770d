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

from arspine._version import __version__
from arspine.errors import ArspineError, InputError, RegistrationRejected

__all__ = ["__version__", "ArspineError", "InputError", "RegistrationRejected"]
