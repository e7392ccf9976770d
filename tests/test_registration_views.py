"""Throwaway realistic depth views for the registration tests (until simulate_scan is used).

A pinhole depth camera looks at the back: exposed posterior elements inside a wound, the
wound walls, muscle between the bones, skin and drapes around, 1 mm range noise, outliers,
and every vertebra moved by a few mm / degrees from the CT pose. Seeded. Also checks itself.
"""

from __future__ import annotations

import numpy as np

from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh

__all__ = ["ssm_surfaces", "make_view", "rot"]


def rot(axis, deg):
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    return RigidTransform.from_rotvec(a * np.radians(deg), [0, 0, 0], "x", "x").rotation


def ssm_surfaces(data_dir) -> dict:
    """The real SSM mean L2-L5 mesh split into its four vertebrae (ct frame = mesh frame)."""
    import open3d as o3d

    m = o3d.io.read_triangle_mesh(str(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply"))
    mesh = Mesh(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles))
    comps = mesh.connected_components()[:4]
    comps.sort(key=lambda c: -c.centroid()[2])  # +z is cranial in this mesh
    return {name: Mesh(c.vertices, c.faces, name=name)
            for name, c in zip(["L2", "L3", "L4", "L5"], comps)}


def _sample(mesh: Mesh, density: float, seed: int):
    n = int(mesh.area() * density)
    return mesh.sample_points(n, seed=seed)[0]


def make_view(surfaces: dict, seed: int = 0, exposed=None, noise_mm: float = 1.0,
              motion_deg: float = 3.0, motion_mm: float = 2.0, outlier_fraction: float = 0.02,
              width: int = 640, height: int = 480, posterior=None, axis=None,
              skin: bool = True, tilt_deg: float = 20.0, level_shift_exposure: int = 0):
    """Depth view of ``surfaces`` (ct frame) with truth.

    Returns dict with ``points`` (N,3 sensor mm), ``truth`` {level: RigidTransform
    T_sensor_from_ct}, ``T`` (whole-spine T_sensor_from_ct), ``hit`` (N,) level name or ''.
    """
    rng = np.random.default_rng(seed)
    names = list(surfaces)
    cents = np.array([surfaces[n].vertices.mean(axis=0) for n in names])
    if axis is None:
        axis = cents[-1] - cents[0]
    axis = axis / np.linalg.norm(axis)
    if posterior is None:
        posterior = np.array([-1.0, 0, 0])
    posterior = posterior - (posterior @ axis) * axis
    posterior /= np.linalg.norm(posterior)
    lateral = np.cross(axis, posterior)
    center = cents.mean(axis=0)
    exposed = list(exposed) if exposed is not None else names[1:] if len(names) > 3 else names
    # Sensor pose: posterior looks at the camera (-z), random in-plane angle, tilted.
    basis_ct = np.stack([lateral, axis, posterior])          # rows: ct axes
    r_in = rot([0, 0, 1], rng.uniform(0, 360))
    r_tilt = rot(rng.normal(size=3) * [1, 1, 0] + [1e-9, 0, 0], rng.uniform(0, tilt_deg))
    R = r_tilt @ r_in @ np.diag([1.0, -1.0, -1.0]) @ basis_ct  # posterior -> -z
    t = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(380, 480)])
    T = RigidTransform.from_rt(R, t - R @ center, "sensor", "ct")
    truth = {}
    clouds, hits = [], []
    for i, n in enumerate(names):
        dR = rot(rng.normal(size=3), rng.uniform(0, motion_deg))
        dt = rng.normal(size=3)
        dt *= rng.uniform(0, motion_mm) / np.linalg.norm(dt)
        c = cents[i]
        P = RigidTransform.from_rt(dR, c + dt - dR @ c, "ct", "ct")
        truth[n] = T @ P
        pts = truth[n].apply(_sample(surfaces[n], 4.0, seed + i))
        clouds.append(pts)
        hits.append(np.full(len(pts), n, dtype=object))
    # Soft tissue in the ct frame, built from the vertebra shells' extents.
    allv = np.concatenate([surfaces[n].vertices for n in names])
    post_top = (allv - center) @ posterior
    skin_level = post_top.max() + 20.0
    ex = np.concatenate([surfaces[n].vertices for n in exposed])
    ax_lo = ((ex - center) @ axis).min() - 8
    ax_hi = ((ex - center) @ axis).max() + 8
    half_w = 32.0
    floor_level = np.percentile(post_top, 75)  # muscle around the laminae
    def patch(u_rng, v_rng, depth_fn, density=3.0):
        n = int((u_rng[1] - u_rng[0]) * (v_rng[1] - v_rng[0]) * density)
        u = rng.uniform(*u_rng, n)
        v = rng.uniform(*v_rng, n)
        d = depth_fn(u, v)
        return center + np.outer(u, lateral) + np.outer(v, axis) + np.outer(d, posterior)
    tissue = []
    tissue.append(patch((-half_w, half_w), (ax_lo, ax_hi),
                        lambda u, v: floor_level - 0.004 * u**2 + 0 * v))
    if skin:
        def skin_d(u, v):
            return skin_level - u**2 / 400.0
        big = 220.0
        for u_rng, v_rng in [((-big, -half_w), (-big, big)), ((half_w, big), (-big, big)),
                             ((-half_w, half_w), (-big, ax_lo)), ((-half_w, half_w), (ax_hi, big))]:
            tissue.append(patch(u_rng, v_rng, skin_d, density=2.0))
        # wound walls (vertical)
        for s in (-1, 1):
            n = 12000
            v = rng.uniform(ax_lo, ax_hi, n)
            d = rng.uniform(floor_level, skin_level - half_w**2 / 400.0, n)
            tissue.append(center + np.outer(np.full(n, s * half_w), lateral)
                          + np.outer(v, axis) + np.outer(d, posterior))
        for v0 in (ax_lo, ax_hi):
            n = 12000
            u = rng.uniform(-half_w, half_w, n)
            d = rng.uniform(floor_level, skin_level - u**2 / 400.0, n)
            tissue.append(center + np.outer(u, lateral) + np.outer(np.full(n, v0), axis)
                          + np.outer(d, posterior))
    tis = T.apply(np.concatenate(tissue))
    pts = np.concatenate(clouds + [tis])
    hit = np.concatenate(hits + [np.full(len(tis), "", dtype=object)])
    # z-buffer render
    f = 0.9 * width
    z = pts[:, 2]
    u = np.round(pts[:, 0] / z * f + width / 2).astype(int)
    v = np.round(pts[:, 1] / z * f + height / 2).astype(int)
    ok = (z > 100) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    pts, hit, u, v, z = pts[ok], hit[ok], u[ok], v[ok], z[ok]
    pix = v * width + u
    order = np.lexsort((z, pix))
    pix_s = pix[order]
    first = np.r_[True, pix_s[1:] != pix_s[:-1]]
    sel = order[first]
    # the bone exposure is only bone that is not behind tissue in the same pixel (done by z)
    pts, hit = pts[sel], hit[sel]
    # only exposed levels' bone is visible: bone of other levels is covered by skin already,
    # but remove any remaining bone of unexposed levels (under muscle)
    keep = np.array([h == "" or h in exposed for h in hit])
    pts, hit = pts[keep], hit[keep]
    ray = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    pts = pts + ray * rng.normal(0, noise_mm, (len(pts), 1))
    n_out = int(outlier_fraction * len(pts))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    outl = rng.uniform(lo, hi, (n_out, 3))
    pts = np.concatenate([pts, outl])
    hit = np.concatenate([hit, np.full(n_out, "", dtype=object)])
    perm = rng.permutation(len(pts))
    return {"points": pts[perm], "hit": hit[perm], "truth": truth, "T": T,
            "exposed": exposed}
