"""Markerless surface registration: known transforms recovered on the real shape-model
vertebrae and on scans of the real CT; the gate refuses what it cannot support."""

from __future__ import annotations

import numpy as np
import pytest
from test_registration_views import make_view, ssm_surfaces

from arspine.errors import InputError
from arspine.navigation.geometry import Mesh, PointCloud
from arspine.registration import PreparedModel, RegistrationResult, metrics, prepare_model
from arspine.registration import register as do_register


@pytest.fixture(scope="session")
def ssm(data_dir):
    return ssm_surfaces(data_dir)


@pytest.fixture(scope="session")
def ssm_model(ssm):
    return prepare_model(surfaces=ssm)


def _tre(result, view, surfaces, level):
    tg = surfaces[level].vertices[::400]
    return metrics.tre_mm(result.vertebrae[level].T_sensor_from_ct, view["truth"][level], tg)


def test_model_geometry(ssm_model):
    m = ssm_model
    assert m.levels == ("L2", "L3", "L4", "L5")
    # Shape model: +z is cranial, the spinous processes point to -x (estimated, not given).
    assert m.axis_ct @ [0, 0, -1] > 0.95
    assert m.posterior_ct @ [-1, 0, 0] > 0.95
    assert m.points.shape == m.normals.shape and m.points.shape[1] == 3
    np.testing.assert_allclose(np.linalg.norm(m.normals, axis=1), 1.0, atol=1e-6)
    # The exposable shell faces backwards: most normals point posterior.
    assert np.mean(m.normals @ m.posterior_ct > 0) > 0.75
    assert set(np.unique(m.level_index)) == {0, 1, 2, 3}


def test_model_save_load_roundtrip(ssm_model, tmp_path):
    p = ssm_model.save(tmp_path / "m.npz")
    m2 = PreparedModel.load(p)
    assert m2.levels == ssm_model.levels
    np.testing.assert_array_equal(m2.points, ssm_model.points)
    np.testing.assert_array_equal(m2.grid.index, ssm_model.grid.index)
    q = ssm_model.points[:50] + 0.3
    np.testing.assert_array_equal(m2.nearest(q, 3.0)[1], ssm_model.nearest(q, 3.0)[1])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="broken"):
        PreparedModel.load(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="not found"):
        PreparedModel.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("seed", [0, 3])
def test_known_poses_recovered_per_vertebra(ssm, ssm_model, seed):
    view = make_view(ssm, seed=seed)
    r = do_register(ssm_model, PointCloud(view["points"]))
    assert r.status == "ok", r.reason
    for lv in view["exposed"]:
        assert r.vertebrae[lv].status == "ok"
        assert r.vertebrae[lv].rmse_mm < 1.2
        assert np.max(_tre(r, view, ssm, lv)) < 1.0
    # L2 is under the skin: no evidence, so it is not reported ok.
    assert r.vertebrae["L2"].status == "rejected"
    assert "not exposed" in r.vertebrae["L2"].reason
    # The look-alike alternatives were evaluated and clearly lost.
    assert r.quality["margin"] >= 0.25
    d = r.to_dict()
    assert RegistrationResult.from_dict(d).vertebrae["L3"].T_sensor_from_ct.isclose(
        r.vertebrae["L3"].T_sensor_from_ct, atol_mm=1e-9, atol_deg=1e-9)


def _ellipsoid(center, radii, n=40):
    u, v = np.meshgrid(np.linspace(0, np.pi, n), np.linspace(0, 2 * np.pi, 2 * n))
    pts = np.stack([np.sin(u) * np.cos(v), np.sin(u) * np.sin(v), np.cos(u)], -1).reshape(-1, 3)
    from scipy.spatial import ConvexHull

    hull = ConvexHull(pts)
    faces = hull.simplices.copy()
    c = pts[faces].mean(axis=1)
    nrm = np.cross(pts[faces[:, 1]] - pts[faces[:, 0]], pts[faces[:, 2]] - pts[faces[:, 0]])
    flip = np.einsum("ij,ij->i", nrm, c) < 0
    faces[flip] = faces[flip][:, ::-1]
    return Mesh(pts * radii + center, faces)


