"""Depth-sensor simulation of the exposed spine: ray casting with realistic errors and truth.

:func:`simulate_scan` poses every vertebra rigidly away from its CT pose (posture change,
correlated between neighbours), builds the surgical scene (:mod:`arspine.datasets.scene`),
places the sensor above the prone patient's back (distance, tilt, any roll) and casts one ray
per pixel with ``open3d.t.geometry.RaycastingScene``. Then the sensor's errors are applied:
range noise growing with distance, dropouts at grazing incidence and at random, flying pixels
at depth edges, and random outliers. Every point keeps the label of what it hit
(``PointCloud.labels``, codes in :data:`arspine.datasets.scene.LABELS`).

Frames: ``ct`` (the CT, LPS mm), ``patient`` (the intraoperative scene: the CT space with
each vertebra moved), ``sensor`` (x right, y down, z forward, mm). Truth per level:
``T_sensor_from_ct = T_sensor_from_patient @ T_patient_from_ct[level]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from arspine.datasets.anatomy import Anatomy, estimate_axes, sort_levels
from arspine.datasets.scene import LABELS, SceneConfig, SceneMesh, build_scene, label_names
from arspine.datasets.sensors import SensorModel, get_sensor
from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh, PointCloud

__all__ = ["MOTION_PRESETS", "SimulatedScan", "SimulatedSequence", "simulate_scan",
           "simulate_sequence", "draw_sensor_pose", "draw_vertebra_motion", "as_anatomy"]

#: Per-level rigid motion vs. the CT (std of rotation deg, translation mm, neighbour
#: correlation). Prone vs. supine posture changes segmental angles by a few degrees
#: (lordosis changes of ~5-10 deg over L1-S1) and vertebrae move ~2 mm relative to each other.
MOTION_PRESETS: dict[str, tuple[float, float, float]] = {
    "none": (0.0, 0.0, 0.0),
    "small": (1.0, 0.7, 0.6),
    "moderate": (2.5, 1.5, 0.6),
    "large": (5.0, 3.5, 0.5),
}


@dataclass
class SimulatedScan:
    """One simulated scan with its ground truth.

    Attributes
    ----------
    cloud : PointCloud
        Points in the ``sensor`` frame (mm); ``labels`` = what each point hit.
    truth : dict[str, RigidTransform]
        ``T_sensor_from_ct`` per vertebra (every level of the anatomy).
    targets_ct_mm : dict[str, (K, 3) ndarray]
        TRE targets per exposed level in ``ct`` mm (screw entry/tip per pedicle, interior
        points, centroid).
    exposed_levels : list[str]
    T_sensor_from_patient : RigidTransform
    T_patient_from_ct : dict[str, RigidTransform]
        Per-level posture change.
    sensor : SensorModel
    depth_mm : (H, W) float64
        The image the cloud was made from, mm (NaN = no return): z-depth per pixel for a
        camera (``depth_to_points(depth_mm, sensor.K)`` gives ``cloud.points`` back in the
        same order), range per sample for a LiDAR.
    config : dict
        Everything needed to describe the draw (seed, motion, fractions).
    """

    cloud: PointCloud
    truth: dict[str, RigidTransform]
    targets_ct_mm: dict[str, np.ndarray]
    exposed_levels: list[str]
    T_sensor_from_patient: RigidTransform
    T_patient_from_ct: dict[str, RigidTransform]
    sensor: SensorModel
    depth_mm: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    timestamp_s: float = 0.0

    @property
    def label_names(self) -> dict[int, str]:
        """``{code: name}`` of the labels present."""
        return label_names(self.cloud.labels) if len(self.cloud) else {}

    def fraction(self, what: str) -> float:
        """Fraction of points labelled ``what`` (``"bone"``, ``"outlier"``, ``"skin"``, a
        level such as ``"L3"``, ...)."""
        from arspine.datasets.scene import bone_label, is_bone

        lab = self.cloud.labels
        if len(lab) == 0:
            return 0.0
        if what == "bone":
            return float(np.mean(is_bone(lab)))
        code = LABELS[what] if what in LABELS else bone_label(what)
        return float(np.mean(lab == code))


@dataclass
class SimulatedSequence:
    """Frames of a moving scene: one :class:`SimulatedScan` per frame, shared anatomy."""

    frames: list[SimulatedScan]
    frame_rate_hz: float
    config: dict = field(default_factory=dict)

    @property
    def targets_ct_mm(self) -> dict[str, np.ndarray]:
        return self.frames[0].targets_ct_mm


def as_anatomy(source) -> Anatomy:
    """An :class:`Anatomy` from an Anatomy or a ``{level: Mesh}`` dict (axes estimated)."""
    if isinstance(source, Anatomy):
        return source
    if isinstance(source, dict) and source and all(isinstance(m, Mesh) for m in source.values()):
        surfaces = {lv: source[lv] for lv in sort_levels(source)}
        return Anatomy(surfaces=surfaces, axes=estimate_axes(surfaces), source="mesh")
    raise InputError(f"anatomy must be an Anatomy or a non-empty dict of level -> Mesh, got "
                     f"{type(source).__name__}")


def _random_rotvec(rng, sigma_deg: float) -> np.ndarray:
    return np.radians(rng.normal(0.0, sigma_deg, 3))


def draw_vertebra_motion(anatomy: Anatomy, rng: np.random.Generator,
                         motion: str | tuple = "moderate") -> dict[str, RigidTransform]:
    """Per-level rigid posture change ``T_patient_from_ct``, about each vertebra's centroid.

    Rotation (deg) and translation (mm) follow an AR(1) process along the spine so that
    neighbours move alike (correlation ``rho``), as segments of one column do.
    """
    if isinstance(motion, str):
        if motion not in MOTION_PRESETS:
            raise InputError(f"motion must be one of {sorted(MOTION_PRESETS)} or "
                             f"(rot_deg, trans_mm, rho), got {motion!r}")
        motion = MOTION_PRESETS[motion]
    rot_deg, trans_mm, rho = (float(x) for x in motion)
    out = {}
    r_prev = t_prev = None
    for lv in anatomy.levels:
        r_new = _random_rotvec(rng, rot_deg)
        t_new = rng.normal(0.0, trans_mm, 3)
        if r_prev is None:
            r, t = r_new, t_new
        else:
            k = np.sqrt(1 - rho ** 2)
            r, t = rho * r_prev + k * r_new, rho * t_prev + k * t_new
        r_prev, t_prev = r, t
        c = anatomy.centroid(lv)
        Rm = RigidTransform.from_rotvec(r, np.zeros(3), "patient", "ct").rotation
        out[lv] = RigidTransform.from_rt(Rm, c - Rm @ c + t, "patient", "ct")
    return out


def draw_sensor_pose(target: np.ndarray, posterior: np.ndarray, rng: np.random.Generator,
                     distance_mm: float, tilt_deg_max: float = 25.0,
                     roll_deg: float | None = None, aim_jitter_mm: float = 15.0
                     ) -> RigidTransform:
    """``T_sensor_from_patient`` for a sensor above the back looking at ``target``.

    The viewing direction is the anterior direction tilted by up to ``tilt_deg_max`` in a
    random azimuth; roll about the optical axis is uniform in [0, 360) unless given.
    """
    posterior = np.asarray(posterior, float) / np.linalg.norm(posterior)
    tilt = np.radians(rng.uniform(0.0, tilt_deg_max))
    az = rng.uniform(0.0, 2 * np.pi)
    t = np.array([1.0, 0, 0]) if abs(posterior[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(posterior, t)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(posterior, e1)
    up = np.cos(tilt) * posterior + np.sin(tilt) * (np.cos(az) * e1 + np.sin(az) * e2)
    aim = np.asarray(target, float) + rng.normal(0.0, aim_jitter_mm / 2, 3) * 0.7
    position = aim + distance_mm * up
    z = -up
    roll = np.radians(rng.uniform(0, 360) if roll_deg is None else roll_deg)
    x0 = np.cross(z, e2 if abs(np.dot(z, e2)) < 0.9 else e1)
    x0 /= np.linalg.norm(x0)
    y0 = np.cross(z, x0)
    x = np.cos(roll) * x0 + np.sin(roll) * y0
    y = np.cross(z, x)
    R_patient_from_sensor = np.stack([x, y, z], 1)
    return RigidTransform.from_rt(R_patient_from_sensor, position, "patient", "sensor").inv()


def _build_o3d_scene(parts: list[SceneMesh]):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    labels = []
    for p in parts:
        v = np.ascontiguousarray(p.mesh.vertices, dtype=np.float32)
        scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(p.mesh.faces.astype(np.uint32)))
        labels.append(p.label)
    return scene, np.asarray(labels, dtype=np.int32)


def _cast(parts: list[SceneMesh], sensor: SensorModel, T_sensor_from_patient: RigidTransform,
          rng: np.random.Generator, outlier_fraction: float, noise_scale: float,
          dropout_scale: float = 1.0) -> tuple[PointCloud, np.ndarray]:
    import open3d as o3d

    scene, mesh_labels = _build_o3d_scene(parts)
    T_ps = T_sensor_from_patient.inv()
    dirs_s = sensor.ray_directions()  # (H, W, 3) sensor frame
    H, W = dirs_s.shape[:2]
    dirs_p = dirs_s.reshape(-1, 3) @ T_ps.rotation.T
    rays = np.empty((H * W, 6), np.float32)
    rays[:, :3] = T_ps.translation_mm
    rays[:, 3:] = dirs_p
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    t = ans["t_hit"].numpy().astype(np.float64)
    gid = ans["geometry_ids"].numpy()
    nrm = ans["primitive_normals"].numpy().astype(np.float64)
    hit = np.isfinite(t)
    depth_z = np.where(np.isfinite(t), t, 0.0) * dirs_s.reshape(-1, 3)[:, 2]
    hit &= (t >= sensor.min_range_mm) & (t <= sensor.max_range_mm)
    label = np.full(H * W, -1, np.int64)
    label[hit] = mesh_labels[gid[hit]]

    # Grazing incidence: the return weakens with the angle between ray and surface normal.
    cosang = np.abs(np.einsum("ij,ij->i", nrm, dirs_p))
    ang = np.degrees(np.arccos(np.clip(cosang, 0, 1)))
    p_drop = np.clip((ang - sensor.grazing_start_deg)
                     / (sensor.grazing_full_deg - sensor.grazing_start_deg), 0, 1) ** 2
    p_drop = np.minimum(1.0, p_drop * dropout_scale + sensor.dropout_fraction * dropout_scale)
    keep = hit & (rng.random(H * W) >= p_drop)

    # Projector / second-camera shadow: structured light and stereo need the point seen from
    # a second viewpoint one baseline to the side; where that view is blocked there is no
    # depth (the one-sided gaps beside spinous processes, retractor blades and tools).
    if sensor.baseline_mm > 0 and keep.any():
        idx = np.flatnonzero(keep)
        P = rays[idx, :3].astype(np.float64) + t[idx, None] * dirs_p[idx]
        O2 = T_ps.apply(np.array([[sensor.baseline_mm, 0.0, 0.0]]))[0]
        d2 = P - O2
        L = np.linalg.norm(d2, axis=1)
        r2 = np.empty((len(idx), 6), np.float32)
        r2[:, :3] = O2
        r2[:, 3:] = d2 / L[:, None]
        t2 = scene.cast_rays(o3d.core.Tensor(r2))["t_hit"].numpy()
        keep[idx[t2 < L - 1.0]] = False

    # Range noise along the ray, growing with depth.
    sigma = sensor.noise_sigma_mm(depth_z) * noise_scale
    rng_t = np.where(keep, t + rng.normal(0.0, 1.0, H * W) * np.where(keep, sigma, 0.0), np.nan)
    if sensor.disparity_step_px > 0 and sensor.baseline_mm > 0 and noise_scale > 0:
        # Triangulating sensors measure disparity in sub-pixel steps: depth comes in terraces
        # z = f b / d that widen with z^2 (Kinect v1: 1/8 px steps, ~0.7 mm at 0.5 m).
        dz = dirs_s.reshape(-1, 3)[:, 2]
        fb = sensor.K[0, 0] * sensor.baseline_mm
        with np.errstate(invalid="ignore", divide="ignore"):
            disp = fb / (rng_t * dz)
            disp_q = np.maximum(np.round(disp / sensor.disparity_step_px), 1) * \
                sensor.disparity_step_px
            rng_t = np.where(np.isfinite(rng_t), fb / disp_q / dz, np.nan)
    rimg = rng_t.reshape(H, W)

    # Flying pixels: on a depth edge, a return mixing foreground and background.
    fly = np.zeros((H, W), bool)
    mixed = rimg.copy()
    if sensor.flying_pixel_fraction > 0:
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nb = np.full((H, W), np.nan)
            ys = slice(max(dy, 0), H + min(dy, 0))
            yd = slice(max(-dy, 0), H + min(-dy, 0))
            xs_ = slice(max(dx, 0), W + min(dx, 0))
            xd = slice(max(-dx, 0), W + min(-dx, 0))
            nb[yd, xd] = rimg[ys, xs_]
            jump = np.abs(nb - rimg) > sensor.edge_threshold_mm
            cand = jump & ~fly & (rng.random((H, W)) < sensor.flying_pixel_fraction / 2)
            w = rng.random((H, W))
            mixed = np.where(cand, w * rimg + (1 - w) * nb, mixed)
            fly |= cand
    r = mixed.ravel().copy()
    valid = np.isfinite(r)
    lab = label.copy()
    lab[fly.ravel() & valid] = LABELS["flying_pixel"]

    # Random outliers (dust, specular glints, multipath): corrupted pixels anywhere in the
    # image, one value per pixel like a real sensor, so the cloud stays an organised depth
    # image. Walking a random permutation of the pixels, stop where the corrupted ones are
    # exactly ``outlier_fraction`` of the cloud (a corrupted empty pixel adds a point).
    n_valid = int(valid.sum())
    if outlier_fraction > 0 and n_valid:
        perm = rng.permutation(H * W)
        k = np.arange(1, H * W + 1)
        frac = k / (n_valid + np.cumsum(~valid[perm]))
        n_out = int(np.searchsorted(frac, outlier_fraction - 1e-12)) + 1
        idx = perm[:min(n_out, H * W)]
        med = float(np.nanmedian(r))
        r[idx] = rng.uniform(0.4 * med, 1.3 * med, len(idx))
        lab[idx] = LABELS["outlier"]
        valid = np.isfinite(r)
    d = dirs_s.reshape(-1, 3)
    pts = d[valid] * r[valid, None]
    cloud = PointCloud(pts, labels=lab[valid].astype(np.int32), frame="sensor")
    # The image the cloud came from: z-depth for cameras, range for a LiDAR (NaN = none).
    img = r * d[:, 2] if sensor.kind == "pinhole" else r
    return cloud, img.reshape(H, W)


def _check_scales(outlier_fraction, noise_scale, dropout_scale) -> None:
    if not (0.0 <= float(outlier_fraction) < 1.0):
        raise InputError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}")
    for name, v in (("noise_scale", noise_scale), ("dropout_scale", dropout_scale)):
        if not np.isfinite(v) or v < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {v}")


def _exposed_levels(anat: Anatomy, levels) -> list[str]:
    all_levels = anat.levels
    if levels is None:
        n = len(all_levels)
        return all_levels if n <= 3 else all_levels[(n - 3) // 2:(n - 3) // 2 + 3]
    if isinstance(levels, str):
        levels = [s.strip() for s in levels.split(",") if s.strip()]
    exposed = sort_levels(levels)
    missing = [lv for lv in exposed if lv not in all_levels]
    if missing or not exposed:
        raise InputError(f"levels {list(levels)} must be among the anatomy's levels "
                         f"{all_levels}")
    return exposed


def simulate_scan(anatomy, sensor: str | SensorModel = "structured-light", seed: int = 0, *,
                  levels=None, motion: str | tuple = "moderate",
                  outlier_fraction: float = 0.05, noise_scale: float = 1.0,
                  dropout_scale: float = 1.0,
                  scene: SceneConfig | None = None,
                  T_sensor_from_patient: RigidTransform | None = None,
                  T_patient_from_ct: dict[str, RigidTransform] | None = None,
                  distance_mm: float | None = None, tilt_deg_max: float = 25.0,
                  roll_deg: float | None = None) -> SimulatedScan:
    """Simulate one intraoperative depth scan of an exposed spine.

    Parameters
    ----------
    anatomy : Anatomy or dict[str, Mesh]
        Vertebra surfaces in the ``ct`` frame (mm); an :class:`Anatomy` also brings the CT
        skin. A plain dict gets patient axes from :func:`estimate_axes` and a synthetic back.
    sensor : str or SensorModel
        See :data:`arspine.datasets.sensors.SENSORS`.
    seed : int
        Everything random derives from it: same seed, same points.
    levels : sequence of str, optional
        Exposed levels (default: the middle three, or all when there are three or fewer).
    motion : str or (rot_deg, trans_mm, rho)
        Per-level posture change preset (:data:`MOTION_PRESETS`) or explicit stds.
    outlier_fraction : float in [0, 1)
        Fraction of the final cloud that is random outliers.
    noise_scale, dropout_scale : float
        Multipliers of the sensor's range noise and dropout probabilities.
    scene : SceneConfig, optional
        Wound, skin, drapes, retractors, tool; default :class:`SceneConfig`.
    T_sensor_from_patient : RigidTransform, optional
        Explicit sensor pose; drawn around the wound when None.
    T_patient_from_ct : dict, optional
        Explicit per-level posture change (default drawn from ``motion``).
    distance_mm, tilt_deg_max, roll_deg
        Sensor pose draw: distance to the wound (default the sensor's working distance
        x U(0.85, 1.2)), maximum tilt from straight down, roll (default any).

    Returns
    -------
    SimulatedScan
    """
    anat = as_anatomy(anatomy)
    sensor = get_sensor(sensor)
    _check_scales(outlier_fraction, noise_scale, dropout_scale)
    exposed = _exposed_levels(anat, levels)
    setup = _setup(anat, sensor, seed, exposed, motion, scene, T_sensor_from_patient,
                   T_patient_from_ct, distance_mm, tilt_deg_max, roll_deg)
    T_sp = setup["T_sensor_from_patient"]
    cloud, depth = _cast(setup["parts"], sensor, T_sp, setup["rng_sensor"], outlier_fraction,
                         noise_scale, dropout_scale)
    return _result(anat, setup, cloud, depth, T_sp, setup["T_patient_from_ct"], 0.0,
                   outlier_fraction, noise_scale, dropout_scale, motion, seed)


def _setup(anat: Anatomy, sensor: SensorModel, seed: int, exposed: list[str], motion,
           scene: SceneConfig | None, T_sensor_from_patient, T_patient_from_ct, distance_mm,
           tilt_deg_max, roll_deg) -> dict:
    """Posture change, scene meshes and sensor pose of one draw (everything but the cast)."""
    scene_cfg = scene or SceneConfig()
    rng = np.random.default_rng(seed)
    rng_motion, rng_scene, rng_pose, rng_sensor = (np.random.default_rng(s) for s in
                                                   rng.integers(0, 2 ** 63 - 1, 4))
    all_levels = anat.levels
    motion_T = T_patient_from_ct or draw_vertebra_motion(anat, rng_motion, motion)
    missing = [lv for lv in all_levels if lv not in motion_T]
    if missing:
        raise InputError(f"T_patient_from_ct lacks levels {missing}")
    posed = {lv: anat.surfaces[lv].transformed(motion_T[lv]) for lv in all_levels}
    cents = {lv: motion_T[lv].apply(anat.centroid(lv)[None])[0] for lv in all_levels}
    parts, info = build_scene(posed, exposed, anat.axes, anat.skin_points, scene_cfg, rng_scene,
                              cents)
    if T_sensor_from_patient is None:
        dist = distance_mm or sensor.working_distance_mm * rng_pose.uniform(0.85, 1.2)
        T_sensor_from_patient = draw_sensor_pose(info["wound_center"], anat.axes[:, 1],
                                                 rng_pose, dist, tilt_deg_max, roll_deg)
    return {"scene": scene_cfg, "exposed": exposed, "T_patient_from_ct": motion_T,
            "parts": parts, "info": info, "T_sensor_from_patient": T_sensor_from_patient,
            "rng_sensor": rng_sensor, "sensor": sensor}


def _result(anat, setup, cloud, depth, T_sp, motion_T, timestamp_s, outlier_fraction,
            noise_scale, dropout_scale, motion, seed) -> SimulatedScan:
    exposed, info, sensor = setup["exposed"], setup["info"], setup["sensor"]
    truth = {lv: T_sp @ motion_T[lv] for lv in anat.levels}
    targets = {lv: anat.targets(lv) for lv in exposed}
    depth_c = float(np.linalg.norm(T_sp.apply(np.asarray(info["wound_center"])[None])[0]))
    config = {"seed": int(seed), "sensor": sensor.name, "motion": motion,
              "noise_mm": float(sensor.noise_sigma_mm(depth_c) * noise_scale),
              "wound_distance_mm": depth_c,
              "outlier_fraction": float(outlier_fraction), "noise_scale": float(noise_scale),
              "dropout_scale": float(dropout_scale), "exposed_levels": exposed,
              "scene": setup["scene"].__dict__.copy(),
              "wound_center_patient_mm": np.asarray(info["wound_center"]).tolist()}
    return SimulatedScan(cloud=cloud, truth=truth, targets_ct_mm=targets,
                         exposed_levels=exposed, T_sensor_from_patient=T_sp,
                         T_patient_from_ct=motion_T, sensor=sensor, depth_mm=depth,
                         config=config, timestamp_s=float(timestamp_s))


def simulate_sequence(anatomy, n_frames: int = 30, sensor: str | SensorModel = "structured-light",
                      seed: int = 0, *, frame_rate_hz: float = 30.0,
                      breathing_amplitude_mm: float = 2.0, breathing_rate_hz: float = 0.25,
                      camera_speed_mm_s: float = 20.0, camera_rot_deg_s: float = 3.0,
                      progress: bool = False, **scan_kwargs) -> SimulatedSequence:
    """A sequence of scans: breathing moves the vertebrae, the sensor drifts.

    Breathing is a ~2 mm (peak to peak, ``breathing_amplitude_mm``) periodic displacement
    mostly along the posterior axis (PMC6686387
    reports ~2 mm vertebral motion with respiration), with a per-level amplitude that varies
    +-30 % so neighbours do not move identically; soft tissue follows the mean. The sensor
    translates and rotates slowly along a smooth random path (an arm being adjusted or a
    head-mounted sensor).

    Returns
    -------
    SimulatedSequence
        Per frame: cloud, truth ``T_sensor_from_ct`` per level, ``timestamp_s``.
    """
    from tqdm.auto import tqdm

    if int(n_frames) < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if frame_rate_hz <= 0:
        raise InputError(f"frame_rate_hz must be > 0, got {frame_rate_hz}")
    anat = as_anatomy(anatomy)
    sensor = get_sensor(sensor)
    kw = dict(scan_kwargs)
    outlier_fraction = float(kw.pop("outlier_fraction", 0.05))
    noise_scale = float(kw.pop("noise_scale", 1.0))
    dropout_scale = float(kw.pop("dropout_scale", 1.0))
    _check_scales(outlier_fraction, noise_scale, dropout_scale)
    motion = kw.pop("motion", "moderate")
    exposed = _exposed_levels(anat, kw.pop("levels", None))
    setup = _setup(anat, sensor, seed, exposed, motion, kw.pop("scene", None),
                   kw.pop("T_sensor_from_patient", None), kw.pop("T_patient_from_ct", None),
                   kw.pop("distance_mm", None), kw.pop("tilt_deg_max", 25.0),
                   kw.pop("roll_deg", None))
    if kw:
        raise InputError(f"unknown simulate_sequence options: {sorted(kw)}")
    rng = np.random.default_rng([seed, 7])
    levels = anat.levels
    post = anat.axes[:, 1]
    cran = anat.axes[:, 2]
    amp = {lv: breathing_amplitude_mm * rng.uniform(0.7, 1.3) for lv in levels}
    phase0 = rng.uniform(0, 2 * np.pi)
    v_dir = rng.normal(size=3)
    v_dir /= np.linalg.norm(v_dir)
    w_dir = rng.normal(size=3)
    w_dir /= np.linalg.norm(w_dir)
    T0 = setup["T_sensor_from_patient"]
    M0 = setup["T_patient_from_ct"]
    frames = []
    # The scene is built once (frame 0 equals simulate_scan with the same seed); per frame
    # its parts move rigidly: each vertebra with its breathing, soft tissue with their mean.
    for i in tqdm(range(int(n_frames)), disable=not progress, desc="frames"):
        ts = i / frame_rate_hz
        s = np.sin(2 * np.pi * breathing_rate_hz * ts + phase0) - np.sin(phase0)
        # amp is peak-to-peak: s spans 2 over a breath
        shift = {lv: 0.5 * s * amp[lv] * (post + 0.15 * cran) for lv in levels}
        mean_shift = np.mean([shift[lv] for lv in exposed], axis=0)
        moved = setup["parts"] if i == 0 else [
            replace(p, mesh=Mesh(p.mesh.vertices + (shift[p.level] if p.level is not None
                                                    else mean_shift),
                                 p.mesh.faces, name=p.mesh.name, frame=p.mesh.frame))
            for p in setup["parts"]]
        ang = np.radians(camera_rot_deg_s * ts)
        T_drift = RigidTransform.from_rotvec(ang * w_dir, camera_speed_mm_s * ts * v_dir,
                                             "sensor", "sensor")
        T_sp = T_drift @ T0
        cloud, depth = _cast(moved, sensor, T_sp, setup["rng_sensor"], outlier_fraction,
                             noise_scale, dropout_scale)
        motion_T = {lv: RigidTransform.from_rt(np.eye(3), shift[lv], "patient", "patient")
                    @ M0[lv] for lv in levels}
        fr = _result(anat, setup, cloud, depth, T_sp, motion_T, ts, outlier_fraction,
                     noise_scale, dropout_scale, motion, seed)
        fr.config["frame"] = i
        frames.append(fr)
    first = frames[0]
    cfg = dict(first.config, n_frames=int(n_frames), frame_rate_hz=float(frame_rate_hz),
               breathing_amplitude_mm=breathing_amplitude_mm,
               breathing_rate_hz=breathing_rate_hz, camera_speed_mm_s=camera_speed_mm_s,
               camera_rot_deg_s=camera_rot_deg_s)
    return SimulatedSequence(frames=frames, frame_rate_hz=float(frame_rate_hz), config=cfg)
