"""`arspine igtl` (not implemented yet)."""

from __future__ import annotations

import argparse

from arspine.errors import ArspineError

HELP = "igtl (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise ArspineError("arspine igtl is not implemented yet")
