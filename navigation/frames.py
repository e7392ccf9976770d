"""The shared 3D frame: named rigid transforms and a graph of frames (numpy only).

A transform is named ``T_<to>_from_<from>`` and maps points from frame ``<from>`` into frame
``<to>``: ``T_world_from_ct = T_world_from_sensor @ T_sensor_from_ct``. Neighbouring names
in a chain must match; :class:`RigidTransform` refuses a mismatched ``@`` with
:class:`FrameMismatchError`.

Units are millimetres; rotations are proper (det +1). Quaternions are scalar-first
``(w, x, y, z)``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from arspine.errors import ArspineError, FrameMismatchError, InputError

__all__ = [
    "RigidTransform",
    "FrameGraph",
    "FrameMismatchError",
    "FrameNotConnectedError",
    "FrameInconsistencyError",
    "parse_transform_name",
    "rotation_angle_deg",
]

_ROTATION_ATOL = 1e-5
_NAME_RE = re.compile(r"^T_(?P<to>.+?)_from_(?P<from>.+)$")


class FrameNotConnectedError(ArspineError, LookupError):
    """No chain of transforms links the two frames asked for."""


class FrameInconsistencyError(ArspineError, ValueError):
    """A cycle of transforms in a :class:`FrameGraph` does not close."""


def parse_transform_name(name: str) -> tuple[str, str]:
    """Split ``"T_sensor_from_ct"`` into ``("sensor", "ct")``."""
    m = _NAME_RE.match(name)
    if not m:
        raise InputError(f"transform name must look like 'T_<to>_from_<from>', got {name!r}")
    return m.group("to"), m.group("from")


def _check_frame_name(value: object, arg: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{arg} must be a non-empty string, got {value!r}")
    return value


def _as_matrix(matrix: object, arg: str = "matrix") -> np.ndarray:
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{arg} must be a 4x4 numeric matrix, "
                         f"got {type(matrix).__name__}") from exc
    if m.shape != (4, 4):
        raise InputError(f"{arg} must be 4x4, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InputError(f"{arg} must be finite, got NaN or inf in {m.tolist()}")
    return m


def _axis_rotation(axis: int, angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    r = np.eye(3)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(rotvec))
    if theta < 1e-12:
        k = np.array([[0, -rotvec[2], rotvec[1]], [rotvec[2], 0, -rotvec[0]],
                      [-rotvec[1], rotvec[0], 0]])
        return np.eye(3) + k
    axis = rotvec / theta
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)


def _matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    # Shepperd's method: pick the largest diagonal term for numerical stability.
    tr = np.trace(r)
    candidates = [tr, r[0, 0], r[1, 1], r[2, 2]]
    i = int(np.argmax(candidates))
    if i == 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    # Canonical sign (as scipy's canonical=True): first non-zero of w, x, y, z positive.
    q[np.abs(q) < 1e-15] = 0.0  # rounding noise would otherwise decide the sign
    lead = q[np.flatnonzero(q)[0]]
    return q if lead > 0 else -q


def _quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _parse_euler_seq(seq: str) -> tuple[list[int], bool]:
    if not isinstance(seq, str) or len(seq) != 3 or not (seq.islower() or seq.isupper()):
        raise InputError(f"seq must be 3 axes, all lower case (extrinsic) or all upper case "
                         f"(intrinsic), e.g. 'xyz' or 'ZYX', got {seq!r}")
    axes = ["xyz".index(c) for c in seq.lower() if c in "xyz"]
    if len(axes) != 3 or len(set(axes)) != 3:
        raise InputError(f"seq must name three distinct axes (Tait-Bryan angles), got {seq!r}")
    return axes, seq.isupper()


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle in degrees of a 3x3 rotation matrix (geodesic distance to identity).

    ``atan2(sin, cos)`` rather than ``acos`` of the trace, which loses half the digits near
    0 deg (a rounding error of 1e-16 would read as 1e-6 deg).
    """
    r = np.asarray(rotation, dtype=np.float64)[:3, :3]
    c = (np.trace(r) - 1.0) / 2.0
    s = 0.5 * math.sqrt((r[2, 1] - r[1, 2]) ** 2 + (r[0, 2] - r[2, 0]) ** 2
                        + (r[1, 0] - r[0, 1]) ** 2)
    return math.degrees(math.atan2(s, c))


