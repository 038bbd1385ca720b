"""`gicl bench KIND`: performance figures on this machine (kinds from gicl.benchmarks)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import gicl.benchmarks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput and latency on this machine")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for info in sorted(pkgutil.iter_modules(gicl.benchmarks.__path__), key=lambda m: m.name):
        importlib.import_module(f"gicl.benchmarks.{info.name}").register(kinds)
