"""The accuracy-regression bench: evaluate registration on case bundles, summarise per suite.

One case = one case bundle (DESIGN.md) with ``truth.json``. :func:`evaluate_case` loads it,
registers the scan to the CT and measures, per vertebra, the TRE at the truth's targets and
the pose error. :func:`run_bench` runs many cases (serially or on Dask through
:func:`arspine.datasets.study.run_study`), caches each case's record so an interrupted run
resumes, and builds the report whose shape is a contract (see :mod:`.bench_report`).

A case record::

    {"case": name, "suite": s, "status": "ok" | "rejected", "reason": str | None,
     "tre_mm": {"L3": x, ...}, "rotation_deg": x, "translation_mm": x, "elapsed_s": x,
     "vertebrae": {"L3": {"status", "tre_mm", "rotation_deg", "translation_mm"}},
     "false_accept": bool, "error": str | None, "noise_mm": x | None, "overlap": x | None}

``tre_mm`` of a level is the mean over its targets; ``rotation_deg`` / ``translation_mm`` of
a case are the worst over its levels. A *false accept* is a level reported ok whose TRE
exceeds :data:`FALSE_ACCEPT_TRE_MM` (the clinical 2 mm limit): the worst failure there is.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arspine._version import __version__
from arspine.atomic import atomic_write_json
from arspine.errors import InputError, RegistrationRejected

__all__ = [
    "FALSE_ACCEPT_TRE_MM",
    "evaluate_case",
    "summarize_suite",
    "build_report",
    "collect_cases",
    "run_bench",
    "code_fingerprint",
    "case_model",
]

#: a level reported ok with a larger TRE (mm) is a false accept
FALSE_ACCEPT_TRE_MM = 2.0

# Case meta keys (case.json, top level or nested one deep) read as the plot's x axes.
_NOISE_KEYS = ("noise_mm", "sensor_noise_mm", "noise_sigma_mm", "noise_sigma_at_500mm")
_OVERLAP_KEYS = ("overlap", "overlap_fraction", "visible_fraction", "exposure_fraction")


def _meta_number(meta: dict, keys: Sequence[str]) -> float | None:
    layers = [meta] + [v for v in meta.values() if isinstance(v, dict)]
    for layer in layers:
        for k in keys:
            v = layer.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                return float(v)
    return None


def case_model(case: Any) -> Any:
    """The registration model of a case bundle (CT + labels, or its stored surfaces when it has
    no CT), prepared once and cached by input files and code version."""
    from arspine.datasets.paths import cache_dir
    from arspine.registration import prepare_model

    key_parts = []
    sources = [case.ct_path, case.labels_path]
    if case.ct_path is None:
        sources += [case.surface_paths[k] for k in sorted(getattr(case, "surface_paths", {}))]
    for p in sources:
        if p is None:
            key_parts.append("none")
            continue
        p = Path(p)
        st = p.stat()
        key_parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha1(("|".join(key_parts) + code_fingerprint()).encode()).hexdigest()[:20]
    path = cache_dir("bench", "models") / f"{key}.model"
    model_cls = None
    try:
        from arspine.registration import PreparedModel as model_cls
    except ImportError:
        pass
    if model_cls is not None and hasattr(model_cls, "load") and path.exists():
        try:
            return model_cls.load(path)
        except Exception:  # noqa: BLE001 - a broken cache entry is rebuilt below
            pass
    if getattr(case, "surface_paths", None) and case.ct_path is None:
        model = prepare_model(surfaces=case.load_surfaces())
    else:
        ct = case.load_ct()
        labels = case.load_labels(ct) if case.labels_path is not None else None
        model = prepare_model(ct, labels)
    if hasattr(model, "save"):
        try:
            model.save(path)
        except Exception:  # noqa: BLE001 - caching is an optimisation only
            pass
    return model


def evaluate_case(case_dir: str | os.PathLike) -> dict:
    """Register one case bundle and measure it against its truth.

    Parameters
    ----------
    case_dir : str or path-like
        A case bundle folder with ``scan.ply`` and ``truth.json`` (targets per level); a
        sequence case (``frames/``) is tracked instead
        (:func:`arspine.datasets.tracking_eval.evaluate_sequence`).

    Returns
    -------
    dict
        The case record (module docstring); ``"suite"`` is left for the caller to set.
        A registration that raises is recorded as rejected with ``"error"`` set.
    """
    from arspine.datasets.case import load_case
    from arspine.registration import register
    from arspine.registration.metrics import pose_error, tre_mm

    case = load_case(case_dir)
    if not case.truth:
        raise InputError(f"case {case_dir} has no truth.json (the bench needs ground truth)")
    if case.scan is None and getattr(case, "frames", None):
        from arspine.datasets.tracking_eval import evaluate_sequence

        return evaluate_sequence(os.fspath(case_dir))
    if case.scan is None:
        raise InputError(f"case {case_dir} has no scan.ply")
    meta = dict(case.meta or {})
    rec: dict[str, Any] = {
        "case": case.name, "suite": meta.get("suite"), "status": "rejected", "reason": None,
        "tre_mm": {}, "rotation_deg": None, "translation_mm": None, "elapsed_s": None,
        "vertebrae": {}, "false_accept": False, "error": None,
        "noise_mm": _meta_number(meta, _NOISE_KEYS),
        "overlap": _meta_number(meta, _OVERLAP_KEYS),
    }
    levels = [lv for lv in (getattr(case, "exposed_levels", None) or case.truth)
              if lv in case.truth]
    t0 = time.perf_counter()
    model = case_model(case)
    rec["prepare_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        result = register(model, case.scan, levels=levels)
    except RegistrationRejected as exc:
        result = exc.result
        rec["reason"] = exc.reason
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a crash is recorded, the study goes on
        rec["elapsed_s"] = time.perf_counter() - t0
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["reason"] = "error"
        return rec
    rec["elapsed_s"] = time.perf_counter() - t0
    if result is None:
        return rec
    if isinstance(result, dict):
        from arspine.registration import RegistrationResult

        result = RegistrationResult.from_dict(result)
    rec["status"] = "ok" if result.status == "ok" else "rejected"
    rec["reason"] = rec["reason"] or result.reason
    worst_deg = worst_mm = 0.0
    for level in levels:
        truth = case.truth[level]
        T_true = truth["T_sensor_from_ct"]
        targets = np.asarray(truth.get("targets_ct_mm", []), dtype=np.float64).reshape(-1, 3)
        vr = result.vertebrae.get(level) if result.vertebrae else None
        T_est = vr.T_sensor_from_ct if vr is not None else result.T_sensor_from_ct
        level_status = (vr.status if vr is not None else result.status)
        level_ok = rec["status"] == "ok" and level_status == "ok"
        deg, mm = pose_error(T_est, T_true)
        tre = float(np.mean(tre_mm(T_est, T_true, targets))) if len(targets) else mm
        rec["tre_mm"][level] = tre
        rec["vertebrae"][level] = {"status": "ok" if level_ok else "rejected", "tre_mm": tre,
                                   "rotation_deg": deg, "translation_mm": mm}
        worst_deg, worst_mm = max(worst_deg, deg), max(worst_mm, mm)
        if level_ok and tre > FALSE_ACCEPT_TRE_MM:
            rec["false_accept"] = True
    rec["rotation_deg"], rec["translation_mm"] = worst_deg, worst_mm
    return rec


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize_suite(records: Iterable[dict]) -> dict:
    """Per-suite figures over case records.

    TRE statistics are over the levels reported ok (a rejected level shows no overlay);
    acceptance and false accepts count cases.

    Returns
    -------
    dict
        ``{"median_tre_mm", "p95_tre_mm", "max_tre_mm", "accepted", "cases",
        "acceptance_rate", "false_accepts", "errors", "levels_ok", "median_elapsed_s"}``
        (TRE figures None when nothing was accepted).
    """
    recs = list(records)
    tres = [v["tre_mm"] for r in recs for v in r.get("vertebrae", {}).values()
            if v.get("status") == "ok" and v.get("tre_mm") is not None]
    elapsed = [r["elapsed_s"] for r in recs if r.get("elapsed_s") is not None]
    accepted = sum(1 for r in recs if r.get("status") == "ok")
    return {
        "median_tre_mm": _percentile(tres, 50),
        "p95_tre_mm": _percentile(tres, 95),
        "max_tre_mm": max(tres) if tres else None,
        "accepted": accepted,
        "cases": len(recs),
        "acceptance_rate": accepted / len(recs) if recs else None,
        "false_accepts": sum(1 for r in recs if r.get("false_accept")),
        "errors": sum(1 for r in recs if r.get("error")),
        "levels_ok": len(tres),
        "median_elapsed_s": _percentile(elapsed, 50),
    }


def build_report(records: Sequence[dict], version: str = __version__) -> dict:
    """The bench report (a contract): ``{"version", "suites": {name: summary}, "cases": [...]}``.

    Suites appear in the order their first case appears.
    """
    by_suite: dict[str, list[dict]] = {}
    for r in records:
        by_suite.setdefault(str(r.get("suite") or "custom"), []).append(r)
    return {"version": version,
            "false_accept_tre_mm": FALSE_ACCEPT_TRE_MM,
            "suites": {s: summarize_suite(rs) for s, rs in by_suite.items()},
            "cases": list(records)}


def collect_cases(suites: Sequence[str] = (), case_dirs: Sequence[str | os.PathLike] = (),
                  progress: bool = False) -> list[tuple[str, str]]:
    """``[(suite, case_path), ...]`` from suite names and case folders.

    A folder in ``case_dirs`` is a case (has ``case.json``) or a folder of cases; its suite
    label is ``case.json``'s ``"suite"`` or ``"custom"``.
    """
    out: list[tuple[str, str]] = []
    if suites:
        from arspine.datasets.suites import suite_cases

        for s in suites:
            out.extend((s, os.fspath(p)) for p in suite_cases(s, progress=progress))
    for d in case_dirs:
        p = Path(d)
        if not p.is_dir():
            raise InputError(f"--cases {d}: not a folder")
        found = [p] if (p / "case.json").is_file() else sorted(
            c for c in p.iterdir() if (c / "case.json").is_file())
        if not found:
            raise InputError(f"--cases {d}: no case bundle (case.json) in it or below it")
        for c in found:
            try:
                meta = json.loads((c / "case.json").read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"--cases {c}: unreadable case.json ({exc})") from exc
            out.append((str(meta.get("suite") or "custom"), os.fspath(c)))
    if not out:
        raise InputError("no cases: give --suite NAME or --cases DIR")
    return out


_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """Hash of the source that decides a case's result (registration, imaging, datasets).

    Part of every cache key, so a code change never reuses a stale cached result.
    """
    global _FINGERPRINT
    if _FINGERPRINT is None:
        h = hashlib.sha1(__version__.encode())
        root = Path(__file__).resolve().parent.parent
        for folder in ("registration", "imaging", "datasets", "navigation"):
            for f in sorted((root / folder).rglob("*.py")):
                h.update(f.name.encode())
                h.update(f.read_bytes())
        _FINGERPRINT = h.hexdigest()[:16]
    return _FINGERPRINT


def _case_cache_key(case_dir: str) -> str:
    p = Path(case_dir).resolve()
    h = hashlib.sha1(f"{p}|{code_fingerprint()}".encode())
    for f in sorted(p.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_json(path, data)


def run_bench(cases: Sequence[tuple[str, str]], client: Any = None, *, use_cache: bool = True,
              cache: str | os.PathLike | None = None, progress: bool = True,
              evaluate: Any = None, client_factory: Any = None) -> dict:
    """Evaluate ``[(suite, case_path), ...]`` and return the report.

    Parameters
    ----------
    cases : sequence of (suite, path)
        From :func:`collect_cases`.
    client : distributed.Client, optional
        Run cases as Dask tasks (paths travel, not volumes); None runs them here.
    use_cache : bool
        Reuse records cached by an earlier (possibly interrupted) run of the same case with
        the same code; every finished case is cached either way.
    cache : path, optional
        Cache folder (default ``cache_dir("bench", "results")``).
    progress : bool
        tqdm bar over cases (on a terminal).
    evaluate : callable (path) -> record, optional
        Replaces :func:`evaluate_case` (picklable when a client is given).
    client_factory : callable () -> context manager yielding a client, optional
        Opened only when some case is not cached (e.g. a LocalCluster started on demand);
        used when ``client`` is None.

    Returns
    -------
    dict
        :func:`build_report` of the records, in the order of ``cases``.
    """
    from arspine.datasets.paths import cache_dir
    from arspine.datasets.study import run_study

    fn = evaluate or evaluate_case
    folder = Path(cache) if cache is not None else cache_dir("bench", "results")
    keys = [_case_cache_key(p) for _, p in cases]
    records: list[dict | None] = [None] * len(cases)
    if use_cache:
        for i, k in enumerate(keys):
            f = folder / f"{k}.json"
            if f.is_file():
                try:
                    records[i] = json.loads(f.read_text())
                except (OSError, ValueError):
                    records[i] = None
    todo = [i for i, r in enumerate(records) if r is None]

    def _store(j: int, rec: dict) -> None:
        i = todo[j]
        _write_json_atomic(folder / f"{keys[i]}.json", rec)

    import contextlib

    if client is not None or not todo or client_factory is None:
        cm = contextlib.nullcontext(client)
    else:
        cm = client_factory()
    with cm as active:
        fresh = run_study([cases[i][1] for i in todo], fn, client=active, progress=progress,
                          on_result=_store, desc="bench")
    for j, rec in zip(todo, fresh):
        records[j] = rec
    out = []
    for (suite, _), rec in zip(cases, records):
        rec = dict(rec)
        rec["suite"] = suite
        out.append(rec)
    return build_report(out)
