"""`gicl bench report`: regenerate docs/benchmarks.md's figures by running their commands.

Every figure in the document is a bold title line ending in "(`uptime` load before: …)",
then a fenced block holding the one `python -m gicl bench …` command that made it, then a
fenced block with that command's output. This runs each command (as `sys.executable -m
gicl`, from the repository root) and rewrites the output block with what it printed — the
machine line included, since every bench prints one — and the title's load with the load
average just before the command. The prose around the figures is left alone: rewrite it
when the figures change what it says.

The authors' code runs from checkouts named in the environment, substituted for the
placeholders the commands carry:

    GICL_GLC_CHECKOUT           a clone of https://github.com/jzyustc/GLC        (/path/to/GLC)
    GICL_CONTROLGIC_CHECKOUT    a clone of https://github.com/lianqi1008/Control-GIC
                                                                      (/path/to/Control-GIC)

A figure whose command needs a checkout that is not set (or not a directory) is skipped with
a printed reason and keeps its old output. `--only TEXT` regenerates only the figures whose
title or command contains TEXT; `--dry-run` lists what would run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gicl.errors import UserError

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
# placeholder in a command → the environment variable naming the checkout
CHECKOUTS = {"/path/to/GLC": "GICL_GLC_CHECKOUT", "/path/to/Control-GIC": "GICL_CONTROLGIC_CHECKOUT"}
# title line, command block, output block
FIGURE = re.compile(r"^(?P<title>\*\*[^\n]+\*\* \(`uptime` load before: )(?P<load>[0-9., ]+)\)\n\n"
                    r"```\n(?P<command>python -m gicl bench [^\n]+)\n```\n\n"
                    r"```\n(?P<output>.*?)```\n", re.M | re.S)


@dataclass(frozen=True)
class Figure:
    title: str
    command: str
    span: tuple[int, int]


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("report", help="rerun docs/benchmarks.md's commands and rewrite its figures")
    p.add_argument("--doc", type=Path, default=DOC, help="the document (default docs/benchmarks.md)")
    p.add_argument("--only", default=None, help="only figures whose title or command contains this")
    p.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    p.set_defaults(func=run)


def figures(text: str) -> list[Figure]:
    return [Figure(m["title"], m["command"], m.span()) for m in FIGURE.finditer(text)]


def resolved_command(command: str) -> tuple[list[str] | None, str]:
    """The argv to run (checkout placeholders replaced), or None and why it cannot run."""
    for placeholder, variable in CHECKOUTS.items():
        if placeholder in command:
            path = os.environ.get(variable)
            if not path or not Path(path).is_dir():
                return None, (f"needs a checkout: set {variable} to a directory "
                              f"({'unset' if not path else path + ' is not a directory'})")
            command = command.replace(placeholder, path)
    argv = shlex.split(command)
    return [sys.executable, *argv[1:]], ""


def render(title: str, load: tuple[float, ...], command: str, output: str) -> str:
    loads = ", ".join(f"{v:.2f}" for v in load)
    return f"{title}{loads})\n\n```\n{command}\n```\n\n```\n{output.rstrip()}\n```\n"


def run(args: argparse.Namespace) -> int:
    if not args.doc.is_file():
        raise UserError(f"{args.doc} not found: pass --doc with the benchmarks document")
    found = figures(args.doc.read_text())
    chosen = [f for f in found if args.only is None or args.only in f.title or args.only in f.command]
    if not chosen:
        raise UserError(f"no figure in {args.doc} matches --only {args.only!r}" if args.only
                        else f"no figure blocks found in {args.doc}")
    for figure in chosen:
        argv, why = resolved_command(figure.command)
        name = figure.title.removeprefix("**").split("**")[0]
        if argv is None:
            print(f"skipped: {name}: {why}", file=sys.stderr)
            continue
        print(f"{'would run' if args.dry_run else 'running'}: {name}: {figure.command}",
              file=sys.stderr)
        if args.dry_run:
            continue
        load = os.getloadavg()
        done = subprocess.run(argv, cwd=args.doc.resolve().parents[1], stdout=subprocess.PIPE,
                              text=True)
        if done.returncode:
            print(f"failed (exit {done.returncode}): {name}: the figure keeps its old output",
                  file=sys.stderr)
            continue
        text = args.doc.read_text()  # re-read: earlier figures changed the offsets
        current = next(f for f in figures(text) if f.title == figure.title
                       and f.command == figure.command)
        start, end = current.span
        block = render(figure.title, load, figure.command, done.stdout)
        args.doc.write_text(text[:start] + block + text[end:])
        print(f"rewritten: {name}", file=sys.stderr)
    return 0
