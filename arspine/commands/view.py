"""`arspine view` (not implemented yet)."""

from __future__ import annotations

import argparse

from arspine.errors import ArspineError

HELP = "view (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ArspineError("arspine view is not implemented yet")
