"""Batch studies on Dask distributed: serial vs a LocalCluster of worker processes.

project : ``arspine.datasets.run_study(cases, evaluate_case, client=LocalCluster(N))``
anchor  : the same ``run_study`` serially in this process (``client=None``)

Both evaluate every case of a suite (register + measure; prepared CT models warmed into the
cache first, so both runs do the same work). Inputs travel by path. The script checks that
the cluster run returns exactly the serial run's TRE and status per case, then prints both
wall times and the speed-up. On a 2-core machine the ceiling is 2x; other processes on the
machine lower it.

Run: ``.venv/bin/python benchmarks/bench_study.py [--suite quick] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    from arspine.datasets.bench import case_model, evaluate_case
    from arspine.datasets.case import load_case
    from arspine.datasets.study import open_client, run_study
    from arspine.datasets.suites import suite_cases

    cases = [str(p) for p in suite_cases(args.suite, progress=True)]
    for c in cases:  # warm the prepared-model cache: both runs then do the same work
        case_model(load_case(c, load_scan=False))
    print(f"suite {args.suite}: {len(cases)} cases; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")

    t0 = time.perf_counter()
    serial = run_study(cases, evaluate_case, progress=False)
    t_serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    with open_client(workers=args.workers) as client:
        t_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        dist = run_study(cases, evaluate_case, client=client, progress=False)
        t_run = time.perf_counter() - t1
    t_dist = time.perf_counter() - t0

    same = all(a["status"] == b["status"] and a["tre_mm"] == b["tre_mm"]
               for a, b in zip(serial, dist))
    print(f"serial (anchor)       : {t_serial:7.1f} s")
    print(f"LocalCluster {args.workers} procs : {t_dist:7.1f} s (cluster start "
          f"{t_start:.1f} s, tasks {t_run:.1f} s)")
    print(f"speed-up              : {t_serial / t_dist:.2f}x overall, "
          f"{t_serial / t_run:.2f}x on the tasks")
    print(f"results identical to serial (status and TRE per level, every case): {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
