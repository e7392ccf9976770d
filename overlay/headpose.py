"""Head-pose trajectories of a surgeon looking at the wound (seeded), and their JSON files.

World frame used by the simulations: millimetres, z up (against gravity), the wound at
``wound_world_mm``. The head frame has x right, y down, z forward (the gaze direction).

Kinds (:data:`TRAJECTORIES`):

- ``static``: one pose, no motion (a reference).
- ``standing``: standing at the table looking down at the wound: postural sway (0.1-0.4 Hz,
  a few mm), gaze drifting over the wound with small fixation shifts, physiological jitter.
- ``leaning``: leaning in towards the wound and back up (minimum-jerk, 0.55 -> 0.35 m).
- ``wound_screen``: looking between the wound and a navigation screen with saccade-like head
  turns (minimum-jerk, 0.35-0.6 s, peak head speed 100-200 deg/s).

Files: a single pose ``{"T_world_from_head": 4x4, "T_world_from_sensor": 4x4}`` or a trajectory
``{"poses": [{"timestamp_s": t, "T_world_from_head": 4x4}], "T_world_from_sensor": 4x4}``
(DESIGN.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arspine.atomic import atomic_write_json
from arspine.errors import InputError
from arspine.jsonfile import read_json
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import as_matrix4

__all__ = [
    "HeadTrajectory",
    "TRAJECTORIES",
    "simulate_head_trajectory",
    "look_at",
    "load_head_poses",
    "default_T_world_from_sensor",
]

TRAJECTORIES = ("static", "standing", "leaning", "wound_screen")


def look_at(eye_world_mm: object, target_world_mm: object,
            up_world: object = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_from_head`` (4, 4) of a head at ``eye_world_mm`` looking at the target.

    Head z points at the target, head y (image down) along ``-up`` projected off the gaze.
    """
    eye = np.asarray(eye_world_mm, dtype=np.float64).reshape(3)
    z = np.asarray(target_world_mm, dtype=np.float64).reshape(3) - eye
    if np.linalg.norm(z) < 1e-9:
        raise InputError("look_at: eye and target are the same point")
    z /= np.linalg.norm(z)
    y = -np.asarray(up_world, dtype=np.float64).reshape(3)
    y = y - z * (y @ z)
    if np.linalg.norm(y) < 1e-9:  # looking straight along up: any horizontal y will do
        y = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    y /= np.linalg.norm(y)
    m = np.eye(4)
    m[:3, :3] = np.stack([np.cross(y, z), y, z], axis=1)
    m[:3, 3] = eye
    return m


def default_T_world_from_sensor() -> RigidTransform:
    """A depth sensor at the world origin looking straight down (sensor z = world -z)."""
    return RigidTransform.from_rt(np.diag([1.0, -1.0, -1.0]), [0.0, 0.0, 0.0], "world",
                                  "sensor")


def _rotations(mats: np.ndarray):
    from scipy.spatial.transform import Rotation
    return Rotation.from_matrix(mats[:, :3, :3])


