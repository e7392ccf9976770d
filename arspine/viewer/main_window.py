"""The viewer's main window: 3D view beside axial/coronal/sagittal slices, side panels.

Layout: a tab of panels on the left (Case, Plan, Register, Rehearse), the 3D view (and the
HMD eye view while rehearsing) in the middle, three slice views on the right, a status bar
with a progress bar, and a red banner for errors (never a modal dialog, never a crash).
All user commands go through one :class:`~arspine.viewer.events.CommandBus`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL backend)
from PyQt5.QtCore import QEvent, Qt, pyqtSignal
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (
    QAction,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera
from vtkmodules.vtkRenderingCore import vtkRenderer

from arspine.viewer import scene
from arspine.viewer.events import (
    Command,
    CommandBus,
    FootPedal,
    GestureVoiceStream,
    InputEvent,
    KeyboardSource,
    StreamEvent,
)
from arspine.viewer.loader import ViewerCase, load_for_viewer
from arspine.viewer.slices import SliceView, bone_window_uint8
from arspine.viewer.worker import run_in_thread

__all__ = ["MainWindow", "MIN_SIZE"]

MIN_SIZE = (1280, 800)


class MainWindow(QMainWindow):
    """The arspine rehearsal viewer.

    Signals
    -------
    case_loaded(ViewerCase), load_failed(str), error_shown(str), command_handled(InputEvent)
    """

    case_loaded = pyqtSignal(object)
    load_failed = pyqtSignal(str)
    error_shown = pyqtSignal(str)
    command_handled = pyqtSignal(object)

    def __init__(self, bus: CommandBus | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("arspine — spine AR rehearsal")
        self.setMinimumSize(*MIN_SIZE)
        self.resize(1440, 900)
        self.bus = bus or CommandBus()
        self.keyboard = KeyboardSource(self.bus)
        self.pedal = FootPedal(self.bus)
        self.stream = GestureVoiceStream(self.bus)
        self._t0 = time.monotonic()
        self.case: ViewerCase | None = None
        self.loading = False
        self.level_actors: dict[str, object] = {}
        self.current_level: str | None = None
        self.overlay_visible = True
        self.scan_visible = True
        self.confirmed: list[tuple[str, str | None]] = []  # (what, level)
        self._build_ui()
        self.bus.subscribe(self.handle_command)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background: #7a1d1d; color: white; padding: 6px;"
                                  "font-weight: bold;")
        self.banner.hide()
        outer.addWidget(self.banner)

        split = QSplitter(Qt.Horizontal)
        self.tabs = QTabWidget()
        self.tabs.setMinimumWidth(300)
        self.tabs.setMaximumWidth(420)
        self.case_panel = self._build_case_panel()
        self.tabs.addTab(self.case_panel, "Case")
        split.addWidget(self.tabs)

        # 3D view and (while rehearsing) the eye view side by side
        self.view_split = QSplitter(Qt.Horizontal)
        self.vtk_widget = QVTKRenderWindowInteractor(self.view_split)
        self.vtk_widget.setMinimumSize(480, 480)
        self.renderer = vtkRenderer()
        self.renderer.SetBackground(0.08, 0.09, 0.12)
        self.renderer.SetBackground2(0.22, 0.25, 0.32)
        self.renderer.GradientBackgroundOn()
        self.render_window = self.vtk_widget.GetRenderWindow()
        self.render_window.AddRenderer(self.renderer)
        self.vtk_widget.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self.vtk_widget.installEventFilter(self)
        self.view_split.addWidget(self.vtk_widget)
        split.addWidget(self.view_split)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.slice_views = {p: SliceView(p) for p in ("axial", "coronal", "sagittal")}
        for sv in self.slice_views.values():
            rl.addWidget(sv, 1)
        right.setMinimumWidth(260)
        right.setStyleSheet("background: #202228;")
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 1)
        split.setSizes([320, 800, 320])
        outer.addWidget(split, 1)
        self.setCentralWidget(central)

        self.status_label = QLabel("open a case: File > Open, or arspine view CASE")
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setMaximumWidth(260)
        self.progress.hide()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.progress)

        menu = self.menuBar().addMenu("&File")
        a = QAction("Open &file (NIfTI/NRRD/DICOM)...", self)
        a.triggered.connect(self.open_file_dialog)
        menu.addAction(a)
        a = QAction("Open f&older (DICOM series or case)...", self)
        a.triggered.connect(self.open_folder_dialog)
        menu.addAction(a)
        a = QAction("Play gesture/voice &stream...", self)
        a.triggered.connect(self.open_stream_dialog)
        menu.addAction(a)
        a = QAction("&Quit", self)
        a.triggered.connect(self.close)
        menu.addAction(a)

        tb = self.addToolBar("Foot pedal (simulated)")
        tb.setObjectName("pedal")
        tb.addWidget(QLabel(" pedal: "))
        self.pedal_buttons = {}
        for button, text in (("left", "◀ prev"), ("middle", "● confirm / hold: re-register"),
                             ("right", "next ▶")):
            b = QPushButton(text)
            b.setFocusPolicy(Qt.NoFocus)
            b.pressed.connect(lambda bt=button: self.pedal.press(bt, self.now_s()))
            b.released.connect(lambda bt=button: self.pedal.release(bt, self.now_s()))
            tb.addWidget(b)
            self.pedal_buttons[button] = b
        self.last_command_label = QLabel("")
        tb.addWidget(QLabel("   last command: "))
        tb.addWidget(self.last_command_label)

    def _build_case_panel(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.info_label = QLabel("no case loaded")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.info_label)
        lay.addWidget(QLabel("Levels (N / P, pedal, \"next level\"):"))
        self.level_list = QListWidget()
        self.level_list.currentTextChanged.connect(self._on_level_list)
        lay.addWidget(self.level_list, 1)
        row = QHBoxLayout()
        b = QPushButton("Open...")
        b.clicked.connect(self.open_file_dialog)
        row.addWidget(b)
        b = QPushButton("Reset view")
        b.clicked.connect(lambda: self.emit_ui(Command.RESET_VIEW))
        row.addWidget(b)
        lay.addLayout(row)
        return w

    def add_panel(self, widget: QWidget, title: str) -> None:
        """Add a side panel (Plan, Register, Rehearse)."""
        self.tabs.addTab(widget, title)

    # ------------------------------------------------------------------ time, input
    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def emit_ui(self, command: Command) -> InputEvent | None:
        return self.bus.emit(command, "ui", self.now_s())

    def eventFilter(self, obj, event):  # noqa: N802 - Qt name
        # keys typed into the 3D view go to the command layer before VTK sees them
        if event.type() == QEvent.KeyPress and self._key_to_bus(event):
            return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event):  # noqa: N802 - Qt name
        if not self._key_to_bus(event):
            super().keyPressEvent(event)

    def _key_to_bus(self, event) -> bool:
        if event.modifiers() & (Qt.ControlModifier | Qt.AltModifier):
            return False
        name = QKeySequence(event.key()).toString()
        return self.keyboard.press(name, self.now_s()) is not None or \
            name in self.keyboard.keymap

    def say(self, phrase: str, confidence: float = 1.0) -> InputEvent | None:
        """Simulated voice input (as from a speech recogniser)."""
        return self.stream.feed(StreamEvent(self.now_s(), "voice", phrase, confidence))

    def gesture(self, name: str, confidence: float = 1.0) -> InputEvent | None:
        """Simulated hand-gesture input."""
        return self.stream.feed(StreamEvent(self.now_s(), "gesture", name, confidence))

    def play_stream(self, events: list[StreamEvent]) -> None:
        """Replay a recorded gesture/voice stream in real time (timestamps relative)."""
        from PyQt5.QtCore import QTimer

        if not events:
            return
        t_first = min(e.timestamp_s for e in events)
        for ev in events:
            QTimer.singleShot(int(1000 * (ev.timestamp_s - t_first)),
                              lambda ev=ev: self.stream.feed(
                                  StreamEvent(self.now_s(), ev.kind, ev.token, ev.confidence)))

    def open_stream_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Gesture/voice stream", "",
                                              "Streams (*.json *.jsonl)")
        if path:
            try:
                self.play_stream(GestureVoiceStream.load(path))
            except Exception as exc:  # noqa: BLE001
                self.show_error(str(exc))

    # ------------------------------------------------------------------ commands
    def handle_command(self, ev: InputEvent) -> None:
        """React to one command from any source."""
        self.last_command_label.setText(f"{ev.command.value} ({ev.source})")
        c = ev.command
        if c == Command.NEXT_LEVEL:
            self.step_level(+1)
        elif c == Command.PREVIOUS_LEVEL:
            self.step_level(-1)
        elif c == Command.TOGGLE_OVERLAY:
            self.set_overlay_visible(not self.overlay_visible)
        elif c == Command.TOGGLE_SCAN:
            self.scan_visible = not self.scan_visible
        elif c == Command.RESET_VIEW:
            self.reset_camera()
        elif c == Command.CONFIRM:
            what = self.tabs.tabText(self.tabs.currentIndex()).lower()
            self.confirmed.append((what, self.current_level))
            self.status(f"confirmed {what} at {self.current_level or '-'}")
        elif c == Command.CANCEL:
            self.hide_error()
        # panels (register, rehearse, ...) subscribe to the bus themselves
        self.render()
        self.command_handled.emit(ev)

    def step_level(self, step: int) -> None:
        levels = self.case.levels if self.case else []
        if not levels:
            return
        i = levels.index(self.current_level) if self.current_level in levels else -1
        self.select_level(levels[(i + step) % len(levels)] if i >= 0 else levels[0])

    def select_level(self, name: str) -> None:
        """Highlight a vertebra, centre the slices on it and aim the camera at it."""
        if self.case is None or name not in self.case.surfaces:
            return
        self.current_level = name
        for i, (lv, actor) in enumerate(self.level_actors.items()):
            scene.set_color(actor, scene.SELECTED_RGB if lv == name else scene.level_color(i),
                            1.0)
        items = self.level_list.findItems(name, Qt.MatchExactly)
        if items and self.level_list.currentItem() is not items[0]:
            self.level_list.blockSignals(True)
            self.level_list.setCurrentItem(items[0])
            self.level_list.blockSignals(False)
        c = self.case.surfaces[name].vertices.mean(axis=0)
        ijk = self.case.ct.ct_to_ijk(c[None])[0]
        for sv in self.slice_views.values():
            sv.set_crosshair(ijk)
        cam = self.renderer.GetActiveCamera()
        cam.SetFocalPoint(*c)
        self.status(f"level {name}")
        self.render()

    def _on_level_list(self, text: str) -> None:
        if text:
            self.select_level(text)

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay_visible = bool(visible)
        for actor in self.overlay_actors():
            actor.SetVisibility(self.overlay_visible)
        self.status("overlay " + ("on" if visible else "off"))

    def overlay_actors(self) -> list:
        """Actors that make up the AR overlay (plan, scan); panels append theirs."""
        return list(getattr(self, "_overlay_actors", []))

    def register_overlay_actor(self, actor) -> None:
        if not hasattr(self, "_overlay_actors"):
            self._overlay_actors = []
        self._overlay_actors.append(actor)
        actor.SetVisibility(self.overlay_visible)

    # ------------------------------------------------------------------ loading
    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open CT", "", "CT (*.nii *.nii.gz *.nrrd *.dcm);;All files (*)")
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder or case bundle")
        if path:
            self.open_path(path)

    def open_path(self, path: str | os.PathLike, labels: str | None = None,
                  label_scheme: str | None = None) -> None:
        """Load a case on a worker thread; :attr:`case_loaded` or :attr:`load_failed` follow."""
        if self.loading:
            self.show_error("still loading the previous case")
            return
        self.loading = True
        self.hide_error()
        self.progress.setValue(0)
        self.progress.show()
        self.status(f"loading {path} ...")
        run_in_thread(self, load_for_viewer, str(path), labels=labels,
                      label_scheme=label_scheme, on_done=self._on_loaded,
                      on_failed=self._on_load_failed, on_progress=self._on_progress)

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(round(100 * fraction)))
        if message:
            self.status(message)

    def _on_load_failed(self, message: str) -> None:
        self.loading = False
        self.progress.hide()
        self.show_error(f"could not open the case: {message}")
        self.load_failed.emit(message)

    def _on_loaded(self, vc: ViewerCase) -> None:
        self.loading = False
        self.progress.hide()
        try:
            self.set_case(vc)
        except Exception as exc:  # noqa: BLE001 - never crash the window
            self.show_error(f"could not display the case: {type(exc).__name__}: {exc}")
            self.load_failed.emit(str(exc))
            return
        for w in vc.warnings:
            self.show_error(w)
        self.case_loaded.emit(vc)

    def set_case(self, vc: ViewerCase) -> None:
        """Show a loaded case (GUI thread)."""
        self.renderer.RemoveAllViewProps()
        self.level_actors.clear()
        self._overlay_actors = []
        self.case = vc
        for i, (lv, mesh) in enumerate(vc.surfaces.items()):
            actor = scene.mesh_actor(mesh, scene.level_color(i))
            self.renderer.AddActor(actor)
            self.level_actors[lv] = actor
        grey = bone_window_uint8(vc.ct.hu)
        for sv in self.slice_views.values():
            sv.set_volume(grey, vc.ct.T_ct_from_ijk)
        self.level_list.clear()
        self.level_list.addItems(vc.levels)
        ct = vc.ct
        sp = ", ".join(f"{s:.2f}" for s in ct.spacing_mm)
        self.info_label.setText(
            f"<b>{vc.name}</b><br>{vc.source}<br>CT {ct.shape[0]}x{ct.shape[1]}x{ct.shape[2]}"
            f" voxels, {sp} mm<br>levels: {', '.join(vc.levels) or '-'}<br>"
            f"scan: {len(vc.scan.points) if vc.scan is not None else 'none'} points<br>"
            f"truth: {'yes' if vc.truth else 'no'}")
        self.setWindowTitle(f"arspine — {vc.name}")
        self.reset_camera()
        levels = vc.levels
        if levels:
            self.select_level(levels[len(levels) // 2])
        self.status(f"{vc.name}: {len(vc.surfaces)} surface(s)")
        self.render()

    # ------------------------------------------------------------------ view
    def reset_camera(self) -> None:
        """Posterior view (the surgeon's view of a prone patient), superior up."""
        if not self.level_actors:
            return
        pts = np.concatenate([m.vertices for m in self.case.surfaces.values()])
        c = pts.mean(axis=0)
        extent = float(np.ptp(pts, axis=0).max())
        cam = self.renderer.GetActiveCamera()
        cam.SetFocalPoint(*c)
        cam.SetPosition(*(c + np.array([0.0, 2.2 * extent + 50, 0.0])))  # +y = posterior
        cam.SetViewUp(0, 0, 1)  # +z = superior in LPS
        self.renderer.ResetCamera()
        self.renderer.ResetCameraClippingRange()
        self.render()

    def render(self) -> None:
        if self.isVisible():
            self.render_window.Render()

    def status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_error(self, message: str) -> None:
        """Red banner at the top of the window (press Esc / say "cancel" to dismiss)."""
        self.banner.setText(message)
        self.banner.show()
        self.status(message)
        self.error_shown.emit(message)

    def hide_error(self) -> None:
        self.banner.hide()
        self.banner.setText("")

    @property
    def error_text(self) -> str:
        return self.banner.text() if self.banner.isVisible() else ""

    def screenshot(self, path: str | os.PathLike) -> Path:
        """Save the window as it is on screen (VTK included), atomically; returns the path.

        ``QScreen.grabWindow`` reads the screen, so the VTK view appears (``QWidget.grab``
        would leave it black).
        """
        from PyQt5.QtWidgets import QApplication

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.render()
        QApplication.processEvents()
        self.render()
        screen = self.windowHandle().screen() if self.windowHandle() else None
        screen = screen or QApplication.primaryScreen()
        pix = screen.grabWindow(int(self.winId()))
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
        if not pix.save(str(tmp), "PNG"):
            raise OSError(f"could not write the screenshot {out}")
        os.replace(tmp, out)
        return out

    def closeEvent(self, event):  # noqa: N802 - Qt name
        for i in range(self.tabs.count()):
            shutdown = getattr(self.tabs.widget(i), "shutdown", None)
            if callable(shutdown):
                shutdown()
        for i in range(self.tabs.count()):
            for thread, _w in list(getattr(self.tabs.widget(i), "_arspine_threads", [])):
                thread.quit()
                thread.wait(5000)
        for thread, _w in list(getattr(self, "_arspine_threads", [])):
            thread.quit()
            thread.wait(5000)
        self.vtk_widget.Finalize()
        super().closeEvent(event)
