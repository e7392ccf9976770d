"""The desktop viewer driven by pytest-qt under an Xvfb display the tests start themselves.

One window is loaded once with the real CT (TotalSegmentator example, 8 labelled levels)
and shared by the tests; each test drives one flow through the command layer.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

try:
    from PyQt5.QtCore import Qt
except ImportError:  # pragma: no cover - skipped below
    Qt = None

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")


@pytest.fixture(scope="session")
def xdisplay():
    """A private Xvfb (Qt's offscreen platform leaves the VTK view empty)."""
    from arspine.viewer.xvfb import VirtualDisplay

    if shutil.which("Xvfb") is None:
        if not os.environ.get("DISPLAY"):
            pytest.skip("neither Xvfb nor a display is available")
        yield None
        return
    from PyQt5.QtWidgets import QApplication

    if QApplication.instance() is not None:
        pytest.skip("a QApplication already exists on another display")
    old_platform = os.environ.get("QT_QPA_PLATFORM")
    vd = VirtualDisplay(1920, 1200).start()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    yield vd
    # Qt stays connected until the process ends; Xvfb (-terminate) exits with it
    vd.release()
    if old_platform is None:
        os.environ.pop("QT_QPA_PLATFORM", None)
    else:
        os.environ["QT_QPA_PLATFORM"] = old_platform


@pytest.fixture(scope="session")
def qapp(xdisplay):
    """pytest-qt's application, created only once the display exists."""
    from PyQt5.QtWidgets import QApplication

    return QApplication.instance() or QApplication(["arspine-tests"])


@pytest.fixture(scope="module")
def win(qapp, data_dir):
    from arspine.viewer.app import make_window, wait_loaded

    w = make_window()
    w.resize(1440, 900)
    w.show()
    w.open_path(data_dir / "totalsegmentator" / "example_ct.nii.gz")
    assert w.loading
    assert wait_loaded(w, timeout_s=120), w.error_text
    yield w
    w.close()


def _bone_fraction(qimage, x0, y0, x1, y1) -> float:
    """Fraction of ivory / highlighted-bone pixels in a rectangle of a screen grab."""
    from PyQt5.QtGui import QImage

    img = qimage.convertToFormat(QImage.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    ptr = img.constBits()
    ptr.setsize(h * bpl)
    arr = np.frombuffer(ptr, np.uint8).reshape(h, bpl)[:, : 3 * w].reshape(h, w, 3)
    roi = arr[y0:y1, x0:x1].astype(int)
    r, g, b = roi[..., 0], roi[..., 1], roi[..., 2]
    bone = (r > 120) & (g > 100) & (r > b + 25) & (g > b)
    return float(bone.mean())


def test_case_loads_with_levels_and_slices(win):
    vc = win.case
    assert vc.ct.shape == (122, 101, 112)
    assert vc.levels == ["T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    assert set(win.level_actors) == set(vc.levels)
    assert win.level_list.count() == 8
    assert win.current_level == "L3"
    # the window meets the minimum size and the slices show bone-window anatomy
    assert win.width() >= 1280 and win.height() >= 800
    ax = win.slice_views["axial"].pixmap_array
    assert ax is not None and ax.min() == 0  # air is black in the bone window
    bright = (ax > 128).mean()  # above ~400 HU: cortical bone of L3 on its axial slice
    assert 0.002 < bright < 0.2, bright


def test_3d_view_shows_anatomy(win, qtbot, tmp_path):
    from PyQt5.QtWidgets import QApplication

    win.reset_camera()
    win.render()
    qtbot.wait(50)
    grab = QApplication.primaryScreen().grabWindow(int(win.vtk_widget.winId()))
    frac = _bone_fraction(grab.toImage(), 0, 0, grab.width(), grab.height())
    assert frac > 0.03, f"only {frac:.3%} bone-coloured pixels in the 3D view"
    out = win.screenshot(tmp_path / "win.png")
    from PyQt5.QtGui import QImage

    img = QImage(str(out))
    assert (img.width(), img.height()) == (win.width(), win.height())


def test_keyboard_pedal_and_voice_step_levels(win, qtbot):
    from PyQt5.QtCore import Qt

    win.select_level("L3")
    qtbot.keyClick(win.vtk_widget, Qt.Key_N)  # typed into the 3D view: goes to the bus
    assert win.current_level == "L4"
    win.pedal.tap("left", win.now_s() + 10)
    assert win.current_level == "L3"
    qtbot.mouseClick(win.pedal_buttons["right"], Qt.LeftButton)
    assert win.current_level == "L4"
    win.say("previous level")
    assert win.current_level == "L3"
    win.gesture("swipe_right", confidence=0.3)  # too unsure: ignored
    assert win.current_level == "L3"
    # the slices follow the level: the axial slice passes through L3's centroid
    c = win.case.surfaces["L3"].vertices.mean(axis=0)
    k = win.case.ct.ct_to_ijk(c[None])[0]
    sv = win.slice_views["axial"]
    assert abs(sv.index - sv.to_display_index(k)[2]) <= 1
    sources = {e.source for e in win.bus.history}
    assert {"keyboard", "pedal", "voice"} <= sources


def test_overlay_toggle_hides_plan_actors(win):
    from vtkmodules.vtkRenderingCore import vtkActor

    a = vtkActor()
    win.register_overlay_actor(a)
    on = win.overlay_visible
    win.say("toggle overlay")
    assert win.overlay_visible is (not on)
    assert a.GetVisibility() == int(not on)
    win.keyboard.press("O", win.now_s() + 20)
    assert win.overlay_visible is on
    win._overlay_actors.remove(a)


def test_broken_file_shows_error_in_window_not_crash(win, qtbot, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    case_before = win.case
    with qtbot.waitSignal(win.load_failed, timeout=30000):
        win.open_path(bad)
    assert "could not open the case" in win.error_text
    assert "broken.nii.gz" in win.error_text
    assert win.case is case_before  # the previous case is still shown
    win.bus.emit("cancel", "ui", win.now_s() + 30)
    assert win.error_text == ""


def test_plan_panel_proposes_screws_and_flags_a_dragged_breach(win, qtbot):
    plan_panel = win.tabs.widget([win.tabs.tabText(i) for i in
                                  range(win.tabs.count())].index("Plan"))
    qtbot.mouseClick(plan_panel.propose_button, Qt.LeftButton)  # planning on a worker thread
    qtbot.waitUntil(lambda: plan_panel.plan is not None, timeout=120000)
    plan = plan_panel.plan
    assert {"L3_left", "L3_right"} <= set(plan.keys())
    assert plan_panel.table.rowCount() == len(plan) >= 6
    key = "L3_left"
    before = plan_panel.reports[key]
    assert not before.breach, before.warnings  # the proposed screw stays in the bone
    # drag the target 25 mm towards the patient's left: the screw leaves the vertebra
    t = plan[key]
    plan_panel.select(key)
    plan_panel.move_screw(key, target_ct_mm=t.target_ct_mm + np.array([25.0, 0, 0]))
    after = plan_panel.reports[key]
    assert after.clearance_mm < before.clearance_mm
    assert after.breach
    assert any(key in w for w in plan_panel.breach_warnings)
    assert "BREACH" in [plan_panel.table.item(r, 5).text()
                        for r in range(plan_panel.table.rowCount())]
    assert key in plan_panel.warnings.text()
    # the drag handle sits on the moved screw
    rep = plan_panel._widget.GetRepresentation()
    assert np.allclose(rep.GetPoint1WorldPosition(), t.entry_ct_mm)


def _panel(win, title):
    return win.tabs.widget([win.tabs.tabText(i) for i in range(win.tabs.count())].index(title))


@pytest.fixture()
def rehearse(win):
    reh = _panel(win, "Rehearse")
    assert type(reh).__name__ == "RehearsePanel", reh.text()
    win.set_overlay_visible(True)
    win.select_level("L3")
    reh.stop()
    reh.trajectory = None
    reh.tool_t_s = None
    reh.guidance = None
    yield reh
    reh.stop()


def test_eye_view_draws_the_anatomy_beside_the_3d_view(win, rehearse):
    out = rehearse.render_frame()
    assert out is not None and out["overlay_error_mm"] < 1e-9  # static head: no lag error
    assert rehearse.eye_view.isVisible() and win.vtk_widget.isVisible()
    rgb = rehearse.eye_view.last_rgb
    drawn = np.any(rgb != 40, axis=2)  # anything but the see-through background
    assert 0.01 < drawn.mean() < 0.9, drawn.mean()
    # both eyes (stacked) see the anatomy, horizontally shifted by the parallax
    h = (rgb.shape[0] - 6) // 2
    left, right = drawn[:h], drawn[h + 6:]
    assert left.mean() > 0.005 and right.mean() > 0.005
    cl = np.nonzero(left)[1].mean()
    cr = np.nonzero(right)[1].mean()
    assert cl > cr  # the left eye sees the wound further right on its image


def test_head_keys_move_the_head_and_rerender(win, rehearse):
    rehearse.render_frame()
    n, az = rehearse.frames_rendered, rehearse.az_deg
    win.keyboard.press("Left", win.now_s() + 100)
    assert rehearse.az_deg == pytest.approx(az - 5)
    assert rehearse.frames_rendered == n + 1


def test_latency_costs_overlay_error_and_prediction_recovers_some(win, rehearse):
    def mean_error(latency_on, predict):
        rehearse.latency.setChecked(latency_on)
        rehearse.prediction.setChecked(predict)
        rehearse.latency_ms.setValue(50.0)
        rehearse.start_trajectory("leaning", seed=3, duration_s=4.0, rate_hz=100.0)
        rehearse.stop()
        errs = [rehearse.step(0.25)["overlay_error_mm"] for _ in range(14)]
        return float(np.nanmean(errs))

    assert mean_error(False, False) < 1e-9
    lag = mean_error(True, False)
    pred = mean_error(True, True)
    assert lag > 0.2, lag  # 50 ms while leaning in costs a visible error
    assert pred < 0.9 * lag, (pred, lag)  # constant-velocity prediction helps


def test_tool_follows_the_plan_with_guidance_readouts(win, rehearse):
    from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan

    plan_panel = _panel(win, "Plan")
    c = win.case.surfaces["L3"].vertices.mean(axis=0)
    traj = ScrewTrajectory("L3", "left", c + [15.0, 25.0, 0.0], c + [5.0, -10.0, 0.0],
                           length_mm=40.0)
    plan_panel.set_plan(SurgicalPlan([traj]))
    rehearse.toggle_tool()
    rehearse.stop()
    depths = []
    for _ in range(6):
        out = rehearse.step(1.0)
        depths.append(out["depth_mm"])
    assert np.all(np.diff(depths) > 0)  # the tool advances along the plan
    g = rehearse.guidance
    assert g.depth_mm == pytest.approx(0.8 * 40.0, abs=1e-6)  # end of the scripted path
    assert g.angle_deg < 0.01 and g.lateral_offset_mm < 1e-6
    assert "depth" in rehearse.readouts.text()
    assert rehearse._tool_actor is not None


def test_register_panel_simulates_registers_and_shows_the_verdict(win, qtbot):
    reg = _panel(win, "Register")
    assert type(reg).__name__ == "RegisterPanel", reg.text()
    win.tabs.setCurrentWidget(reg)
    reg.sensor.setCurrentText("test-320")  # a small sensor keeps the test quick
    reg.seed.setValue(4)
    qtbot.mouseClick(reg.sim_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not reg.busy, timeout=120000)
    vc = win.case
    assert vc.scan is not None and len(vc.scan.points) > 1000
    assert len(vc.truth) >= 3  # every level of the anatomy has its true pose
    # re-register by the foot pedal's long press (hands-free), on a worker thread
    win.pedal.press("middle", win.now_s() + 200)
    win.pedal.release("middle", win.now_s() + 201.5)
    assert reg.busy and win.progress.isVisible()
    qtbot.waitUntil(lambda: not reg.busy, timeout=180000)
    res = reg.result
    assert res is not None, win.error_text
    verdict = reg.verdict.text()
    assert ("ACCEPTED" in verdict) == (res.status == "ok")
    assert ("REJECTED" in verdict) == (res.status != "ok")
    assert reg.table.rowCount() == len(res.vertebrae)
    # TRE is shown for every registered level the truth knows
    assert set(reg.tre_mm) == {lv for lv in res.vertebrae if lv in vc.truth
                               and vc.truth[lv].get("targets_ct_mm") is not None}
    if res.status == "ok":  # the scan is drawn over the anatomy where the registration puts it
        assert reg._scan_actor is not None
        ok = [reg.tre_mm[lv] for lv, v in res.vertebrae.items() if v.status == "ok"
              and lv in reg.tre_mm]
        assert ok and max(ok) < 2.0, reg.tre_mm
    else:  # a rejected pose is never drawn
        assert reg._scan_actor is None


def test_recorded_tool_path_replays_with_guidance(win, rehearse, tmp_path):
    import json

    from arspine.navigation.frames import RigidTransform
    from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan
    from arspine.navigation.tools import ToolPoseStream
    from arspine.viewer.rehearse_panel import tool_path

    c = win.case.surfaces["L3"].vertices.mean(axis=0)
    traj = ScrewTrajectory("L3", "right", c + [-15.0, 25.0, 0.0], c + [-5.0, -10.0, 0.0],
                           length_mm=40.0)
    _panel(win, "Plan").set_plan(SurgicalPlan([traj]))
    st = ToolPoseStream("drill", reference="ct")
    for t in np.arange(0.0, 6.01, 0.5):
        st.add(RigidTransform(tool_path(traj, t).as_matrix(), "ct", "drill"), 100.0 + t)
    p = tmp_path / "drill.json"
    p.write_text(json.dumps(st.to_dict()))
    rehearse.load_tool_path(p)
    assert rehearse.tool_stream is not None and len(rehearse.tool_stream) == 13
    rehearse.toggle_tool()
    rehearse.stop()
    out = rehearse.step(3.0)
    # the recorded path is the scripted one sampled every 0.5 s: same depth at t = 3 s
    expected = tool_path(traj, 3.0).translation_mm - traj.entry_ct_mm
    assert out["depth_mm"] == pytest.approx(float(expected @ traj.direction), abs=1e-6)
    bad = tmp_path / "bad.json"
    bad.write_text('{"tool": "drill", "reference": "tracker", "samples": []}')
    rehearse.load_tool_path(bad)
    assert "'ct' or 'sensor'" in win.error_text
    rehearse.tool_stream = None
    win.hide_error()


def test_show_tab_brings_panels_forward(win, rehearse):
    from arspine.errors import InputError
    from arspine.viewer.app import show_tab

    n = rehearse.frames_rendered
    show_tab(win, "Rehearse")
    assert win.tabs.currentWidget() is rehearse and rehearse.frames_rendered > n
    with pytest.raises(InputError, match="--tab must be one of"):
        show_tab(win, "billing")
