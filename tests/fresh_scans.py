"""Fresh simulated scans as bench_registration_fresh.py draws them (10 % outliers, moderate
motion), for end-to-end registration tests of known seeds."""

from __future__ import annotations

import numpy as np


def fresh_scan(anatomy: str, seed: int, levels: list[str]):
    """``(model, sim)``: the prepared model of a simulated anatomy and its scan."""
    from arspine.datasets.simulate import simulate_scan
    from arspine.datasets.suites import load_anatomy
    from arspine.registration import prepare_model

    an = load_anatomy(anatomy)
    sim = simulate_scan(an, seed=seed, levels=levels, outlier_fraction=0.10,
                        motion="moderate")
    return prepare_model(surfaces=an.surfaces), sim


def level_tre(result, sim, level: str) -> float:
    """RMS target error (mm) of one exposed level of a registration result."""
    from arspine.registration.metrics import tre_mm

    tre = tre_mm(result.vertebrae[level].T_sensor_from_ct, sim.truth[level],
                 sim.targets_ct_mm[level])
    return float(np.sqrt(np.mean(tre ** 2)))
