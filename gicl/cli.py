"""`gicl` / `python -m gicl`: thin subcommands over the library.

Each module in `gicl.commands` contributes one subcommand through `register(subparsers)`,
which sets `func`; heavy imports happen inside the command so `--help` stays fast. User
errors print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import gicl.commands
from gicl.errors import UserError
from gicl.logs import quiet_harmless_warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gicl", description="Train and run VQ-based generative image codecs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(gicl.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"gicl.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_harmless_warnings()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"gicl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gicl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
