"""DICOM series (300 slices, 512x512, uncompressed) to per-vertebra surfaces.

The series is the real TotalSegmentator abdomen CT (3 mm) resampled onto a 512x512x300 grid
(0.72 x 0.72 x 1.12 mm) with its vertebra labels, written once by
``arspine.imaging.write_dicom_series`` into the cache (``$ARSPINE_CACHE/bench_imaging``).

project : arspine.imaging.load_ct + load_labels(like=ct) + vertebra_surfaces
anchor  : SimpleITK ImageSeriesReader + label map read + vtkDiscreteMarchingCubes over every
          label of the full volume (one pass), points/faces to numpy

Run: ``.venv/bin/python benchmarks/bench_imaging.py [--repeat 3]``. Prints the median of the
repeats for each (files warm in the page cache after the first run), wall and process CPU
time (steadier on a shared machine), the ratios and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (512, 512, 300)


def make_series(folder: Path) -> tuple[Path, Path]:
    """Write the benchmark series and its label map once; reuse them afterwards."""
    from scipy.ndimage import map_coordinates

    from arspine.datasets.paths import real_data_path
    from arspine.imaging import CtVolume, load_ct, load_labels, save_nifti, write_dicom_series
    from arspine.imaging.labels import VertebraLabels

    dicom, labels_path = folder / "dicom", folder / "labels.nii.gz"
    if labels_path.is_file() and len(list(dicom.glob("*.dcm"))) == SHAPE[2]:
        return dicom, labels_path
    src = load_ct(real_data_path("totalsegmentator", "example_ct.nii.gz"))
    lab = load_labels(real_data_path("totalsegmentator", "example_ct_vertebrae.nii.gz"),
                      like=src)
    lo, hi = src.corners_mm().min(0), src.corners_mm().max(0)
    step = (hi - lo) / (np.array(SHAPE) - 1)
    step[:2] = step[:2].max()
    T = np.diag([*step, 1.0])
    T[:3, 3] = lo
    src_from_dst = np.linalg.solve(src.T_ct_from_ijk, T)
    hu = np.empty(SHAPE, dtype=np.int16)
    ids = np.empty(SHAPE, dtype=np.uint8)
    ii, jj = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    for k in range(SHAPE[2]):
        p = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k), np.ones(ii.size)])
        q = (src_from_dst @ p)[:3]
        hu[:, :, k] = map_coordinates(src.hu.astype(np.float32), q, order=1, cval=-1024
                                      ).reshape(ii.shape).round()
        ids[:, :, k] = map_coordinates(lab.array, q, order=0, cval=0).reshape(ii.shape)
    ct = CtVolume(hu, T, {})
    dicom.mkdir(parents=True, exist_ok=True)
    for f in dicom.glob("*.dcm"):
        f.unlink()
    write_dicom_series(ct, dicom, series_description="bench 512x512x300", progress=False)
    save_nifti(VertebraLabels(ids, T, lab.names), labels_path)
    return dicom, labels_path


def project(dicom: Path, labels_path: Path) -> dict:
    from arspine.imaging import load_ct, load_labels, vertebra_surfaces

    c0, t0 = time.process_time(), time.perf_counter()
    ct = load_ct(dicom, progress=False)
    t1 = time.perf_counter()
    labels = load_labels(labels_path, like=ct, scheme="totalsegmentator")
    t2 = time.perf_counter()
    meshes = vertebra_surfaces(ct, labels)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "cpu": time.process_time() - c0, "load_ct": t1 - t0,
            "load_labels": t2 - t1,
            "surfaces": t3 - t2, "levels": len(meshes),
            "faces": sum(m.n_faces for m in meshes.values())}


def anchor(dicom: Path, labels_path: Path) -> dict:
    import SimpleITK as sitk
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersGeneral import vtkDiscreteMarchingCubes

    c0, t0 = time.process_time(), time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(dicom)))
    img = reader.Execute()
    hu = sitk.GetArrayViewFromImage(img)
    t1 = time.perf_counter()
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    t2 = time.perf_counter()
    vimg = vtkImageData()
    vimg.SetDimensions(lab.shape[2], lab.shape[1], lab.shape[0])
    vimg.GetPointData().SetScalars(numpy_to_vtk(lab.ravel(), deep=False))
    ids = [int(v) for v in np.unique(lab) if v]
    mc = vtkDiscreteMarchingCubes()
    mc.SetInputData(vimg)
    for n, v in enumerate(ids):
        mc.SetValue(n, v)
    mc.Update()
    out = mc.GetOutput()
    pts = vtk_to_numpy(out.GetPoints().GetData())
    faces = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    t3 = time.perf_counter()
    assert hu.shape == lab.shape
    return {"total": t3 - t0, "cpu": time.process_time() - c0, "load_ct": t1 - t0,
            "load_labels": t2 - t1,
            "surfaces": t3 - t2, "levels": len(ids), "faces": len(faces), "points": len(pts)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from arspine.datasets.paths import cache_dir

    dicom, labels_path = make_series(cache_dir("bench_imaging"))
    runs = {"project": [], "anchor": []}
    for _ in range(args.repeat):
        runs["project"].append(project(dicom, labels_path))
        runs["anchor"].append(anchor(dicom, labels_path))

    def med(name, key):
        return statistics.median(r[key] for r in runs[name])

    for name in ("project", "anchor"):
        r = runs[name][-1]
        print(f"{name:8s} total {med(name, 'total'):6.3f} s  (load_ct {med(name, 'load_ct'):.3f}"
              f", labels {med(name, 'load_labels'):.3f}, surfaces {med(name, 'surfaces'):.3f})"
              f"  cpu {med(name, 'cpu'):.3f} s  levels {r['levels']}, faces {r['faces']}")
    p, a = med("project", "total"), med("anchor", "total")
    print(f"ratio project/anchor {p / a:.2f} wall, "
          f"{med('project', 'cpu') / med('anchor', 'cpu'):.2f} cpu  "
          "(target: project <= 1.5 s and faster than anchor)")
    if hasattr(os, "getloadavg"):
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"series: {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} uncompressed in {dicom}; "
          f"median of {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
