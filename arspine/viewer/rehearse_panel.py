"""Rehearse panel: the HMD eye view beside the 3D view, a moving head, a tracked tool.

World set-up (as :mod:`arspine.overlay.headpose`): the depth sensor hangs at the world origin
looking down (``default_T_world_from_sensor``); the anatomy is placed by
``T_world_from_ct = T_world_from_sensor @ T_sensor_from_ct`` per level, taken from the
accepted registration, else the case's truth, else a nominal pose 600 mm below the sensor.
The head orbits the wound (keys, pedal-free voice, mouse drag on the eye view) or follows a
simulated trajectory; with latency on, the overlay is drawn for the head pose of
``latency_s`` ago (what a real display shows), optionally predicted forward.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtGui import QImage, QPixmap
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from arspine.navigation.frames import RigidTransform
from arspine.overlay.display import PRESETS
from arspine.overlay.headpose import (
    TRAJECTORIES,
    default_T_world_from_sensor,
    look_at,
    simulate_head_trajectory,
)
from arspine.overlay.renderer import STYLES, OverlayRenderer
from arspine.viewer import scene
from arspine.viewer.events import Command, InputEvent

__all__ = ["RehearsePanel", "EyeView", "nominal_T_sensor_from_ct", "tool_path",
           "predict_pose"]


def nominal_T_sensor_from_ct(center_ct_mm, distance_mm: float = 600.0) -> RigidTransform:
    """A sensor ``distance_mm`` behind the patient's back looking anteriorly at the centre.

    Sensor axes in ``ct`` (LPS): x = patient left, y (image down) = superior, z = anterior.
    """
    c = np.asarray(center_ct_mm, float)
    R_ct_from_sensor = np.column_stack([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    T_ct_from_sensor = RigidTransform.from_rt(R_ct_from_sensor,
                                              c + np.array([0, distance_mm, 0]), "ct", "sensor")
    return T_ct_from_sensor.inv()


def tool_path(trajectory, t_s: float, duration_s: float = 6.0, approach_mm: float = 40.0,
              wobble_deg: float = 6.0) -> RigidTransform:
    """A scripted pointer/drill path along a planned screw: ``T_ct_from_tool`` at ``t_s``.

    The tip approaches from ``approach_mm`` above the entry and advances to 80 % of the
    screw length; the axis starts ``wobble_deg`` off the plan and converges onto it.
    Tool frame: tip at the origin, pointing along +z.
    """
    s = min(max(t_s / duration_s, 0.0), 1.0)
    d = trajectory.direction
    depth = -approach_mm + s * (approach_mm + 0.8 * trajectory.length_mm)
    tip = trajectory.entry_ct_mm + depth * d
    # wobble about an axis perpendicular to the plan, fading out as the tool goes in
    perp = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(perp) < 1e-6:
        perp = np.cross(d, [1.0, 0.0, 0.0])
    perp /= np.linalg.norm(perp)
    ang = math.radians(wobble_deg) * (1.0 - s) * math.cos(2 * math.pi * 0.7 * t_s)
    from scipy.spatial.transform import Rotation

    axis = Rotation.from_rotvec(perp * ang).apply(d)
    z = axis / np.linalg.norm(axis)
    x = np.cross([0.0, 1.0, 0.0], z)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross([1.0, 0.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return RigidTransform.from_rt(np.column_stack([x, y, z]), tip, "ct", "pointer")


def predict_pose(traj, t_s: float, latency_s: float,
                 predictor: str = "none") -> RigidTransform:
    """The head pose a display with ``latency_s`` uses at ``t_s``: the samples measured up
    to ``t_s - latency_s`` fed to an :mod:`arspine.overlay.latency` predictor (``"none"``
    holds the last one) and asked for ``t_s``."""
    from arspine.overlay.latency import make_predictor

    pred = make_predictor(predictor)
    ts = traj.timestamps_s
    last = int(np.searchsorted(ts, t_s - latency_s, side="right"))
    for i in range(max(0, last - 3), max(last, 1)):
        pred.update(float(ts[i]), traj.T_world_from_head[i])
    return RigidTransform.from_matrix(pred.predict(t_s), "world", "head", orthonormalize=True)


class EyeView(QLabel):
    """Both eyes, left above right; drag with the mouse to move the simulated head."""

    def __init__(self, panel):
        super().__init__()
        self.panel = panel
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAlignment(Qt.AlignCenter)
        self.setStyleSheet("background: #151515; color: #aaa;")
        self.setText("HMD eye view")
        self._drag = None
        self.last_rgb: np.ndarray | None = None

    def show_frame(self, left: np.ndarray, right: np.ndarray) -> None:
        """Composite each RGBA eye over a dark grey (what the see-through wearer sees
        against a dim room) and show them stacked (left eye on top)."""
        eyes = []
        step = max(1, left.shape[1] // 640)  # the widget is smaller than an eye: thin first
        for img in (left, right):
            img = img[::step, ::step]
            a = img[..., 3:4].astype(np.uint16)
            rgb = (img[..., :3] * a + 40 * (255 - a)) // 255
            eyes.append(rgb.astype(np.uint8))
        gap = np.full((6, eyes[0].shape[1], 3), 0, np.uint8)
        rgb = np.ascontiguousarray(np.concatenate([eyes[0], gap, eyes[1]], axis=0))
        self.last_rgb = rgb
        h, w, _ = rgb.shape
        qimg = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()
        self.setPixmap(QPixmap.fromImage(qimg).scaled(self.width(), self.height(),
                                                      Qt.KeepAspectRatio,
                                                      Qt.SmoothTransformation))

    def mousePressEvent(self, ev):  # noqa: N802 - Qt name
        self._drag = (ev.x(), ev.y())

    def mouseMoveEvent(self, ev):  # noqa: N802 - Qt name
        if self._drag is None:
            return
        dx, dy = ev.x() - self._drag[0], ev.y() - self._drag[1]
        self._drag = (ev.x(), ev.y())
        self.panel.orbit(d_az_deg=-0.3 * dx, d_el_deg=0.3 * dy)

    def mouseReleaseEvent(self, ev):  # noqa: N802 - Qt name
        self._drag = None

    def wheelEvent(self, ev):  # noqa: N802 - Qt name
        self.panel.orbit(d_dist_mm=-0.1 * ev.angleDelta().y())


class RehearsePanel(QWidget):
    """Rehearsal of the AR overlay for the window's case."""

    def __init__(self, window):
        super().__init__()
        self.win = window
        self.renderer: OverlayRenderer | None = None
        self._renderer_key = None
        self.T_world_from_sensor = default_T_world_from_sensor()
        self.az_deg, self.el_deg, self.dist_mm = -90.0, 70.0, 400.0
        self.trajectory = None
        self.t_s = 0.0
        self.tool_t_s: float | None = None
        self.tool_stream = None  # a recorded ToolPoseStream (reference "ct" or "sensor")
        self.guidance = None
        self.overlay_error_mm = 0.0
        self.frames_rendered = 0
        self._tool_actor = None
        self._need_facing = True
        # The overlay renderer draws through EGL. GL contexts are current per thread, so it
        # lives on a thread of its own: on the GUI thread it would steal the context of the
        # Qt VTK view (which then draws into the wrong surface).
        self._gl = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arspine-eyes")

        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.display_box = QComboBox()
        self.display_box.addItems(list(PRESETS))
        self.display_box.currentTextChanged.connect(self._invalidate)
        form.addRow("display", self.display_box)
        self.style_box = QComboBox()
        self.style_box.addItems(list(STYLES))
        self.style_box.removeItem(STYLES.index("clip"))  # needs a surface plane
        self.style_box.setCurrentText("transparent")  # screws inside the bone stay visible
        self.style_box.currentTextChanged.connect(self._invalidate)
        form.addRow("style", self.style_box)
        self.traj_box = QComboBox()
        self.traj_box.addItems([t for t in TRAJECTORIES if t != "static"])
        form.addRow("head trajectory", self.traj_box)
        self.latency = QCheckBox("latency")
        self.latency.setChecked(True)
        self.latency_ms = QDoubleSpinBox()
        self.latency_ms.setRange(0.0, 200.0)
        self.latency_ms.setValue(1000 * PRESETS["default"].latency_s)
        self.latency_ms.setSuffix(" ms")
        row = QHBoxLayout()
        row.addWidget(self.latency)
        row.addWidget(self.latency_ms)
        form.addRow("display", row)
        self.prediction = QCheckBox("pose prediction")
        form.addRow("", self.prediction)
        for w in (self.latency, self.prediction):
            w.toggled.connect(lambda _=None: self.render_frame())
        lay.addLayout(form)
        row = QHBoxLayout()
        self.play_button = QPushButton("Play head (T)")
        self.play_button.clicked.connect(self.toggle_play)
        row.addWidget(self.play_button)
        self.tool_button = QPushButton("Play tool path")
        self.tool_button.clicked.connect(self.toggle_tool)
        row.addWidget(self.tool_button)
        lay.addLayout(row)
        self.load_tool_button = QPushButton("Load recorded tool path...")
        self.load_tool_button.clicked.connect(self._load_tool_dialog)
        lay.addWidget(self.load_tool_button)
        self.readouts = QLabel("")
        self.readouts.setWordWrap(True)
        self.readouts.setStyleSheet("font-family: monospace;")
        lay.addWidget(self.readouts)
        self.pose_source = QLabel("")
        self.pose_source.setWordWrap(True)
        lay.addWidget(self.pose_source)
        lay.addStretch(1)

        self.eye_view = EyeView(self)
        self.eye_view.hide()
        window.view_split.addWidget(self.eye_view)
        self.timer = QTimer(self)
        self.timer.setInterval(66)  # ~15 Hz on screen; trajectory time advances in real time
        self.timer.timeout.connect(self._tick)
        window.case_loaded.connect(self._on_case)
        window.tabs.currentChanged.connect(self._on_tab)
        window.bus.subscribe(self._on_command)

    # ------------------------------------------------------------------ scene
    def shutdown(self) -> None:
        """Stop playing and release the renderer and its thread (the window closes)."""
        self.stop()
        if self.renderer is not None:
            self._gl.submit(self.renderer.close).result()
            self.renderer = None
        self._gl.shutdown(wait=True)

    def _on_case(self, _vc) -> None:
        self.stop()
        self._tool_actor = None  # the window cleared its 3D scene
        self.tool_t_s = None
        self.guidance = None
        self.trajectory = None
        self.t_s = 0.0
        self._invalidate()

    def _invalidate(self, *_):
        if self.renderer is not None:
            self._gl.submit(self.renderer.close).result()
        self.renderer = None
        self._renderer_key = None
        self._need_facing = True
        if self.eye_view.isVisible():
            self.render_frame()

    def _plan(self):
        for i in range(self.win.tabs.count()):
            w = self.win.tabs.widget(i)
            if hasattr(w, "plan") and getattr(w, "plan", None) is not None:
                return w.plan
        return None

    def _ensure_renderer(self) -> OverlayRenderer | None:
        vc = self.win.case
        if vc is None:
            return None
        plan = self._plan()
        key = (id(vc), self.display_box.currentText(), self.style_box.currentText(),
               None if plan is None else tuple(sorted((t.key, tuple(t.entry_ct_mm),
                                                       tuple(t.target_ct_mm)) for t in plan)))
        if self.renderer is None or key != self._renderer_key:
            if self.renderer is not None:
                self._gl.submit(self.renderer.close).result()
            screws = [] if plan is None else [
                (t.entry_ct_mm, t.tip_ct_mm, t.diameter_mm, t.vertebra) for t in plan]
            self.renderer = self._gl.submit(
                OverlayRenderer, self.display_box.currentText(), vc.surfaces, screws,
                style=self.style_box.currentText(), tool=True, render_scale=0.5).result()
            self._renderer_key = key
        return self.renderer

    def anatomy_poses(self) -> dict[str, RigidTransform]:
        """``T_world_from_ct`` per level, and where they came from (``pose_source``)."""
        vc = self.win.case
        reg = None
        for i in range(self.win.tabs.count()):
            w = self.win.tabs.widget(i)
            if getattr(w, "result", None) is not None and hasattr(w, "show_result"):
                reg = w.result
        if reg is not None and reg.status == "ok":
            src = "accepted registration"
            Ts = {lv: v.T_sensor_from_ct for lv, v in reg.vertebrae.items() if v.status == "ok"}
            default = reg.T_sensor_from_ct
        elif vc.truth:
            src = "ground truth of the case"
            Ts = {lv: t["T_sensor_from_ct"] for lv, t in vc.truth.items()}
            default = None
        else:
            src = "nominal pose (no registration yet)"
            Ts = {}
            c = np.concatenate([m.vertices for m in vc.surfaces.values()]).mean(axis=0)
            default = nominal_T_sensor_from_ct(c)
        self.pose_source.setText(f"anatomy placed by: {src}")
        out = {}
        for lv in vc.surfaces:
            T = Ts.get(lv, default)
            if T is not None:
                out[lv] = self.T_world_from_sensor @ T
        return out

    def wound_world_mm(self, poses: dict[str, RigidTransform]) -> np.ndarray:
        vc = self.win.case
        lv = self.win.current_level if self.win.current_level in poses else next(iter(poses))
        return poses[lv].apply(vc.surfaces[lv].vertices.mean(axis=0)[None])[0]

    def face_patient(self, poses: dict[str, RigidTransform]) -> None:
        """Stand at the patient's right side (surgeons stand beside the table, not at its
        head): head azimuth along the patient's right in the world."""
        T = next(iter(poses.values()))
        right = T.apply_vectors(np.array([[-1.0, 0.0, 0.0]]))[0]  # LPS: -x = right
        if np.hypot(right[0], right[1]) > 1e-6:
            self.az_deg = math.degrees(math.atan2(right[1], right[0]))

    def head_pose(self, wound: np.ndarray) -> RigidTransform:
        """The true head pose now: on the trajectory, or orbiting the wound."""
        if self.trajectory is not None:
            return self.trajectory.pose_at(self.t_s)
        az, el = math.radians(self.az_deg), math.radians(self.el_deg)
        eye = wound + self.dist_mm * np.array([math.cos(el) * math.cos(az),
                                               math.cos(el) * math.sin(az), math.sin(el)])
        return RigidTransform.from_matrix(look_at(eye, wound), "world", "head",
                                          orthonormalize=True)

    # ------------------------------------------------------------------ rendering
    def render_frame(self) -> dict | None:
        """Render both eyes for the current head pose; returns the readouts shown."""
        if self.win.case is None:
            return None
        try:
            r = self._ensure_renderer()
            poses = self.anatomy_poses()
            if not poses:
                self.win.show_error("no level has a pose to draw")
                return None
            if self._need_facing:
                self.face_patient(poses)
                self._need_facing = False
            wound = self.wound_world_mm(poses)
            T_true = self.head_pose(wound)
            T_used = T_true
            lat = self.latency_ms.value() / 1000.0 if self.latency.isChecked() else 0.0
            if self.trajectory is not None and lat > 0:
                T_used = predict_pose(self.trajectory, self.t_s, lat,
                                      "constant_velocity" if self.prediction.isChecked()
                                      else "none")
            T_tool = None
            text = None
            if self.tool_t_s is not None:
                T_tool, text = self._tool_update(poses)
            if not self.win.overlay_visible:
                poses = {}
            frame = self._gl.submit(r.render, T_used, poses, T_world_from_tool=T_tool,
                                    text=text).result()
        except Exception as exc:  # noqa: BLE001 - message in the window, never a crash
            self.win.show_error(f"eye view failed: {type(exc).__name__}: {exc}")
            return None
        self.overlay_error_mm = self._overlay_error_mm(T_true, T_used, wound)
        if not self.eye_view.isVisible():
            self.eye_view.show()
            total = sum(self.win.view_split.sizes())
            self.win.view_split.setSizes([total // 2, total - total // 2])
        self.eye_view.show_frame(frame.images["left"], frame.images["right"])
        self.frames_rendered += 1
        out = {"overlay_error_mm": self.overlay_error_mm, "t_s": self.t_s}
        lines = [f"head t = {self.t_s:5.2f} s" if self.trajectory is not None
                 else f"head az {self.az_deg:.0f} el {self.el_deg:.0f} d {self.dist_mm:.0f} mm",
                 "latency error at the wound: " + (
                     f"{self.overlay_error_mm:.2f} mm" if math.isfinite(self.overlay_error_mm)
                     else "wound out of view")]
        if self.guidance is not None:
            g = self.guidance
            lines += [f"tip to entry : {g.tip_to_entry_mm:6.1f} mm",
                      f"angle        : {g.angle_deg:6.1f} deg",
                      f"depth        : {g.depth_mm:6.1f} mm (remaining {g.remaining_mm:.1f})",
                      f"off axis     : {g.lateral_offset_mm:6.1f} mm"]
            lines += [f"! {w}" for w in g.warnings]
            out.update(distance_mm=g.tip_to_entry_mm, angle_deg=g.angle_deg,
                       depth_mm=g.depth_mm)
        self.readouts.setText("\n".join(lines))
        return out

    def _overlay_error_mm(self, T_true: RigidTransform, T_used: RigidTransform,
                          wound: np.ndarray) -> float:
        """How far the wound is drawn from where it is (mm at its depth, left eye) when the
        overlay was rendered for ``T_used`` and the head is at ``T_true``."""
        from arspine.overlay.latency import reprojection_error

        _px, mm = reprojection_error(self.renderer.display, T_used.as_matrix()[None],
                                     T_true.as_matrix()[None], wound[None])
        v = float(mm["left"][0, 0])
        return v if math.isfinite(v) else float("nan")

    def _tool_update(self, poses):
        from arspine.navigation.guidance import Guide
        from arspine.navigation.tools import ToolDefinition

        vc = self.win.case
        traj = self._tool_trajectory()
        if traj is None:
            return None, None
        if self.tool_stream is not None:
            st = self.tool_stream
            T_ref = st.at(float(st.timestamps_s[0]) + self.tool_t_s)
            if st.reference == "sensor":
                T_world_from_ct = poses[traj.vertebra] if traj.vertebra in poses else \
                    next(iter(poses.values()))
                T_ct_from_sensor = T_world_from_ct.inv() @ self.T_world_from_sensor
                T_ref = T_ct_from_sensor @ T_ref
            T_ct_from_tool = T_ref
            tool = ToolDefinition(st.tool, diameter_mm=3.0)
        else:
            T_ct_from_tool = tool_path(traj, self.tool_t_s)
            tool = ToolDefinition("pointer", diameter_mm=3.0)
        self.guidance = Guide(tool, traj, vc.surfaces.get(traj.vertebra)).update(
            T_ct_from_tool, self.tool_t_s)
        # 3D view: the tool shaft in ct
        tip = T_ct_from_tool.apply(np.zeros((1, 3)))[0]
        back = T_ct_from_tool.apply(np.array([[0.0, 0.0, -150.0]]))[0]
        if self._tool_actor is None:
            actor, src = scene.segment_actor(back, tip, radius_mm=1.5, rgb=(1.0, 1.0, 0.2))
            self._tool_actor = (actor, src)
            self.win.renderer.AddActor(actor)
        src = self._tool_actor[1]
        src.SetPoint1(*back)
        src.SetPoint2(*tip)
        src.Modified()
        T_world_from_ct = poses[traj.vertebra] if traj.vertebra in poses else \
            next(iter(poses.values()))
        T_world_from_tool = T_world_from_ct @ RigidTransform(T_ct_from_tool.as_matrix(),
                                                             "ct", "tool")
        g = self.guidance
        text = f"{traj.key}  dist {g.tip_to_entry_mm:.1f} mm  angle {g.angle_deg:.1f} deg  " \
               f"depth {g.depth_mm:.1f} mm"
        return T_world_from_tool, text

    def load_tool_path(self, path) -> None:
        """Replay a recorded tool path (``ToolPoseStream`` JSON, poses ``T_ct_from_<tool>``
        or ``T_sensor_from_<tool>``) instead of the scripted one."""
        import json
        from pathlib import Path

        from arspine.navigation.tools import ToolPoseStream

        try:
            st = ToolPoseStream.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            self.win.show_error(f"tool path file not found: {path}")
            return
        except (ValueError, KeyError, TypeError) as exc:
            self.win.show_error(f"tool path {path}: {exc}")
            return
        if st.reference not in ("ct", "sensor") or len(st) == 0:
            self.win.show_error(f"tool path {path}: poses must map into 'ct' or 'sensor' "
                                f"and be non-empty, got {len(st)} poses into "
                                f"'{st.reference}'")
            return
        self.tool_stream = st
        self.win.status(f"recorded tool path: {len(st)} poses of '{st.tool}' "
                        f"({st.timestamps_s[-1] - st.timestamps_s[0]:.1f} s)")

    def _load_tool_dialog(self) -> None:
        from PyQt5.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Recorded tool path", "",
                                              "Tool pose stream (*.json)")
        if path:
            self.load_tool_path(path)

    def _tool_trajectory(self):
        plan = self._plan()
        if plan is None or len(plan) == 0:
            self.win.show_error("the tool follows a planned screw: propose screws in the "
                                "Plan tab first")
            self.tool_t_s = None
            return None
        lv = self.win.current_level
        for t in plan:
            if t.vertebra == lv:
                return t
        return next(iter(plan))

    # ------------------------------------------------------------------ interaction
    def orbit(self, d_az_deg: float = 0.0, d_el_deg: float = 0.0,
              d_dist_mm: float = 0.0) -> None:
        self.trajectory = None
        self.az_deg += d_az_deg
        self.el_deg = float(np.clip(self.el_deg + d_el_deg, 10.0, 89.0))
        self.dist_mm = float(np.clip(self.dist_mm + d_dist_mm, 200.0, 1200.0))
        self.render_frame()

    def start_trajectory(self, kind: str | None = None, seed: int = 0,
                         duration_s: float = 10.0, rate_hz: float = 120.0) -> None:
        """Simulate a head trajectory around the current wound and start playing it."""
        if self.win.case is None:
            self.win.show_error("open a case first")
            return
        kind = kind or self.traj_box.currentText()
        wound = self.wound_world_mm(self.anatomy_poses())
        self.trajectory = simulate_head_trajectory(
            kind, duration_s=duration_s, rate_hz=rate_hz, seed=seed, wound_world_mm=wound,
            distance_mm=self.dist_mm, elevation_deg=self.el_deg, azimuth_deg=self.az_deg,
            T_world_from_sensor=self.T_world_from_sensor)
        self.t_s = 0.0
        self.timer.start()
        self.play_button.setText("Stop head (T)")

    def stop(self) -> None:
        self.timer.stop()
        self.play_button.setText("Play head (T)")

    def toggle_play(self) -> None:
        if self.timer.isActive() and self.trajectory is not None:
            self.stop()
        else:
            self.start_trajectory()

    def toggle_tool(self) -> None:
        if self.tool_t_s is None:
            self.tool_t_s = 0.0
            if not self.timer.isActive():
                self.timer.start()
            self.render_frame()
        else:
            self.tool_t_s = None
            self.guidance = None

    def step(self, dt_s: float) -> dict | None:
        """Advance head and tool time by ``dt_s`` and render (what the timer does)."""
        if self.trajectory is not None:
            self.t_s = min(self.t_s + dt_s, self.trajectory.duration_s)
        if self.tool_t_s is not None:
            self.tool_t_s += dt_s
        return self.render_frame()

    def _tick(self) -> None:
        self.step(self.timer.interval() / 1000.0)
        done_head = self.trajectory is None or self.t_s >= self.trajectory.duration_s
        done_tool = self.tool_t_s is None or self.tool_t_s >= 6.0
        if done_head and done_tool:
            self.stop()

    def _on_tab(self, index: int) -> None:
        if self.win.tabs.widget(index) is self and self.win.case is not None:
            self.render_frame()

    def _on_command(self, ev: InputEvent) -> None:
        c = ev.command
        moves = {Command.HEAD_LEFT: dict(d_az_deg=-5), Command.HEAD_RIGHT: dict(d_az_deg=5),
                 Command.HEAD_UP: dict(d_el_deg=5), Command.HEAD_DOWN: dict(d_el_deg=-5),
                 Command.HEAD_FORWARD: dict(d_dist_mm=-30),
                 Command.HEAD_BACK: dict(d_dist_mm=30)}
        if c in moves:
            self.orbit(**moves[c])
        elif c == Command.PLAY_TRAJECTORY:
            self.toggle_play()
        elif c == Command.TOGGLE_LATENCY:
            self.latency.setChecked(not self.latency.isChecked())
        elif c == Command.TOGGLE_PREDICTION:
            self.prediction.setChecked(not self.prediction.isChecked())
        elif c in (Command.TOGGLE_OVERLAY, Command.NEXT_LEVEL, Command.PREVIOUS_LEVEL) \
                and self.eye_view.isVisible():
            self.render_frame()
