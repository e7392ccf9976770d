"""Register panel: CT-to-scan registration on a worker thread, per-level accuracy, the gate.

The scan is the case's (``scan.ply``) or one simulated here from the CT (seeded), in which
case the truth is known and the panel shows the target registration error per level.
"""

from __future__ import annotations

import time

import numpy as np
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from arspine.registration import metrics
from arspine.registration.model import prepare_model
from arspine.viewer import scene
from arspine.viewer.events import Command, InputEvent
from arspine.viewer.worker import run_in_thread

__all__ = ["RegisterPanel", "simulate_for_case", "register_case"]

_COLUMNS = ["level", "status", "rmse mm", "inliers", "TRE mm"]


def _register_fn():
    from arspine.registration import register

    return register


def simulate_for_case(vc, seed: int = 0, sensor: str = "structured-light", progress=None):
    """A simulated intraoperative scan of the case's anatomy (``SimulatedScan``)."""
    from arspine.datasets.simulate import simulate_scan

    if progress:
        progress(0.1, f"simulating a depth scan (seed {seed})")
    anatomy = vc.surfaces
    if vc.labels is not None:
        try:
            from arspine.datasets.anatomy import anatomy_from_ct

            anatomy = anatomy_from_ct(vc.ct, vc.labels)
        except Exception:  # noqa: BLE001 - fall back to the bare surfaces (synthetic back)
            anatomy = vc.surfaces
    sim = simulate_scan(anatomy, sensor=sensor, seed=seed)
    if progress:
        progress(1.0, f"scan: {len(sim.cloud)} points")
    return sim


def register_case(vc, model=None, progress=None):
    """Prepare (once) and register; returns ``(model, result, elapsed_s)`` where
    ``elapsed_s`` is the registration alone (the model is prepared once per CT)."""
    if model is None:
        if progress:
            progress(0.05, "preparing the CT model")
        model = prepare_model(vc.ct, vc.labels, surfaces=vc.surfaces)
    if progress:
        progress(0.4, "registering")
    t1 = time.perf_counter()
    result = _register_fn()(model, vc.scan)
    if progress:
        progress(1.0, f"registration {result.status}")
    return model, result, time.perf_counter() - t1


