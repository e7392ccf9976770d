"""OpenIGTLink bridge to 3D Slicer / SlicerIGT (pyigtl).

:class:`IgtlServer` serves a navigation scene on a TCP port (loopback by default):

- TRANSFORM messages named the Slicer way, ``<From>To<To>``: ``SensorToCT`` carries
  ``T_ct_from_sensor``; every frame connected to ``ct`` in the frame graph is streamed as
  ``<Frame>ToCT`` (tools, tracker, head, per-vertebra frames);
- POLYDATA messages with the vertebra surfaces (device name = level, ``L3``);
- a POINT message ``Plan`` with the entry and tip of every planned screw;
- TRANSFORM messages received from the client (a tracked tool, the head) are put into the
  frame graph (``PointerToTracker`` -> ``T_tracker_from_pointer``).

Coordinates: arspine's frames are LPS-like (the ``ct`` frame is DICOM LPS); Slicer works in
RAS. With ``coordinate_system="RAS"`` (the default) every point is sent as ``F @ p`` and every
transform as ``F @ T @ F`` with ``F = diag(-1, -1, 1)`` (a 180 degree rotation about z, so
surfaces keep their orientation), and received transforms are converted back.

pyigtl's server registers process-wide signal handlers and busy-loops on a closed client
socket; this module runs pyigtl's message and socket code with its own accept loop instead.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable, Mapping

import numpy as np

from arspine.errors import InputError
from arspine.navigation.frames import FrameGraph, FrameNotConnectedError, RigidTransform
from arspine.navigation.geometry import Mesh, as_points

__all__ = [
    "IgtlServer",
    "device_name",
    "parse_device_name",
    "frame_to_device",
    "unpack_polydata_content",
    "DEFAULT_PORT",
]

DEFAULT_PORT = 18944
_F = np.diag([-1.0, -1.0, 1.0, 1.0])
_ACRONYMS = {"ct": "CT", "ijk": "IJK", "hmd": "HMD", "us": "US"}
_MAX_DEVICE_NAME = 20
_MAX_BODY_BYTES = 512 * 1024 * 1024  # a larger body is garbage or hostile: disconnect


def frame_to_device(frame: str) -> str:
    """``"drill_guide"`` -> ``"DrillGuide"``, ``"ct"`` -> ``"CT"``, ``"ct_L3"`` -> ``"CTL3"``."""
    parts = [p for p in frame.split("_") if p]
    return "".join(_ACRONYMS.get(p.lower(), p[:1].upper() + p[1:]) for p in parts)


def device_name(to_frame: str, from_frame: str) -> str:
    """Slicer's name of ``T_<to>_from_<from>``: ``"<From>To<To>"`` (``SensorToCT``)."""
    name = f"{frame_to_device(from_frame)}To{frame_to_device(to_frame)}"
    if len(name.encode()) > _MAX_DEVICE_NAME:
        raise InputError(f"OpenIGTLink device name {name!r} is longer than "
                         f"{_MAX_DEVICE_NAME} bytes; use shorter frame names")
    return name


def parse_device_name(name: str, known_frames: Iterable[str] = ()) -> tuple[str, str]:
    """``"PointerToTracker"`` -> ``("tracker", "pointer")`` (to, from).

    Frames already known (e.g. in the frame graph) are matched by their device spelling;
    unknown ones become snake case (``"DrillGuide"`` -> ``"drill_guide"``).
    """
    by_device = {frame_to_device(f): f for f in known_frames}
    splits = [m.start() for m in re.finditer(r"To(?=[A-Z])", name) if m.start() > 0]
    if not splits:
        raise InputError(f"device name {name!r} is not of the form '<From>To<To>'")

    def frame(dev: str) -> str:
        if dev in by_device:
            return by_device[dev]
        for k, v in _ACRONYMS.items():
            if dev == v:
                return k
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", dev).lower()

    for i in splits:  # prefer a split whose halves are both known
        a, b = name[:i], name[i + 2:]
        if a in by_device and b in by_device:
            return frame(b), frame(a)
    i = splits[0]
    return frame(name[i + 2:]), frame(name[:i])


