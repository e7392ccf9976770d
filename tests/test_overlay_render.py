"""Offscreen renderer: the VTK camera reproduces K exactly, targets land on anatomy pixels,
a known registration error shows up as the predicted pixel shift, and every style works."""

import math

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.navigation.frames import RigidTransform
from arspine.navigation.geometry import Mesh
from arspine.overlay.display import HeadMountedDisplay, get_display, project_points
from arspine.overlay.headpose import default_T_world_from_sensor, simulate_head_trajectory
from arspine.overlay.meshprep import decimate
from arspine.overlay.renderer import OverlayRenderer

SMALL = HeadMountedDisplay(name="small", width_px=320, height_px=240, fov_h_deg=50.0,
                           fov_v_deg=40.0, principal_offset_px=(7.3, -4.6))
HEAD = RigidTransform.identity("world", "head")
ID_CT = RigidTransform.identity("world", "ct")


def square(x0, x1, y0, y1, z, name="sq") -> Mesh:
    v = [[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]
    return Mesh(np.array(v, float), np.array([[0, 1, 2], [0, 2, 3]]), name=name)


def mask_box(img):
    ys, xs = np.nonzero(img[..., 3] > 0)
    return xs.min(), xs.max(), ys.min(), ys.max()


# ----------------------------------------------------------------------------- geometry
def test_camera_reproduces_K_and_eye_pose_exactly():
    sq = square(-43.3, 61.7, -37.2, 28.9, 400.0)
    with OverlayRenderer(SMALL, {"L3": sq}, triangles_per_vertebra=0) as ren:
        frame = ren.render(HEAD, ID_CT)
    for side in ("left", "right"):
        img = frame.images[side]
        uv, _ = project_points(frame.K, frame.T_eye_from_world[side], sq.vertices)
        # a pixel is drawn when its centre (integer u, v) is inside the projected square
        expect = (math.ceil(uv[:, 0].min()), math.floor(uv[:, 0].max()),
                  math.ceil(uv[:, 1].min()), math.floor(uv[:, 1].max()))
        assert mask_box(img) == expect, side
        assert img[0, 0, 3] == 0 and img.shape == (240, 320, 4)
    # the left eye sees the square further right than the right eye does
    assert mask_box(frame.images["left"])[0] > mask_box(frame.images["right"])[0]


@pytest.fixture(scope="module")
def spine(data_dir):
    """Real shape-model L2-L5, decimated once, placed under the default sensor; a head
    looking at it from the standard standing viewpoint."""
    from arspine.datasets.anatomy import anatomy_from_mesh

    an = anatomy_from_mesh(data_dir / "lumbar_ssm_mean" / "mean_L2-L5.ply")
    ax = an.axes  # left, posterior, cranial in ct
    c = np.mean([m.centroid() for m in an.surfaces.values()], axis=0)
    R = np.stack([-ax[:, 0], -ax[:, 2], -ax[:, 1]], axis=1)
    T_sensor_from_ct = RigidTransform.from_rt(R, c + 600 * ax[:, 1], "ct", "sensor").inv()
    T_world_from_ct = default_T_world_from_sensor() @ T_sensor_from_ct
    wound = T_world_from_ct.apply(c)
    head = simulate_head_trajectory("static", 0.1, 60, wound_world_mm=wound).pose(0)
    surfaces = {lv: decimate(m, 1500) for lv, m in an.surfaces.items()}
    return dict(anatomy=an, surfaces=surfaces, T_world_from_ct=T_world_from_ct, head=head)


@pytest.fixture(scope="module")
def solid(spine):
    ren = OverlayRenderer("default", spine["surfaces"])
    frame = ren.render(spine["head"], spine["T_world_from_ct"])
    yield ren, frame
    ren.close()


def test_targets_land_on_rendered_anatomy(spine, solid):
    _, frame = solid
    an, T = spine["anatomy"], spine["T_world_from_ct"]
    n = 0
    for side in ("left", "right"):
        alpha = frame.images[side][..., 3]
        for lv in an.levels:
            uv, z = project_points(frame.K, frame.T_eye_from_world[side], T.apply(an.targets(lv)))
            px = np.round(uv).astype(int)
            assert np.all(alpha[px[:, 1], px[:, 0]] == 255), (side, lv)
            n += len(px)
        # and the silhouette spans what the full-resolution anatomy projects to
        allv = T.apply(np.concatenate([m.vertices for m in an.surfaces.values()]))
        uv, _ = project_points(frame.K, frame.T_eye_from_world[side], allv)
        box = mask_box(frame.images[side])
        np.testing.assert_allclose(box, [uv[:, 0].min(), uv[:, 0].max(), uv[:, 1].min(),
                                         uv[:, 1].max()], atol=2.5)
    assert n > 100
    assert np.isin(np.unique(frame.images["left"][..., 3]), [0, 255]).all()


def test_registration_error_shows_as_the_predicted_pixel_shift(spine, solid):
    ren, frame = solid
    T = spine["T_world_from_ct"]
    eye = frame.T_eye_from_world["left"]
    # 2 mm registration error of L3, across the line of sight (eye x + y)
    shift_world = eye.inv().apply_vectors(np.array([1.6, 1.2, 0.0]))
    T_err = RigidTransform.from_rt(np.eye(3), shift_world, "world", "world") @ T
    ren.set_poses({"L3": T})
    a = ren.render_eye(eye)
    ren.set_poses({"L3": T_err})
    b = ren.render_eye(eye)
    ren.set_poses(T)

    def centroid(img):
        ys, xs = np.nonzero(img[..., 3] > 0)
        return np.array([xs.mean(), ys.mean()])

    measured = centroid(b) - centroid(a)
    v = T.apply(spine["surfaces"]["L3"].vertices)
    predicted = (project_points(frame.K, eye, v + shift_world)[0]
                 - project_points(frame.K, eye, v)[0]).mean(axis=0)
    assert np.linalg.norm(predicted) > 5.0  # about 2 mm * f / z
    np.testing.assert_allclose(measured, predicted, atol=0.3)


def test_a_level_without_a_pose_is_not_drawn(spine, solid):
    ren, frame = solid
    ren.set_poses({"L3": spine["T_world_from_ct"]})
    only = ren.render_eye(frame.T_eye_from_world["left"])
    ren.set_poses(spine["T_world_from_ct"])
    full = frame.images["left"][..., 3] > 0
    part = only[..., 3] > 0
    assert 0.1 < part.sum() / full.sum() < 0.4
    assert not np.any(part & ~full)


# ----------------------------------------------------------------------------- styles
def test_transparent_shows_the_screw_inside_the_bone(spine, solid):
    an, T = spine["anatomy"], spine["T_world_from_ct"]
    c = an.surfaces["L3"].centroid()
    post, left = an.axes[:, 1], an.axes[:, 0]
    # a 5 mm rod across the vertebral body, entirely inside the bone
    screws = [(c - 10 * post - 12 * left, c - 10 * post + 12 * left, 5.0, "L1")]
    counts = {}
    for style in ("solid", "transparent"):
        # drawn as "L1" (blue) so the green screw stands out
        with OverlayRenderer("default", {"L1": spine["surfaces"]["L3"]}, screws,
                             style=style) as ren:
            img = ren.render(spine["head"], {"L1": T}).images["left"]
        rgb = img[..., :3].astype(int)
        green = (img[..., 3] > 0) & (rgb[..., 1] > rgb[..., 0] + 60) \
            & (rgb[..., 1] > rgb[..., 2] + 60)
        counts[style] = int(green.sum())
        if style == "transparent":
            a = img[..., 3]
            assert np.any((a > 0) & (a < 255))
    assert counts["solid"] == 0 and counts["transparent"] > 200


def test_outline_draws_only_the_contours(spine, solid):
    _, frame = solid
    with OverlayRenderer("default", spine["surfaces"], style="outline", line_width_px=2) as ren:
        img = ren.render(spine["head"], spine["T_world_from_ct"]).images["left"]
    fill = frame.images["left"][..., 3] > 0
    line = img[..., 3] > 0
    assert 0.03 < line.sum() / fill.sum() < 0.45
    from scipy.ndimage import binary_dilation

    near_fill = binary_dilation(fill, iterations=2)
    assert not np.any(line & ~near_fill)  # lines sit on the anatomy's silhouette and edges
    # the silhouette is closed: every row of the anatomy starts with an outline pixel
    rows = np.nonzero(fill.any(axis=1))[0]
    first = fill[rows].argmax(axis=1)
    assert line[rows, first].mean() > 0.99


def two_squares():
    return {"L1": square(-120, -10, -40, 40, 400.0), "L2": square(10, 160, -40, 40, 600.0)}


NEAR, FAR = (-65.0, 0.0, 400.0), (85.0, 0.0, 600.0)  # centres of the two squares


def pixel(img, frame, point, side="left"):
    """The pixel of ``img`` where world ``point`` projects."""
    uv, _ = project_points(frame.K, frame.T_eye_from_world[side], [point])
    u, v = np.round(uv[0]).astype(int)
    return img[v, u]


def test_depth_colour_is_warm_near_and_cool_far():
    with OverlayRenderer(SMALL, two_squares(), style="depth", triangles_per_vertebra=0,
                         depth_range_mm=(350, 650)) as ren:
        frame = ren.render(HEAD, ID_CT)
    img = frame.images["left"].astype(int)
    near, far = pixel(img, frame, NEAR), pixel(img, frame, FAR)
    assert near[3] == 255 and far[3] == 255
    assert near[0] > near[2] + 60 and far[2] > far[0] + 60


def test_clip_hides_what_is_behind_the_surface_plane():
    plane = ([0.0, 0.0, 500.0], [0.0, 0.0, -1.0])  # keep the side facing the surgeon
    with OverlayRenderer(SMALL, two_squares(), style="clip", clip_plane=plane,
                         triangles_per_vertebra=0) as ren:
        frame = ren.render(HEAD, ID_CT)
    img = frame.images["left"]
    assert pixel(img, frame, NEAR)[3] == 255 and pixel(img, frame, FAR)[3] == 0


def test_video_see_through_composites_onto_the_scene_camera_view():
    skin = square(-400, 400, -300, 300, 700.0, name="skin")
    video = SMALL.with_(see_through="video")
    with OverlayRenderer(video, {"L1": square(-120, -10, -40, 40, 400.0)}, scene=skin,
                         triangles_per_vertebra=0) as ren:
        frame = ren.render(HEAD, ID_CT, text="L1 entry 1.2 mm")
    img = frame.images["left"].astype(int)
    assert np.all(img[..., 3] == 255)
    overlay_px, skin_px = pixel(img, frame, NEAR)[:3], pixel(img, frame, FAR)[:3]
    assert np.abs(overlay_px - skin_px).max() > 40  # the overlay is drawn over the skin
    assert skin_px[0] > skin_px[2]  # skin-coloured, not the empty room


def test_tool_and_text_are_drawn():
    d = SMALL
    with OverlayRenderer(d, {"L1": square(-120, -10, -40, 40, 400.0)}, tool=True,
                         triangles_per_vertebra=0) as ren:
        base = ren.render(HEAD, ID_CT).images["left"][..., 3] > 0
        T_tool = RigidTransform.from_rt(np.eye(3), [60.0, 0.0, 300.0], "world", "tool")
        with_tool = ren.render(HEAD, ID_CT, T_world_from_tool=T_tool,
                               text="L3 left 1.2 mm").images["left"][..., 3] > 0
    assert with_tool.sum() > base.sum() + 200
    assert with_tool[-40:, :100].any() and not base[-40:, :100].any()  # text lower left


def test_decimation_respects_the_budget(spine):
    full = spine["anatomy"].surfaces["L3"]
    with OverlayRenderer("default", {"L3": full}) as ren:
        budget = ren.triangles_per_vertebra
        assert full.n_faces > 10 * budget
        assert budget * 0.9 <= ren.n_triangles <= budget * 1.05
        assert 1000 < budget < 2500


def test_bad_renderer_inputs():
    sq = {"L1": square(0, 1, 0, 1, 10)}
    with pytest.raises(InputError, match="style"):
        OverlayRenderer(SMALL, sq, style="xray")
    with pytest.raises(InputError, match="clip_plane"):
        OverlayRenderer(SMALL, sq, style="clip")
    with pytest.raises(InputError, match="screws\\[0\\]"):
        OverlayRenderer(SMALL, sq, [((0, 0, 0), (0, 0, 1))])
    with pytest.raises(InputError, match="diameter"):
        OverlayRenderer(SMALL, sq, [((0, 0, 0), (0, 0, 1), -2.0)])
    with pytest.raises(InputError, match="surfaces"):
        OverlayRenderer(SMALL, {"L1": np.zeros((3, 3))})
    with pytest.raises(InputError, match="no triangles"):
        OverlayRenderer(SMALL, {"L1": Mesh(np.zeros((3, 3)), np.zeros((0, 3), int))})
    with OverlayRenderer(get_display(), sq, triangles_per_vertebra=0) as ren:
        with pytest.raises(InputError, match="T_world_from_ct"):
            ren.render(HEAD, RigidTransform.identity("sensor", "ct"))


def test_back_face_culling_changes_no_pixel(spine, solid):
    ren, frame = solid
    eye = frame.T_eye_from_world["right"]
    culled = ren.render_eye(eye)
    props = [o.actor.GetProperty() for o in ren._objects]
    assert all(p.GetBackfaceCulling() for p in props)  # closed, outward-oriented surfaces
    for p in props:
        p.BackfaceCullingOff()
    try:
        both = ren.render_eye(eye)
    finally:
        for p in props:
            p.BackfaceCullingOn()
    np.testing.assert_array_equal(culled[..., 3], both[..., 3])
    assert np.count_nonzero(np.abs(culled.astype(int) - both).max(axis=2) > 2) < 20


def test_reduced_render_scale_keeps_the_geometry(spine, solid):
    _, frame = solid
    with OverlayRenderer("default", spine["surfaces"], render_scale=0.5) as ren:
        half = ren.render(spine["head"], spine["T_world_from_ct"]).images["left"]
    assert half.shape == (720, 1280, 4)
    full = frame.images["left"][..., 3] > 0
    low = half[..., 3] > 0
    iou = (full & low).sum() / (full | low).sum()
    assert iou > 0.95
    np.testing.assert_allclose(mask_box(half), mask_box(frame.images["left"]), atol=2)


def test_baked_lighting_matches_vtk_lighting(spine, solid):
    _, frame = solid
    with OverlayRenderer("default", spine["surfaces"], lighting="vtk") as ren:
        vtk_img = ren.render(spine["head"], spine["T_world_from_ct"]).images["left"]
    baked = frame.images["left"]
    np.testing.assert_array_equal(baked[..., 3], vtk_img[..., 3])
    fg = baked[..., 3] > 0
    mb, mv = baked[fg, :3].mean(axis=0), vtk_img[fg, :3].mean(axis=0)
    np.testing.assert_allclose(mb, mv, rtol=0.15)
    # shading varies over the surface (not flat colour)
    assert baked[fg, 1].std() > 10


def test_screws_on_top_show_a_screw_hidden_in_the_bone(spine, solid):
    an, T = spine["anatomy"], spine["T_world_from_ct"]
    c = an.surfaces["L3"].centroid()
    post, left = an.axes[:, 1], an.axes[:, 0]
    screws = [(c - 10 * post - 12 * left, c - 10 * post + 12 * left, 5.0, "L1")]
    green = {}
    for style, on_top in (("solid", False), ("solid", True), ("outline", None)):
        with OverlayRenderer("default", {"L1": spine["surfaces"]["L3"]}, screws, style=style,
                             screws_on_top=on_top) as ren:
            img = ren.render(spine["head"], {"L1": T}).images["left"].astype(int)
        g = (img[..., 3] > 0) & (img[..., 1] > img[..., 0] + 60) & (img[..., 1] > img[..., 2] + 60)
        green[(style, on_top)] = int(g.sum())
    assert green[("solid", False)] == 0
    assert green[("solid", True)] > 400
    assert green[("outline", None)] == pytest.approx(green[("solid", True)], rel=0.1)
