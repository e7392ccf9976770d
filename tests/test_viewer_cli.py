"""`arspine view CASE --screenshot F` with no display: starts Xvfb itself, shows anatomy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("PyQt5")

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed")


def _run_view(*args, timeout=180):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    return subprocess.run([sys.executable, "-m", "arspine", "view", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _png_rgb(path):
    import vtk
    from vtkmodules.util.numpy_support import vtk_to_numpy

    r = vtk.vtkPNGReader()
    r.SetFileName(str(path))
    r.Update()
    img = r.GetOutput()
    w, h, _ = img.GetDimensions()
    arr = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[::-1]
    return arr[..., :3].astype(int)


def test_screenshot_of_real_ct_shows_anatomy_without_display(data_dir, tmp_path):
    out = tmp_path / "shot.png"
    r = _run_view(data_dir / "totalsegmentator" / "example_ct.nii.gz", "--screenshot", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    rgb = _png_rgb(out)
    h, w, _ = rgb.shape
    assert w >= 1280 and h >= 800
    # the 3D view is the middle of the window (case panel left, slices right)
    mid = rgb[int(0.1 * h): int(0.9 * h), int(0.3 * w): int(0.7 * w)]
    r_, g, b = mid[..., 0], mid[..., 1], mid[..., 2]
    bone = (r_ > 120) & (g > 100) & (r_ > b + 25) & (g > b)
    assert bone.mean() > 0.05, f"only {bone.mean():.2%} bone-coloured pixels in the 3D view"
    # and the background is not bone: the vertebrae are a shape, not a flat fill
    assert bone.mean() < 0.8
    assert "screenshot" in r.stdout


def test_screenshot_of_missing_case_is_bad_input(tmp_path):
    r = _run_view(tmp_path / "nope", "--screenshot", tmp_path / "x.png", timeout=60)
    assert r.returncode == 2
    assert "CASE not found" in r.stderr and "Traceback" not in r.stderr


def test_screenshot_of_broken_file_saves_the_error_and_exits_2(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    out = tmp_path / "err.png"
    r = _run_view(bad, "--screenshot", out, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "broken.nii.gz" in r.stderr and "Traceback" not in r.stderr
    rgb = _png_rgb(out)  # the window with its red error banner was still saved
    red = (rgb[..., 0] > 100) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.mean() > 0.005
    assert np.isfinite(rgb).all()


def test_interactive_without_display_says_how(tmp_path):
    r = _run_view(timeout=60)
    assert r.returncode == 2
    assert "--screenshot" in r.stderr


def test_unreachable_display_is_bad_input_not_a_qt_abort():
    env = dict(os.environ, DISPLAY=":4242")
    env.pop("WAYLAND_DISPLAY", None)
    r = subprocess.run([sys.executable, "-m", "arspine", "view"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "cannot open the display DISPLAY=:4242" in r.stderr
