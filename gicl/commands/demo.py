"""`gicl demo`: the README's first command — train a recipe's demo profile on the embedded
sample data, then compress and decompress one sample image at every operating point
through the real `compress` / `decompress` commands, printing bpp and PSNR."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train the demo profile, then code one image per operating point")
    p.add_argument("--recipe", default="progic")
    p.add_argument("--profile", default="demo")
    p.add_argument("--run-dir", type=Path, help="default: runs/<recipe>/<profile>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.logs import setup_logging

    setup_logging()
    import torch

    from gicl.cli import main as cli
    from gicl.data import build_val_loader
    from gicl.images import read_image, to_uint8, write_png
    from gicl.model_file import load_model_file
    from gicl.recipes import resolve
    from gicl.runner import fit

    config = resolve(args.recipe, args.profile)
    run_dir = fit(config, args.run_dir)
    model = run_dir / list(config["stages"])[-1] / "final.pt"
    codec, _ = load_model_file(model)

    out = run_dir / "demo"
    out.mkdir(parents=True, exist_ok=True)
    batch = next(iter(build_val_loader(dict(config["data"], val_count=1))))
    original = out / "original.png"
    write_png(original, to_uint8(batch["image"]))
    x = read_image(original)
    h, w = x.shape[-2:]
    print(f"\ngicl demo: {model} on {original} ({w}x{h})")
    results = []
    for i, point in enumerate(codec.operating_points()):
        stream, decoded = out / f"point{i}.gic", out / f"point{i}.png"
        if cli(["compress", str(original), str(stream), "--ckpt", str(model),
                "--point", json.dumps(point)]) or cli(["decompress", str(stream), str(decoded)]):
            return 2
        mse = torch.mean((read_image(decoded) - x) ** 2)
        results.append((point, stream.stat().st_size * 8 / (h * w), float(10 * torch.log10(1 / mse))))
    print("\noperating point            bpp (file)   PSNR dB")
    for point, bpp, psnr in results:
        print(f"{json.dumps(point):26s} {bpp:10.4f} {psnr:9.2f}")
    return 0
