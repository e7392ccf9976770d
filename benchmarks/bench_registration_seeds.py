"""Registration on fresh seeds of the real CT: scans no threshold was set on.

The gate thresholds and search settings were chosen on the ``standard``/``real`` suites; this
script simulates scans of the real TotalSegmentator CT (the demo's anatomy) with seeds the
suites do not use, registers each from nothing and checks every accepted level against the
simulator's truth - the exposed levels at their screw/interior targets, any other accepted
level at its centre, pedicles and lamina. The anchor (plain Open3D) is in
``bench_registration.py``; this one is about false accepts on unseen data.

Run: ``.venv/bin/python benchmarks/bench_registration_seeds.py [--seeds 10-29]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="10-29", help="range a-b (inclusive) of scan seeds")
    args = ap.parse_args(argv)
    a, b = (int(x) for x in args.seeds.split("-"))

    from arspine.commands.demo import _CT, _LABELS
    from arspine.datasets.anatomy import anatomy_from_ct
    from arspine.datasets.paths import real_data_path
    from arspine.datasets.simulate import simulate_scan
    from arspine.imaging import load_ct, load_labels
    from arspine.registration import prepare_model, register
    from arspine.registration.metrics import tre_mm
    from arspine.registration.multibody import level_targets

    ct = load_ct(real_data_path(*_CT), progress=False)
    labels = load_labels(real_data_path(*_LABELS), like=ct)
    anatomy = anatomy_from_ct(ct, labels)
    model = prepare_model(ct, labels, surfaces=anatomy.surfaces)
    n_exposed = n_ok_exposed = n_ok_hidden = n_cases_ok = wrong = 0
    tres, times = [], []
    for seed in range(a, b + 1):
        sim = simulate_scan(anatomy, seed=seed)
        t0 = time.perf_counter()
        r = register(model, sim.cloud)
        times.append(time.perf_counter() - t0)
        n_cases_ok += r.status == "ok"
        line = []
        for lv, v in r.vertebrae.items():
            ok = r.status == "ok" and v.status == "ok"
            if lv in sim.exposed_levels:
                n_exposed += 1
                tg = sim.targets_ct_mm[lv]
            elif ok:
                tg = level_targets(model, model.levels.index(lv))
            else:
                continue
            t = float(np.sqrt(np.mean(tre_mm(v.T_sensor_from_ct, sim.truth[lv], tg) ** 2)))
            if ok:
                tres.append(t)
                wrong += t > 2.0
                if lv in sim.exposed_levels:
                    n_ok_exposed += 1
                else:
                    n_ok_hidden += 1
            hidden = "" if lv in sim.exposed_levels else "(hidden)"
            line.append(f"{lv}{hidden} {t:.2f}{'' if ok else 'r'}")
        print(f"seed {seed}: {r.status:8s} {times[-1]:.2f} s  TRE mm (r=rejected): "
              f"{', '.join(line)}" + (f"  [{r.reason}]" if r.reason else ""), flush=True)
    print("\n== summary ==")
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"scans {b - a + 1}, accepted {n_cases_ok}; exposed levels accepted {n_ok_exposed} "
          f"of {n_exposed}, other levels accepted {n_ok_hidden}; accepted with TRE > 2 mm: "
          f"{wrong}")
    if tres:
        print(f"accepted TRE median {np.median(tres):.2f} mm, p95 "
              f"{np.percentile(tres, 95):.2f} mm, max {np.max(tres):.2f} mm")
    print(f"time per registration: median {np.median(times):.2f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