@dataclass(frozen=True)
class HeadTrajectory:
    """Timestamped head poses ``T_world_from_head``.

    Attributes
    ----------
    timestamps_s : (N,) float64, strictly increasing seconds.
    T_world_from_head : (N, 4, 4) float64, mm.
    T_world_from_sensor : (4, 4) float64 or None
        Where the depth sensor sits in the world (links registration to the room).
    name : str
    meta : dict
        Simulation parameters (kind, seed, rate, wound position...).
    """

    timestamps_s: np.ndarray
    T_world_from_head: np.ndarray
    T_world_from_sensor: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        t = np.asarray(self.timestamps_s, dtype=np.float64).reshape(-1)
        m = np.asarray(self.T_world_from_head, dtype=np.float64)
        if m.ndim != 3 or m.shape[1:] != (4, 4):
            raise InputError(f"T_world_from_head must be (N, 4, 4), got {m.shape}")
        if len(t) != len(m) or len(t) == 0:
            raise InputError(f"timestamps_s ({len(t)}) and T_world_from_head ({len(m)}) must "
                             f"have the same non-zero length")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(m))):
            raise InputError("head trajectory has NaN or inf")
        if len(t) > 1 and np.any(np.diff(t) <= 0):
            raise InputError("timestamps_s must be strictly increasing")
        r = m[:, :3, :3]
        err = np.abs(np.einsum("nji,njk->nik", r, r) - np.eye(3)).max()
        if err > 1e-4:
            raise InputError(f"T_world_from_head rotations are not orthonormal "
                             f"(max |R^T R - I| = {err:.2e})")
        object.__setattr__(self, "timestamps_s", t)
        object.__setattr__(self, "T_world_from_head", m)
        if self.T_world_from_sensor is not None:
            s = self.T_world_from_sensor
            s = s.as_matrix() if isinstance(s, RigidTransform) else as_matrix4(
                s, "T_world_from_sensor")
            object.__setattr__(self, "T_world_from_sensor", s)

    def __len__(self) -> int:
        return len(self.timestamps_s)

    @property
    def duration_s(self) -> float:
        return float(self.timestamps_s[-1] - self.timestamps_s[0])

    @property
    def rate_hz(self) -> float:
        """Mean sample rate (0 for a single pose)."""
        return 0.0 if len(self) < 2 else (len(self) - 1) / self.duration_s

    def pose(self, i: int) -> RigidTransform:
        """Sample ``i`` as a ``T_world_from_head`` RigidTransform."""
        return RigidTransform.from_matrix(self.T_world_from_head[i], "world", "head",
                                          orthonormalize=True)

    def sensor_pose(self) -> RigidTransform:
        """``T_world_from_sensor`` (the default downward sensor when the file has none)."""
        if self.T_world_from_sensor is None:
            return default_T_world_from_sensor()
        return RigidTransform.from_matrix(self.T_world_from_sensor, "world", "sensor",
                                          orthonormalize=True)

    def poses_at(self, times_s: object) -> np.ndarray:
        """(M, 4, 4) poses at arbitrary times: linear in position, slerp in rotation;
        clamped to the first/last sample outside the recorded span."""
        from scipy.spatial.transform import Slerp

        tq = np.clip(np.atleast_1d(np.asarray(times_s, dtype=np.float64)),
                     self.timestamps_s[0], self.timestamps_s[-1])
        if len(self) == 1:
            return np.repeat(self.T_world_from_head, len(tq), axis=0)
        out = np.zeros((len(tq), 4, 4))
        out[:, 3, 3] = 1.0
        out[:, :3, :3] = Slerp(self.timestamps_s, _rotations(self.T_world_from_head))(
            tq).as_matrix()
        for k in range(3):
            out[:, k, 3] = np.interp(tq, self.timestamps_s, self.T_world_from_head[:, k, 3])
        return out

    def pose_at(self, time_s: float) -> RigidTransform:
        """The interpolated pose at ``time_s`` (see :meth:`poses_at`)."""
        return RigidTransform.from_matrix(self.poses_at([time_s])[0], "world", "head",
                                          orthonormalize=True)

    def speeds(self) -> tuple[np.ndarray, np.ndarray]:
        """Head speed per sample: (linear mm/s of the head origin, angular deg/s)."""
        if len(self) < 2:
            return np.zeros(len(self)), np.zeros(len(self))
        dt = np.diff(self.timestamps_s)
        lin = np.linalg.norm(np.diff(self.T_world_from_head[:, :3, 3], axis=0), axis=1) / dt
        rots = _rotations(self.T_world_from_head)
        ang = np.degrees((rots[1:] * rots[:-1].inv()).magnitude()) / dt
        return np.append(lin, lin[-1]), np.append(ang, ang[-1])

    def to_dict(self) -> dict:
        """The trajectory file of DESIGN.md (plus ``name`` and ``meta``)."""
        d: dict = {"poses": [{"timestamp_s": float(t), "T_world_from_head": m.tolist()}
                             for t, m in zip(self.timestamps_s, self.T_world_from_head)]}
        if self.T_world_from_sensor is not None:
            d["T_world_from_sensor"] = self.T_world_from_sensor.tolist()
        d["name"] = self.name
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "head pose") -> HeadTrajectory:
        """From a trajectory dict or a single-pose dict (``{"T_world_from_head": ...}``)."""
        if not isinstance(data, dict):
            raise InputError(f"{source} must be a JSON object, got {type(data).__name__}")
        sensor = data.get("T_world_from_sensor")
        if sensor is not None:
            sensor = _checked_rigid(sensor, f"{source}: T_world_from_sensor")
        if "poses" in data:
            poses = data["poses"]
            if not isinstance(poses, list) or not poses:
                raise InputError(f"{source}: 'poses' must be a non-empty list")
            try:
                t = [float(p["timestamp_s"]) for p in poses]
                m = [_checked_rigid(p["T_world_from_head"],
                                    f"{source}: poses[{i}].T_world_from_head")
                     for i, p in enumerate(poses)]
            except (KeyError, TypeError) as exc:
                raise InputError(f"{source}: each pose needs 'timestamp_s' and "
                                 f"'T_world_from_head' ({exc})") from None
            return cls(np.array(t), np.array(m), sensor, str(data.get("name", "")),
                       dict(data.get("meta", {})))
        if "T_world_from_head" in data:
            m = _checked_rigid(data["T_world_from_head"], f"{source}: T_world_from_head")
            return cls(np.zeros(1), m[None], sensor, str(data.get("name", "pose")), {})
        raise InputError(f"{source} needs 'T_world_from_head' or 'poses', got keys "
                         f"{sorted(data)}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file atomically."""
        return atomic_write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadTrajectory:
        """Read a head-pose or trajectory JSON file."""
        return load_head_poses(path)


def _checked_rigid(m: object, name: str) -> np.ndarray:
    """A rigid 4x4; rotations off SO(3) by < 1e-3 (float32 writers) are re-orthonormalised."""
    a = as_matrix4(m, name)
    r = a[:3, :3]
    err = float(np.abs(r.T @ r - np.eye(3)).max())
    if err > 1e-3 or np.linalg.det(r) < 0:
        raise InputError(f"{name} is not a rigid transform (max |R^T R - I| = {err:.2e}, "
                         f"det {np.linalg.det(r):.3f})")
    try:
        return RigidTransform.from_matrix(a, "a", "b", orthonormalize=True).as_matrix()
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


def load_head_poses(path: str | os.PathLike) -> HeadTrajectory:
    """Read ``--head-pose`` JSON: a single pose (a one-sample trajectory) or a trajectory.

    Raises
    ------
    InputError
        Missing file, broken JSON or wrong content (message names the file).
    """
    path = Path(path)
    data = read_json(path, "head pose file")
    try:
        return HeadTrajectory.from_dict(data, source=str(path))
    except InputError as exc:
        msg = str(exc)
        raise InputError(msg if str(path) in msg else f"{path}: {msg}") from None


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    tau = np.clip(tau, 0.0, 1.0)
    return tau ** 3 * (10 - 15 * tau + 6 * tau ** 2)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, rms: float, f_lo: float,
                  f_hi: float, n: int = 12) -> np.ndarray:
    """Band-limited (f_lo..f_hi Hz, 1/f amplitudes) smooth noise with the given RMS."""
    f = np.exp(rng.uniform(math.log(f_lo), math.log(f_hi), n))
    a = 1.0 / f
    ph = rng.uniform(0, 2 * math.pi, n)
    x = (a[None] * np.sin(2 * math.pi * f[None] * t[:, None] + ph[None])).sum(axis=1)
    s = float(np.sqrt(np.mean(x ** 2))) or 1.0
    return x * (rms / s)


