"""The ``cosched`` console script.

Each verb lives in its own module of this package and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
User errors (:class:`CoschedError`) print as one line on stderr and exit with code 2; so do
what the machine refuses (an ``OSError`` such as a full disk, a ``MemoryError``), which a
verb's own checks did not foresee: the user can act on those too.

Layering: the top; verbs call the public API (``cosched.compile``/``load``) and any stage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from cosched.errors import CoschedError

__all__ = ["main"]

# Verb modules, in the order `cosched --help` lists them.
COMMANDS = ("zoo", "exec", "profile", "compile", "run", "show", "demo")

log = logging.getLogger("cosched")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error; the
    subcommands' parsers are of this class too (``add_subparsers`` uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cosched",
        description="Compile several ONNX models (tenants) into one concurrent runtime plan.",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print errors only; no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cosched.cli.{name}").register(subparsers)
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cosched").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    try:
        return int(args.func(args) or 0)
    except CoschedError as exc:
        print(f"cosched {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cosched {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"cosched {args.command}: error: out of memory; lower the batch or the input shapes",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cosched {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined, so an error never spans several."""
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
