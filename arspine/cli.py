"""The ``arspine`` command line.

Every subcommand lives in its own module under :mod:`arspine.commands` and is registered in
:data:`COMMANDS` below, the one place the CLI is assembled. A command module defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; it imports heavy
packages inside ``run`` so ``arspine --help`` stays fast.

Exit codes (DESIGN.md): 0 success; 2 bad input (one clear line on stderr, no traceback);
3 registration refused by the quality gate; 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from arspine._version import __version__
from arspine.errors import InputError, RegistrationRejected

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_OK", "EXIT_ERROR", "EXIT_BAD_INPUT",
           "EXIT_REJECTED"]

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 1, 2, 3

#: (subcommand, module under arspine.commands)
COMMANDS: list[tuple[str, str]] = [
    ("demo", "demo"),
    ("register", "register"),
    ("simulate", "simulate"),
    ("bench", "bench"),
    ("render", "render"),
    ("track", "track"),
    ("export", "export"),
    ("igtl", "igtl"),
    ("view", "view"),
    ("info", "info"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="arspine",
        description="Augmented-reality surgical navigation of the spine: register a CT to an "
                    "intraoperative depth scan, track vertebrae, render the per-eye overlay.",
        epilog="Exit codes: 0 ok, 1 error, 2 bad input, 3 registration rejected by the "
               "quality gate. Set ARSPINE_DEBUG=1 for tracebacks.")
    parser.add_argument("--version", action="version", version=f"arspine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS:
        try:
            mod = importlib.import_module(f"arspine.commands.{module}")
            help_text = mod.HELP
        except Exception as exc:  # noqa: BLE001 - one broken command must not break the CLI
            p = sub.add_parser(name, help=f"(unavailable: {type(exc).__name__})")
            p.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=_unavailable(name, exc))
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _unavailable(name: str, exc: Exception):
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError(f"arspine {name} cannot be loaded: {type(exc).__name__}: {exc}")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arspine`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    prog = f"arspine {args.command}"
    debug = os.environ.get("ARSPINE_DEBUG") == "1"
    try:
        return int(args._run(args) or 0)
    except InputError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RegistrationRejected as exc:
        print(f"{prog}: rejected: {exc.reason}", file=sys.stderr)
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence prints one line
        if debug:
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              f"(ARSPINE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