class RigidTransform:
    """An immutable rigid transform ``T_<to>_from_<from>`` in millimetres.

    Parameters
    ----------
    matrix : array_like, (4, 4)
        Homogeneous matrix mapping points of ``from_frame`` into ``to_frame`` (mm).
    to_frame, from_frame : str
        Frame names, e.g. ``"sensor"`` and ``"ct"`` for ``T_sensor_from_ct``.
    atol : float
        Tolerance on ``R.T @ R == I`` and ``det(R) == 1``.

    Raises
    ------
    InputError
        When the matrix is not 4x4, not finite, has a projective last row, or its rotation
        part is not orthonormal with det +1.
    """

    __slots__ = ("_m", "_to", "_from")

    def __init__(self, matrix: object, to_frame: str, from_frame: str,
                 atol: float = _ROTATION_ATOL):
        m = _as_matrix(matrix)
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
            raise InputError(f"matrix last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        r = m[:3, :3]
        err = float(np.max(np.abs(r.T @ r - np.eye(3))))
        if err > atol:
            raise InputError(
                f"matrix rotation part is not orthonormal (max |R^T R - I| = {err:.2e} > {atol:g})")
        det = float(np.linalg.det(r))
        if abs(det - 1.0) > max(atol, 1e-9) * 3:
            raise InputError(f"matrix rotation part must have det +1 (a proper rotation), "
                             f"got det {det:.6f}")
        m.setflags(write=False)
        object.__setattr__(self, "_m", m)
        object.__setattr__(self, "_to", _check_frame_name(to_frame, "to_frame"))
        object.__setattr__(self, "_from", _check_frame_name(from_frame, "from_frame"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RigidTransform is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"RigidTransform is immutable (cannot delete {name!r})")

    # ----------------------------------------------------------------- constructors
    @classmethod
    def identity(cls, to_frame: str, from_frame: str) -> RigidTransform:
        """The identity ``T_<to>_from_<from>``."""
        return cls(np.eye(4), to_frame, from_frame)

    @classmethod
    def from_rt(cls, rotation: object, translation_mm: object, to_frame: str,
                from_frame: str) -> RigidTransform:
        """From a 3x3 rotation and a translation (mm)."""
        r = np.asarray(rotation, dtype=np.float64)
        t = np.asarray(translation_mm, dtype=np.float64).reshape(-1)
        if r.shape != (3, 3):
            raise InputError(f"rotation must be 3x3, got shape {r.shape}")
        if t.shape != (3,):
            raise InputError(f"translation_mm must have 3 values, got shape {t.shape}")
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = r, t
        return cls(m, to_frame, from_frame)

    @classmethod
    def from_matrix(cls, matrix: object, to_frame: str, from_frame: str,
                    orthonormalize: bool = False) -> RigidTransform:
        """From a 4x4 matrix; ``orthonormalize`` projects a slightly-off rotation onto SO(3)."""
        m = _as_matrix(matrix)
        if orthonormalize:
            u, _, vt = np.linalg.svd(m[:3, :3])
            d = np.sign(np.linalg.det(u @ vt))
            m[:3, :3] = u @ np.diag([1.0, 1.0, d]) @ vt
        return cls(m, to_frame, from_frame)

    @classmethod
    def from_quaternion(cls, quaternion_wxyz: object, translation_mm: object, to_frame: str,
                        from_frame: str) -> RigidTransform:
        """From a scalar-first unit quaternion ``(w, x, y, z)`` and a translation (mm)."""
        q = np.asarray(quaternion_wxyz, dtype=np.float64).reshape(-1)
        if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
            raise InputError(f"quaternion_wxyz must be 4 finite values, not all zero, got {q}")
        return cls.from_rt(_quaternion_to_matrix(q), translation_mm, to_frame, from_frame)

    @classmethod
    def from_rotvec(cls, rotvec_rad: object, translation_mm: object, to_frame: str,
                    from_frame: str) -> RigidTransform:
        """From a rotation vector (axis times angle, radians) and a translation (mm)."""
        v = np.asarray(rotvec_rad, dtype=np.float64).reshape(-1)
        if v.shape != (3,) or not np.all(np.isfinite(v)):
            raise InputError(f"rotvec_rad must be 3 finite values, got {v}")
        return cls.from_rt(_rotvec_to_matrix(v), translation_mm, to_frame, from_frame)

    @classmethod
    def from_euler(cls, seq: str, angles: Sequence[float], translation_mm: object,
                   to_frame: str, from_frame: str, degrees: bool = True) -> RigidTransform:
        """From Tait-Bryan angles, scipy's convention.

        ``seq`` in upper case is intrinsic (``"XYZ"``: R = Rx(a) Ry(b) Rz(c)), in lower case
        extrinsic (``"xyz"``: R = Rz(c) Ry(b) Rx(a)).
        """
        axes, intrinsic = _parse_euler_seq(seq)
        a = np.asarray(angles, dtype=np.float64).reshape(-1)
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise InputError(f"angles must be 3 finite values, got {a}")
        if degrees:
            a = np.radians(a)
        mats = [_axis_rotation(ax, ang) for ax, ang in zip(axes, a)]
        r = mats[0] @ mats[1] @ mats[2] if intrinsic else mats[2] @ mats[1] @ mats[0]
        return cls.from_rt(r, translation_mm, to_frame, from_frame)

    @classmethod
    def from_dict(cls, data: dict) -> RigidTransform:
        """From ``{"to": str, "from": str, "matrix": 4x4}`` (see :meth:`to_dict`)."""
        try:
            m = _as_matrix(data["matrix"], "matrix")
            r = m[:3, :3]
            # Re-project rounding noise of a text round trip, never a matrix that is not rigid.
            small = float(np.max(np.abs(r.T @ r - np.eye(3)))) < 1e-3 and np.linalg.det(r) > 0
            return cls.from_matrix(m, data["to"], data["from"], orthonormalize=small)
        except (KeyError, TypeError) as exc:
            raise InputError(f"transform dict needs 'to', 'from' and 'matrix', got {data!r}") \
                from exc

    # ----------------------------------------------------------------- views
    @property
    def to_frame(self) -> str:
        return self._to

    @property
    def from_frame(self) -> str:
        return self._from

    @property
    def name(self) -> str:
        """``"T_<to>_from_<from>"``."""
        return f"T_{self._to}_from_{self._from}"

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) rotation matrix (a copy)."""
        return self._m[:3, :3].copy()

    @property
    def translation_mm(self) -> np.ndarray:
        """(3,) translation in mm (a copy)."""
        return self._m[:3, 3].copy()

    @property
    def angle_deg(self) -> float:
        """Rotation angle in degrees."""
        return rotation_angle_deg(self._m)

    def as_matrix(self) -> np.ndarray:
        """(4, 4) float64 matrix (a writable copy)."""
        return self._m.copy()

    def as_quaternion(self) -> np.ndarray:
        """Scalar-first unit quaternion ``(w, x, y, z)``, canonical sign: ``w >= 0`` (and the
        first non-zero of x, y, z positive when ``w == 0``)."""
        return _matrix_to_quaternion(self._m[:3, :3])

    def as_rotvec(self) -> np.ndarray:
        """Rotation vector in radians (axis times angle)."""
        q = self.as_quaternion()
        s = np.linalg.norm(q[1:])
        if s < 1e-12:
            return 2.0 * q[1:]
        angle = 2.0 * math.atan2(s, q[0])
        return q[1:] / s * angle

    def as_euler(self, seq: str, degrees: bool = True) -> np.ndarray:
        """Tait-Bryan angles for ``seq`` (see :meth:`from_euler`)."""
        axes, intrinsic = _parse_euler_seq(seq)
        if not intrinsic:  # extrinsic xyz == intrinsic ZYX with reversed angles
            axes = axes[::-1]
        i, j, k = axes
        e = 1.0 if (i, j, k) in [(0, 1, 2), (1, 2, 0), (2, 0, 1)] else -1.0
        r = self._m[:3, :3]
        # cos(b) from the row it scales, not from 1 - sin^2: near gimbal lock (b ~ +-90 deg)
        # asin loses half the digits and a threshold on sin(b) (1e-9) left cos(b) ~ 1e-7
        # unresolved, 1e-7 off in the matrix.
        cb = math.hypot(r[i, i], r[i, j])
        b = math.atan2(e * r[i, k], cb)
        if cb < 1e-12:  # gimbal lock: fold the third angle into the first
            a = math.atan2(e * r[k, j], r[j, j])
            c = 0.0
        else:
            a = math.atan2(-e * r[j, k], r[k, k])
            c = math.atan2(-e * r[i, j], r[i, i])
        out = np.array([a, b, c])
        if not intrinsic:
            out = out[::-1]
        return np.degrees(out) if degrees else out

    def to_dict(self) -> dict:
        """JSON-ready ``{"to": str, "from": str, "matrix": 4x4 list}``."""
        return {"to": self._to, "from": self._from, "matrix": self._m.tolist()}

    # ----------------------------------------------------------------- algebra
    def inv(self) -> RigidTransform:
        """The inverse ``T_<from>_from_<to>``, in closed form (R^T, -R^T t)."""
        r = self._m[:3, :3]
        m = np.eye(4)
        m[:3, :3] = r.T
        m[:3, 3] = -r.T @ self._m[:3, 3]
        return RigidTransform(m, self._from, self._to, atol=1e-3)

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        if not isinstance(other, RigidTransform):
            return NotImplemented
        if self._from != other._to:
            raise FrameMismatchError(
                f"cannot compose {self.name} @ {other.name}: '{self._from}' != '{other._to}'")
        m = self._m @ other._m
        # Re-orthonormalize so long chains do not drift out of SO(3).
        u, _, vt = np.linalg.svd(m[:3, :3])
        m[:3, :3] = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
        return RigidTransform(m, self._to, other._from)

    def apply(self, points: object) -> np.ndarray:
        """Map points of ``from_frame`` into ``to_frame``.

        Parameters
        ----------
        points : array_like, (N, 3) or (3,)
            Points in mm, in ``from_frame``.

        Returns
        -------
        numpy.ndarray, same shape, float64, in ``to_frame``.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.shape == (3,):
            return self._m[:3, :3] @ p + self._m[:3, 3]
        if p.ndim != 2 or p.shape[1] != 3:
            raise InputError(f"points must be (N, 3), got {p.shape}")
        return p @ self._m[:3, :3].T + self._m[:3, 3]

    def apply_vectors(self, vectors: object) -> np.ndarray:
        """Rotate direction vectors (no translation); (N, 3) or (3,)."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.shape == (3,):
            return self._m[:3, :3] @ v
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"vectors must be (N, 3), got {v.shape}")
        return v @ self._m[:3, :3].T

    def distance_to(self, other: RigidTransform) -> tuple[float, float]:
        """(rotation difference in degrees, translation difference in mm) to ``other``."""
        d = self._m[:3, :3].T @ other._m[:3, :3]
        return rotation_angle_deg(d), float(np.linalg.norm(self._m[:3, 3] - other._m[:3, 3]))

    def isclose(self, other: RigidTransform, atol_mm: float = 1e-6,
                atol_deg: float = 1e-6) -> bool:
        """Same frames and within ``atol_deg`` / ``atol_mm`` of each other."""
        if not isinstance(other, RigidTransform):
            return False
        if (self._to, self._from) != (other._to, other._from):
            return False
        ddeg, dmm = self.distance_to(other)
        return ddeg <= atol_deg and dmm <= atol_mm

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RigidTransform):
            return NotImplemented
        return self.isclose(other, atol_mm=1e-9 * max(1.0, float(np.abs(self._m).max())),
                            atol_deg=1e-7)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        rv = np.degrees(self.as_rotvec())
        t = self._m[:3, 3]
        return (f"{self.name}(angle={self.angle_deg:.3f} deg, "
                f"rotvec_deg=[{rv[0]:.3f}, {rv[1]:.3f}, {rv[2]:.3f}], "
                f"translation_mm=[{t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}])")

    def __reduce__(self):
        return (RigidTransform, (self._m.copy(), self._to, self._from))


@dataclass(frozen=True)
class _Edge:
    transform: RigidTransform
    timestamp_s: float | None


class FrameGraph:
    """A graph of frames linked by timestamped rigid transforms.

    Edges are stored once; the inverse direction is computed on request. :meth:`get` finds
    the shortest chain between two frames (breadth-first) and composes it.

    Examples
    --------
    >>> g = FrameGraph()
    >>> g.add(RigidTransform.identity("world", "sensor"))
    >>> g.add(RigidTransform.identity("sensor", "ct"))
    >>> g.get("world", "ct").name
    'T_world_from_ct'
    """

    def __init__(self, transforms: Iterable[RigidTransform] = ()):
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._adj: dict[str, set[str]] = {}
        for t in transforms:
            self.add(t)

    def add(self, transform: RigidTransform, timestamp_s: float | None = None) -> None:
        """Add or replace the edge between ``transform.to_frame`` and ``from_frame``."""
        if not isinstance(transform, RigidTransform):
            raise InputError(f"transform must be a RigidTransform, got {type(transform).__name__}")
        a, b = transform.to_frame, transform.from_frame
        if a == b:
            raise InputError(f"transform {transform.name} links a frame to itself")
        self._edges.pop((b, a), None)
        self._edges[(a, b)] = _Edge(transform, timestamp_s)
        self._adj.setdefault(a, set()).add(b)
        self._adj.setdefault(b, set()).add(a)

    update = add

    def remove(self, to_frame: str, from_frame: str) -> None:
        """Remove the edge between the two frames (either direction)."""
        if self._edges.pop((to_frame, from_frame), None) is None and \
                self._edges.pop((from_frame, to_frame), None) is None:
            raise FrameNotConnectedError(f"no edge between '{to_frame}' and '{from_frame}'")
        self._adj[to_frame].discard(from_frame)
        self._adj[from_frame].discard(to_frame)

    @property
    def frames(self) -> list[str]:
        return sorted(self._adj)

    @property
    def edges(self) -> list[RigidTransform]:
        return [e.transform for e in self._edges.values()]

    def __contains__(self, frame: str) -> bool:
        return frame in self._adj

    def _direct(self, to_frame: str, from_frame: str) -> RigidTransform:
        e = self._edges.get((to_frame, from_frame))
        if e is not None:
            return e.transform
        return self._edges[(from_frame, to_frame)].transform.inv()

    def timestamp(self, to_frame: str, from_frame: str) -> float | None:
        """Timestamp (s) of the direct edge between the two frames."""
        e = self._edges.get((to_frame, from_frame)) or self._edges.get((from_frame, to_frame))
        if e is None:
            raise FrameNotConnectedError(f"no edge between '{to_frame}' and '{from_frame}'")
        return e.timestamp_s

    def path(self, to_frame: str, from_frame: str) -> list[str]:
        """Frames on the shortest chain from ``from_frame`` to ``to_frame`` (both included)."""
        for f in (to_frame, from_frame):
            if f not in self._adj:
                raise FrameNotConnectedError(
                    f"cannot get T_{to_frame}_from_{from_frame}: frame '{f}' is not in the graph "
                    f"(frames: {', '.join(self.frames) or 'none'})")
        prev: dict[str, str | None] = {from_frame: None}
        queue = deque([from_frame])
        while queue:
            f = queue.popleft()
            if f == to_frame:
                break
            for n in sorted(self._adj[f]):
                if n not in prev:
                    prev[n] = f
                    queue.append(n)
        if to_frame not in prev:
            raise FrameNotConnectedError(
                f"frames '{to_frame}' and '{from_frame}' are not connected")
        chain = [to_frame]
        while chain[-1] != from_frame:
            chain.append(prev[chain[-1]])  # type: ignore[arg-type]
        return chain[::-1]

    def get(self, to_frame: str, from_frame: str) -> RigidTransform:
        """``T_<to>_from_<from>`` composed along the shortest chain."""
        if to_frame == from_frame:
            if to_frame not in self._adj:
                raise FrameNotConnectedError(f"frame '{to_frame}' is not in the graph")
            return RigidTransform.identity(to_frame, from_frame)
        chain = self.path(to_frame, from_frame)
        t = self._direct(chain[1], chain[0])
        for a, b in zip(chain[1:-1], chain[2:]):
            t = self._direct(b, a) @ t
        return t

    def inconsistencies(self, atol_mm: float = 0.1, atol_deg: float = 0.1
                        ) -> list[tuple[str, str, float, float]]:
        """Edges that disagree with the chain through the rest of the graph.

        Returns
        -------
        list of (to_frame, from_frame, rotation error deg, translation error mm), one per
        edge whose direct transform differs from the spanning-tree path by more than the
        tolerances.
        """
        tree: dict[str, str | None] = {}
        tree_edges: set[frozenset[str]] = set()
        for root in self.frames:
            if root in tree:
                continue
            tree[root] = None
            queue = deque([root])
            while queue:
                f = queue.popleft()
                for n in sorted(self._adj[f]):
                    if n not in tree:
                        tree[n] = f
                        tree_edges.add(frozenset((f, n)))
                        queue.append(n)
        sub = FrameGraph()
        for (a, b), e in self._edges.items():
            if frozenset((a, b)) in tree_edges:
                sub.add(e.transform)
        bad = []
        for (a, b), e in self._edges.items():
            if frozenset((a, b)) in tree_edges:
                continue
            ddeg, dmm = e.transform.distance_to(sub.get(a, b))
            if ddeg > atol_deg or dmm > atol_mm:
                bad.append((a, b, ddeg, dmm))
        return bad

    def check_consistency(self, atol_mm: float = 0.1, atol_deg: float = 0.1) -> None:
        """Raise :class:`FrameInconsistencyError` when a cycle of edges does not close."""
        bad = self.inconsistencies(atol_mm, atol_deg)
        if bad:
            a, b, ddeg, dmm = bad[0]
            raise FrameInconsistencyError(
                f"frame graph cycle through T_{a}_from_{b} does not close: "
                f"{ddeg:.3f} deg, {dmm:.3f} mm (tolerance {atol_deg} deg, {atol_mm} mm)")

    def to_dict(self) -> dict:
        """JSON-ready ``{"edges": [{"to", "from", "matrix", "timestamp_s"}, ...]}``."""
        return {"edges": [dict(e.transform.to_dict(), timestamp_s=e.timestamp_s)
                          for e in self._edges.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> FrameGraph:
        g = cls()
        for e in data.get("edges", []):
            g.add(RigidTransform.from_dict(e), e.get("timestamp_s"))
        return g

    def __repr__(self) -> str:
        names = ", ".join(e.transform.name for e in self._edges.values())
        return f"FrameGraph({names})"
