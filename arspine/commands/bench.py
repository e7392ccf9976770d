"""`arspine bench` (not implemented yet)."""

from __future__ import annotations

import argparse

from arspine.errors import ArspineError

HELP = "bench (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ArspineError("arspine bench is not implemented yet")
