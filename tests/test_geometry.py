"""as_points, PointCloud and Mesh: validation, enclosed-volume centroid on closed meshes with
uneven triangle density, components, transforms, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh, PointCloud, as_matrix4, as_points


def _grid_face(origin, du, dv, n: int):
    """An ``n x n`` triangulated square ``origin + s du + t dv``; normal du x dv."""
    s, t = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    v = origin + s.reshape(-1, 1) * du + t.reshape(-1, 1) * dv
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)])
    return v, f


def box_mesh(size=(40.0, 20.0, 10.0), corner=(0.0, 0.0, 0.0), dense_face=0, n_dense=30,
             frame="ct") -> Mesh:
    """A closed box with outward faces; face ``dense_face`` finely tessellated (the others
    two triangles each), so vertices crowd one side."""
    sx, sy, sz = size
    o = np.asarray(corner, dtype=float)
    X, Y, Z = np.array([sx, 0, 0.0]), np.array([0, sy, 0.0]), np.array([0, 0, sz])
    faces_def = [(o, Y, X), (o + Z, X, Y), (o, X, Z), (o + Y, Z, X), (o, Z, Y), (o + X, Y, Z)]
    verts, faces = [], []
    for i, (org, du, dv) in enumerate(faces_def):
        v, f = _grid_face(org, du, dv, n_dense if i == dense_face else 1)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
    # Weld the faces' shared corners so the box is one connected component.
    v, inv = np.unique(np.round(np.concatenate(verts), 9), axis=0, return_inverse=True)
    return Mesh(v, inv.reshape(-1)[np.concatenate(faces)], frame=frame)


# ------------------------------------------------------------------ as_points
def test_as_points_messages_name_argument_and_shape():
    with pytest.raises(InputError, match=r"points must be \(N, 3\), got \(3, 100\)"):
        as_points(np.zeros((3, 100)))
    with pytest.raises(InputError, match=r"scan must be \(N, 3\), got \(3,\)"):
        as_points([1, 2, 3], "scan")
    bad = np.zeros((10, 3))
    bad[[2, 5], 1] = [np.nan, np.inf]
    with pytest.raises(InputError, match="scan has 2 rows with NaN or inf of 10"):
        as_points(bad, "scan")
    with pytest.raises(InputError, match="empty"):
        as_points(np.zeros((0, 3)))
    assert as_points(np.zeros((0, 3)), allow_empty=True).shape == (0, 3)
    with pytest.raises(InputError, match="at least 4 points, got 3"):
        as_points(np.zeros((3, 3)), min_points=4)
    with pytest.raises(InputError, match="numeric"):
        as_points([[1, 2, 3], [4, 5]])
    p = as_points(np.arange(6, dtype=np.int32).reshape(2, 3))
    assert p.dtype == np.float64 and p.flags.c_contiguous
    np.testing.assert_array_equal(as_matrix4(np.eye(4)), np.eye(4))
    with pytest.raises(InputError, match="4x4"):
        as_matrix4(np.eye(3))


# ------------------------------------------------------------------ PointCloud
def test_point_cloud_validation_select_transform():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(50, 3)) * 30
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    cloud = PointCloud(p, normals=n, colors=rng.random((50, 3)), labels=np.arange(50),
                       extra={"intensity": rng.random(50)}, frame="sensor")
    assert len(cloud) == 50
    sub = cloud.select(cloud.labels % 5 == 0)
    assert len(sub) == 10
    np.testing.assert_array_equal(sub.points, p[::5])
    np.testing.assert_array_equal(sub.extra["intensity"], cloud.extra["intensity"][::5])
    T = RigidTransform.from_euler("zyx", [30, -10, 5], [100, 0, -20], "world", "sensor")
    moved = cloud.transformed(T)
    assert moved.frame == "world"
    np.testing.assert_allclose(moved.points, T.apply(p), atol=1e-12)
    np.testing.assert_allclose(moved.normals, n @ T.rotation.T, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(moved.normals, axis=1), 1.0, atol=1e-12)
    with pytest.raises(InputError, match="does not apply to points in frame 'world'"):
        moved.transformed(T)
    with pytest.raises(InputError, match=r"normals must be \(50, 3\)"):
        PointCloud(p, normals=n[:10])
    with pytest.raises(InputError, match=r"labels must be \(50,\)"):
        PointCloud(p, labels=np.arange(3))
    with pytest.raises(InputError, match="extra"):
        PointCloud(p, extra={"x": np.arange(3)})
    with pytest.raises(InputError, match="NaN"):
        PointCloud(p, normals=np.full((50, 3), np.nan))


# ------------------------------------------------------------------ Mesh
@pytest.mark.parametrize("corner", [(0.0, 0.0, 0.0), (5000.0, -3000.0, 12000.0)])
@pytest.mark.parametrize("dense_face", [0, 3, 5])
def test_centroid_is_enclosed_volume_centroid_with_uneven_density(corner, dense_face):
    size = np.array([40.0, 20.0, 10.0])
    m = box_mesh(size, corner, dense_face=dense_face)
    expected = np.asarray(corner) + size / 2
    # The vertex mean is pulled towards the dense face; the solid's centroid is not.
    assert np.linalg.norm(m.vertices.mean(axis=0) - expected) > 2.0
    np.testing.assert_allclose(m.centroid(), expected, atol=1e-8)
    assert m.enclosed_volume() == pytest.approx(8000.0, rel=1e-10)
    assert m.area() == pytest.approx(2 * (800 + 200 + 400), rel=1e-10)
    assert m.n_faces == 10 + 2 * 30 * 30


def test_centroid_of_tetrahedron_and_inverted_orientation():
    v = np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30.0]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    m = Mesh(v, f)
    assert m.enclosed_volume() == pytest.approx(30**3 / 6)
    np.testing.assert_allclose(m.centroid(), v.mean(axis=0), atol=1e-12)
    inverted = Mesh(v, f[:, ::-1])
    assert inverted.enclosed_volume() == pytest.approx(-(30**3) / 6)
    np.testing.assert_allclose(inverted.centroid(), v.mean(axis=0), atol=1e-12)


def test_open_mesh_centroid_falls_back_to_surface_centroid():
    v, f = _grid_face(np.zeros(3), np.array([10.0, 0, 0]), np.array([0, 20.0, 0]), 4)
    m = Mesh(v, f)
    np.testing.assert_allclose(m.centroid(), [5.0, 10.0, 0.0], atol=1e-12)


def test_components_normals_axes_bounds_and_transform():
    a = box_mesh((40, 20, 10), (0, 0, 0), n_dense=8)
    b = box_mesh((10, 10, 10), (100, 0, 0), n_dense=2)
    both = Mesh(np.concatenate([a.vertices, b.vertices]),
                np.concatenate([a.faces, b.faces + a.n_vertices]), name="two")
    parts = both.connected_components()
    assert [p.n_faces for p in parts] == [a.n_faces, b.n_faces]
    np.testing.assert_allclose(parts[1].centroid(), [105, 5, 5], atol=1e-9)
    assert all(p.name == "two" for p in parts)
    np.testing.assert_allclose(both.bounds(), [[0, 0, 0], [110, 20, 10]])
    # Outward vertex normals on a convex solid.
    vn = a.vertex_normals()
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1), 1.0, atol=1e-12)
    assert np.all(np.einsum("ij,ij->i", vn, a.vertices - a.centroid()) > 0)
    fn = a.face_normals()
    fc = a.vertices[a.faces].mean(axis=1)
    assert np.all(np.einsum("ij,ij->i", fn, fc - a.centroid()) > 0)
    axes, std = box_mesh((60, 20, 10), n_dense=1).principal_axes()
    assert abs(axes[0] @ [1, 0, 0]) == pytest.approx(1.0, abs=1e-9)
    assert abs(axes[2] @ [0, 0, 1]) == pytest.approx(1.0, abs=1e-9)
    # Std of a uniform surface density on a 60x20x10 box along x: exact second moments.
    ex = (2 * 60 * 20 + 2 * 60 * 10) * 60**2 / 12 + (2 * 20 * 10) * 30**2
    assert std[0] == pytest.approx(np.sqrt(ex / (2 * (1200 + 200 + 600))), rel=1e-9)
    assert std[0] > std[1] > std[2]
    T = RigidTransform.from_rotvec([0, 0, np.pi / 2], [10, 0, 0], "sensor", "ct")
    moved = a.transformed(T)
    assert moved.frame == "sensor"
    np.testing.assert_allclose(moved.centroid(), T.apply(a.centroid()), atol=1e-9)
    assert moved.enclosed_volume() == pytest.approx(a.enclosed_volume())
    with pytest.raises(InputError, match="frame 'sensor'"):
        moved.transformed(T)


def test_sample_points_lie_on_surface_and_are_seeded():
    m = box_mesh((40, 20, 10), (0, 0, 0), n_dense=10)
    p1, n1 = m.sample_points(2000, seed=3)
    p2, _ = m.sample_points(2000, seed=3)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, m.sample_points(2000, seed=4)[0])
    # Every sample is on one of the six box planes, inside the box.
    on_plane = np.isclose(p1, 0.0, atol=1e-9) | np.isclose(p1, [40, 20, 10], atol=1e-9)
    assert on_plane.any(axis=1).all()
    assert (p1 >= -1e-9).all() and (p1 <= np.array([40, 20, 10]) + 1e-9).all()
    # Area-uniform: the two 40x20 faces hold 800*2/2800 of the area.
    frac = np.mean(np.isclose(p1[:, 2], 0) | np.isclose(p1[:, 2], 10))
    assert frac == pytest.approx(1600 / 2800, abs=0.04)
    np.testing.assert_allclose(np.linalg.norm(n1, axis=1), 1.0)


def test_mesh_validation():
    v = np.zeros((4, 3))
    with pytest.raises(InputError, match=r"faces must be \(F, 3\)"):
        Mesh(v, np.zeros((2, 4), dtype=int))
    with pytest.raises(InputError, match="faces index vertices 0..3"):
        Mesh(v, [[0, 1, 4]])
    with pytest.raises(InputError, match="integer"):
        Mesh(v, [[0, 1, 2.5]])
    with pytest.raises(InputError, match="vertices"):
        Mesh(np.zeros((4, 2)), [[0, 1, 2]])
    with pytest.raises(InputError, match="no faces"):
        Mesh(v, np.zeros((0, 3), dtype=int)).sample_points(10)
    assert Mesh(v, [[0.0, 1.0, 2.0]]).faces.dtype == np.int64


def test_many_components_keep_their_own_vertices_and_order():
    rng = np.random.default_rng(5)
    tet_v = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3.0]])
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    k = 300
    offsets = rng.uniform(-500, 500, size=(k, 3))
    order = rng.permutation(4 * k)  # interleave the vertices of all pieces
    verts = np.empty((4 * k, 3))
    verts[order] = (tet_v[None] + offsets[:, None]).reshape(-1, 3)
    faces = order[(tet_f[None] + 4 * np.arange(k)[:, None, None]).reshape(-1, 3)]
    parts = Mesh(verts, faces).connected_components()
    assert len(parts) == k
    assert all(p.n_vertices == 4 and p.n_faces == 4 for p in parts)
    got = np.array(sorted(tuple(np.round(p.vertices.min(axis=0), 9)) for p in parts))
    np.testing.assert_allclose(got, np.array(sorted(map(tuple, np.round(offsets, 9)))))
    for p in parts:
        assert p.enclosed_volume() == pytest.approx(4.5)
