"""arspine.datasets.io on the real files in ../shared/data, round trips of every format,
cross-checks with Open3D's readers/writers, broken files, depth back-projection."""

from __future__ import annotations

import os

import numpy as np
import pytest

from arspine.datasets.io import (
    depth_to_points,
    read_mesh,
    read_points,
    write_mesh,
    write_points,
)
from arspine.datasets.io_pcd import lzf_compress_literal, lzf_decompress
from arspine.errors import InputError
from arspine.navigation.geometry import Mesh, PointCloud

PHANTOM = "ismr24_phantom"


def _ascii_pcd_rows(path) -> np.ndarray:
    """The numbers after the DATA line, parsed independently of the reader under test."""
    lines = open(path, encoding="latin-1").read().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("DATA")) + 1
    return np.array([[float(t) for t in ln.split()] for ln in lines[start:] if ln.strip()])


@pytest.fixture(scope="session")
def ssm_mesh(data_dir) -> Mesh:
    return read_mesh(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply")


@pytest.fixture(scope="session")
def ssm_parts(ssm_mesh) -> list[Mesh]:
    return ssm_mesh.connected_components()


@pytest.fixture(scope="module")
def cloud() -> PointCloud:
    rng = np.random.default_rng(7)
    n = 300
    p = rng.normal(scale=80.0, size=(n, 3)) + [0, 0, 400]
    nr = rng.normal(size=(n, 3))
    nr /= np.linalg.norm(nr, axis=1, keepdims=True)
    col = rng.integers(0, 256, size=(n, 3)) / 255.0
    return PointCloud(p, normals=nr, colors=col, labels=rng.integers(0, 6, n),
                      extra={"intensity": rng.random(n)})


# ------------------------------------------------------------------ real files
@pytest.mark.parametrize("frame", ["ct_frame", "us_frame"])
def test_real_fiducials_match_the_ascii_text(data_dir, frame):
    path = data_dir / PHANTOM / frame / "fiducials.pcd"
    c = read_points(path, frame="ct")
    rows = _ascii_pcd_rows(path)
    assert rows.shape == (6, 4) and len(c) == 6 and c.frame == "ct"
    np.testing.assert_array_equal(c.points, rows[:, :3])
    # MATLAB packed rgb 2.341805152e-38 == 0x00FF0000: pure red.
    np.testing.assert_array_equal(c.colors, np.tile([1.0, 0.0, 0.0], (6, 1)))


def test_real_fiducial_values(data_dir):
    ct = read_points(data_dir / PHANTOM / "ct_frame" / "fiducials.pcd").points
    us = read_points(data_dir / PHANTOM / "us_frame" / "fiducials.pcd").points
    np.testing.assert_array_equal(ct[0], [-55.880859375, 39.25, 2.0419921875])
    np.testing.assert_array_equal(ct[5], [55.58203125, -37.25, -1.5439453125])
    np.testing.assert_allclose(us[3], [44.384185814066825, -1.951014419052242,
                                       0.543847480674826], rtol=0, atol=1e-12)
    # Same six fiducials, same order, in two frames: two columns (left x < 0, right x > 0),
    # three rows from y ~ +40 down to y ~ -37 mm.
    for pts in (ct, us):
        np.testing.assert_array_equal(np.sign(pts[:, 0]), [-1, 1, -1, 1, -1, 1])
        assert np.all(np.diff(pts[::2, 1]) < -30) and np.all(np.diff(pts[1::2, 1]) < -30)


def test_real_ultrasound_bone_surface(data_dir):
    path = data_dir / PHANTOM / "us_frame" / "vertebrae_clean_scaled.pcd"
    c = read_points(path)
    assert c.points.shape == (9618, 3) and c.points.dtype == np.float64
    assert c.normals is None and c.colors is None
    rows = _ascii_pcd_rows(path)
    np.testing.assert_array_equal(c.points, rows)
    extent = np.ptp(c.points, axis=0)
    assert 40 < extent.max() < 300  # a lumbar phantom, in mm


def test_real_ssm_mesh(data_dir, ssm_mesh, ssm_parts):
    m = ssm_mesh
    assert (m.n_vertices, m.n_faces) == (65_478, 130_956)
    parts = ssm_parts
    assert len(parts) == 4
    assert sum(p.n_faces for p in parts) == 130_956
    vols = [p.enclosed_volume() for p in parts]
    assert all(20_000 < v < 120_000 for v in vols)  # a lumbar vertebra is ~30-90 cm^3
    # Independent check of the binary body: Open3D's reader gives the same numbers.
    o3d = pytest.importorskip("open3d")
    om = o3d.io.read_triangle_mesh(str(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply"))
    np.testing.assert_array_equal(np.asarray(om.vertices), m.vertices)
    np.testing.assert_array_equal(np.asarray(om.triangles), m.faces)
    pts = read_points(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply", frame="ct")
    np.testing.assert_array_equal(pts.points, m.vertices)


# ------------------------------------------------------------------ round trips
POINT_CASES = [("ply", True, False), ("ply", False, False), ("pcd", True, False),
               ("pcd", True, True), ("pcd", False, False), ("xyz", True, False),
               ("csv", True, False), ("txt", True, False), ("npy", True, False)]


@pytest.mark.parametrize("ext, binary, compressed", POINT_CASES)
@pytest.mark.parametrize("fields", ["points", "normals", "colors", "all"])
def test_point_round_trip(tmp_path, cloud, ext, binary, compressed, fields):
    c = {"points": PointCloud(cloud.points),
         "normals": PointCloud(cloud.points, normals=cloud.normals),
         "colors": PointCloud(cloud.points, colors=cloud.colors),
         "all": cloud}[fields]
    path = tmp_path / f"c.{ext}"
    assert write_points(path, c, binary=binary, compressed=compressed) == path
    r = read_points(path)
    # PCD stores float32 coordinates (PCL's convention); everything else is exact.
    exact = ext != "pcd"
    if exact:
        np.testing.assert_array_equal(r.points, c.points)
    else:
        np.testing.assert_array_equal(r.points, c.points.astype(np.float32))
    for attr in ("normals", "colors"):
        want = getattr(c, attr)
        if want is None:
            assert getattr(r, attr) is None
        else:
            np.testing.assert_allclose(getattr(r, attr), want, rtol=0,
                                       atol=0 if exact else 1e-7)
    if fields == "all":
        np.testing.assert_array_equal(r.labels, c.labels)
        np.testing.assert_array_equal(r.extra["intensity"], c.extra["intensity"])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_write_points_accepts_arrays_and_does_not_modify_them(tmp_path):
    p = np.arange(30, dtype=np.float64).reshape(10, 3)
    before = p.copy()
    write_points(tmp_path / "a.ply", p)
    np.testing.assert_array_equal(p, before)
    np.testing.assert_array_equal(read_points(tmp_path / "a.ply").points, p)
    with pytest.raises(InputError, match=r"cloud_or_points must be \(N, 3\), got \(3, 10\)"):
        write_points(tmp_path / "b.ply", p.T)


def test_big_endian_ply_and_polygons(tmp_path):
    v = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0], [5, 5, 8]], dtype=">f4")
    head = (b"ply\nformat binary_big_endian 1.0\nelement vertex 5\nproperty float x\n"
            b"property float y\nproperty float z\nelement face 3\n"
            b"property list uchar int vertex_indices\nend_header\n")
    quad = np.array([4], ">u1").tobytes() + np.array([0, 3, 2, 1], ">i4").tobytes()
    tris = b"".join(np.array([3], ">u1").tobytes() + np.array(t, ">i4").tobytes()
                    for t in ([0, 1, 4], [1, 2, 4]))
    path = tmp_path / "be.ply"
    path.write_bytes(head + v.tobytes() + quad + tris)
    m = read_mesh(path)
    np.testing.assert_array_equal(m.vertices, v.astype(np.float64))
    np.testing.assert_array_equal(m.faces, [[0, 3, 2], [0, 2, 1], [0, 1, 4], [1, 2, 4]])
    # The same polygons in ascii.
    text = ("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\n"
            "property float z\nelement face 3\nproperty list uchar int vertex_indices\n"
            "end_header\n" + "\n".join(" ".join(str(x) for x in r) for r in v.tolist())
            + "\n4 0 3 2 1\n3 0 1 4\n3 1 2 4\n")
    (tmp_path / "a.ply").write_text(text)
    m2 = read_mesh(tmp_path / "a.ply")
    np.testing.assert_array_equal(m2.faces, m.faces)


@pytest.mark.parametrize("ext, binary", [("ply", True), ("ply", False), ("stl", True),
                                         ("stl", False), ("obj", True)])
def test_mesh_round_trip(tmp_path, ssm_parts, ext, binary):
    m = ssm_parts[0]
    m = Mesh(m.vertices, m.faces, normals=m.vertex_normals() if ext != "stl" else None)
    path = tmp_path / f"m.{ext}"
    write_mesh(path, m, binary=binary)
    r = read_mesh(path)
    assert r.n_faces == m.n_faces
    if ext == "stl":  # float32 triangle soup, welded back into shared vertices
        assert r.n_vertices == m.n_vertices
        np.testing.assert_allclose(r.vertices[r.faces], m.vertices[m.faces], atol=1e-4)
        assert len(r.connected_components()) == 1
    else:
        np.testing.assert_array_equal(r.vertices, m.vertices)
        np.testing.assert_array_equal(r.faces, m.faces)
        np.testing.assert_allclose(r.normals, m.normals, atol=1e-15)
    assert r.enclosed_volume() == pytest.approx(m.enclosed_volume(), rel=1e-6)
    np.testing.assert_allclose(r.centroid(), m.centroid(), atol=1e-4)


def test_open3d_reads_our_files_and_we_read_open3d_files(tmp_path, cloud):
    o3d = pytest.importorskip("open3d")
    # A cloud with repeated values so Open3D's LZF output holds real back references.
    rng = np.random.default_rng(3)
    p = np.round(rng.normal(scale=20, size=(2000, 3)), 1)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    pc.normals = o3d.utility.Vector3dVector(np.tile([0.0, 0.0, 1.0], (2000, 1)))
    pc.colors = o3d.utility.Vector3dVector(np.tile([1.0, 0.5, 0.0], (2000, 1)))
    for name, kw in [("o3d_c.pcd", dict(compressed=True)), ("o3d_b.pcd", {}),
                     ("o3d_a.pcd", dict(write_ascii=True)), ("o3d_b.ply", {}),
                     ("o3d_a.ply", dict(write_ascii=True))]:
        path = tmp_path / name
        assert o3d.io.write_point_cloud(str(path), pc, **kw)
        r = read_points(path)
        np.testing.assert_allclose(r.points, p, atol=1e-4)
        np.testing.assert_allclose(r.normals[:, 2], 1.0, atol=1e-6)
        np.testing.assert_allclose(r.colors, np.tile([1.0, 128 / 255, 0.0], (2000, 1)),
                                   atol=0.51 / 255)
    raw = (tmp_path / "o3d_c.pcd").read_bytes()
    assert b"binary_compressed" in raw
    for name, kw in [("ours_b.pcd", {}), ("ours_c.pcd", dict(compressed=True)),
                     ("ours_a.pcd", dict(binary=False)), ("ours_b.ply", {}),
                     ("ours_a.ply", dict(binary=False))]:
        write_points(tmp_path / name, cloud, **kw)
        q = o3d.io.read_point_cloud(str(tmp_path / name))
        np.testing.assert_allclose(np.asarray(q.points), cloud.points, atol=1e-4)
        np.testing.assert_allclose(np.asarray(q.normals), cloud.normals, atol=1e-6)
        np.testing.assert_allclose(np.asarray(q.colors), cloud.colors, atol=1e-9)


def test_lzf_round_trip_and_corruption():
    data = bytes(range(256)) * 5 + b"tail"
    assert lzf_decompress(lzf_compress_literal(data), len(data)) == data
    # A hand-made back reference: literal "ab", then copy 4 bytes from 2 back -> "ababab".
    assert lzf_decompress(bytes([1]) + b"ab" + bytes([(2 << 5), 1]), 6) == b"ababab"
    with pytest.raises(ValueError):
        lzf_decompress(bytes([(2 << 5), 9]), 4)  # reference before the start
    with pytest.raises(ValueError):
        lzf_decompress(lzf_compress_literal(data), len(data) + 1)


def test_text_formats_with_headers_and_guessing(tmp_path):
    (tmp_path / "h.csv").write_text("X,Y,Z,intensity\n1,2,3,0.5\n4,5,6,0.25\n")
    c = read_points(tmp_path / "h.csv")
    np.testing.assert_array_equal(c.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(c.extra["intensity"], [0.5, 0.25])
    (tmp_path / "n.xyz").write_text("// comment\n1 2 3 0 0 1\n4 5 6 1 0 0\n")
    assert read_points(tmp_path / "n.xyz").normals is not None
    (tmp_path / "c.txt").write_text("1 2 3 255 0 128\n4 5 6 0 255 0\n")
    np.testing.assert_allclose(read_points(tmp_path / "c.txt").colors[0], [1, 0, 128 / 255])
    (tmp_path / "t.xyz").write_text("1;2;3\n4;5;6\n")
    assert len(read_points(tmp_path / "t.xyz")) == 2
    (tmp_path / "leica.pts").write_text("2\n1 2 3 -1200 255 0 0\n4 5 6 -800 0 255 0\n")
    pts = read_points(tmp_path / "leica.pts")
    np.testing.assert_array_equal(pts.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pts.extra["intensity"], [-1200, -800])
    np.testing.assert_array_equal(pts.colors, [[1, 0, 0], [0, 1, 0]])


def test_stl_and_obj_vertices_as_points(tmp_path, ssm_parts):
    m = ssm_parts[1]
    write_mesh(tmp_path / "v.obj", m)
    c = read_points(tmp_path / "v.obj", frame="ct")
    np.testing.assert_array_equal(c.points, m.vertices)
    (tmp_path / "q.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\n"
                                    "f 1/1 2/1 3/1 4/1\nf -4 -2 -1\n")
    q = read_mesh(tmp_path / "q.obj")
    np.testing.assert_array_equal(q.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])


# ------------------------------------------------------------------ broken files
def _ply_bytes(n_declared: int, rows: np.ndarray, binary=True) -> bytes:
    fmt = "binary_little_endian" if binary else "ascii"
    head = (f"ply\nformat {fmt} 1.0\nelement vertex {n_declared}\nproperty float x\n"
            "property float y\nproperty float z\nend_header\n").encode()
    if binary:
        return head + rows.astype("<f4").tobytes()
    return head + "".join(f"{a} {b} {c}\n" for a, b, c in rows).encode()


PTS = np.arange(30, dtype=float).reshape(10, 3)
NAN_PTS = PTS.copy()
NAN_PTS[4, 1] = np.nan
INF_PTS = PTS.copy()
INF_PTS[7, 2] = np.inf
PCD_HEAD = ("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {w}\nHEIGHT 1\n"
            "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n")

BROKEN = {
    "empty.ply": (b"", "empty"),
    "trunc.ply": (_ply_bytes(10, PTS)[:-7], "truncated"),
    "count_high.ply": (_ply_bytes(12, PTS, binary=False), "declares 12 rows, found 10"),
    "count_low.ply": (_ply_bytes(8, PTS), "bytes after the last element"),
    "count_low_ascii.ply": (_ply_bytes(8, PTS, binary=False), "more data lines"),
    "nan.ply": (_ply_bytes(10, NAN_PTS), "NaN or inf"),
    "noheader.ply": (b"ply\nformat ascii 1.0\nelement vertex 3\n", "end_header"),
    "zero.ply": (_ply_bytes(0, PTS[:0]), "no points"),
    "notply.ply": (b"solid x\nendsolid x\n", "not a PLY file"),
    "inf.pcd": (PCD_HEAD.format(w=10, n=10, kind="ascii").encode()
                + "".join(f"{a} {b} {c}\n" for a, b, c in INF_PTS).encode(), "NaN or inf"),
    "trunc.pcd": (PCD_HEAD.format(w=10, n=10, kind="binary").encode()
                  + PTS.astype("<f4").tobytes()[:100], "truncated"),
    "wh.pcd": (PCD_HEAD.format(w=10, n=12, kind="binary").encode(), "WIDTH"),
    "lines.pcd": (PCD_HEAD.format(w=12, n=12, kind="ascii").encode()
                  + "".join(f"{a} {b} {c}\n" for a, b, c in PTS).encode(), "found 10 data lines"),
    "lzf.pcd": (PCD_HEAD.format(w=10, n=10, kind="binary_compressed").encode()
                + np.array([4, 120], "<u4").tobytes() + bytes([200, 50, 1, 2]), "corrupt LZF"),
    "nodata.pcd": (b"VERSION .7\nFIELDS x y z\n", "no DATA line"),
    "ragged.xyz": (b"1 2 3\n4 5 6\n7 8\n", "different numbers of columns"),
    "words.csv": (b"x,y,z\n1,2,3\n4,five,6\n", "not numeric"),
    "nan.csv": (b"x,y,z\n1,2,3\nnan,5,6\n", "NaN or inf"),
    "two.csv": (b"1,2\n3,4\n", "at least 3 columns"),
    "names.csv": (b"a,b,c\n1,2,3\n", "no 'x' field"),
    "trunc.stl": (b"\0" * 80 + np.array([5], "<u4").tobytes() + b"\0" * 120,
                  "declares 5 triangles"),
    "noend.stl": (b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"
                  b"vertex 0 1 0\nendloop\nendfacet\n", "endsolid"),
    "index.obj": (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "vertex index 4 outside 1..3"),
    "empty.obj": (b"# nothing\n", "no vertices"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_input_error_naming_file(tmp_path, name):
    content, problem = BROKEN[name]
    path = tmp_path / name
    path.write_bytes(content)
    reader = read_mesh if name.endswith((".stl", ".obj")) else read_points
    with pytest.raises(InputError) as exc:
        reader(path)
    msg = str(exc.value)
    assert msg.startswith(str(path)), msg
    assert problem in msg, msg


def test_broken_npy_and_paths(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(9))
    with pytest.raises(InputError, match=r"must be \(N, 3\).*got \(9,\)"):
        read_points(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):
        read_points(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a readable .npy"):
        read_points(tmp_path / "junk.npy")
    with pytest.raises(InputError, match="not found"):
        read_points(tmp_path / "missing.ply")
    with pytest.raises(InputError, match="is a folder"):
        read_points(tmp_path)
    with pytest.raises(InputError, match="unknown point-cloud extension '.vtk'"):
        read_points(tmp_path / "scan.vtk")
    with pytest.raises(InputError, match="unknown mesh extension '.pcd'"):
        read_mesh(tmp_path / "scan.pcd")
    with pytest.raises(InputError, match="file path"):
        read_points(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="output folder"):
        write_points(tmp_path / "nope" / "a.ply", PTS)
    with pytest.raises(InputError, match="no 'face' element"):
        write_points(tmp_path / "pts.ply", PTS)
        read_mesh(tmp_path / "pts.ply")


def test_drop_invalid_keeps_the_finite_points(tmp_path):
    path = tmp_path / "organised.pcd"
    path.write_bytes(PCD_HEAD.format(w=10, n=10, kind="binary").encode()
                     + NAN_PTS.astype("<f4").tobytes())
    c = read_points(path, drop_invalid=True)
    np.testing.assert_array_equal(c.points, np.delete(PTS, 4, axis=0))


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "scan.npy"
    write_points(path, PTS)
    before = path.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_points(path, PTS * 2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["scan.npy"]


# ------------------------------------------------------------------ depth images
def test_depth_to_points_back_projects_and_reprojects():
    K = np.array([[600.0, 0, 319.5], [0, 610.0, 239.5], [0, 0, 1]])
    h, w = 48, 64
    v, u = np.mgrid[0:h, 0:w]
    depth = 500.0 + 0.5 * u + 0.25 * v  # a tilted plane, mm
    depth[3, 5] = 0.0  # no return
    depth[10, 20] = np.nan
    c = depth_to_points(depth, K)
    assert len(c) == h * w - 2 and c.frame == "sensor"
    uv = np.c_[c.points[:, 0] / c.points[:, 2], c.points[:, 1] / c.points[:, 2],
               np.ones(len(c))] @ K.T
    np.testing.assert_allclose(uv[:, :2], c.extra["pixel_uv"], atol=1e-9)
    uu, vv = c.extra["pixel_uv"].T.astype(int)
    np.testing.assert_allclose(c.points[:, 2], depth[vv, uu], atol=1e-12)
    # The principal point looks straight ahead: x = y = 0 there (interpolated plane).
    metres = depth_to_points(depth / 1000.0, K, depth_scale_mm=1000.0)
    np.testing.assert_allclose(metres.points, c.points, atol=1e-9)
    strided = depth_to_points(depth, K, stride=4, max_depth_mm=510.0)
    assert np.all(strided.points[:, 2] <= 510.0)
    assert np.all(strided.extra["pixel_uv"] % 4 == 0)


@pytest.mark.parametrize("depth, K, match", [
    (np.zeros(10), np.eye(3), "2-D"),
    (np.zeros((4, 4)), np.eye(4), "3x3"),
    (np.zeros((4, 4)), np.diag([-1.0, 1.0, 1.0]), "fx, fy > 0"),
    (np.array([["a"]]), np.eye(3), "numeric"),
])
def test_depth_to_points_validates(depth, K, match):
    with pytest.raises(InputError, match=match):
        depth_to_points(depth, K)


@pytest.mark.parametrize("ext", ["ply", "stl", "obj"])
def test_meshes_cross_read_with_open3d(tmp_path, ssm_parts, ext):
    o3d = pytest.importorskip("open3d")
    m = ssm_parts[2]
    om = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(m.vertices),
                                   o3d.utility.Vector3iVector(m.faces))
    om.compute_vertex_normals()
    theirs = tmp_path / f"o3d.{ext}"
    assert o3d.io.write_triangle_mesh(str(theirs), om)
    r = read_mesh(theirs)
    assert (r.n_vertices, r.n_faces) == (m.n_vertices, m.n_faces)
    assert r.enclosed_volume() == pytest.approx(m.enclosed_volume(), rel=1e-6)
    if ext != "stl":
        np.testing.assert_allclose(r.normals, np.asarray(om.vertex_normals), atol=1e-4)
    ours = tmp_path / f"ours.{ext}"
    write_mesh(ours, m)
    q = o3d.io.read_triangle_mesh(str(ours))
    assert len(q.triangles) == m.n_faces
    # Same triangles corner for corner (Open3D renumbers OBJ vertices, does not weld STL).
    corners = np.asarray(q.vertices)[np.asarray(q.triangles)]
    np.testing.assert_allclose(corners, m.vertices[m.faces], atol=1e-4 if ext == "stl" else 1e-9)


def test_depth_image_files_round_trip_and_back_project(tmp_path):
    from arspine.datasets.io import read_depth_image, write_depth_image

    rng = np.random.default_rng(11)
    depth = np.round(rng.uniform(300, 1500, size=(30, 40)))
    depth[0, :5] = 0.0  # no return
    K = np.array([[400.0, 0, 19.5], [0, 400.0, 14.5], [0, 0, 1]])
    for name in ("d.png", "d.tiff", "d.npy"):
        write_depth_image(tmp_path / name, depth)
        back = read_depth_image(tmp_path / name)
        np.testing.assert_array_equal(back, depth)
        c = depth_to_points(back, K)
        assert len(c) == depth.size - 5
    # 0.1 mm units in a 16-bit PNG, read back in mm.
    write_depth_image(tmp_path / "fine.png", depth, depth_scale_mm=0.1)
    np.testing.assert_allclose(read_depth_image(tmp_path / "fine.png", depth_scale_mm=0.1),
                               depth, atol=1e-9)
    with pytest.raises(InputError, match="0..65535"):
        write_depth_image(tmp_path / "far.png", depth * 100)
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((4, 4, 3)))
    with pytest.raises(InputError, match="one channel"):
        read_depth_image(rgb)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="junk.png: not a readable image"):
        read_depth_image(tmp_path / "junk.png")
    with pytest.raises(InputError, match="unknown depth-image extension"):
        read_depth_image(tmp_path / "d.jpg")
    assert sorted(os.listdir(tmp_path)) == ["d.npy", "d.png", "d.tiff", "fine.png", "junk.png",
                                            "rgb.npy"]


# ------------------------------------------------------------------ fuzzing
FUZZ_FORMATS = [("ply", {}), ("ply", {"binary": False}), ("pcd", {}),
                ("pcd", {"compressed": True}), ("pcd", {"binary": False}), ("csv", {}),
                ("npy", {})]


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory, cloud):
    d = tmp_path_factory.mktemp("fuzz")
    small = cloud.select(np.arange(40))
    out = {}
    for i, (ext, kw) in enumerate(FUZZ_FORMATS):
        path = d / f"f{i}.{ext}"
        write_points(path, small, **kw)
        out[i] = (ext, path.read_bytes())
    return out


@pytest.mark.parametrize("index", range(len(FUZZ_FORMATS)))
def test_damaged_files_raise_input_error_or_read_valid_points(tmp_path, fuzz_files, index):
    """Truncations and flipped bytes: a clear InputError or a valid cloud, never a crash."""
    ext, data = fuzz_files[index]
    rng = np.random.default_rng(index)
    path = tmp_path / f"damaged.{ext}"
    outcomes = {"error": 0, "ok": 0}
    for trial in range(40):
        b = bytearray(data)
        if trial % 2 == 0:
            b = b[:int(rng.integers(0, len(b)))]
        else:
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 6))):
                b[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(b))
        try:
            c = read_points(path)
        except InputError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
        else:
            assert c.points.ndim == 2 and c.points.shape[1] == 3
            assert np.isfinite(c.points).all()
            outcomes["ok"] += 1
    assert outcomes["error"] >= 15  # every truncation that cuts data is caught
