"""`gicl recipes [NAME]`: list recipes, or show one resolved."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list recipes, or print one resolved")
    p.add_argument("name", nargs="?")
    p.add_argument("--profile", default="paper")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.recipes import dump, load_yaml, recipe_names, recipe_path, resolve

    if args.name:
        print(dump(resolve(args.name, args.profile)), end="")
        return 0
    for name in recipe_names():
        raw = load_yaml(recipe_path(name))
        profiles = ", ".join(["paper", *(raw.get("profiles") or {})])
        stages = " → ".join(raw["stages"])
        print(f"{name:12s} {raw.get('description', '')}\n{'':12s} stages: {stages}; profiles: {profiles}")
    return 0
