"""OpenIGTLink server against a real pyigtl client on 127.0.0.1 (bounded waits, always closed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl")

from arspine.navigation.frames import RigidTransform  # noqa: E402
from arspine.navigation.geometry import Mesh  # noqa: E402
from arspine.navigation.igtl import (  # noqa: E402
    IgtlServer,
    device_name,
    parse_device_name,
    unpack_polydata_content,
)
from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan  # noqa: E402

F = np.diag([-1.0, -1, 1, 1])
T_SENSOR_FROM_CT = RigidTransform.from_euler("xyz", [10, 20, -30], [5, -15, 350], "sensor", "ct")


def _fixed_polydata_unpack(self, content):
    d = unpack_polydata_content(content)
    self.points, self.polygons = d["points"], d.get("polygons")


@pytest.fixture()
def client_server(monkeypatch):
    # pyigtl 0.3 clients cannot receive POLYDATA (not registered, and its decoder raises);
    # give the test client a working one. 3D Slicer decodes POLYDATA itself.
    monkeypatch.setattr(pyigtl.PolyDataMessage, "_unpack_content", _fixed_polydata_unpack)
    monkeypatch.setitem(pyigtl.messages.message_type_to_class_constructor, "POLYDATA",
                        pyigtl.PolyDataMessage)
    srv = IgtlServer("127.0.0.1", 0).start()
    try:
        yield srv, lambda: pyigtl.OpenIGTLinkClient("127.0.0.1", srv.port)
    finally:
        srv.stop()


def _wait(pred, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_device_names_follow_slicer():
    assert device_name("ct", "sensor") == "SensorToCT"
    assert device_name("tracker", "drill_guide") == "DrillGuideToTracker"
    assert parse_device_name("PointerToTracker") == ("tracker", "pointer")
    assert parse_device_name("SensorToCT") == ("ct", "sensor")
    assert parse_device_name("CTL3ToSensor", ["ct_L3", "sensor"]) == ("sensor", "ct_L3")
    assert parse_device_name("ToolToTracker") == ("tracker", "tool")


def test_stream_scene_and_receive_tool(client_server):
    srv, make_client = client_server
    tet = Mesh(np.array([[0.0, 0, 0], [10, 0, 0], [0, 20, 0], [0, 0, 30]]),
               np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]), name="L3")
    srv.set_surfaces({"L3": tet})
    plan = SurgicalPlan([ScrewTrajectory("L3", "left", [20, 40, 0], [10, 5, 2], 6.5, 40.0)])
    srv.set_plan(plan)
    srv.graph.add(T_SENSOR_FROM_CT)
    client = make_client()
    try:
        assert _wait(lambda: srv.connected), "client did not connect"
        srv.publish()
        msg = client.wait_for_message("SensorToCT", timeout=5)
        assert msg is not None
        # RAS on the wire: F @ T_ct_from_sensor @ F
        np.testing.assert_allclose(msg.matrix, F @ T_SENSOR_FROM_CT.inv().as_matrix() @ F,
                                   atol=1e-3)
        pts = client.wait_for_message("Plan", timeout=5)
        assert pts is not None and pts.names == ["L3_left-entry", "L3_left-tip"]
        np.testing.assert_allclose(pts.positions[0], [-20, -40, 0], atol=1e-4)
        poly = client.wait_for_message("L3", timeout=5)
        assert poly is not None
        np.testing.assert_allclose(poly.points, tet.vertices * [-1, -1, 1], atol=1e-4)
        np.testing.assert_array_equal(poly.polygons, tet.faces)
        # the client streams a tool pose (RAS), the server puts it into the graph (LPS)
        T_tracker_from_pointer = RigidTransform.from_euler("xyz", [0, 30, 0], [1, 2, 3],
                                                           "tracker", "pointer")
        srv.graph.add(RigidTransform.from_euler("xyz", [0, 0, 90], [0, 0, 100], "sensor",
                                                "tracker"))
        client.send_message(pyigtl.TransformMessage(
            F @ T_tracker_from_pointer.as_matrix() @ F, device_name="PointerToTracker"),
            wait=True)
        assert _wait(lambda: len(srv.poll()) > 0 or "pointer" in srv.graph)
        got = srv.graph.get("tracker", "pointer")
        assert got.isclose(T_tracker_from_pointer, atol_mm=1e-4, atol_deg=1e-3)
        # and the tool now streams in the CT frame
        srv.publish()
        msg = client.wait_for_message("PointerToCT", timeout=5)
        assert msg is not None
        expect = srv.graph.get("ct", "pointer").as_matrix()
        np.testing.assert_allclose(F @ np.asarray(msg.matrix) @ F, expect, atol=1e-3)
    finally:
        client.stop()


def test_serve_bounded_and_reconnect(client_server):
    srv, make_client = client_server
    srv.graph.add(T_SENSOR_FROM_CT)
    for _ in range(2):  # a second client gets the scene again after the first leaves
        client = make_client()
        try:
            assert _wait(lambda: srv.connected)
            ticks = srv.serve(duration_s=0.3, rate_hz=20)
            assert 1 <= ticks <= 7  # bounded by rate x duration (+1), never spins
            assert client.wait_for_message("SensorToCT", timeout=5) is not None
        finally:
            client.stop()
        assert _wait(lambda: not srv.connected)


def test_port_in_use_and_bad_arguments_are_input_errors():
    import socket

    from arspine.errors import InputError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(InputError, match="cannot listen"):
            IgtlServer("127.0.0.1", busy.getsockname()[1])
    with pytest.raises(InputError, match="coordinate_system"):
        IgtlServer("127.0.0.1", 0, coordinate_system="XYZ")
    with pytest.raises(InputError, match="port"):
        IgtlServer("127.0.0.1", 70000)
    srv = IgtlServer("127.0.0.1", 0)
    try:
        with pytest.raises(InputError, match="names must have 2"):
            srv.set_points("Plan", np.zeros((2, 3)), ["a"])
        with pytest.raises(InputError, match="longer than 20"):
            device_name("ct", "a_very_long_frame_name_indeed")
    finally:
        srv.stop()


def test_garbage_client_is_dropped_and_server_keeps_serving(client_server):
    import socket

    srv, make_client = client_server
    srv.graph.add(T_SENSOR_FROM_CT)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        raw.sendall(b"\xff" * 200)  # not OpenIGTLink
        assert _wait(lambda: srv.n_clients == 1)
        assert _wait(lambda: not srv.connected), "garbage client was not dropped"
    client = make_client()
    try:
        assert _wait(lambda: srv.connected)
        srv.publish()
        assert client.wait_for_message("SensorToCT", timeout=5) is not None
    finally:
        client.stop()
