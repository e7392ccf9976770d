"""`arspine render` end to end on a case bundle built from the real shape-model mesh."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from arspine.cli import main
from arspine.navigation.frames import RigidTransform
from arspine.overlay.display import project_points
from arspine.overlay.headpose import look_at


@pytest.fixture(scope="module")
def case(data_dir, tmp_path_factory):
    from arspine.datasets.anatomy import anatomy_from_mesh
    from arspine.datasets.case import write_case
    from arspine.overlay.meshprep import decimate

    an = anatomy_from_mesh(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply")
    an = dataclasses.replace(an, surfaces={lv: decimate(m, 3000)
                                           for lv, m in an.surfaces.items()})
    folder = write_case(tmp_path_factory.mktemp("cases") / "ssm", anatomy=an)
    ax = an.axes
    c = np.mean([m.centroid() for m in an.surfaces.values()], axis=0)
    R = np.stack([-ax[:, 0], -ax[:, 2], -ax[:, 1]], axis=1)  # sensor above the back
    T = RigidTransform.from_rt(R, c + 600 * ax[:, 1], "ct", "sensor").inv()
    targets = {lv: an.targets(lv)[:8] for lv in an.levels}
    truth = {"vertebrae": {lv: {"T_sensor_from_ct": T.as_matrix().tolist(),
                                "targets_ct_mm": targets[lv].tolist()} for lv in an.levels}}
    (folder / "truth.json").write_text(json.dumps(truth))
    return dict(folder=folder, T=T, targets=targets)


def test_render_one_pose_targets_fall_on_anatomy(case, tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--out", str(out),
                 "--no-progress"]) == 0
    eyes = json.loads((out / "eyes.json").read_text())
    assert len(eyes["frames"]) == 1
    Tws = np.array(eyes["T_world_from_sensor"])
    np.testing.assert_allclose(eyes["T_world_from_ct"]["L3"], Tws @ case["T"].as_matrix(),
                               atol=1e-9)
    for side in ("left", "right"):
        e = eyes["frames"][0][side]
        img = np.array(Image.open(out / e["image"]))
        assert img.shape == (720, 1280, 4) and img[0, 0, 3] == 0
        K, Tew = np.array(e["K"]), np.array(e["T_eye_from_world"])
        for lv, tg in case["targets"].items():
            world = case["T"].apply(tg) @ Tws[:3, :3].T + Tws[:3, 3]
            uv, _ = project_points(K, Tew, world)
            px = np.round(uv).astype(int)
            assert np.all(img[px[:, 1], px[:, 0], 3] > 0), (side, lv)


def test_render_head_pose_file_uses_that_pose(case, tmp_path):
    Tws = np.diag([1.0, -1.0, -1.0, 1.0])
    wound = case["T"].apply(case["targets"]["L3"].mean(axis=0)) @ Tws[:3, :3].T
    head = look_at(wound + [40.0, -300.0, 380.0], wound)
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps({"T_world_from_head": head.tolist(),
                                "T_world_from_sensor": Tws.tolist()}))
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--head-pose", str(pose),
                 "--display", "hololens2", "--style", "outline", "--out", str(out),
                 "--no-progress"]) == 0
    eyes = json.loads((out / "eyes.json").read_text())
    left = eyes["frames"][0]["left"]
    expect = np.linalg.inv(head @ np.array([[1, 0, 0, -31.5], [0, 1, 0, 0], [0, 0, 1, 0],
                                            [0, 0, 0, 1.0]]))
    np.testing.assert_allclose(left["T_eye_from_world"], expect, atol=1e-9)
    img = np.array(Image.open(out / "left.png"))
    assert img.shape == (936, 1440, 4) and 0 < (img[..., 3] > 0).mean() < 0.05


def test_render_trajectory_writes_numbered_frames(case, tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--trajectory", "standing",
                 "--duration-s", "0.2", "--rate-hz", "10", "--latency-s", "0.05",
                 "--predictor", "constant_velocity", "--out", str(out), "--no-progress"]) == 0
    eyes = json.loads((out / "eyes.json").read_text())
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(eyes["frames"]) == 2 and names == ["left_0000.png", "left_0001.png",
                                                  "right_0000.png", "right_0001.png"]
    a, b = (np.array(eyes["frames"][i]["left"]["T_eye_from_world"]) for i in (0, 1))
    assert not np.allclose(a, b)  # the head moved


def test_rejected_result_draws_nothing(case, tmp_path, capsys):
    res = tmp_path / "result.json"
    res.write_text(json.dumps({"status": "rejected", "reason": "ambiguous level",
                               "T_sensor_from_ct": np.eye(4).tolist(), "vertebrae": {}}))
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--result", str(res),
                 "--out", str(out)]) == 3
    assert not (out / "eyes.json").exists()
    assert "rejected" in capsys.readouterr().err


def test_result_hides_rejected_levels(case, tmp_path):
    T = case["T"].as_matrix().tolist()
    res = tmp_path / "result.json"
    res.write_text(json.dumps({"status": "ok", "reason": None, "T_sensor_from_ct": T,
                               "vertebrae": {"L2": {"T_sensor_from_ct": T, "status": "ok"},
                                             "L3": {"T_sensor_from_ct": T,
                                                    "status": "rejected"}}}))
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--result", str(res),
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "eyes.json").read_text())["levels"] == ["L2"]


@pytest.mark.parametrize("extra, message", [
    (["--display", "hololens9"], "display must be one of"),
    (["--style", "xray"], "--style"),
    (["--head-pose", "/nonexistent/pose.json"], "head pose file not found"),
    (["--result", "/nonexistent/result.json"], "--result file not found"),
])
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys, extra, message):
    code = main(["render", "--case", str(case["folder"]), "--out", str(tmp_path / "o")] + extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_case_exits_2(tmp_path, capsys):
    assert main(["render", "--case", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "case folder not found" in capsys.readouterr().err


def test_plan_screws_are_drawn(case, tmp_path):
    from arspine.navigation.plan import ScrewTrajectory, SurgicalPlan

    tg = case["targets"]["L3"]
    c = tg.mean(axis=0)
    plan = SurgicalPlan([ScrewTrajectory("L3", "left", c + [30.0, -40.0, 0.0],
                                         c + [30.0, 20.0, 0.0], 6.5)])
    pf = tmp_path / "plan.json"
    pf.write_text(json.dumps(plan.to_dict()))
    outs = {}
    for name, extra in (("without", []), ("with", ["--plan", str(pf)])):
        out = tmp_path / name
        assert main(["render", "--case", str(case["folder"]), "--out", str(out),
                     "--no-progress"] + extra) == 0
        outs[name] = np.array(Image.open(out / "left.png")).astype(int)
    diff = np.abs(outs["with"] - outs["without"]).max(axis=2) > 30
    assert diff.sum() > 100  # the screw is visible
    rgb = outs["with"][diff]
    assert np.mean(rgb[:, 1] > rgb[:, 0]) > 0.9  # and green


def test_video_see_through_composites_onto_the_scene(case, tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--case", str(case["folder"]), "--display", "quest3", "--out",
                 str(out), "--no-progress"]) == 0
    eyes = json.loads((out / "eyes.json").read_text())
    img = np.array(Image.open(out / "left.png")).astype(int)
    assert img.shape == (2208, 2064, 4) and np.all(img[..., 3] == 255)
    e = eyes["frames"][0]["left"]
    Tws = np.array(eyes["T_world_from_sensor"])
    world = case["T"].apply(case["targets"]["L3"]) @ Tws[:3, :3].T + Tws[:3, 3]
    uv, _ = project_points(np.array(e["K"]), np.array(e["T_eye_from_world"]), world)
    px = np.round(uv).astype(int)
    l3 = img[px[:, 1], px[:, 0], :3]
    assert np.all(l3[:, 1] > l3[:, 2])  # L3's green-yellow over the scene
    # the camera view is more than the empty room: skin-coloured pixels fill much of it
    skin = (img[..., 0] > img[..., 2] + 40) & (img[..., 0] > 100)
    assert skin.mean() > 0.1


def test_clip_depth_hides_the_deep_anatomy(case, tmp_path):
    cover = {}
    for name, extra in (("solid", []), ("clip", ["--style", "clip", "--clip-depth-mm", "12"])):
        out = tmp_path / name
        assert main(["render", "--case", str(case["folder"]), "--out", str(out),
                     "--no-progress"] + extra) == 0
        cover[name] = np.array(Image.open(out / "left.png"))[..., 3] > 0
    assert cover["clip"].sum() > 0.05 * cover["solid"].sum()
    assert cover["clip"].sum() < 0.8 * cover["solid"].sum()
    assert not np.any(cover["clip"] & ~cover["solid"])
