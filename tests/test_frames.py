"""RigidTransform and FrameGraph: algebra (hypothesis properties), conversions checked against
scipy.spatial.transform, validation errors."""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from arspine.errors import FrameMismatchError, InputError
from arspine.navigation.frames import (
    FrameGraph,
    FrameInconsistencyError,
    FrameNotConnectedError,
    RigidTransform,
    parse_transform_name,
    rotation_angle_deg,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)
quaternions = st.tuples(finite, finite, finite, finite).filter(
    lambda q: np.linalg.norm(q) > 0.1).map(lambda q: np.array(q) / np.linalg.norm(q))
translations = st.tuples(*[st.floats(-800.0, 800.0, allow_nan=False)] * 3).map(np.array)
seeds = st.integers(0, 2**31 - 1)


def _transform(q, t, to="a", frm="b") -> RigidTransform:
    return RigidTransform.from_quaternion(q, t, to, frm)


transforms = st.builds(_transform, quaternions, translations)
TAIT_BRYAN = ["".join(p) for p in itertools.permutations("xyz")]
SEQS = TAIT_BRYAN + [s.upper() for s in TAIT_BRYAN]


# ------------------------------------------------------------------ algebra properties
@SETTINGS
@given(quaternions, translations)
def test_compose_with_inverse_is_identity(q, t):
    T = _transform(q, t, "sensor", "ct")
    eye_ct = RigidTransform.identity("ct", "ct")
    eye_sensor = RigidTransform.identity("sensor", "sensor")
    assert T.inv() @ T == eye_ct
    assert T @ T.inv() == eye_sensor
    np.testing.assert_allclose((T @ T.inv()).as_matrix(), np.eye(4), atol=1e-9)
    assert T.inv().name == "T_ct_from_sensor"
    assert T.inv().inv() == T


@SETTINGS
@given(quaternions, translations, quaternions, translations, quaternions, translations)
def test_composition_is_associative_and_matches_matrices(q1, t1, q2, t2, q3, t3):
    A = _transform(q1, t1, "world", "tracker")
    B = _transform(q2, t2, "tracker", "sensor")
    C = _transform(q3, t3, "sensor", "ct")
    left, right = (A @ B) @ C, A @ (B @ C)
    assert left.name == right.name == "T_world_from_ct"
    assert left.isclose(right, atol_mm=1e-9, atol_deg=1e-7)
    direct = A.as_matrix() @ B.as_matrix() @ C.as_matrix()
    np.testing.assert_allclose(left.as_matrix(), direct, atol=1e-9)


@SETTINGS
@given(quaternions, translations, seeds)
def test_points_round_trip_and_match_homogeneous_product(q, t, seed):
    T = _transform(q, t)
    p = np.random.default_rng(seed).normal(scale=200.0, size=(25, 3))
    mapped = T.apply(p)
    homog = (T.as_matrix() @ np.c_[p, np.ones(len(p))].T).T[:, :3]
    np.testing.assert_allclose(mapped, homog, atol=1e-9)
    np.testing.assert_allclose(T.inv().apply(mapped), p, atol=1e-9)
    np.testing.assert_allclose(T.apply(p[0]), mapped[0], atol=1e-12)
    # Distances are preserved: a rigid map.
    np.testing.assert_allclose(np.linalg.norm(mapped[1:] - mapped[0], axis=1),
                               np.linalg.norm(p[1:] - p[0], axis=1), atol=1e-9)
    # Vectors rotate without translating.
    np.testing.assert_allclose(T.apply_vectors(p), p @ T.rotation.T, atol=1e-9)


def _random_tree_graph(rng: np.random.Generator, n_frames: int, n_extra: int):
    """Frames with known world poses, linked by a random spanning tree plus extra consistent
    edges (random direction each)."""
    names = [f"f{i}" for i in range(n_frames)]
    poses = {n: Rotation.random(random_state=rng).as_matrix() for n in names}
    world = {}
    for n in names:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = poses[n], rng.normal(scale=300.0, size=3)
        world[n] = m

    def edge(a, b):  # T_a_from_b = (T_world_from_a)^-1 T_world_from_b
        return RigidTransform(np.linalg.inv(world[a]) @ world[b], a, b, atol=1e-6)

    g = FrameGraph()
    pairs = [(names[i], names[int(rng.integers(0, i))]) for i in range(1, n_frames)]
    others = [p for p in itertools.combinations(names, 2) if p not in pairs
              and p[::-1] not in pairs]
    rng.shuffle(others)
    pairs += others[:n_extra]
    for a, b in pairs:
        g.add(edge(a, b) if rng.random() < 0.5 else edge(b, a), timestamp_s=float(rng.random()))
    return g, names, world, pairs


