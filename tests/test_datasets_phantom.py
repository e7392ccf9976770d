"""The procedural phantom: published lumbar morphometry, HU, and DICOM geometry round trip.

Morphometry sources (see arspine.datasets.phantom.MORPHOMETRY / PUBLISHED_RANGES):
Panjabi MM et al., "Human lumbar vertebrae: quantitative three-dimensional anatomy",
Spine 17(3):299-306, 1992 (body width/depth/height, canal width/depth); Zhou SH et al.,
"Geometrical dimensions of the lumbar vertebrae", Eur Spine J 9:242-248, 2000 (body);
Zindrick MR et al., "Analysis of the morphometric characteristics of the thoracic and lumbar
pedicles", Spine 12(2):160-166, 1987 (pedicle width: L1 ~8.7 mm rising to L5 ~18 mm).
"""

from __future__ import annotations

import numpy as np
import pytest

from arspine.datasets.phantom import PUBLISHED_RANGES, VERSE_IDS, make_phantom
from arspine.errors import InputError


@pytest.fixture(scope="session")
def phantom():
    return make_phantom(seed=4, spacing_mm=1.5)


@pytest.fixture(scope="session")
def coarse_oblique():
    return make_phantom(levels=("L3", "L4"), seed=1, spacing_mm=(2.0, 2.5, 3.0),
                        oblique_deg=12.0)


def _local_points(ph, level):
    """Voxel centres of one level in its vertebra frame (x left, y posterior, z cranial)."""
    ijk = np.argwhere(ph.labels.array == VERSE_IDS[level]).astype(float)
    p = ijk @ ph.ct.T_ct_from_ijk[:3, :3].T + ph.ct.T_ct_from_ijk[:3, 3]
    T = ph.poses[level]
    return (p - T[:3, 3]) @ T[:3, :3]


def _extent(v, step):
    return float(v.max() - v.min() + step) if len(v) else 0.0


def _measure(ph, level):
    """Morphometry measured on the label map (not read from the parameters)."""
    q = _local_points(ph, level)
    s = float(np.mean(ph.ct.spacing_mm))
    d = ph.dimensions[level]
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    band = s * 0.75 + 0.5
    out = {}
    mid = np.abs(z) < 2 * band
    out["body_width"] = _extent(x[mid & (y < 0)], s)
    col = (np.abs(x) < band) & mid
    ys = np.sort(y[col])
    gaps = np.diff(ys)
    k = int(np.argmax(gaps))  # the canal: largest gap along the midline
    out["body_depth"] = float(ys[k] - ys[0] + s)
    cen = (np.abs(x) < band) & (np.abs(y) < band)
    out["body_height"] = _extent(z[cen], s)
    # Canal at pedicle height: gap along y on the midline and along x between the pedicles.
    zp = d["body_height"] / 2 - d["pedicle_height"] / 2 - 1.0
    colp = (np.abs(x) < band) & (np.abs(z - zp) < band)
    ysp = np.sort(y[colp])
    out["canal_depth"] = float(np.max(np.diff(ysp)) - s)
    y_mid_canal = d["body_depth"] / 2 - 1.0 + 0.3 * d["canal_depth"]
    row = (np.abs(y - y_mid_canal) < band) & (np.abs(z - zp) < band)
    xr = x[row]
    out["canal_width"] = float(xr[xr > 0].min() - xr[xr < 0].max() - s)
    ped = xr[xr > 0]
    out["pedicle_width"] = _extent(ped[ped < xr[xr > 0].min() + 30], s)
    return out


@pytest.mark.parametrize("level", ["L1", "L2", "L3", "L4", "L5"])
def test_phantom_morphometry_in_published_ranges(phantom, level):
    m = _measure(phantom, level)
    for key, (lo, hi) in PUBLISHED_RANGES[level].items():
        assert lo <= m[key] <= hi, (level, key, m[key], (lo, hi))


def test_pedicles_widen_caudally_and_bodies_grow(phantom):
    """Zindrick 1987: pedicle width increases from L1 to L5; bodies widen caudally."""
    ms = {lv: _measure(phantom, lv) for lv in ("L1", "L5")}
    assert ms["L5"]["pedicle_width"] > ms["L1"]["pedicle_width"] + 4
    assert ms["L5"]["body_width"] > ms["L1"]["body_width"] + 3


def test_phantom_hu_cortical_shell_cancellous_core_and_tissues(phantom):
    hu = phantom.ct.hu
    bone = phantom.labels.array > 0
    from scipy import ndimage

    core = ndimage.binary_erosion(bone, iterations=2)
    shell = bone & ~ndimage.binary_erosion(bone, iterations=1)
    assert 150 < np.median(hu[core]) < 400
    assert np.median(hu[shell]) > 700
    assert np.median(hu[~ndimage.binary_dilation(bone, iterations=3)]) < 100
    # air outside the trunk in the corner, fat under the skin
    assert hu[0, 0, 0] < -900
    assert np.sum((hu > -160) & (hu < -40)) > 0.02 * hu.size


def test_levels_stack_cranial_to_caudal_with_lordosis(phantom):
    z = [phantom.poses[lv][2, 3] for lv in phantom.levels]
    assert all(a > b for a, b in zip(z[:-1], z[1:]))
    # lordosis: L3 body lies anterior (-y) of the line from L1 to L5
    y = {lv: phantom.poses[lv][1, 3] for lv in phantom.levels}
    assert y["L3"] < (y["L1"] + y["L5"]) / 2 - 2.0


def test_phantom_dicom_round_trip_arspine_and_simpleitk(coarse_oblique, tmp_path):
    import SimpleITK as sitk

    from arspine.imaging import load_ct, write_dicom_series

    ph = coarse_oblique
    files = write_dicom_series(ph.ct, tmp_path / "ct", progress=False)
    assert len(files) == ph.ct.shape[2]
    back = load_ct(tmp_path / "ct", progress=False)
    assert back.shape == ph.ct.shape
    assert np.allclose(back.T_ct_from_ijk, ph.ct.T_ct_from_ijk, atol=1e-3)
    assert np.array_equal(np.asarray(back.hu), np.asarray(ph.ct.hu))
    # SimpleITK reads the same geometry (LPS) and voxels
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(tmp_path / "ct"))
    reader.SetFileNames(names)
    img = reader.Execute()
    assert img.GetSize() == ph.ct.shape
    assert np.allclose(img.GetSpacing(), ph.ct.spacing_mm, atol=1e-4)
    assert np.allclose(img.GetOrigin(), ph.ct.origin_mm, atol=1e-3)
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), ph.ct.direction, atol=1e-5)
    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    assert np.array_equal(arr.transpose(2, 1, 0), np.asarray(ph.ct.hu))
    # the oblique grid is really oblique
    assert not np.allclose(ph.ct.direction, np.eye(3), atol=0.05)


def test_same_seed_same_phantom_other_seed_differs():
    a = make_phantom(levels=("L2",), seed=3, spacing_mm=3.0)
    b = make_phantom(levels=("L2",), seed=3, spacing_mm=3.0)
    c = make_phantom(levels=("L2",), seed=4, spacing_mm=3.0)
    assert np.array_equal(a.ct.hu, b.ct.hu)
    assert a.dimensions != c.dimensions


def test_phantom_bad_inputs():
    with pytest.raises(InputError, match="lumbar"):
        make_phantom(levels=("T4",))
    with pytest.raises(InputError, match="consecutive"):
        make_phantom(levels=("L1", "L3"))
    with pytest.raises(InputError, match="spacing_mm"):
        make_phantom(spacing_mm=0.0)
