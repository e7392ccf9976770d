"""Plan panel: proposed pedicle screws, entry/target dragged in 3D, breach warnings."""

from __future__ import annotations

import numpy as np
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import (
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from arspine.navigation import plan as planning
from arspine.viewer import scene
from arspine.viewer.events import Command, InputEvent
from arspine.viewer.worker import run_in_thread

__all__ = ["PlanPanel"]

_OK_RGB, _BREACH_RGB = (0.30, 0.85, 0.40), (0.95, 0.25, 0.20)
_COLUMNS = ["screw", "length mm", "medial °", "cranial °", "clearance mm", "breach"]


def _propose(ct, labels, surfaces, progress=None):
    if progress:
        progress(0.1, "planning screws")
    return planning.propose_screws(ct, labels, surfaces=surfaces)


class PlanPanel(QWidget):
    """Screw planning for the window's case (``ct`` frame, mm).

    ``plan`` holds the current :class:`~arspine.navigation.plan.SurgicalPlan`;
    :meth:`move_screw` is what a drag of the entry/target handles calls.
    """

    def __init__(self, window):
        super().__init__()
        self.win = window
        self.plan: planning.SurgicalPlan | None = None
        self.reports: dict[str, planning.BreachReport] = {}
        self._cortex: dict[str, planning.CortexIndex] = {}
        self._actors: dict[str, tuple] = {}  # key -> (tube actor, line source)
        self._widget = None  # vtkLineWidget2 on the selected screw
        self.selected: str | None = None
        lay = QVBoxLayout(self)
        self.propose_button = QPushButton("Propose screws")
        self.propose_button.clicked.connect(self.propose)
        lay.addWidget(self.propose_button)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._on_select)
        lay.addWidget(self.table, 1)
        lay.addWidget(QLabel("Drag the screw's end handles in the 3D view to move the entry "
                             "(first) or target (second)."))
        self.skipped_label = QLabel("")
        self.skipped_label.setWordWrap(True)
        lay.addWidget(self.skipped_label)
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #e33; font-weight: bold;")
        lay.addWidget(self.warnings)
        window.case_loaded.connect(self._on_case)
        window.bus.subscribe(self._on_command)

    # ------------------------------------------------------------------ plan
    def _on_case(self, _vc) -> None:
        self.clear()

    def clear(self) -> None:
        for actor, _src in self._actors.values():
            self.win.renderer.RemoveActor(actor)
        self._actors.clear()
        self._cortex.clear()
        self.reports.clear()
        self._hide_widget()
        self.plan = None
        self.table.setRowCount(0)
        self.warnings.setText("")

    def propose(self) -> None:
        vc = self.win.case
        if vc is None:
            self.win.show_error("open a case first")
            return
        if vc.labels is None or not vc.labels.levels:
            self.win.show_error("screw planning needs a vertebra label map (--labels)")
            return
        self.propose_button.setEnabled(False)
        self.win.progress.setRange(0, 0)
        self.win.progress.show()
        self.win.status("planning screws ...")
        run_in_thread(self, _propose, vc.ct, vc.labels, vc.surfaces,
                      on_done=self._on_plan, on_failed=self._on_failed)

    def _on_failed(self, message: str) -> None:
        self.propose_button.setEnabled(True)
        self.win.progress.setRange(0, 100)
        self.win.progress.hide()
        self.win.show_error(f"planning failed: {message}")

    def _on_plan(self, plan) -> None:
        self.propose_button.setEnabled(True)
        self.win.progress.setRange(0, 100)
        self.win.progress.hide()
        self.set_plan(plan)

    def set_plan(self, plan: planning.SurgicalPlan) -> None:
        """Show a plan: tubes in 3D, the table, breach checks."""
        self.clear()
        self.plan = plan
        for traj in plan:
            actor, src = scene.segment_actor(traj.entry_ct_mm, traj.tip_ct_mm,
                                             radius_mm=traj.radius_mm, rgb=_OK_RGB)
            self.win.renderer.AddActor(actor)
            self.win.register_overlay_actor(actor)
            self._actors[traj.key] = (actor, src)
            self._check(traj.key)
        self._refresh_table()
        skipped = getattr(plan, "skipped", None) or {}
        self.skipped_label.setText("\n".join(f"{lv} not planned: {why}"
                                              for lv, why in skipped.items()))
        self.win.status(f"plan: {len(plan)} screws")
        self.win.render()

    def _check(self, key: str) -> planning.BreachReport | None:
        traj = self.plan[key]
        vc = self.win.case
        surf = vc.surfaces.get(traj.vertebra) if vc else None
        if surf is None:
            return None
        if traj.vertebra not in self._cortex:
            self._cortex[traj.vertebra] = planning.CortexIndex(surf)
        inside = planning.label_inside(vc.labels, traj.vertebra) if vc.labels else None
        rep = planning.check_breach(traj, self._cortex[traj.vertebra], inside=inside)
        self.reports[key] = rep
        actor = self._actors[key][0]
        scene.set_color(actor, _BREACH_RGB if rep.breach else _OK_RGB)
        return rep

    def move_screw(self, key: str, entry_ct_mm=None, target_ct_mm=None) -> None:
        """Move a screw's entry and/or target (mm, ``ct``), re-check the breach, redraw.

        The screw keeps its length and runs from the entry towards the target.
        """
        traj = self.plan[key]
        changes = {}
        if entry_ct_mm is not None:
            changes["entry_ct_mm"] = np.asarray(entry_ct_mm, float)
        if target_ct_mm is not None:
            changes["target_ct_mm"] = np.asarray(target_ct_mm, float)
        try:
            traj = traj.edited(**changes)
        except Exception as exc:  # noqa: BLE001 - a degenerate drag must not crash
            self.win.show_error(f"cannot move {key}: {exc}")
            return
        self.plan.add(traj)
        _actor, src = self._actors[key]
        src.SetPoint1(*traj.entry_ct_mm)
        src.SetPoint2(*traj.tip_ct_mm)
        src.Modified()
        self._check(key)
        self._refresh_table()
        self.win.render()

    def _refresh_table(self) -> None:
        trajs = list(self.plan) if self.plan else []
        self.table.blockSignals(True)
        self.table.setRowCount(len(trajs))
        msgs = []
        for r, t in enumerate(trajs):
            rep = self.reports.get(t.key)
            vals = [t.key, f"{t.length_mm:.1f}", f"{t.medial_angle_deg:.1f}",
                    f"{t.cranial_angle_deg:.1f}",
                    "-" if rep is None else f"{rep.clearance_mm:.1f}",
                    "-" if rep is None else ("BREACH" if rep.breach else "ok")]
            for c, v in enumerate(vals):
                item = QTableWidgetItem(v)
                if rep is not None and rep.breach:
                    item.setForeground(QColor(220, 40, 40))
                self.table.setItem(r, c, item)
            if rep is not None:
                msgs.extend(rep.warnings)
        self.table.blockSignals(False)
        self.warnings.setText("\n".join(msgs))

    @property
    def breach_warnings(self) -> list[str]:
        return [w for rep in self.reports.values() for w in rep.warnings]

    # ------------------------------------------------------------------ drag handles
    def _on_select(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows or self.plan is None:
            return
        key = self.table.item(min(rows), 0).text()
        self.select(key)

    def select(self, key: str) -> None:
        """Attach draggable entry/target handles to one screw."""
        from vtkmodules.vtkInteractionWidgets import vtkLineRepresentation, vtkLineWidget2

        self.selected = key
        traj = self.plan[key]
        if self._widget is None:
            rep = vtkLineRepresentation()
            rep.SetHandleSize(8)
            w = vtkLineWidget2()
            w.SetInteractor(self.win.vtk_widget)
            w.SetRepresentation(rep)
            w.AddObserver("InteractionEvent", self._on_drag)
            w.AddObserver("EndInteractionEvent", self._on_drag)
            self._widget = w
        rep = self._widget.GetRepresentation()
        rep.SetPoint1WorldPosition(traj.entry_ct_mm)
        rep.SetPoint2WorldPosition(traj.tip_ct_mm)
        self._widget.On()
        if traj.vertebra != self.win.current_level:
            self.win.select_level(traj.vertebra)
        self.win.render()

    def _hide_widget(self) -> None:
        if self._widget is not None:
            self._widget.Off()
        self.selected = None

    def _on_drag(self, widget, _event) -> None:
        if self.selected is None:
            return
        rep = widget.GetRepresentation()
        self.move_screw(self.selected, entry_ct_mm=rep.GetPoint1WorldPosition(),
                        target_ct_mm=rep.GetPoint2WorldPosition())

    def _on_command(self, ev: InputEvent) -> None:
        if ev.command == Command.CONFIRM and self.win.tabs.currentWidget() is self \
                and self.plan is not None:
            bad = [k for k, r in self.reports.items() if r.breach]
            self.win.status("plan confirmed" + (f" with breaches: {', '.join(bad)}" if bad
                                                 else ", no breach"))