@SETTINGS
@given(seeds, st.integers(2, 9), st.integers(0, 6))
def test_random_graphs_resolve_to_directly_composed_matrix(seed, n_frames, n_extra):
    rng = np.random.default_rng(seed)
    g, names, world, _ = _random_tree_graph(rng, n_frames, n_extra)
    g.check_consistency(atol_mm=1e-6, atol_deg=1e-6)
    assert g.inconsistencies(atol_mm=1e-6, atol_deg=1e-6) == []
    for a, b in itertools.permutations(names, 2):
        T = g.get(a, b)
        assert (T.to_frame, T.from_frame) == (a, b)
        expected = np.linalg.inv(world[a]) @ world[b]
        np.testing.assert_allclose(T.as_matrix(), expected, atol=1e-7)
        path = g.path(a, b)
        assert path[0] == b and path[-1] == a and len(set(path)) == len(path)
    assert g.get(names[0], names[0]) == RigidTransform.identity(names[0], names[0])


@SETTINGS
@given(seeds, st.integers(3, 8), st.floats(0.5, 20.0))
def test_cycle_that_does_not_close_is_reported(seed, n_frames, error_mm):
    rng = np.random.default_rng(seed)
    g, names, world, pairs = _random_tree_graph(rng, n_frames, 1)
    a, b = pairs[-1]  # the extra edge closes a cycle
    T_ab = RigidTransform(np.linalg.inv(world[a]) @ world[b], a, b, atol=1e-6)
    shift = RigidTransform.from_rt(np.eye(3), [error_mm, 0, 0], a, a)
    g.add(shift @ T_ab)  # replaces the consistent edge with a wrong one
    bad = g.inconsistencies(atol_mm=0.1, atol_deg=0.1)
    assert len(bad) == 1
    assert bad[0][3] == pytest.approx(error_mm, rel=1e-6)
    with pytest.raises(FrameInconsistencyError, match="does not close"):
        g.check_consistency()


# ------------------------------------------------------------------ scipy conversions
@pytest.mark.filterwarnings("ignore:Gimbal lock")
@SETTINGS
@given(quaternions, st.sampled_from(SEQS))
def test_euler_quaternion_rotvec_match_scipy(q, seq):
    R = Rotation.from_quat(q, scalar_first=True)
    T = RigidTransform.from_quaternion(q, [1, 2, 3], "a", "b")
    np.testing.assert_allclose(T.rotation, R.as_matrix(), atol=1e-12)
    # Quaternion: the same rotation (q ~ -q), sign fixed to w >= 0.
    qs, qt = R.as_quat(scalar_first=True, canonical=True), T.as_quaternion()
    assert qt[0] >= 0.0
    assert min(np.abs(qt - qs).max(), np.abs(qt + qs).max()) < 1e-9
    if qs[0] > 1e-6:
        np.testing.assert_allclose(qt, qs, atol=1e-9)
    # Rotation vector both ways.
    np.testing.assert_allclose(Rotation.from_rotvec(T.as_rotvec()).as_matrix(), R.as_matrix(),
                               atol=1e-9)
    if R.magnitude() < np.radians(179.0):  # at 180 deg +v and -v are the same rotation
        np.testing.assert_allclose(T.as_rotvec(), R.as_rotvec(), atol=1e-8)
    T2 = RigidTransform.from_rotvec(R.as_rotvec(), [0, 0, 0], "a", "b")
    np.testing.assert_allclose(T2.rotation, R.as_matrix(), atol=1e-12)
    # Euler both ways, away from gimbal lock; the matrix always.
    angles = T.as_euler(seq)
    np.testing.assert_allclose(
        RigidTransform.from_euler(seq, angles, [0, 0, 0], "a", "b").rotation, R.as_matrix(),
        atol=1e-9)
    ref = R.as_euler(seq, degrees=True)
    if abs(abs(ref[1]) - 90.0) > 1.0:
        wrapped = (angles - ref + 180.0) % 360.0 - 180.0  # +180 and -180 are one angle
        np.testing.assert_allclose(wrapped, 0.0, atol=1e-7)
    np.testing.assert_allclose(
        RigidTransform.from_euler(seq, ref, [0, 0, 0], "a", "b").rotation,
        Rotation.from_euler(seq, ref, degrees=True).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(T.as_euler(seq, degrees=False), np.radians(angles), atol=1e-12)
    assert T.angle_deg == pytest.approx(np.degrees(R.magnitude()), abs=1e-7)


@pytest.mark.parametrize("seq", SEQS)
def test_euler_at_gimbal_lock_still_reconstructs(seq):
    T = RigidTransform.from_euler(seq, [30.0, 90.0, 0.0], [0, 0, 0], "a", "b")
    back = RigidTransform.from_euler(seq, T.as_euler(seq), [0, 0, 0], "a", "b")
    np.testing.assert_allclose(back.rotation, T.rotation, atol=1e-9)


def test_small_rotation_angle_is_precise():
    T = RigidTransform.from_rotvec([0, 0, 1e-9], [0, 0, 0], "a", "b")
    assert T.angle_deg == pytest.approx(np.degrees(1e-9), rel=1e-6)
    assert rotation_angle_deg(np.eye(3)) == 0.0
    assert rotation_angle_deg(np.diag([1.0, -1.0, -1.0])) == pytest.approx(180.0)


# ------------------------------------------------------------------ validation
def _rot(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


@pytest.mark.parametrize("matrix, match", [
    (np.diag([1.01, 1.0, 1.0, 1.0]), "not orthonormal"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "det \\+1"),
    (np.full((4, 4), np.nan), "finite"),
    (np.eye(3), "4x4"),
    (np.eye(4)[:, :3], "4x4"),
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]], "last row"),
    ("not a matrix", "4x4"),
])
def test_invalid_matrices_are_refused(matrix, match):
    with pytest.raises(InputError, match=match):
        RigidTransform(matrix, "sensor", "ct")


