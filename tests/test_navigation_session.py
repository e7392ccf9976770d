"""Navigation session: built from a case, planned, registered, streamed to a pyigtl client,
saved and loaded with nothing lost; atomic and versioned saves with provenance."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.session import NavigationSession, sha256_of
from arspine.navigation.tools import POINTER

LEVELS = ["L2", "L3", "L4"]
T_SENSOR_FROM_CT = RigidTransform.from_euler("xyz", [175, 5, -10], [10, -20, 480], "sensor", "ct")


@pytest.fixture(scope="session")
def case_dir(data_dir, tmp_path_factory):
    """A DESIGN.md case bundle around the real CT: CT + labels + a scan of known pose."""
    from arspine.datasets.io import write_points
    from arspine.imaging import load_ct, load_labels, vertebra_surfaces

    src = data_dir / "totalsegmentator"
    folder = tmp_path_factory.mktemp("nav") / "case"
    folder.mkdir()
    shutil.copy(src / "example_ct.nii.gz", folder / "ct.nii.gz")
    shutil.copy(src / "example_ct_vertebrae.nii.gz", folder / "labels.nii.gz")
    (folder / "case.json").write_text(json.dumps({
        "name": "real-ct", "source": "TotalSegmentator example", "units": "mm",
        "label_scheme": "totalsegmentator"}))
    ct = load_ct(folder / "ct.nii.gz", progress=False)
    labels = load_labels(folder / "labels.nii.gz", like=ct, scheme="totalsegmentator")
    surf = vertebra_surfaces(ct, labels, levels=LEVELS)
    pts = np.vstack([surf[lv].sample_points(3000, seed=i)[0] for i, lv in enumerate(LEVELS)])
    write_points(folder / "scan.ply", T_SENSOR_FROM_CT.apply(pts))
    return folder


def _result_from(T: RigidTransform, per_level: dict) -> dict:
    """A result.json (DESIGN.md) as the registration would write it."""
    from arspine.registration import RegistrationResult, VertebraResult

    return RegistrationResult(
        "ok", None, T, {lv: VertebraResult(Tl, 0.4, 0.8) for lv, Tl in per_level.items()},
        {"inlier_fraction": 0.8}, {"register": 0.5}, 0.5).to_dict()


@pytest.fixture(scope="session")
def planned_session(case_dir):
    s = NavigationSession.from_case(case_dir)
    s.plan_screws(LEVELS)
    moved = RigidTransform.from_euler("xyz", [1, -1, 0.5], [0.5, 0.2, -0.4], "sensor", "sensor")
    per_level = {"L2": T_SENSOR_FROM_CT, "L3": moved @ T_SENSOR_FROM_CT, "L4": T_SENSOR_FROM_CT}
    s.add_registration(_result_from(T_SENSOR_FROM_CT, per_level),
                       inputs={"scan": case_dir / "scan.ply"},
                       parameters={"levels": LEVELS, "config": {"inlier_mm": 2.0}},
                       name="surface")
    s.add_tool(POINTER.with_tip([0, 0, 150.0]))
    s.graph.add(RigidTransform.from_euler("xyz", [0, 180, 0], [0, 0, 900], "sensor", "tracker"))
    # the pointer tip on the planned L3 left entry, aligned with the screw axis
    traj = s.plan["L3_left"]
    z = traj.direction
    x = np.cross([0, 0, 1.0], z)
    x /= np.linalg.norm(x)
    R = np.c_[x, np.cross(z, x), z]
    T_ct_L3_from_pointer = RigidTransform.from_rt(R, traj.entry_ct_mm - R @ [0, 0, 150.0],
                                                  "ct_L3", "pointer")
    T_tracker_from_pointer = s.graph.get("tracker", "ct_L3") @ T_ct_L3_from_pointer
    for i in range(5):
        s.update_pose(T_tracker_from_pointer, timestamp_s=0.1 * i)
    return s


def test_session_from_case_plan_and_provenance(case_dir, planned_session):
    s = planned_session
    assert s.labels.levels[2:7] == ["L1", "L2", "L3", "L4", "L5"]
    assert set(LEVELS) <= set(s.surfaces) and len(s.plan) == 6
    rec = s.active_registration
    assert rec.status == "ok"
    assert rec.inputs["ct"]["sha256"] == sha256_of(case_dir / "ct.nii.gz")
    assert rec.inputs["labels"]["sha256"] == sha256_of(case_dir / "labels.nii.gz")
    assert rec.inputs["scan"]["sha256"] == sha256_of(case_dir / "scan.ply")
    assert rec.parameters["levels"] == LEVELS and rec.software_version
    assert s.graph.get("sensor", "ct").isclose(T_SENSOR_FROM_CT, 1e-9, 1e-9)
    assert "ct_L3" in s.graph


def test_guidance_uses_the_vertebra_frame(planned_session):
    s = planned_session
    g = s.guidance("pointer", "L3_left")
    assert g.tip_to_entry_mm < 1e-6 and g.angle_deg < 1e-4 and g.on_track, g.warnings
    # the same pose judged against the whole-exposure registration is off by L3's motion
    T_ct_from_pointer = s.graph.get("ct", "pointer")
    tip_global = s.tools["pointer"].tip_in(T_ct_from_pointer)
    assert np.linalg.norm(tip_global - s.plan["L3_left"].entry_ct_mm) > 0.5
    gw = s.guidance("pointer", "L3_left", frame="tracker")
    assert gw.frame == "tracker" and gw.tip_to_entry_mm == pytest.approx(g.tip_to_entry_mm)


def test_session_streams_to_pyigtl_client(planned_session, monkeypatch):
    pyigtl = pytest.importorskip("pyigtl")
    from arspine.navigation.igtl import IgtlServer

    s = planned_session
    srv = IgtlServer("127.0.0.1", 0).attach(s).start()
    client = pyigtl.OpenIGTLinkClient("127.0.0.1", srv.port)
    try:
        t0 = time.monotonic()
        while not srv.connected and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert srv.connected
        srv.serve(duration_s=0.2, rate_hz=20)
        msg = client.wait_for_message("SensorToCT", timeout=5)
        assert msg is not None
        F = np.diag([-1.0, -1, 1, 1])
        np.testing.assert_allclose(F @ np.asarray(msg.matrix) @ F,
                                   T_SENSOR_FROM_CT.inv().as_matrix(), atol=2e-3)
        plan_msg = client.wait_for_message("Plan", timeout=5)
        assert plan_msg is not None and len(plan_msg.names) == 2 * len(s.plan)
        tool = client.wait_for_message("PointerToCT", timeout=5)
        assert tool is not None
        # a pose sent by the client lands in the session's graph and the pointer's stream
        n = len(s.streams["pointer"])
        original = (s.graph.get("tracker", "pointer"), s.graph.timestamp("tracker", "pointer"))
        T_new = RigidTransform.from_euler("xyz", [5, 0, 0], [1, 2, 3], "tracker", "pointer")
        client.send_message(pyigtl.TransformMessage(F @ T_new.as_matrix() @ F,
                                                    timestamp=time.time() + 10,
                                                    device_name="PointerToTracker"), wait=True)
        t0 = time.monotonic()
        while len(s.streams["pointer"]) == n and time.monotonic() - t0 < 5:
            srv.poll()
            time.sleep(0.01)
        assert len(s.streams["pointer"]) == n + 1
        assert s.graph.get("tracker", "pointer").isclose(T_new, 1e-3, 1e-3)
        s.graph.add(*original)  # the shared fixture keeps its planned pointer pose
    finally:
        client.stop()
        srv.stop()


def _assert_same(a: NavigationSession, b: NavigationSession):
    np.testing.assert_array_equal(a.ct.hu, b.ct.hu)
    assert a.ct.hu.dtype == b.ct.hu.dtype
    np.testing.assert_array_equal(a.ct.T_ct_from_ijk, b.ct.T_ct_from_ijk)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.labels.names == b.labels.names and a.labels.levels == b.labels.levels
    assert list(a.surfaces) == list(b.surfaces)
    for lv in a.surfaces:
        np.testing.assert_array_equal(a.surfaces[lv].vertices, b.surfaces[lv].vertices)
        np.testing.assert_array_equal(a.surfaces[lv].faces, b.surfaces[lv].faces)
        assert a.surfaces[lv].name == b.surfaces[lv].name
    assert a.plan == b.plan
    assert [r.to_dict() for r in a.registrations] == [r.to_dict() for r in b.registrations]
    assert a.graph.to_dict() == b.graph.to_dict()
    assert {k: t.to_dict() for k, t in a.tools.items()} == \
        {k: t.to_dict() for k, t in b.tools.items()}
    assert {k: v.to_dict() for k, v in a.streams.items()} == \
        {k: v.to_dict() for k, v in b.streams.items()}
    assert a.sources == b.sources and a.name == b.name


def test_save_load_roundtrip_nothing_lost(planned_session, tmp_path):
    s = planned_session
    folder = s.save(tmp_path / "sess")
    back = NavigationSession.load(folder)
    _assert_same(s, back)
    # the loaded session works: same guidance, same registration result object
    assert back.guidance("pointer", "L3_left").tip_to_entry_mm < 1e-6
    assert back.active_registration.as_result().T_sensor_from_ct.isclose(T_SENSOR_FROM_CT,
                                                                         1e-9, 1e-9)
    # save -> load -> save is stable
    back.save(tmp_path / "again")
    _assert_same(back, NavigationSession.load(tmp_path / "again"))


def test_save_is_atomic_versioned_and_verified(planned_session, tmp_path, monkeypatch):
    s = planned_session
    folder = s.save(tmp_path / "sess")
    before = (folder / "session.json").read_text()
    # a failing save leaves the previous session intact and no temporary folders
    import arspine.navigation.session as mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mod.np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        s.save(folder)
    monkeypatch.undo()
    assert (folder / "session.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sess"]
    NavigationSession.load(folder)
    # versioned
    doc = json.loads(before)
    doc["format_version"] = 99
    (folder / "session.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="version 99"):
        NavigationSession.load(folder)
    # verified: a modified data file is refused
    s.save(folder)
    with open(folder / "labels.npz", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(InputError, match="SHA-256"):
        NavigationSession.load(folder)
    with pytest.raises(InputError, match="no session.json"):
        NavigationSession.load(tmp_path / "nothing")
    other = tmp_path / "not_a_session"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="refusing"):
        s.save(other)
    assert (other / "keep.txt").exists()


def test_add_registration_bad_input(planned_session):
    with pytest.raises(InputError, match="T_sensor_from_ct"):
        planned_session.add_registration({"status": "ok"})


def test_register_records_provenance(case_dir, monkeypatch):
    """session.register runs the registration package and records what it ran on."""
    import arspine.registration.model as model_mod
    import arspine.registration.pipeline as pipe_mod
    from arspine.datasets.io import read_points
    from arspine.registration import RegisterConfig, RegistrationResult

    calls = {}

    def fake_prepare(ct, labels=None, surfaces=None, **kw):
        calls["prepare"] = (ct.shape, labels.levels)
        return "model"

    def fake_register(model, scan, levels=None, config=None):
        calls["register"] = (model, len(getattr(scan, "points", scan)), levels, config)
        return RegistrationResult("ok", None, T_SENSOR_FROM_CT)

    monkeypatch.setattr(model_mod, "prepare_model", fake_prepare)
    monkeypatch.setattr(pipe_mod, "register", fake_register)
    s = NavigationSession.from_case(case_dir, surfaces=False)
    scan = read_points(case_dir / "scan.ply")
    rec = s.register(scan, levels=["L3"], config=RegisterConfig(),
                     scan_source=case_dir / "scan.ply")
    assert calls["prepare"][1][2:7] == ["L1", "L2", "L3", "L4", "L5"]
    assert calls["register"][1] == len(scan.points) == 9000 and calls["register"][2] == ["L3"]
    assert rec.inputs["scan"]["sha256"] == sha256_of(case_dir / "scan.ply")
    assert rec.parameters["levels"] == ["L3"] and rec.parameters["config"]["inlier_mm"] == 2.0
    assert s.graph.get("sensor", "ct").isclose(T_SENSOR_FROM_CT, 1e-9, 1e-9)
    # an in-memory scan is hashed by content
    rec2 = s.register(scan.points)
    assert rec2.inputs["scan"]["path"] is None and len(rec2.inputs["scan"]["sha256"]) == 64
