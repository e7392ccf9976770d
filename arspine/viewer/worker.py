"""Run slow work (loading, registration) in a ``QThread`` so the window stays responsive."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from PyQt5.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from arspine.errors import ArspineError

__all__ = ["Worker", "run_in_thread", "error_text"]


def error_text(exc: BaseException) -> str:
    """One line for the window: our own errors as they are, others with their type."""
    if isinstance(exc, ArspineError):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{exc.strerror or exc}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}"


class Worker(QObject):
    """Calls ``fn(*args, progress=callback, **kwargs)`` on a worker thread.

    Signals: ``progress(fraction, message)``, ``done(result)``, ``failed(message)``.
    ``fn`` must accept a ``progress`` keyword (``progress(fraction, message)``).
    """

    progress = pyqtSignal(float, str)
    done = pyqtSignal(object)
    failed = pyqtSignal(str)

    def __init__(self, fn: Callable, *args, **kwargs):
        super().__init__()
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.traceback: str | None = None

    @pyqtSlot()
    def run(self) -> None:
        try:
            result = self._fn(*self._args, progress=self._report, **self._kwargs)
        except Exception as exc:  # noqa: BLE001 - shown in the window, never a crash
            self.traceback = traceback.format_exc()
            self.failed.emit(error_text(exc))
        else:
            self.done.emit(result)

    def _report(self, fraction: float, message: str = "") -> None:
        self.progress.emit(float(fraction), str(message))


def run_in_thread(parent: QObject, fn: Callable, *args, on_done: Callable | None = None,
                  on_failed: Callable | None = None, on_progress: Callable | None = None,
                  **kwargs) -> tuple[QThread, Worker]:
    """Start ``fn`` on a new ``QThread``; slots run on the GUI thread.

    The thread and worker are parented / kept on ``parent`` until finished so they are not
    garbage-collected while running.
    """
    thread = QThread(parent)
    worker = Worker(fn, *args, **kwargs)
    worker.moveToThread(thread)
    if on_progress is not None:
        worker.progress.connect(on_progress)
    if on_done is not None:
        worker.done.connect(on_done)
    if on_failed is not None:
        worker.failed.connect(on_failed)
    worker.done.connect(thread.quit)
    worker.failed.connect(thread.quit)
    thread.started.connect(worker.run)
    keep = getattr(parent, "_arspine_threads", None)
    if keep is None:
        keep = []
        parent._arspine_threads = keep
    keep.append((thread, worker))

    def _cleanup():
        if (thread, worker) in keep:
            keep.remove((thread, worker))
        worker.deleteLater()

    thread.finished.connect(_cleanup)
    thread.start()
    return thread, worker
