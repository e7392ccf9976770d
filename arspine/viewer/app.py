"""Start the viewer: interactive, or open a case, save one screenshot and exit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from arspine.errors import InputError

__all__ = ["run_viewer", "make_window", "wait_loaded", "show_tab", "install_excepthook"]


def make_window(with_panels: bool = True):
    """A :class:`MainWindow` with every panel whose package is available.

    A panel whose package is missing or broken is replaced by a tab saying why.
    """
    from PyQt5.QtWidgets import QLabel

    from arspine.viewer.main_window import MainWindow

    win = MainWindow()
    if with_panels:
        from arspine.viewer import panels

        for title, factory in panels.PANELS:
            try:
                widget = factory(win)
            except Exception as exc:  # noqa: BLE001 - degrade clearly, never crash
                widget = QLabel(f"{title} is unavailable:\n{type(exc).__name__}: {exc}")
                widget.setWordWrap(True)
            win.add_panel(widget, title)
    return win


def wait_loaded(win, timeout_s: float = 120.0) -> bool:
    """Process events until the window's case load finished; True when it succeeded."""
    import time

    from PyQt5.QtWidgets import QApplication

    t0 = time.monotonic()
    while win.loading and time.monotonic() - t0 < timeout_s:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
    return (not win.loading) and win.case is not None


def show_tab(win, title: str, timeout_s: float = 120.0) -> None:
    """Bring a side panel to the front; "Plan" also proposes the screws (waiting for them)
    and "Rehearse" renders the eye view."""
    import time

    from PyQt5.QtWidgets import QApplication

    titles = [win.tabs.tabText(i).lower() for i in range(win.tabs.count())]
    if title.lower() not in titles:
        raise InputError(f"--tab must be one of {titles}, got {title!r}")
    panel = win.tabs.widget(titles.index(title.lower()))
    win.tabs.setCurrentWidget(panel)
    if hasattr(panel, "propose") and win.case is not None and panel.plan is None:
        panel.propose()
        t0 = time.monotonic()
        while panel.plan is None and not win.error_text and time.monotonic() - t0 < timeout_s:
            QApplication.processEvents()
            time.sleep(0.02)
    if hasattr(panel, "render_frame") and win.case is not None:
        panel.render_frame()
    QApplication.processEvents()


def install_excepthook(win) -> None:
    """Show an unexpected exception from a Qt slot in the window's error banner.

    PyQt5 aborts the process on an exception escaping a slot unless ``sys.excepthook`` is
    replaced; the traceback still goes to stderr for a bug report.
    """
    import traceback

    def hook(exc_type, exc, tb):
        traceback.print_exception(exc_type, exc, tb)
        try:
            win.show_error(f"internal error: {exc_type.__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the window itself may be gone
            pass

    sys.excepthook = hook


def run_viewer(case: str | os.PathLike | None = None, screenshot: str | os.PathLike | None = None,
               labels: str | None = None, label_scheme: str | None = None,
               size: tuple[int, int] = (1440, 900), tab: str | None = None) -> int:
    """Run the viewer; with ``screenshot`` render once, save the PNG and return.

    Returns 0, or 2 when the case could not be opened (the screenshot then shows the error).
    Needs a display; :mod:`arspine.commands.view` starts Xvfb when there is none.
    """
    from PyQt5.QtWidgets import QApplication

    if case is not None and not Path(case).exists():
        raise InputError(f"CASE not found: {case}")
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = make_window()
    install_excepthook(win)
    win.resize(max(size[0], 1280), max(size[1], 800))
    win.show()
    if case is not None:
        win.open_path(case, labels=labels, label_scheme=label_scheme)
    if screenshot is None:
        return int(app.exec_())
    ok = True
    if case is not None:
        ok = wait_loaded(win)
    if tab is not None and ok:
        show_tab(win, tab)
    for _ in range(3):
        app.processEvents()
        win.render()
    out = win.screenshot(screenshot)
    err = win.error_text
    win.close()
    app.processEvents()
    print(f"arspine view: screenshot {out} ({win.width()}x{win.height()})")
    if not ok:
        print(f"arspine view: error: {err or 'the case did not load'}", file=sys.stderr)
        return 2
    return 0