def simulate_head_trajectory(kind: str = "standing", duration_s: float = 10.0,
                             rate_hz: float = 90.0, seed: int = 0,
                             wound_world_mm: object = (0.0, 0.0, -600.0),
                             distance_mm: float = 500.0, elevation_deg: float = 60.0,
                             azimuth_deg: float = -90.0, jitter_mm: float = 0.8,
                             jitter_deg: float = 0.25,
                             T_world_from_sensor: RigidTransform | np.ndarray | None = None
                             ) -> HeadTrajectory:
    """A seeded head trajectory of a surgeon looking at the wound.

    Parameters
    ----------
    kind : one of :data:`TRAJECTORIES`
    duration_s : float, seconds; rate_hz : float, 60..1000 samples per second.
    seed : int
    wound_world_mm : (3,) the wound in the world frame (z up), mm. The default sits 600 mm
        below the default sensor (:func:`default_T_world_from_sensor`).
    distance_mm : eye-to-wound distance, mm.
    elevation_deg : gaze angle below horizontal; azimuth_deg: direction from the wound to the
        surgeon in the horizontal plane (-90: the surgeon stands on the -y side).
    jitter_mm, jitter_deg : RMS of physiological head jitter (1-8 Hz).
    T_world_from_sensor : stored in the trajectory (default: the downward sensor).

    Returns
    -------
    HeadTrajectory
    """
    if kind not in TRAJECTORIES:
        raise InputError(f"kind must be one of {TRAJECTORIES}, got {kind!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration_s must be > 0, got {duration_s!r}")
    if not (math.isfinite(rate_hz) and 1.0 <= rate_hz <= 1000.0):
        raise InputError(f"rate_hz must be in 1..1000, got {rate_hz!r}")
    if not (math.isfinite(distance_mm) and distance_mm > 50):
        raise InputError(f"distance_mm must be > 50, got {distance_mm!r}")
    rng = np.random.default_rng(seed)
    wound = np.asarray(wound_world_mm, dtype=np.float64).reshape(3)
    n = int(round(duration_s * rate_hz)) + 1
    t = np.arange(n) / rate_hz
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    back = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    dist = np.full(n, float(distance_mm))
    gaze = np.repeat(wound[None], n, axis=0)
    sway = np.zeros((n, 3))
    if kind != "static":
        for k in range(3):  # postural sway
            sway[:, k] = _smooth_noise(rng, t, 4.0 if k < 2 else 1.5, 0.1, 0.4, 6)
        for k in range(3):  # gaze drifting over the wound
            gaze[:, k] += _smooth_noise(rng, t, 8.0, 0.05, 0.3, 6)
        # fixation shifts: small saccade-like jumps of the gaze point every 1-3 s
        tk = rng.uniform(0.5, 2.0)
        while tk < duration_s:
            jump = rng.normal(0.0, 12.0, 3)
            gaze += jump[None] * _min_jerk((t - tk) / rng.uniform(0.15, 0.3))[:, None]
            tk += rng.uniform(1.0, 3.0)
    if kind == "leaning":
        period = min(duration_s, 6.0)
        for start in np.arange(0.5, duration_s, period):
            lean = _min_jerk((t - start) / 1.2) - _min_jerk((t - start - period / 2) / 1.2)
            dist -= (distance_mm - 0.7 * distance_mm) * lean
    head = wound[None] + back[None] * dist[:, None] + sway
    mats = np.stack([look_at(head[i], gaze[i]) for i in range(n)])
    if kind == "wound_screen":
        from scipy.spatial.transform import Rotation
        # a screen at eye height, 1.2 m away and 60 deg to the side of the wound direction
        horiz = np.array([-math.cos(az), -math.sin(az), 0.0])
        side = np.array([-horiz[1], horiz[0], 0.0])
        screen = head[0] + 1200.0 * (math.cos(math.radians(60)) * horiz
                                     + math.sin(math.radians(60)) * side)
        w = np.zeros(n)
        tk, at_wound = rng.uniform(1.0, 2.0), True
        while tk < duration_s:
            dur = rng.uniform(0.5, 0.8)
            step = _min_jerk((t - tk) / dur)
            w = w + step if at_wound else w - step
            at_wound = not at_wound
            tk += dur + (rng.uniform(1.5, 3.0) if not at_wound else rng.uniform(0.6, 1.5))
        r_wound = Rotation.from_matrix(mats[:, :3, :3])
        r_screen = Rotation.from_matrix(np.stack([look_at(head[i], screen)[:3, :3]
                                                  for i in range(n)]))
        delta = (r_wound.inv() * r_screen).as_rotvec()
        mats[:, :3, :3] = (r_wound * Rotation.from_rotvec(delta * w[:, None])).as_matrix()
    if kind != "static" and (jitter_mm > 0 or jitter_deg > 0):
        from scipy.spatial.transform import Rotation
        rv = np.stack([_smooth_noise(rng, t, math.radians(jitter_deg) / math.sqrt(3), 1.0, 8.0)
                       for _ in range(3)], axis=1)
        mats[:, :3, :3] = mats[:, :3, :3] @ Rotation.from_rotvec(rv).as_matrix()
        for k in range(3):
            mats[:, k, 3] += _smooth_noise(rng, t, jitter_mm / math.sqrt(3), 1.0, 8.0)
    sensor = T_world_from_sensor if T_world_from_sensor is not None \
        else default_T_world_from_sensor()
    meta = {"kind": kind, "duration_s": duration_s, "rate_hz": rate_hz, "seed": seed,
            "wound_world_mm": wound.tolist(), "distance_mm": distance_mm,
            "elevation_deg": elevation_deg, "azimuth_deg": azimuth_deg,
            "jitter_mm": jitter_mm, "jitter_deg": jitter_deg}
    return HeadTrajectory(t, mats, sensor, name=kind, meta=meta)
