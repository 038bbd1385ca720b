"""`gicl info`: parameters, FLOPs, operating points and behaviour options of a recipe's codec
or of a model file (`--recipe MODEL.pt`, `--set codec.KEY=VALUE` to see a switched option)."""

from __future__ import annotations

import argparse
import json

from gicl.arguments import add_recipe_arguments, parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs and operating points of a recipe's codec")
    add_recipe_arguments(p)
    p.add_argument("--size", default="768x512", help="WIDTHxHEIGHT for the FLOP count")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.recipes import resolve

    size = parse_size(args.size)
    if args.recipe.endswith(".pt"):  # a model file (exported or imported)
        from gicl.info import model_file_config

        config = model_file_config(args.recipe, args.overrides)
    else:
        config = resolve(args.recipe, args.profile, args.overrides)
    from gicl.info import describe  # torch: only once the recipe and the size are valid

    info = describe(config, size)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['recipe']} ({info['profile']}): codec {info['codec']}")
    for name, n in info["parameters"].items():
        print(f"  params {name:20s} {n / 1e6:12.6f} M")
    for name, n in info.get("parameter_split", {}).items():
        print(f"  split  {name:20s} {n / 1e6:12.6f} M")
    f = info["flops"]
    print(f"  FLOPs at {f['size']}: {f['total'] / 1e9:.2f} G ({f['convention']}; {f['method']})")
    print(f"  operating points: {json.dumps(info['operating_points'])}")
    for key, value in info.get("behaviour", {}).items():
        print(f"  behaviour {key:20s} {json.dumps(value)}")
    return 0
