"""A private virtual X display (Xvfb) for the viewer when no display exists.

Qt's ``offscreen`` platform gives VTK no OpenGL context, so the 3D view would stay empty;
under Xvfb (Mesa llvmpipe through GLX) VTK inside Qt renders normally. No Qt import here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from arspine.errors import ArspineError

__all__ = ["VirtualDisplay", "display_available", "ensure_display"]


def display_available() -> bool:
    """True when ``$DISPLAY`` names an X display that accepts a connection (or
    ``$WAYLAND_DISPLAY`` is set). Qt aborts the process on a display it cannot open, so
    this is checked first."""
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    if not os.environ.get("DISPLAY"):
        return False
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("X11")
    if name is None:
        return True  # cannot check without libX11: let Qt try
    try:
        x11 = ctypes.CDLL(name)
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        d = x11.XOpenDisplay(None)
    except OSError:
        return True
    if not d:
        return False
    x11.XCloseDisplay(d)
    return True


def _free_display_number(start: int = 90) -> int:
    for n in range(start, start + 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise ArspineError("no free X display number found in :90..:289")


class VirtualDisplay:
    """An ``Xvfb`` server on a free display number; use as a context manager.

    The server runs with ``-terminate``: it exits when its last client disconnects, so it
    never outlives the process that used it.

    Parameters
    ----------
    width, height : int
        Screen size in pixels (the main window needs at least 1280x800).
    set_env : bool
        Set ``$DISPLAY`` while running (restored on stop).
    """

    def __init__(self, width: int = 1920, height: int = 1200, set_env: bool = True):
        self.width, self.height, self.set_env = int(width), int(height), set_env
        self.number: int | None = None
        self._proc: subprocess.Popen | None = None
        self._old_display: str | None = None
        self._env_set = False

    @property
    def name(self) -> str:
        return f":{self.number}"

    def start(self, timeout_s: float = 10.0) -> VirtualDisplay:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise ArspineError(
                "no display and Xvfb is not installed: install it (apt-get install xvfb, or "
                "run scripts/setup_system.sh) or set DISPLAY")
        for _attempt in range(5):
            self.number = _free_display_number()
            self._proc = subprocess.Popen(
                [exe, self.name, "-screen", "0", f"{self.width}x{self.height}x24",
                 "+extension", "GLX", "-nolisten", "tcp", "-terminate"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sock = Path(f"/tmp/.X11-unix/X{self.number}")
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout_s:
                if self._proc.poll() is not None:
                    break  # lost a race for this number: try another
                if sock.exists():
                    if self.set_env:
                        self._old_display = os.environ.get("DISPLAY")
                        os.environ["DISPLAY"] = self.name
                        self._env_set = True
                    return self
                time.sleep(0.05)
            self.stop()
        raise ArspineError("could not start Xvfb (tried 5 display numbers)")

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._env_set:
            self._env_set = False
            if self._old_display is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = self._old_display

    def release(self) -> None:
        """Stop managing the server without killing it.

        Started with ``-terminate``, Xvfb exits by itself when its last client disconnects
        (at the latest when this process exits). Killing it while Qt is still connected would
        make Qt abort the process ("X11 connection broke"), so once a ``QApplication`` has
        connected, call this instead of :meth:`stop`.
        """
        self._proc = None
        self.stop()

    def __enter__(self) -> VirtualDisplay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_display(width: int = 1920, height: int = 1200) -> VirtualDisplay | None:
    """Start a :class:`VirtualDisplay` when none exists; returns it (caller stops) or None."""
    if display_available():
        return None
    return VirtualDisplay(width, height).start()
