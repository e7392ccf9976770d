"""Exception types shared by every arspine package.

The CLI maps :class:`InputError` to exit code 2 (one clear line on stderr) and
:class:`RegistrationRejected` to exit code 3.
"""

from __future__ import annotations

__all__ = ["ArspineError", "InputError", "RegistrationRejected", "FrameMismatchError"]


class ArspineError(Exception):
    """Base class of every error raised on purpose by arspine."""


class InputError(ArspineError, ValueError):
    """Bad input from the user: a wrong shape, a missing file, a broken DICOM, NaN points.

    The message names the argument (or file) and what was received.
    """


class FrameMismatchError(InputError):
    """Two transforms composed whose neighbouring frame names do not match."""


class RegistrationRejected(ArspineError):
    """A registration refused by the quality gate; ``result`` holds the full result."""

    def __init__(self, reason: str, result: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.result = result
