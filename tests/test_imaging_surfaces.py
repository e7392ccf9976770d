"""Per-vertebra surfaces: real labels (centroids, boundary distance), any affine, decimation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from arspine.errors import InputError
from arspine.imaging import (
    CtVolume,
    VertebraLabels,
    bone_surface,
    load_ct,
    load_labels,
    vertebra_surfaces,
)

LEVELS = ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]


@pytest.fixture(scope="module")
def real(data_dir):
    d = data_dir / "totalsegmentator"
    ct = load_ct(d / "example_ct.nii.gz")
    lab = load_labels(d / "example_ct_vertebrae.nii.gz", like=ct, scheme="totalsegmentator")
    return ct, lab, vertebra_surfaces(ct, lab, levels=LEVELS)


def _boundary_points(mask: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Mid-points between label voxels and their background 6-neighbours, in mm."""
    m = np.pad(mask, 1)
    pts = []
    for ax in range(3):
        diff = np.diff(m.astype(np.int8), axis=ax) != 0
        idx = np.argwhere(diff).astype(float)
        idx[:, ax] += 0.5
        pts.append(idx - 1.0)
    ijk = np.concatenate(pts)
    return ijk @ T[:3, :3].T + T[:3, 3]


def test_real_surfaces_named_and_in_ct_frame(real):
    _, lab, meshes = real
    assert list(meshes) == LEVELS
    for name, m in meshes.items():
        assert m.name == name and m.frame == "ct" and m.extra["label_id"] == lab.id_of(name)
        assert m.normals is not None and m.n_faces > 500
        axes, std = m.principal_axes()
        assert axes.shape == (3, 3) and std[0] >= std[1] >= std[2] > 3.0


def test_real_surface_centroids_match_label_voxels(real):
    ct, lab, meshes = real
    voxel_mm3 = abs(np.linalg.det(ct.T_ct_from_ijk[:3, :3]))
    for name, m in meshes.items():
        err = np.linalg.norm(m.centroid() - lab.centroid_mm(name))
        assert err < 1.5, (name, err)
        # Closed, outward-facing surface enclosing about the label volume.
        vol = lab.voxel_counts()[name] * voxel_mm3
        assert 0.9 * vol < m.enclosed_volume() < 1.05 * vol, name


def test_real_surface_vertices_on_label_boundary(real):
    ct, lab, meshes = real
    voxel = float(ct.spacing_mm.max())
    for name, m in meshes.items():
        tree = cKDTree(_boundary_points(lab.mask(name), ct.T_ct_from_ijk))
        d, _ = tree.query(m.vertices)
        assert d.max() <= voxel, (name, d.max())
        # Outward normals: from the centroid outwards on most of the surface.
        out = np.einsum("ij,ij->i", m.normals, m.vertices - m.centroid()) > 0
        assert out.mean() > 0.75


def test_decimation_to_target_keeps_geometry(real):
    ct, lab, _ = real
    meshes = vertebra_surfaces(ct, lab, target_faces=1200, levels=["L2", "L4"])
    for name, m in meshes.items():
        assert 600 < m.n_faces <= 1.15 * 1200
        assert np.linalg.norm(m.centroid() - lab.centroid_mm(name)) < 1.5


def _sphere_volume(T: np.ndarray, shape, center_mm, radius_mm):
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    p = ijk.reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
    inside = (np.linalg.norm(p - center_mm, axis=1) <= radius_mm).reshape(shape)
    return inside


@pytest.mark.parametrize("kind", ["oblique_mirrored", "sheared"])
def test_any_affine_maps_vertices_exactly(kind):
    """A ball of radius 12 mm on an oblique, mirrored (det < 0) or sheared grid."""
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if kind == "oblique_mirrored":
        A = q @ np.diag([0.9, -1.1, 1.3]) if np.linalg.det(q) > 0 else q @ np.diag(
            [0.9, 1.1, 1.3])
        assert np.linalg.det(A) < 0
    else:
        A = np.array([[1.0, 0, 0], [0, 1.0, 0.35], [0, 0, 1.2]])
    T = np.eye(4)
    T[:3, :3] = A
    T[:3, 3] = [100.0, -50.0, 20.0]
    shape = (40, 40, 40)
    center = T[:3, :3] @ np.array([19.5, 19.5, 19.5]) + T[:3, 3]
    inside = _sphere_volume(T, shape, center, 12.0)
    ct = CtVolume(np.where(inside, 400, -100).astype(np.int16), T)
    labels = VertebraLabels(inside.astype(np.uint8) * 29, T, {29: "L3"})
    m = vertebra_surfaces(ct, labels)["L3"]
    r = np.linalg.norm(m.vertices - center, axis=1)
    assert abs(np.median(r) - 12.0) < 0.6 and r.min() > 10.0 and r.max() < 13.5
    np.testing.assert_allclose(m.centroid(), center, atol=0.3)
    assert m.enclosed_volume() == pytest.approx(4 / 3 * np.pi * 12.0**3, rel=0.08)
    assert (np.einsum("ij,ij->i", m.normals, m.vertices - center) > 0).mean() > 0.97
    b = bone_surface(ct, ct.hu > 200, target_faces=None)
    np.testing.assert_allclose(b.centroid(), center, atol=0.3)


def test_surface_bad_inputs(real):
    ct, lab, _ = real
    with pytest.raises(InputError, match=r"levels \['L6'\] not in the label map"):
        vertebra_surfaces(ct, lab, levels=["L6"])
    with pytest.raises(InputError, match=r"labels must be VertebraLabels"):
        vertebra_surfaces(ct, np.zeros(ct.shape))
    other = VertebraLabels(lab.array[:-1], lab.T_ct_from_ijk, lab.names)
    with pytest.raises(InputError, match=r"labels shape \(121, 101, 112\) differs from the CT"):
        vertebra_surfaces(ct, other)
    with pytest.raises(InputError, match=r"mask shape \(2, 2, 2\) differs"):
        bone_surface(ct, np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match=r"mask of bone is empty"):
        bone_surface(ct, np.zeros(ct.shape, bool))


def test_fine_grid_block_averaged_path():
    """0.5 mm voxels and a small target: the mask is block-averaged before contouring; the
    surface must stay on the true sphere."""
    T = np.diag([0.5, 0.5, 0.5, 1.0])
    T[:3, 3] = [-10.0, 5.0, 40.0]
    shape = (60, 60, 60)
    center = T[:3, :3] @ np.array([29.5, 29.5, 29.5]) + T[:3, 3]
    inside = _sphere_volume(T, shape, center, 12.0)
    labels = VertebraLabels(inside.astype(np.uint8) * 20, T, {20: "L1"})
    ct = CtVolume(np.where(inside, 500, 0).astype(np.int16), T)
    full = vertebra_surfaces(ct, labels, target_faces=None)["L1"]
    m = vertebra_surfaces(ct, labels, target_faces=3000)["L1"]
    assert full.n_faces > 2 * 3000 and m.n_faces <= 1.15 * 3000
    r = np.linalg.norm(m.vertices - center, axis=1)
    assert abs(np.median(r) - 12.0) < 0.3 and np.abs(r - 12.0).max() < 0.8
    np.testing.assert_allclose(m.centroid(), center, atol=0.1)
    assert m.enclosed_volume() == pytest.approx(4 / 3 * np.pi * 12.0**3, rel=0.04)