def unpack_polydata_content(content: bytes) -> dict[str, np.ndarray]:
    """Decode an OpenIGTLink POLYDATA body (pyigtl 0.3's own decoder is broken).

    Returns ``{"points": (N, 3) float64, "polygons": (M, 3) int64}`` for triangle meshes
    (other polygon sizes are returned flat under ``"polygon_cells"``).
    """
    head = struct.unpack(">10I", content[:40])
    n_points, _, size_vertices, _, size_lines, n_polys, size_polys, _, size_strips, _ = head
    off = 40
    pts = np.frombuffer(content, dtype=">f4", count=3 * n_points, offset=off)
    off += 12 * n_points + size_vertices + size_lines
    cells = np.frombuffer(content, dtype=">u4", count=size_polys // 4, offset=off)
    out = {"points": pts.reshape(-1, 3).astype(np.float64), "polygon_cells": cells.astype(np.int64)}
    if n_polys and len(cells) == 4 * n_polys and np.all(cells[::4] == 3):
        out["polygons"] = cells.reshape(-1, 4)[:, 1:].astype(np.int64)
    return out


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv: IgtlServer = self.server.owner  # type: ignore[attr-defined]
        srv._on_connect(self.request)


class _TCPServer(socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


class IgtlServer:
    """An OpenIGTLink server streaming the navigation scene to one client at a time.

    Parameters
    ----------
    host : str
        Interface to bind; ``127.0.0.1`` (loopback) by default. Binding another interface
        exposes patient data on the network: do it deliberately.
    port : int
        TCP port (OpenIGTLink's default 18944); 0 picks a free port (see :attr:`port`).
    coordinate_system : {"RAS", "LPS"}
        Coordinates on the wire; Slicer expects RAS.
    graph : FrameGraph, optional
        Frame graph streamed and updated by received transforms (a new one by default).

    Examples
    --------
    >>> with IgtlServer(port=0) as srv:              # doctest: +SKIP
    ...     srv.set_surfaces(surfaces); srv.graph.add(T_sensor_from_ct)
    ...     srv.serve(duration_s=10)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 coordinate_system: str = "RAS", graph: FrameGraph | None = None,
                 reference_frame: str = "ct"):
        import pyigtl  # noqa: F401 - fail early with a clear error when missing

        if coordinate_system not in ("RAS", "LPS"):
            raise InputError(f"coordinate_system must be 'RAS' or 'LPS', got "
                             f"{coordinate_system!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InputError(f"port must be an integer 0..65535, got {port!r}")
        self.host = host
        self.coordinate_system = coordinate_system
        self.graph = graph if graph is not None else FrameGraph()
        self.reference_frame = reference_frame
        self._surfaces: dict[str, Mesh] = {}
        self._points: dict[str, tuple[np.ndarray, list[str]]] = {}
        self._lock = threading.RLock()
        self._outgoing: list = []
        self._received: list[tuple[RigidTransform, float]] = []
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.n_clients = 0
        #: ``f(T, timestamp_s)`` called by :meth:`poll` for each received transform instead
        #: of adding it to :attr:`graph` (see :meth:`attach`)
        self.on_receive = None
        try:
            self._tcp = _TCPServer((host, port), _Handler, bind_and_activate=True)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self._tcp.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._tcp.server_address[1])

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> IgtlServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._tcp.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="arspine-igtl", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect the client and close the port (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._tcp.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._tcp.server_close()

    def __enter__(self) -> IgtlServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ conversions
    def _out_matrix(self, m: np.ndarray) -> np.ndarray:
        return _F @ m @ _F if self.coordinate_system == "RAS" else m

    def _out_points(self, p: np.ndarray) -> np.ndarray:
        return p * [-1.0, -1.0, 1.0] if self.coordinate_system == "RAS" else p

    # ------------------------------------------------------------------ scene
    def set_surfaces(self, surfaces: Mapping[str, Mesh]) -> None:
        """Surfaces sent as POLYDATA (device name = key) on every client connection."""
        for k, m in surfaces.items():
            if not isinstance(m, Mesh):
                raise InputError(f"surfaces[{k!r}] must be a Mesh, got {type(m).__name__}")
        with self._lock:
            self._surfaces = dict(surfaces)

    def set_points(self, device: str, points: object, names: Iterable[str]) -> None:
        """Points sent as one POINT message named ``device`` on every connection."""
        p = as_points(points, "points")
        names = [str(n) for n in names]
        if len(names) != len(p):
            raise InputError(f"names must have {len(p)} entries, got {len(names)}")
        with self._lock:
            self._points[device] = (p, names)

    def set_plan(self, plan) -> None:
        """The plan's entry and tip points as the POINT message ``Plan``."""
        pts, names = [], []
        for t in plan:
            pts += [t.entry_ct_mm, t.tip_ct_mm]
            names += [f"{t.key}-entry", f"{t.key}-tip"]
        if pts:
            self.set_points("Plan", np.array(pts), names)

    def attach(self, session) -> IgtlServer:
        """Serve a :class:`~arspine.navigation.session.NavigationSession`: its surfaces,
        plan and frame graph (shared: received poses go through
        ``session.update_pose``, into its graph and, for known tools, its pose streams)."""
        self.graph = session.graph
        self.on_receive = lambda T, ts: session.update_pose(T, ts)  # also records tool streams
        self.set_surfaces(session.surfaces)
        self.set_plan(session.plan)
        return self

    def _scene_messages(self) -> list:
        import pyigtl

        msgs = []
        with self._lock:
            surfaces = dict(self._surfaces)
            points = dict(self._points)
        for name, mesh in surfaces.items():
            poly = np.hstack([np.full((mesh.n_faces, 1), 3), mesh.faces]).astype(np.uint32)
            msgs.append(pyigtl.PolyDataMessage(points=self._out_points(mesh.vertices)
                                               .astype(np.float32), polygons=poly.ravel(),
                                               device_name=name[:_MAX_DEVICE_NAME]))
        for dev, (p, names) in points.items():
            msgs.append(pyigtl.PointMessage(positions=self._out_points(p), names=names,
                                            device_name=dev))
        return msgs + self._transform_messages()

    def _transform_messages(self) -> list:
        import pyigtl

        msgs = []
        ref = self.reference_frame
        if ref not in self.graph:
            return msgs
        now = time.time()
        for f in self.graph.frames:
            if f == ref:
                continue
            try:
                T = self.graph.get(ref, f)
            except FrameNotConnectedError:
                continue
            msgs.append(pyigtl.TransformMessage(self._out_matrix(T.as_matrix()), timestamp=now,
                                                device_name=device_name(ref, f)))
        return msgs

    def send_transform(self, T: RigidTransform, timestamp_s: float | None = None) -> None:
        """Queue one TRANSFORM message named after ``T`` (``T_ct_from_sensor`` ->
        ``SensorToCT``); dropped when no client is connected."""
        import pyigtl

        if not isinstance(T, RigidTransform):
            raise InputError(f"T must be a RigidTransform, got {type(T).__name__}")
        if not self.connected:
            return
        msg = pyigtl.TransformMessage(self._out_matrix(T.as_matrix()),
                                      timestamp=time.time() if timestamp_s is None
                                      else timestamp_s,
                                      device_name=device_name(T.to_frame, T.from_frame))
        with self._lock:
            self._outgoing.append(msg)

    def publish(self) -> None:
        """Queue the current transforms of every frame connected to the reference frame."""
        if not self.connected:
            return
        msgs = self._transform_messages()
        with self._lock:
            self._outgoing.extend(msgs)

    # ------------------------------------------------------------------ receiving
    def poll(self) -> list[RigidTransform]:
        """Transforms received since the last call, added to :attr:`graph` (in order)."""
        with self._lock:
            items, self._received = self._received, []
        out = []
        for T, ts in items:
            if self.on_receive is not None:
                self.on_receive(T, ts)
            else:
                self.graph.add(T, ts)
            out.append(T)
        return out

    def _on_message(self, msg) -> None:
        if msg.message_type != "TRANSFORM":
            return
        try:
            to, frm = parse_device_name(msg.device_name, self.graph.frames)
            m = np.asarray(msg.matrix, dtype=np.float64)
            T = RigidTransform.from_matrix(self._out_matrix(m), to, frm, orthonormalize=True)
        except InputError:
            return  # a message we cannot interpret is ignored, not fatal for the stream
        with self._lock:
            self._received.append((T, float(msg.timestamp)))

    # ------------------------------------------------------------------ connection loop
    def _on_connect(self, sock: socket.socket) -> None:
        import pyigtl

        self.n_clients += 1
        sock.settimeout(0.01)
        with self._lock:
            self._outgoing = []
        self._connected.set()
        try:
            scene = self._scene_messages()
            with self._lock:
                self._outgoing.extend(scene)
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                    if chunk == b"":
                        break  # client closed
                    buf += chunk
                except TimeoutError:
                    pass
                hdr = pyigtl.MessageBase.IGTL_HEADER_SIZE
                while len(buf) >= hdr:
                    try:
                        fields = pyigtl.MessageBase.parse_header(buf[:hdr])
                    except (ValueError, struct.error):  # not OpenIGTLink: drop the client
                        return
                    if fields["body_size"] > _MAX_BODY_BYTES:
                        return
                    end = hdr + fields["body_size"]
                    if len(buf) < end:
                        break
                    body, buf = buf[hdr:end], buf[end:]
                    msg = pyigtl.MessageBase.create_message(fields["message_type"])
                    if msg is not None:
                        try:
                            msg.unpack(fields, body)
                        except Exception:  # noqa: BLE001 - a malformed message is skipped
                            continue
                        self._on_message(msg)
                with self._lock:
                    out, self._outgoing = self._outgoing, []
                for m in out:
                    sock.sendall(m.pack())
        except OSError:
            pass  # client went away
        finally:
            self._connected.clear()

    def serve(self, duration_s: float | None = None, rate_hz: float = 30.0,
              on_tick=None) -> int:
        """Stream transforms at ``rate_hz`` until ``duration_s`` elapses (forever when None).

        Each tick: received transforms go into the graph, ``on_tick(server)`` runs (e.g. to
        update a simulated tool), then the transforms are published.

        Returns
        -------
        int
            Number of ticks.
        """
        if rate_hz <= 0:
            raise InputError(f"rate_hz must be positive, got {rate_hz}")
        self.start()
        t0 = time.monotonic()
        ticks = 0
        period = 1.0 / rate_hz
        while duration_s is None or time.monotonic() - t0 < duration_s:
            self.poll()
            if on_tick is not None:
                on_tick(self)
            self.publish()
            ticks += 1
            time.sleep(max(0.0, t0 + ticks * period - time.monotonic()))
        self.poll()
        return ticks
