"""`arspine export` (not implemented yet)."""

from __future__ import annotations

import argparse

from arspine.errors import ArspineError

HELP = "export (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ArspineError("arspine export is not implemented yet")
