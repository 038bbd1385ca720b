"""`gicl import NAME CKPT OUT.pt [--ema] [--with-code-predictors]`: turn another code base's
published checkpoint into a gicl model file (`compress`, `decompress`, `eval`, `info` and a
recipe's `init:` take it)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from gicl.importers import IMPORTERS

    p = sub.add_parser("import", help="import an official checkpoint as a gicl model file")
    p.add_argument("model", choices=sorted(IMPORTERS), help="whose checkpoint it is")
    p.add_argument("ckpt", help="the authors' checkpoint (read without running pickled code)")
    p.add_argument("out", help="model file to write")
    p.add_argument("--ema", action="store_true",
                   help="use the EMA weights (default: the raw weights, as the authors' inference)")
    p.add_argument("--with-code-predictors", action="store_true",
                   help="GLC: keep the training-only parts (code predictors, VQ-VAE codebook)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.importers import IMPORTERS

    report = IMPORTERS[args.model](args.ckpt, args.out, ema=args.ema,
                                   with_code_predictors=args.with_code_predictors)
    print(f"{report.out}: {args.model} model, {report.loaded} tensors ({report.weights} weights), "
          f"fingerprint {report.fingerprint}")
    unused = ", ".join(f"{g} {n}" for g, n in sorted(report.unused.items())) or "none"
    print(f"  unused tensors: {unused}")
    print(f"  behaviour: {json.dumps(report.behaviour)}")
    return 0