class RegisterPanel(QWidget):
    """Runs and shows a registration for the window's case."""

    def __init__(self, window):
        super().__init__()
        _register_fn()  # fail now (tab says why) when registration is unavailable
        self.win = window
        self.model = None
        self.result = None
        self.elapsed_s: float | None = None
        self.tre_mm: dict[str, float] = {}
        self._scan_actor = None
        self.busy = False
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.sim_button = QPushButton("Simulate scan")
        self.sim_button.clicked.connect(self.simulate)
        row.addWidget(self.sim_button)
        row.addWidget(QLabel("seed"))
        self.seed = QSpinBox()
        self.seed.setRange(0, 10_000)
        row.addWidget(self.seed)
        lay.addLayout(row)
        from arspine.datasets.sensors import SENSORS

        row = QHBoxLayout()
        row.addWidget(QLabel("sensor"))
        self.sensor = QComboBox()
        self.sensor.addItems(list(SENSORS))
        row.addWidget(self.sensor, 1)
        lay.addLayout(row)
        self.reg_button = QPushButton("Register  (R, pedal hold, \"register again\")")
        self.reg_button.clicked.connect(self.run_registration)
        lay.addWidget(self.reg_button)
        self.verdict = QLabel("no registration yet")
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("font-weight: bold; padding: 6px;")
        lay.addWidget(self.verdict)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        lay.addWidget(self.table, 1)
        window.case_loaded.connect(self._on_case)
        window.bus.subscribe(self._on_command)

    # ------------------------------------------------------------------ actions
    def _on_case(self, _vc) -> None:
        self.model = None
        self.result = None
        self.tre_mm = {}
        self._remove_scan()
        self.table.setRowCount(0)
        self._set_verdict("no registration yet", None)

    def _start(self, message: str) -> bool:
        if self.win.case is None:
            self.win.show_error("open a case first")
            return False
        if self.busy:
            self.win.status("registration already running")
            return False
        self.busy = True
        self.sim_button.setEnabled(False)
        self.reg_button.setEnabled(False)
        self.win.progress.setValue(0)
        self.win.progress.show()
        self.win.status(message)
        return True

    def _finish(self) -> None:
        self.busy = False
        self.sim_button.setEnabled(True)
        self.reg_button.setEnabled(True)
        self.win.progress.hide()

    def simulate(self) -> None:
        if self._start("simulating a scan ..."):
            run_in_thread(self, simulate_for_case, self.win.case, int(self.seed.value()),
                          self.sensor.currentText(), on_done=self._on_simulated,
                          on_failed=self._on_failed, on_progress=self.win._on_progress)

    def _on_simulated(self, sim) -> None:
        self._finish()
        vc = self.win.case
        vc.scan = sim.cloud
        vc.truth = {lv: {"T_sensor_from_ct": T, "targets_ct_mm": sim.targets_ct_mm.get(lv)}
                    for lv, T in sim.truth.items()}
        self.result = None
        self._remove_scan()
        self.win.status(f"simulated scan: {len(sim.cloud)} points, exposed "
                        f"{', '.join(sim.exposed_levels)}")

    def run_registration(self) -> None:
        vc = self.win.case
        if vc is not None and vc.scan is None:
            self.win.show_error("this case has no scan: press 'Simulate scan' first")
            return
        if self._start("registering ..."):
            run_in_thread(self, register_case, vc, self.model, on_done=self._on_registered,
                          on_failed=self._on_failed, on_progress=self.win._on_progress)

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.win.show_error(f"registration failed: {message}")

    def _on_registered(self, out) -> None:
        self._finish()
        self.model, result, self.elapsed_s = out
        self.show_result(result)

    # ------------------------------------------------------------------ display
    def show_result(self, result) -> None:
        """Table, verdict and the scan drawn over the anatomy (frame ``ct``)."""
        self.result = result
        vc = self.win.case
        self.tre_mm = {}
        for lv, t in (vc.truth or {}).items():
            vr = result.vertebrae.get(lv)
            targets = t.get("targets_ct_mm")
            if vr is None or targets is None or len(targets) == 0:
                continue
            self.tre_mm[lv] = float(np.median(metrics.tre_mm(
                vr.T_sensor_from_ct, t["T_sensor_from_ct"], targets)))
        rows = list(result.vertebrae.items())
        self.table.setRowCount(len(rows))
        for r, (lv, vr) in enumerate(rows):
            vals = [lv, vr.status, f"{vr.rmse_mm:.2f}", f"{vr.inlier_fraction:.2f}",
                    f"{self.tre_mm[lv]:.2f}" if lv in self.tre_mm else "-"]
            for c, v in enumerate(vals):
                item = QTableWidgetItem(v)
                if vr.status != "ok":
                    item.setForeground(QColor(220, 40, 40))
                self.table.setItem(r, c, item)
        t = f" in {self.elapsed_s:.2f} s" if self.elapsed_s is not None else ""
        if result.status == "ok":
            tre = ""
            if self.tre_mm:
                tre = f", median TRE {np.median(list(self.tre_mm.values())):.2f} mm"
            self._set_verdict(f"ACCEPTED by the quality gate{t}{tre}", True)
        else:
            self._set_verdict(f"REJECTED by the quality gate{t}: {result.reason}", False)
        self._show_scan(result)
        self.win.render()

    def _set_verdict(self, text: str, ok: bool | None) -> None:
        self.verdict.setText(text)
        color = "#2e7d32" if ok else ("#b71c1c" if ok is False else "#444")
        self.verdict.setStyleSheet(f"font-weight: bold; padding: 6px; color: white; "
                                   f"background: {color};")

    def _remove_scan(self) -> None:
        if self._scan_actor is not None:
            self.win.renderer.RemoveActor(self._scan_actor)
            self._scan_actor = None

    def _show_scan(self, result) -> None:
        self._remove_scan()
        vc = self.win.case
        if vc.scan is None or result.status != "ok":
            return  # a rejected pose is never drawn over the anatomy
        pts_ct = result.T_sensor_from_ct.inv().apply(vc.scan.points)
        self._scan_actor = scene.points_actor(pts_ct, scene.SCAN_RGB, size_px=2.0,
                                              max_points=80_000)
        self._scan_actor.SetVisibility(self.win.scan_visible)
        self.win.renderer.AddActor(self._scan_actor)

    def _on_command(self, ev: InputEvent) -> None:
        if ev.command == Command.RE_REGISTER:
            self.run_registration()
        elif ev.command == Command.TOGGLE_SCAN and self._scan_actor is not None:
            self._scan_actor.SetVisibility(self.win.scan_visible)
        elif ev.command == Command.CONFIRM and self.win.tabs.currentWidget() is self \
                and self.result is not None:
            self.win.status("registration confirmed" if self.result.status == "ok"
                            else "a rejected registration cannot be confirmed")
