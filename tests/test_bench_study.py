"""run_study on a real Dask LocalCluster (2 worker processes): same results as serial, in order,
errors naming the case; run_bench's cache lets an interrupted run resume."""

from __future__ import annotations

import functools
import json
import os
import sys
import zlib

import cloudpickle
import numpy as np
import pytest

from arspine.datasets.bench import run_bench
from arspine.datasets.study import StudyError, open_client, run_study
from arspine.errors import InputError

# the workers cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _kabsch_case(path: str) -> dict:
    """A deterministic per-case computation: recover a seeded rigid transform from the points
    stored at ``path`` (the seed comes from the file name, so any worker gets the same)."""
    pts = np.load(path)
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    rv = rng.normal(size=3) * 0.3
    angle = np.linalg.norm(rv)
    k = np.array([[0, -rv[2], rv[1]], [rv[2], 0, -rv[0]], [-rv[1], rv[0], 0]]) / angle
    R = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    t = rng.normal(size=3) * 20.0
    moved = pts @ R.T + t + rng.normal(scale=0.1, size=pts.shape)
    a, b = pts - pts.mean(0), moved - moved.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    R_est = u @ np.diag([1, 1, d]) @ vt
    t_est = moved.mean(0) - R_est @ pts.mean(0)
    return {"R_err": float(np.abs(R_est - R).max()), "t_est": t_est.tolist(), "t": t.tolist(),
            "pid": os.getpid()}


def _fails_on_three(path: str) -> int:
    if path.endswith("case_3.npy"):
        raise RuntimeError("boom")
    return 1


def _fake_record(path: str, calls_file: str | None = None) -> dict:
    """A bench record computed from the case folder's points (no registration needed)."""
    if calls_file:
        with open(calls_file, "a") as fh:
            fh.write(path + "\n")
    pts = np.load(os.path.join(path, "points.npy"))
    tre = float(np.abs(pts).mean()) / 100.0
    return {"case": os.path.basename(path), "suite": None, "status": "ok", "reason": None,
            "tre_mm": {"L3": tre}, "rotation_deg": 0.1, "translation_mm": tre,
            "elapsed_s": 0.01, "vertebrae": {"L3": {"status": "ok", "tre_mm": tre,
                                                     "rotation_deg": 0.1,
                                                     "translation_mm": tre}},
            "false_accept": False, "error": None, "noise_mm": None, "overlap": None}


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(6):
        p = d / f"case_{i}.npy"
        np.save(p, rng.normal(scale=30.0, size=(200, 3)))
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2) as c:
        yield c


def test_cluster_has_two_worker_processes(client):
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(w["nthreads"] == 1 for w in workers.values())


def test_cluster_results_identical_to_serial(case_files, client):
    serial = run_study(case_files, _kabsch_case, progress=False)
    seen = []
    dist = run_study(case_files, _kabsch_case, client=client, progress=False,
                     on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(len(case_files)))
    for s, d in zip(serial, dist):
        assert s["t_est"] == d["t_est"]  # bit-identical, same order
        assert s["R_err"] == d["R_err"]
        assert s["R_err"] < 1e-2
        assert np.allclose(s["t_est"], s["t"], atol=0.5)
    # the work ran in the worker processes, not here
    assert all(d["pid"] != os.getpid() for d in dist)
    assert all(s["pid"] == os.getpid() for s in serial)


def test_failure_names_the_case(case_files, client):
    with pytest.raises(StudyError, match="case_3.npy"):
        run_study(case_files, _fails_on_three, progress=False)
    with pytest.raises(StudyError, match="case_3.npy.*boom"):
        run_study(case_files, _fails_on_three, client=client, progress=False)


def test_bad_arguments():
    with pytest.raises(InputError, match="single path"):
        run_study("/tmp/one_case", _kabsch_case)
    with pytest.raises(InputError, match="fn must be callable"):
        run_study(["/tmp/a"], 3)
    with pytest.raises(InputError, match="workers"):
        with open_client(workers=0):
            pass


@pytest.fixture()
def case_dirs(tmp_path):
    rng = np.random.default_rng(3)
    dirs = []
    for i in range(4):
        d = tmp_path / f"c{i}"
        d.mkdir()
        np.save(d / "points.npy", rng.normal(scale=100.0, size=(50, 3)))
        (d / "case.json").write_text(json.dumps({"name": f"c{i}"}))
        dirs.append(("quick", str(d)))
    return dirs


def test_run_bench_resumes_from_cache(case_dirs, tmp_path, client):
    calls = tmp_path / "calls.txt"
    cache = tmp_path / "cache"
    fn = functools.partial(_fake_record, calls_file=str(calls))

    # an "interrupted" run: only the first two cases finished
    first = run_bench(case_dirs[:2], cache=cache, progress=False, evaluate=fn)
    assert len(calls.read_text().splitlines()) == 2
    full = run_bench(case_dirs, cache=cache, progress=False, evaluate=fn, client=client)
    # only the two missing cases ran again
    assert sorted(calls.read_text().splitlines()) == sorted(
        [p for _, p in case_dirs[:2]] + [p for _, p in case_dirs[2:]])
    assert [c["case"] for c in full["cases"]] == ["c0", "c1", "c2", "c3"]
    assert full["cases"][:2] == first["cases"]
    assert full["suites"]["quick"]["cases"] == 4
    # a changed case input invalidates its cache entry
    p = os.path.join(case_dirs[0][1], "points.npy")
    np.save(p, np.load(p) * 2.0)
    os.utime(p, ns=(1, 1))
    again = run_bench(case_dirs, cache=cache, progress=False, evaluate=fn)
    assert len(calls.read_text().splitlines()) == 5
    assert again["cases"][0]["tre_mm"]["L3"] == pytest.approx(
        2.0 * full["cases"][0]["tre_mm"]["L3"])
    # use_cache=False re-runs everything
    run_bench(case_dirs, cache=cache, progress=False, evaluate=fn, use_cache=False)
    assert len(calls.read_text().splitlines()) == 9
