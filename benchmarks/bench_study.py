"""Batch studies on Dask distributed: serial vs a LocalCluster of worker processes.

project : ``arspine.datasets.run_study(cases, evaluate_case, client=LocalCluster(N))``
anchor  : the same ``run_study`` serially in this process (``client=None``)

Both evaluate every case of a suite (register + measure; prepared CT models warmed into the
cache first, so both runs do the same work). Inputs travel by path. The script checks that
the cluster run returns exactly the serial run's TRE and status per case, then prints both
wall times and the speed-up. On a 2-core machine the ceiling is 2x; other processes on the
machine lower it, and so does a task that already keeps both cores busy (the registration
runs multi-threaded KD-tree queries and Open3D kernels): the script prints how many cores
the serial run kept busy.

Each case is evaluated ``--repeat`` times (default 3) so there are more tasks than workers;
the workers import arspine/open3d before the clock for the tasks starts (counted in the
cluster start).

Run: ``.venv/bin/python benchmarks/bench_study.py [--suite quick] [--workers 2] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import time


def _warm() -> None:
    import open3d  # noqa: F401

    import arspine.datasets.bench  # noqa: F401
    import arspine.registration.pipeline  # noqa: F401


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=3,
                    help="each case this many times (more tasks than workers)")
    args = ap.parse_args()

    from arspine.datasets.bench import case_model, evaluate_case
    from arspine.datasets.case import load_case
    from arspine.datasets.study import open_client, run_study
    from arspine.datasets.suites import suite_cases

    unique = [str(p) for p in suite_cases(args.suite, progress=True)]
    cases = unique * args.repeat
    for c in unique:  # warm the prepared-model cache: both runs then do the same work
        case_model(load_case(c, load_scan=False))
    print(f"suite {args.suite}: {len(unique)} cases x {args.repeat} = {len(cases)} tasks; "
          f"{os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")

    t0, c0 = time.perf_counter(), time.process_time()
    serial = run_study(cases, evaluate_case, progress=False)
    t_serial, c_serial = time.perf_counter() - t0, time.process_time() - c0

    t0 = time.perf_counter()
    with open_client(workers=args.workers) as client:
        client.run(_warm)  # imports on every worker: part of the cluster start
        t_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        dist = run_study(cases, evaluate_case, client=client, progress=False)
        t_run = time.perf_counter() - t1
    t_dist = time.perf_counter() - t0

    same = all(a["status"] == b["status"] and a["tre_mm"] == b["tre_mm"]
               for a, b in zip(serial, dist))
    print(f"serial (anchor)       : {t_serial:7.1f} s wall, {c_serial:.1f} s CPU (all threads: "
          f"{c_serial / t_serial:.2f} cores busy on average)")
    print(f"LocalCluster {args.workers} procs : {t_dist:7.1f} s (cluster start "
          f"{t_start:.1f} s, tasks {t_run:.1f} s)")
    print(f"speed-up              : {t_serial / t_dist:.2f}x overall, "
          f"{t_serial / t_run:.2f}x on the tasks")
    print(f"results identical to serial (status and TRE per level, every case): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
