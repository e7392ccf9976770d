"""Batch studies: run one function over many cases, serially or as Dask distributed tasks.

Inputs travel by path (a case folder is a string), never as pickled volumes: each worker
reads its own case from disk. ``fn`` must be deterministic given the path (seeds derived
from the case), so a cluster run returns exactly what the serial run returns, in the order
of ``cases``.

Typical use::

    from arspine.datasets import run_study
    results = run_study(case_dirs, evaluate_case)                 # serial, in this process
    with open_client(workers=4) as client:                        # LocalCluster, 4 processes
        results = run_study(case_dirs, evaluate_case, client=client)
    with open_client(scheduler="tcp://host:8786") as client:      # an existing cluster
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from arspine.errors import ArspineError, InputError

__all__ = ["run_study", "open_client", "StudyError"]

R = TypeVar("R")


class StudyError(ArspineError):
    """A task of a study failed; the message names the case."""


def _as_case_paths(cases: Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(cases, (str, os.PathLike)):
        raise InputError(f"cases must be a sequence of paths, got a single path {cases!r}")
    try:
        out = [os.fspath(c) for c in cases]
    except TypeError as exc:
        raise InputError(f"cases must be paths (str or os.PathLike), got {cases!r}") from exc
    return out


def _progress_bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    enabled = progress and total > 0 and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="case", disable=not enabled, leave=False)


@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client``: a new LocalCluster of worker processes, or an existing cluster.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new LocalCluster (one thread each by default); ignored when
        ``scheduler`` is given. Default: the number of CPU cores.
    scheduler : str, optional
        Address of a running scheduler, e.g. ``"tcp://host:8786"``.
    threads_per_worker : int
        Threads per LocalCluster worker process.

    Yields
    ------
    distributed.Client
        Closed (and its LocalCluster shut down) when the block exits.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler:
            raise InputError(f"scheduler must be an address like tcp://host:8786, got "
                             f"{scheduler!r}")
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"scheduler {scheduler!r} is not reachable: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    n = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(n, int) or n < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def run_study(cases: Sequence[str | os.PathLike], fn: Callable[[str], R], client: Any = None,
              *, progress: bool = True, on_result: Callable[[int, R], None] | None = None,
              desc: str = "cases") -> list[R]:
    """Run ``fn(case_path)`` for every case and return the results in the order of ``cases``.

    Parameters
    ----------
    cases : sequence of str or path-like
        Case folders (or any input files). Only the path string is sent to a worker.
    fn : callable (str) -> R
        Picklable (a module-level function or a ``functools.partial`` of one) and
        deterministic given the path: the same case gives the same result on any worker.
    client : distributed.Client, optional
        Run the cases as Dask tasks on this client's cluster; None runs them serially here.
    progress : bool
        Show a tqdm bar (only on a terminal).
    on_result : callable (index, result), optional
        Called in this process as each case finishes (in completion order), e.g. to cache it
        so an interrupted study resumes where it stopped.
    desc : str
        Label of the progress bar.

    Returns
    -------
    list
        ``[fn(cases[0]), fn(cases[1]), ...]``.

    Raises
    ------
    StudyError
        A case's task raised; the message names the case and the original error.
    """
    paths = _as_case_paths(cases)
    if not callable(fn):
        raise InputError(f"fn must be callable, got {type(fn).__name__}")
    results: list[Any] = [None] * len(paths)
    with _progress_bar(len(paths), progress, desc) as bar:
        if client is None:
            for i, p in enumerate(paths):
                try:
                    results[i] = fn(p)
                except (KeyboardInterrupt, InputError):
                    raise
                except Exception as exc:  # noqa: BLE001 - re-raised naming the case
                    raise StudyError(f"case {p}: {type(exc).__name__}: {exc}") from exc
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)
            return results
        from distributed import as_completed

        # pure=False: a study is re-run on purpose (e.g. after a code change); never reuse a
        # stale result the scheduler may still hold for the same key.
        futures = client.map(fn, paths, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                if fut.status == "error":
                    exc = fut.exception()
                    raise StudyError(f"case {paths[i]}: {type(exc).__name__}: {exc}") from exc
                results[i] = fut.result()
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)
        finally:
            client.cancel([f for f in futures if not f.done()])
    return results

