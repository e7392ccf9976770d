"""Reslicing in patient axes and window/level presets."""

from __future__ import annotations

import numpy as np
import pytest

from arspine.errors import InputError
from arspine.imaging import WINDOW_PRESETS, CtVolume, reslice, window_level


def _lps_volume():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 2000, (10, 8, 6)).astype(np.int16)
    T = np.diag([1.0, 1.0, 2.0, 1.0])
    T[:3, 3] = [-5.0, -4.0, 10.0]
    return CtVolume(hu, T)


def test_axial_slice_of_lps_volume_is_the_stored_slice():
    ct = _lps_volume()
    img = reslice(ct, "axial", index=3, order=0)
    # Rows run posterior (+y), columns to patient left (+x): image[row, col] = hu[col, row, k].
    np.testing.assert_array_equal(img, ct.hu[:, :, 3].T)
    s = reslice(ct, "axial", index=3, return_geometry=True)
    assert s.position_mm == pytest.approx(16.0)
    np.testing.assert_allclose(s.T_ct_from_pixel @ [2, 5, 0, 1], [-3, 1, 16, 1])


def test_mirrored_volume_reslices_to_the_same_picture():
    ct = _lps_volume()
    F = np.diag([-1.0, -1.0, 1.0, 1.0])
    F[:3, 3] = [9.0, 7.0, 0.0]  # i -> 9 - i, j -> 7 - j
    flipped = CtVolume(ct.hu[::-1, ::-1, :].copy(), ct.T_ct_from_ijk @ F)
    for plane in ("axial", "coronal", "sagittal"):
        a = reslice(ct, plane, position_mm={"axial": 16.0, "coronal": -1.0,
                                            "sagittal": 0.0}[plane], order=0)
        b = reslice(flipped, plane, position_mm={"axial": 16.0, "coronal": -1.0,
                                                 "sagittal": 0.0}[plane], order=0)
        np.testing.assert_array_equal(a, b)
    cor = reslice(ct, "coronal", position_mm=-1.0, order=0)
    # Superior at the top: first row is the highest slice.
    np.testing.assert_array_equal(cor[0], ct.hu[:, 3, -1])


def test_window_level_presets():
    hu = np.array([-1000.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(window_level(hu, "soft_tissue"), [0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(window_level(hu, (40, 400), dtype="uint8"), [0, 128, 255, 255])
    c, w = WINDOW_PRESETS["bone"]
    assert window_level(np.array([c]), "bone")[0] == pytest.approx(0.5)


def test_slice_bad_inputs():
    ct = _lps_volume()
    with pytest.raises(InputError, match=r"plane must be one of"):
        reslice(ct, "oblique")
    with pytest.raises(InputError, match=r"index must be in 0\.\.5 for the axial plane, got 9"):
        reslice(ct, "axial", index=9)
    with pytest.raises(InputError, match=r"preset must be one of"):
        window_level(np.zeros(3), "liver")
    with pytest.raises(InputError, match=r"window width must be > 0"):
        window_level(np.zeros(3), (0, 0))
