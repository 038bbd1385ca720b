"""`gicl fit`: run a recipe's stages in order (resumes an interrupted run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gicl.arguments import add_recipe_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train a recipe (stages in order; re-run to resume)")
    add_recipe_arguments(p)
    p.add_argument("--stage", help="run only this stage (its predecessors must be done)")
    p.add_argument("--run-dir", type=Path, help="default: runs/<recipe>/<profile>")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved YAML and the training protocol (crop, clipping, precision, "
                        "loss scale, LPIPS, VQ loss, EMA, each with its reason), and exit")
    p.add_argument("--restart", action="store_true",
                   help="train unfinished stages from their start, not from checkpoints/last.ckpt "
                        "(which is kept as last.ckpt.bak); done stages are still skipped")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.recipes import dump, resolve

    config = resolve(args.recipe, args.profile, args.overrides)
    if args.print_config:
        from gicl.protocol import protocol_text

        print(dump(config) + protocol_text(config), end="")
        return 0
    from gicl.logs import setup_logging

    setup_logging()
    from gicl.runner import fit

    run_dir = fit(config, args.run_dir, args.stage, restart=args.restart)
    print(f"gicl: finished; run dir {run_dir}")
    return 0
