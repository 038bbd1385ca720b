"""`gicl demo`: the README's first command — train a recipe's demo profile on the embedded
sample data, then compress and decompress one image at every operating point."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train the demo profile, then code one image per operating point")
    p.add_argument("--recipe", default="vqgan")
    p.add_argument("--profile", default="demo")
    p.add_argument("--run-dir", type=Path)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="gicl: %(message)s")
    import torch

    from gicl.data import build_val_loader
    from gicl.model_file import load_model_file
    from gicl.recipes import resolve
    from gicl.runner import fit
    from gicl.training.gan import psnr

    config = resolve(args.recipe, args.profile)
    run_dir = fit(config, args.run_dir)
    final = run_dir / list(config["stages"])[-1] / "final.pt"
    codec, _ = load_model_file(final)
    x = next(iter(build_val_loader(dict(config["data"], val_count=1))))["image"]
    h, w = x.shape[-2:]
    print(f"gicl demo: model {final}; one sample image {w}x{h}")
    with torch.no_grad():
        for point in codec.operating_points():
            encoded = codec.compress(x, point)
            x_hat = codec.decompress(encoded)
            bits = 8 * sum(len(s) for s in encoded.sections)
            print(f"  point {point}: payload {bits / (h * w):.4f} bpp, "
                  f"PSNR {float(psnr(x, x_hat)):.2f} dB")
    return 0
