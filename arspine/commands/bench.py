"""`arspine bench`: accuracy regression over case suites; exit 1 on regression."""

from __future__ import annotations

import argparse
import sys

from arspine.errors import InputError

__all__ = ["HELP", "add_arguments", "run"]

HELP = ("accuracy-regression bench: register every case of a suite, report TRE per vertebra, "
        "compare with a baseline (exit 1 on regression)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", action="extend", nargs="+", default=[], metavar="NAME",
                        help="suite(s) to run: quick, standard, hard, tracking, real "
                             "(default: standard when no --cases)")
    parser.add_argument("--cases", action="extend", nargs="+", default=[], metavar="DIR",
                        help="case bundle folders, or folders of case bundles")
    parser.add_argument("--report", metavar="F.json", help="write the JSON report")
    parser.add_argument("--junit", metavar="F.xml", help="write JUnit XML (one testcase per case)")
    parser.add_argument("--markdown", metavar="F.md", help="write a Markdown summary")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--baseline", metavar="F.json",
                        help="compare with this baseline report; exit 1 on regression")
    parser.add_argument("--update-baseline", action="store_true",
                        help="rewrite --baseline with this run's report (deliberately)")
    parser.add_argument("--tolerance-mm", type=float, default=0.25, metavar="X",
                        help="allowed worsening of median/p95 TRE per suite and of each "
                             "level's TRE (default 0.25)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Dask LocalCluster worker processes (default: CPU cores; "
                            "0 runs in this process)")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="run on an existing Dask cluster, e.g. tcp://host:8786")
    parser.add_argument("--no-cache", action="store_true",
                        help="re-run every case (default: resume from cached case results "
                             "of the same code)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from arspine.datasets.bench import collect_cases, run_bench
    from arspine.datasets.bench_report import (
        compare_to_baseline,
        load_report,
        markdown_summary,
        write_junit,
        write_markdown,
        write_report,
    )
    from arspine.datasets.study import open_client

    if args.tolerance_mm is None or not args.tolerance_mm >= 0:
        raise InputError(f"--tolerance-mm must be >= 0, got {args.tolerance_mm}")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.update_baseline and not args.baseline:
        raise InputError("--update-baseline needs --baseline F.json (the file to rewrite)")
    baseline = None
    if args.baseline and not args.update_baseline:
        baseline = load_report(args.baseline, "--baseline")
    suites = args.suite or ([] if args.cases else ["standard"])
    cases = collect_cases(suites, args.cases, progress=not args.no_progress)

    if args.scheduler:
        client_cm = open_client(scheduler=args.scheduler)
    elif args.workers == 0 or len(cases) == 1:
        client_cm = contextlib.nullcontext(None)
    else:
        n = args.workers or os.cpu_count() or 1
        client_cm = open_client(workers=min(n, len(cases)))
    report = run_bench(cases, client_factory=lambda: client_cm, use_cache=not args.no_cache,
                       progress=not args.no_progress)

    comparison = None
    if baseline is not None:
        comparison = compare_to_baseline(report, baseline, args.tolerance_mm)
    if args.report:
        write_report(report, args.report)
    if args.junit:
        write_junit(report, args.junit, comparison)
    if args.markdown:
        write_markdown(report, args.markdown, comparison, baseline)
    if args.plots:
        from arspine.datasets.bench_plots import write_plots

        write_plots(report, args.plots)
    print(markdown_summary(report, comparison, baseline), end="")
    if args.update_baseline:
        write_report(report, args.baseline)
        print(f"baseline rewritten: {args.baseline}")
        return 0
    if comparison is not None and comparison.regressed:
        print("arspine bench: REGRESSION against " + args.baseline, file=sys.stderr)
        for p in comparison.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0