def test_nan_in_translation_and_bad_frame_names():
    m = np.eye(4)
    m[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        RigidTransform(m, "sensor", "ct")
    with pytest.raises(InputError, match="to_frame"):
        RigidTransform(np.eye(4), "", "ct")
    with pytest.raises(InputError, match="from_frame"):
        RigidTransform(np.eye(4), "sensor", None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="points must be \\(N, 3\\), got \\(3, 100\\)"):
        RigidTransform.identity("a", "b").apply(np.zeros((3, 100)))
    with pytest.raises(InputError, match="quaternion"):
        RigidTransform.from_quaternion([0, 0, 0, 0], [0, 0, 0], "a", "b")
    with pytest.raises(InputError, match="seq"):
        RigidTransform.from_euler("xYz", [0, 0, 0], [0, 0, 0], "a", "b")
    with pytest.raises(InputError, match="translation_mm"):
        RigidTransform.from_rt(np.eye(3), [1, 2], "a", "b")


def test_slightly_off_rotation_is_orthonormalized_on_request():
    m = np.eye(4)
    m[:3, :3] = _rot(30.0) + 1e-3
    with pytest.raises(InputError):
        RigidTransform(m, "a", "b")
    T = RigidTransform.from_matrix(m, "a", "b", orthonormalize=True)
    np.testing.assert_allclose(T.rotation.T @ T.rotation, np.eye(3), atol=1e-12)
    assert T.angle_deg == pytest.approx(30.0, abs=0.2)


def test_mismatched_composition_raises_frame_mismatch():
    a = RigidTransform.identity("world", "sensor")
    b = RigidTransform.identity("tracker", "ct")
    with pytest.raises(FrameMismatchError, match="T_world_from_sensor @ T_tracker_from_ct"):
        a @ b
    assert issubclass(FrameMismatchError, ValueError)
    assert issubclass(FrameMismatchError, InputError)


def test_repr_name_equality_dict_pickle_immutability():
    T = RigidTransform.from_euler("xyz", [10, 0, 0], [1, 2, 3], "sensor", "ct")
    assert repr(T).startswith("T_sensor_from_ct(")
    assert "angle=10.000 deg" in repr(T) and "translation_mm=[1.000, 2.000, 3.000]" in repr(T)
    assert parse_transform_name(T.name) == ("sensor", "ct")
    assert parse_transform_name("T_eye_left_from_head") == ("eye_left", "head")
    with pytest.raises(InputError):
        parse_transform_name("sensor_to_ct")
    assert RigidTransform.from_dict(T.to_dict()) == T
    assert pickle.loads(pickle.dumps(T)) == T
    assert copy.deepcopy(T) == T
    other = RigidTransform.from_euler("xyz", [10, 0, 0], [1, 2, 3.001], "sensor", "ct")
    assert T != other
    assert T.isclose(other, atol_mm=0.01)
    assert not T.isclose(RigidTransform(T.as_matrix(), "world", "ct"), atol_mm=1.0)
    assert T.distance_to(other) == pytest.approx((0.0, 0.001), abs=1e-9)
    with pytest.raises(AttributeError):
        T._m = np.eye(4)
    m = T.as_matrix()
    m[0, 3] = 99.0  # a copy: the transform does not change
    assert T.translation_mm[0] == 1.0
    with pytest.raises((ValueError, TypeError)):
        T._m[0, 3] = 5.0  # the stored matrix is read-only
    with pytest.raises(TypeError):
        hash(T)


# ------------------------------------------------------------------ FrameGraph
def test_graph_not_connected_error_names_both_frames():
    g = FrameGraph([RigidTransform.identity("world", "sensor"),
                    RigidTransform.identity("head", "eye_left")])
    with pytest.raises(FrameNotConnectedError) as exc:
        g.get("world", "eye_left")
    assert "'world'" in str(exc.value) and "'eye_left'" in str(exc.value)
    with pytest.raises(FrameNotConnectedError) as exc:
        g.get("sensor", "tool")
    assert "tool" in str(exc.value) and "sensor" in str(exc.value)
    assert isinstance(exc.value, LookupError)


def test_graph_update_timestamp_remove_and_serialise():
    g = FrameGraph()
    g.add(RigidTransform.from_rt(_rot(10), [1, 0, 0], "world", "sensor"), timestamp_s=1.0)
    g.add(RigidTransform.from_rt(_rot(20), [0, 5, 0], "sensor", "ct"), timestamp_s=2.0)
    first = g.get("world", "ct")
    np.testing.assert_allclose(first.as_matrix(),
                               g.get("world", "sensor").as_matrix()
                               @ g.get("sensor", "ct").as_matrix(), atol=1e-12)
    # Updating with the reverse direction replaces the edge (one edge per pair).
    new = RigidTransform.from_rt(_rot(-5), [0, 0, 7], "ct", "sensor")
    g.update(new, timestamp_s=3.0)
    assert len(g.edges) == 2
    assert g.timestamp("sensor", "ct") == 3.0
    assert g.get("sensor", "ct") == new.inv()
    assert not g.get("world", "ct").isclose(first, atol_mm=1.0)
    back = FrameGraph.from_dict(g.to_dict())
    assert back.get("world", "ct") == g.get("world", "ct")
    assert back.timestamp("world", "sensor") == 1.0
    assert g.frames == ["ct", "sensor", "world"] and "ct" in g
    g.remove("sensor", "ct")
    with pytest.raises(FrameNotConnectedError):
        g.get("world", "ct")
    with pytest.raises(InputError, match="links a frame to itself"):
        g.add(RigidTransform.identity("ct", "ct"))
    with pytest.raises(InputError, match="RigidTransform"):
        g.add(np.eye(4))  # type: ignore[arg-type]


def test_graph_picks_shortest_chain():
    g = FrameGraph()
    for a, b in [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]:
        g.add(RigidTransform.identity(a, b))
    assert g.path("a", "d") == ["d", "a"]
    assert g.path("a", "c") in (["c", "b", "a"], ["c", "d", "a"])


def test_from_dict_reprojects_rounding_but_refuses_non_rigid():
    T = RigidTransform.from_euler("zyx", [33.3, -12.1, 7.7], [10, 20, 30], "sensor", "ct")
    d = T.to_dict()
    d["matrix"] = [[round(x, 6) for x in row] for row in d["matrix"]]  # a 6-digit text file
    back = RigidTransform.from_dict(d)
    assert back.isclose(T, atol_mm=1e-5, atol_deg=1e-4)
    np.testing.assert_allclose(back.rotation.T @ back.rotation, np.eye(3), atol=1e-12)
    d["matrix"] = np.diag([2.0, 1.0, 1.0, 1.0]).tolist()
    with pytest.raises(InputError, match="not orthonormal"):
        RigidTransform.from_dict(d)
    with pytest.raises(InputError, match="'to', 'from' and 'matrix'"):
        RigidTransform.from_dict({"matrix": np.eye(4).tolist()})
