"""The ``natlearn`` command: a thin layer over the Python API, one module per sub-command, each an
``add_arguments(command)`` declaring its parser and a ``run(args)`` calling the library (what a
command does lives in the library; a module here parses, checks and prints). Shared flags and checks
are in :mod:`natlearn.cli.common`.

User mistakes (NatlearnError) print one line and exit 2; anything else is a bug and shows a
traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from natlearn.cli import (
    compare,
    demo,
    embed,
    evaluate,
    evolution,
    export,
    filters,
    neighbors,
    report,
    train,
    transfer,
)
from natlearn.errors import NatlearnError
from natlearn.version import __version__

# Nothing here imports torch: each command's run imports what it needs, so ``natlearn --help`` and
# ``natlearn train --help`` answer at once.

__all__ = ["main"]

COMMANDS = (
    train,
    export,
    evaluate,
    compare,
    neighbors,
    embed,
    filters,
    evolution,
    transfer,
    report,
    demo,
)
"""The sub-commands, in the order ``natlearn --help`` lists them."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise NatlearnError(f"{message} (see: {self.prog} --help)")


class _CommandParser(_Parser):
    """A subcommand's parser: flags and positionals (key=value settings) may interleave, as in
    ``natlearn train epochs=8 --resume progress=false``."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _parser() -> argparse.ArgumentParser:
    """Every sub-command, each with the function that runs it as ``args.handler``."""
    description = "Noise As Targets: unsupervised CNN pre-training by predicting noise."
    parser = _Parser(prog="natlearn", description=description)
    parser.add_argument("--version", action="version", version=f"natlearn {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    def command(name: str, summary: str, run, **kwargs):
        sub = subparsers.add_parser(name, help=summary, **kwargs)
        sub.set_defaults(handler=run)
        return sub.add_argument

    for module in COMMANDS:
        module.add_arguments(command)
    return parser


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    args.handler(args)
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"natlearn: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _run(argv)
    except NatlearnError as error:
        print(f"natlearn: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("natlearn: interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format