def test_gate_rejects_wrong_anatomy(ssm, ssm_model):
    # Smooth ellipsoids where the vertebrae should be: a wound with the wrong content.
    blobs = {lv: _ellipsoid(ssm[lv].vertices.mean(0) + [-25, 0, 0], [14, 25, 12])
             for lv in ssm}
    view = make_view(blobs, seed=5, posterior=np.array([-1.0, 0, 0]),
                     axis=np.array([0, 0, -1.0]))
    r = do_register(ssm_model, view["points"])
    assert r.status == "rejected"
    assert r.reason
    assert all(v.status == "rejected" for v in r.vertebrae.values())


def test_gate_rejects_too_few_points(ssm, ssm_model):
    view = make_view(ssm, seed=1)
    few = view["points"][np.random.default_rng(0).choice(len(view["points"]), 200)]
    r = do_register(ssm_model, few)
    assert r.status == "rejected"
    assert "too few" in r.reason


def test_gate_rejects_pure_noise(ssm_model):
    pts = np.random.default_rng(2).uniform([-200, -150, 300], [200, 150, 600], (60000, 3))
    r = do_register(ssm_model, pts)
    assert r.status == "rejected"


def test_gate_rejects_level_ambiguous_exposure(ssm):
    # Four identical vertebrae (L3 repeated at each level's place): exposing two of them
    # cannot tell which two. The gate must refuse rather than guess.
    base = ssm["L3"]
    c3 = base.vertices.mean(0)
    same = {lv: Mesh(base.vertices - c3 + ssm[lv].vertices.mean(0), base.faces, name=lv)
            for lv in ssm}
    model = prepare_model(surfaces=same, posterior_ct=[-1.0, 0, 0])
    view = make_view(same, seed=2, exposed=["L3", "L4"], posterior=np.array([-1.0, 0, 0]))
    r = do_register(model, view["points"])
    assert r.status == "rejected", r.quality
    assert r.reason
    assert all(v.status == "rejected" for v in r.vertebrae.values())


def test_bad_inputs_raise_input_error(ssm_model):
    with pytest.raises(InputError, match="scan"):
        do_register(ssm_model, np.zeros((5, 2)))
    with pytest.raises(InputError, match="NaN|finite"):
        do_register(ssm_model, np.full((100, 3), np.nan))
    with pytest.raises(InputError, match="empty"):
        do_register(ssm_model, np.zeros((0, 3)))
    with pytest.raises(InputError, match="PreparedModel"):
        do_register("model.npz", np.zeros((10, 3)))
    with pytest.raises(InputError, match="levels"):
        do_register(ssm_model, np.ones((10, 3)) * 400, levels=["T4"])
    with pytest.raises(InputError, match="sensor"):
        do_register(ssm_model, PointCloud(np.ones((10, 3)), frame="ct"))


@pytest.fixture(scope="session")
def real_ct_surfaces(data_dir):
    from arspine import imaging

    d = data_dir / "totalsegmentator"
    ct = imaging.load_ct(d / "example_ct.nii.gz", progress=False)
    lab = imaging.load_labels(d / "example_ct_vertebrae.nii.gz", like=ct,
                              scheme="totalsegmentator")
    surf = imaging.vertebra_surfaces(ct, lab, levels=["L1", "L2", "L3", "L4"])
    return ct, lab, surf


def test_real_ct_known_poses_and_never_confidently_wrong(real_ct_surfaces):
    ct, lab, surf = real_ct_surfaces
    model = prepare_model(ct, lab, surfaces=surf)
    assert model.levels == ("L1", "L2", "L3", "L4")
    accepted = 0
    for seed in (0, 1, 3):  # seed 0 is a look-alike trap (a flipped pose fits well)
        view = make_view(surf, seed=seed, exposed=["L2", "L3", "L4"],
                         posterior=np.array([0, 1.0, 0]))
        r = do_register(model, view["points"])
        for lv, v in r.vertebrae.items():
            tre = metrics.tre_mm(v.T_sensor_from_ct, view["truth"][lv], surf[lv].vertices[::50])
            if v.status == "ok":
                accepted += 1
                assert np.max(tre) < 2.0, (seed, lv, np.max(tre))
                assert np.median(tre) < 1.0, (seed, lv, np.median(tre))
    # Seeds 1 and 3: L2-L4 recovered (6 vertebrae); L1 is under the skin.
    assert accepted >= 6
