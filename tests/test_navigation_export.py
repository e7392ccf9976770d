"""Exports read back by SimpleITK, validated by the markups schema, meshes re-read."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

from arspine.errors import InputError
from arspine.navigation.export import (
    MARKUPS_SCHEMA,
    export_case,
    markups_fiducials,
    read_itk_transform,
    read_markups_points,
    write_itk_transform,
    write_markups,
)
from arspine.navigation.frames import RigidTransform
from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan

T_SENSOR_FROM_CT = RigidTransform.from_euler("xyz", [12.0, -25.0, 70.0], [15.0, -30.0, 420.0],
                                             "sensor", "ct")


@pytest.mark.parametrize("suffix", [".tfm", ".h5"])
def test_itk_transform_maps_from_to_direction(tmp_path, suffix):
    T = T_SENSOR_FROM_CT.inv()  # T_ct_from_sensor
    path = write_itk_transform(T, tmp_path / f"{T.name}{suffix}")
    assert path.name == f"T_ct_from_sensor{suffix}"
    tx = sitk.ReadTransform(str(path))
    rng = np.random.default_rng(0)
    pts_sensor = rng.uniform(-100, 100, (20, 3)) + [0, 0, 400]
    expect_ct = T.apply(pts_sensor)
    got = np.array([tx.TransformPoint(p.tolist()) for p in pts_sensor])
    np.testing.assert_allclose(got, expect_ct, atol=1e-6)
    back = read_itk_transform(path)
    assert back.name == "T_ct_from_sensor" and back.isclose(T, atol_mm=1e-6, atol_deg=1e-6)
    # the inverse (what ITK's registration would call fixed=ct -> moving=sensor)
    np.testing.assert_allclose(np.array(tx.GetInverse().TransformPoint(expect_ct[0].tolist())),
                               pts_sensor[0], atol=1e-6)


def test_itk_bad_input(tmp_path):
    with pytest.raises(InputError, match="must end in"):
        write_itk_transform(T_SENSOR_FROM_CT, tmp_path / "x.json")
    bad = tmp_path / "T_a_from_b.tfm"
    bad.write_text("not a transform")
    with pytest.raises(InputError, match="cannot read"):
        read_itk_transform(bad)
    with pytest.raises(InputError, match="not found"):
        read_itk_transform(tmp_path / "T_a_from_c.tfm")


def test_markups_schema_valid_lps_roundtrip(tmp_path):
    pts = np.array([[10.0, -20.5, 30.25], [1, 2, 3]])
    doc = markups_fiducials(pts, "targets_L3")
    jsonschema.validate(doc, MARKUPS_SCHEMA)
    p = write_markups(doc, tmp_path / "targets_L3.mrk.json")
    loaded = json.loads(p.read_text())
    assert loaded["markups"][0]["coordinateSystem"] == "LPS"
    back, labels = read_markups_points(p)
    np.testing.assert_allclose(back, pts)
    assert labels == ["targets_L3-1", "targets_L3-2"]
    # a RAS file is converted to LPS on reading
    loaded["markups"][0]["coordinateSystem"] = "RAS"
    ras = tmp_path / "ras.mrk.json"
    ras.write_text(json.dumps(loaded))
    np.testing.assert_allclose(read_markups_points(ras)[0], pts * [-1, -1, 1])
    # the schema rejects what Slicer would reject
    broken = json.loads(json.dumps(doc))
    broken["markups"][0]["controlPoints"][0]["position"] = [1, 2]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, MARKUPS_SCHEMA)
    with pytest.raises(InputError, match="not valid"):
        write_markups(broken, tmp_path / "broken.mrk.json")
    assert not (tmp_path / "broken.mrk.json").exists()


def test_export_case_writes_everything(tmp_path):
    plan = SurgicalPlan([ScrewTrajectory("L3", "left", [20, 40, 0], [10, 5, 2], 6.5, 40.0),
                         ScrewTrajectory("L3", "right", [-20, 40, 0], [-10, 5, 2], 6.5, 40.0)])
    targets = {"L3": np.array([[0.0, 0, 0], [5, 5, 5]])}
    written = export_case(tmp_path, transforms=[T_SENSOR_FROM_CT], plan=plan,
                          targets_ct_mm=targets)
    assert set(written["transforms"]) == {"T_sensor_from_ct.tfm", "T_sensor_from_ct.h5",
                                          "T_ct_from_sensor.tfm", "T_ct_from_sensor.h5"}
    for name in written["markups"]:
        jsonschema.validate(json.loads((tmp_path / name).read_text()), MARKUPS_SCHEMA)
    line, labels = read_markups_points(tmp_path / "plan_L3_left.mrk.json")
    np.testing.assert_allclose(line[0], [20, 40, 0])
    np.testing.assert_allclose(line[1], plan["L3_left"].tip_ct_mm)
    assert labels == ["L3_left-entry", "L3_left-tip"]
    for name in ("T_ct_from_sensor.h5", "T_sensor_from_ct.tfm"):
        assert read_itk_transform(tmp_path / name).isclose(
            T_SENSOR_FROM_CT if name.startswith("T_sensor") else T_SENSOR_FROM_CT.inv(),
            atol_mm=1e-6, atol_deg=1e-6)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "LPS" in manifest["conventions"]["markups"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_export_surfaces_ply_stl_roundtrip(tmp_path):
    from arspine.datasets.io import read_mesh
    from arspine.navigation.geometry import Mesh

    v = np.array([[0.0, 0, 0], [30, 0, 0], [0, 20, 0], [0, 0, 10]]) + [5, -7, 100]
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    mesh = Mesh(v, f, name="L3")
    written = export_case(tmp_path, surfaces={"L3": mesh})
    assert sorted(written["meshes"]) == ["L3.ply", "L3.stl"]
    for name in written["meshes"]:
        back = read_mesh(tmp_path / name)
        assert back.n_faces == 4
        np.testing.assert_allclose(np.sort(back.vertices, axis=0), np.sort(v, axis=0), atol=1e-4)
        assert back.enclosed_volume() == pytest.approx(mesh.enclosed_volume(), rel=1e-5)


def test_dicom_spatial_registration_references_the_real_ct(data_dir, tmp_path):
    import pydicom

    from arspine.navigation.export import SPATIAL_REGISTRATION_STORAGE, write_spatial_registration

    folder = data_dir / "totalsegmentator" / "example_ct_dicom"
    T = T_SENSOR_FROM_CT.inv()
    p = write_spatial_registration(T, folder, tmp_path / "T_ct_from_sensor_REG.dcm")
    ds = pydicom.dcmread(p)
    assert ds.SOPClassUID == SPATIAL_REGISTRATION_STORAGE and ds.Modality == "REG"
    ct0 = pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)
    assert ds.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    items = ds.RegistrationSequence
    assert items[0].FrameOfReferenceUID == ct0.FrameOfReferenceUID
    m0 = np.array(items[0].MatrixRegistrationSequence[0].MatrixSequence[0]
                  .FrameOfReferenceTransformationMatrix, float).reshape(4, 4)
    np.testing.assert_allclose(m0, np.eye(4))
    m1 = items[1].MatrixRegistrationSequence[0].MatrixSequence[0]
    assert m1.FrameOfReferenceTransformationMatrixType == "RIGID"
    np.testing.assert_allclose(np.array(m1.FrameOfReferenceTransformationMatrix, float)
                               .reshape(4, 4), T.as_matrix(), atol=1e-9)
    refs = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert len(refs) == 20
    assert {r.ReferencedSOPInstanceUID for r in refs} == \
        {pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
         for f in folder.iterdir()}
    with pytest.raises(InputError, match="into 'ct'"):
        write_spatial_registration(T_SENSOR_FROM_CT, folder, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="DICOM folder"):
        write_spatial_registration(T, tmp_path / "nope", tmp_path / "x.dcm")
