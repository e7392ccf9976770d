"""`arspine demo`: end to end on the real data (grows as the toolkit grows)."""

from __future__ import annotations

import argparse

HELP = "run the end-to-end demo on the real CT in ../shared/data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out)")


def run(args: argparse.Namespace) -> int:
    from arspine.datasets.paths import shared_data_dir

    d = shared_data_dir()
    print(f"arspine demo: real data in {d}")
    return 0
