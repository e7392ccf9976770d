"""`arspine view [CASE] [--screenshot F]`: the desktop rehearsal viewer (PyQt5 + VTK)."""

from __future__ import annotations

import argparse
import os

from arspine.errors import InputError

HELP = "desktop viewer: open a case, plan, register, rehearse the HMD overlay"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("case", nargs="?", default=None,
                        help="case bundle folder, DICOM folder, or .nii/.nii.gz/.nrrd CT")
    parser.add_argument("--labels", default=None,
                        help="vertebra label map on the CT grid (default: the case's, or a "
                             "sibling <name>_vertebrae.nii.gz)")
    parser.add_argument("--label-scheme", choices=("verse", "totalsegmentator"), default=None)
    parser.add_argument("--screenshot", metavar="F", default=None,
                        help="open the case, render the window once, save a PNG and exit "
                             "(no display needed: a virtual one is started)")
    parser.add_argument("--tab", choices=("case", "plan", "register", "rehearse"), default=None,
                        help="side panel to show (plan proposes screws; rehearse renders the "
                             "HMD eye view), e.g. for --screenshot")
    parser.add_argument("--size", default="1440x900",
                        help="window size WxH (at least 1280x800; default 1440x900)")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must be WxH, got {text!r}") from None
    if w < 1280 or h < 800:
        raise InputError(f"--size must be at least 1280x800, got {text!r}")
    return w, h


def run(args: argparse.Namespace) -> int:
    size = _size(args.size)
    if args.case is not None and not os.path.exists(args.case):
        raise InputError(f"CASE not found: {args.case}")
    if args.labels is not None and not os.path.exists(args.labels):
        raise InputError(f"--labels not found: {args.labels}")
    try:
        import PyQt5  # noqa: F401
    except ImportError:
        raise InputError("the viewer needs PyQt5: pip install 'arspine[viewer]'") from None
    from arspine.viewer.xvfb import VirtualDisplay, display_available

    display = None
    if not display_available():
        if args.screenshot is None:
            where = os.environ.get("DISPLAY")
            raise InputError(("no display (DISPLAY is not set)" if not where else
                              f"cannot open the display DISPLAY={where}")
                             + "; run it on a desktop, or use --screenshot F to render the "
                               "window off-screen")
        # Qt's offscreen platform gives VTK no GL context; a private Xvfb does
        display = VirtualDisplay(max(1920, size[0] + 100), max(1200, size[1] + 100)).start()
        os.environ["QT_QPA_PLATFORM"] = "xcb"
    try:
        from arspine.viewer.app import run_viewer

        code = run_viewer(args.case, screenshot=args.screenshot, labels=args.labels,
                          label_scheme=args.label_scheme, size=size, tab=args.tab)
    finally:
        if display is not None:
            # Qt is connected now; Xvfb (-terminate) exits when this process disconnects
            display.release()
    return code
