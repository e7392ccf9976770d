"""Depth-sensor models: resolution, field of view, range and the error each one makes.

A :class:`SensorModel` turns a pixel grid into rays (sensor frame: x right, y down, z forward,
mm) and describes the imperfections the simulator applies: range noise growing with distance,
dropouts at grazing incidence, flying pixels at depth edges and random outliers. Figures are
order-of-magnitude values from the devices' published specifications (cited per model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from arspine.errors import InputError

__all__ = ["SensorModel", "SENSORS", "get_sensor"]


@dataclass(frozen=True)
class SensorModel:
    """A depth sensor.

    Attributes
    ----------
    name : str
    width, height : int
        Pixels (or, for ``kind="lidar"``, samples per line and number of scan lines).
    hfov_deg, vfov_deg : float
        Full horizontal / vertical field of view, degrees.
    kind : str
        ``"pinhole"`` (camera; rays through a pixel grid) or ``"lidar"`` (equiangular scan
        lines).
    min_range_mm, max_range_mm : float
        Valid depth interval; hits outside return nothing.
    working_distance_mm : float
        Typical sensor-to-wound distance used when a pose is drawn.
    noise_a_mm, noise_b, noise_c_per_mm : float
        Range noise standard deviation ``a + b * z/1000 + c * z**2`` mm along the ray
        (z = depth in mm): constant, linear (time of flight) and quadratic (triangulation)
        terms.
    grazing_start_deg, grazing_full_deg : float
        Incidence angle (ray vs. surface normal) where dropouts start / where every return
        is lost.
    dropout_fraction : float
        Extra random dropouts (specular blood, dark tissue), fraction of hits.
    flying_pixel_fraction : float
        Probability that a pixel on a depth edge returns a value between foreground and
        background.
    edge_threshold_mm : float
        Neighbour depth jump that counts as an edge.
    baseline_mm : float
        Projector (structured light) or second camera (stereo) offset along +x; points it
        cannot see have no depth (occlusion shadows). 0 for ToF and LiDAR.
    disparity_step_px : float
        Disparity quantisation of a triangulating sensor (0 = continuous): depth comes in
        steps of about ``z**2 * step / (fx * baseline)``.
    """

    name: str
    width: int
    height: int
    hfov_deg: float
    vfov_deg: float
    kind: str = "pinhole"
    min_range_mm: float = 200.0
    max_range_mm: float = 1500.0
    working_distance_mm: float = 500.0
    noise_a_mm: float = 0.2
    noise_b: float = 0.0
    noise_c_per_mm: float = 3.2e-6
    grazing_start_deg: float = 65.0
    grazing_full_deg: float = 85.0
    dropout_fraction: float = 0.02
    flying_pixel_fraction: float = 0.5
    edge_threshold_mm: float = 15.0
    baseline_mm: float = 0.0
    disparity_step_px: float = 0.0

    def __post_init__(self):
        if self.kind not in ("pinhole", "lidar"):
            raise InputError(f"kind must be 'pinhole' or 'lidar', got {self.kind!r}")
        if self.width < 2 or self.height < 2:
            raise InputError(f"sensor resolution must be at least 2x2, got "
                             f"{self.width}x{self.height}")
        if not (0 < self.hfov_deg < 170 and 0 < self.vfov_deg < 170):
            raise InputError(f"field of view must be in (0, 170) deg, got "
                             f"{self.hfov_deg}x{self.vfov_deg}")

    @property
    def K(self) -> np.ndarray:
        """(3, 3) pinhole intrinsics in pixels (also the nominal grid of a LiDAR)."""
        fx = 0.5 * self.width / np.tan(np.radians(self.hfov_deg) / 2)
        fy = 0.5 * self.height / np.tan(np.radians(self.vfov_deg) / 2)
        return np.array([[fx, 0, (self.width - 1) / 2], [0, fy, (self.height - 1) / 2],
                         [0, 0, 1.0]])

    def noise_sigma_mm(self, depth_mm: np.ndarray | float) -> np.ndarray:
        """Range noise standard deviation (mm) at the given depth(s) in mm."""
        z = np.asarray(depth_mm, dtype=np.float64)
        return self.noise_a_mm + self.noise_b * z / 1000.0 + self.noise_c_per_mm * z * z

    def ray_directions(self) -> np.ndarray:
        """(H, W, 3) unit ray directions in the sensor frame (x right, y down, z forward)."""
        if self.kind == "pinhole":
            K = self.K
            u, v = np.meshgrid(np.arange(self.width), np.arange(self.height))
            d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                          np.ones(u.shape)], axis=-1)
        else:  # scan lines: equal angular steps in azimuth (x) and elevation (y)
            az = np.radians(np.linspace(-self.hfov_deg / 2, self.hfov_deg / 2, self.width))
            el = np.radians(np.linspace(-self.vfov_deg / 2, self.vfov_deg / 2, self.height))
            A, E = np.meshgrid(az, el)
            d = np.stack([np.cos(E) * np.sin(A), np.sin(E), np.cos(E) * np.cos(A)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def scaled(self, noise_scale: float = 1.0, **changes) -> SensorModel:
        """A copy with noise terms multiplied by ``noise_scale`` and other fields changed."""
        return replace(self, noise_a_mm=self.noise_a_mm * noise_scale,
                       noise_b=self.noise_b * noise_scale,
                       noise_c_per_mm=self.noise_c_per_mm * noise_scale, **changes)


#: Named sensor models. Noise is chosen so the sigma at the working distance matches the
#: device class: about 1 mm at 0.5 m for structured light and stereo, 1-2 mm for ToF.
SENSORS: dict[str, SensorModel] = {
    # Structured light (Kinect v1 / Structure Sensor / RealSense SR300 class): 640x480,
    # 58x45 deg, quadratic noise (Khoshelham & Elberink 2012: sigma ~ 1.4e-6 z^2 in mm for
    # Kinect v1 at longer range; surgical units are tuned closer): ~1.0 mm at 0.5 m.
    "structured-light": SensorModel(
        name="structured-light", width=640, height=480, hfov_deg=58.0, vfov_deg=45.0,
        min_range_mm=250.0, max_range_mm=1200.0, working_distance_mm=500.0,
        noise_a_mm=0.2, noise_b=0.0, noise_c_per_mm=3.2e-6,
        grazing_start_deg=60.0, grazing_full_deg=82.0, dropout_fraction=0.02,
        flying_pixel_fraction=0.3, edge_threshold_mm=15.0, baseline_mm=75.0,
        disparity_step_px=0.125),
    # Time of flight (Azure Kinect NFOV unbinned 640x576, 75x65 deg; spec: random error
    # <= 17 mm std at range, systematic < 11 mm + 0.1 %): a ToF unit at 0.5 m gives ~1.5 mm.
    # ToF is known for many flying pixels (mixed returns) at depth edges.
    "tof": SensorModel(
        name="tof", width=640, height=576, hfov_deg=75.0, vfov_deg=65.0,
        min_range_mm=250.0, max_range_mm=2800.0, working_distance_mm=550.0,
        noise_a_mm=0.8, noise_b=1.2, noise_c_per_mm=0.0,
        grazing_start_deg=55.0, grazing_full_deg=80.0, dropout_fraction=0.03,
        flying_pixel_fraction=0.8, edge_threshold_mm=10.0),
    # Stereo like a ZED Mini (63 mm baseline, VGA 672x376 mode, 90x60 deg): depth noise
    # sigma_z = z^2 sigma_d / (f b) with ~0.1 px disparity noise -> ~1.1 mm at 0.5 m.
    "stereo-zedmini": SensorModel(
        name="stereo-zedmini", width=672, height=376, hfov_deg=90.0, vfov_deg=60.0,
        min_range_mm=150.0, max_range_mm=1500.0, working_distance_mm=450.0,
        noise_a_mm=0.1, noise_b=0.0, noise_c_per_mm=4.7e-6,
        grazing_start_deg=60.0, grazing_full_deg=80.0, dropout_fraction=0.05,
        flying_pixel_fraction=0.5, edge_threshold_mm=12.0, baseline_mm=63.0),
    # Scanning LiDAR (64 lines x 1024 samples over 70x40 deg): line spacing ~5.5 mm at 0.5 m,
    # roughly constant range noise (~1 mm class for short-range units).
    "lidar-64": SensorModel(
        name="lidar-64", kind="lidar", width=1024, height=64, hfov_deg=70.0, vfov_deg=40.0,
        min_range_mm=200.0, max_range_mm=5000.0, working_distance_mm=600.0,
        noise_a_mm=0.9, noise_b=0.3, noise_c_per_mm=0.0,
        grazing_start_deg=70.0, grazing_full_deg=87.0, dropout_fraction=0.01,
        flying_pixel_fraction=0.3, edge_threshold_mm=20.0),
    # Small, fast model for unit tests and the quick suite.
    "test-320": SensorModel(
        name="test-320", width=320, height=240, hfov_deg=45.0, vfov_deg=34.0,
        min_range_mm=200.0, max_range_mm=1500.0, working_distance_mm=500.0,
        noise_a_mm=0.2, noise_b=0.0, noise_c_per_mm=3.2e-6,
        grazing_start_deg=60.0, grazing_full_deg=82.0, dropout_fraction=0.02,
        flying_pixel_fraction=0.3, edge_threshold_mm=15.0, baseline_mm=75.0),
}


def get_sensor(name: str | SensorModel) -> SensorModel:
    """Sensor model by name (see :data:`SENSORS`); a model passes through."""
    if isinstance(name, SensorModel):
        return name
    try:
        return SENSORS[name]
    except (KeyError, TypeError):
        raise InputError(f"sensor must be one of {sorted(SENSORS)}, got {name!r}") from None
