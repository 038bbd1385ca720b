"""`gicl demo`: the README's first command — train a recipe's demo profile on the embedded
sample photos except one, held out, then compress and decompress that unseen photo at
every operating point through the real `compress` / `decompress` commands, and print a
table (point, file bpp, PSNR, LPIPS when its weights are present), where the outputs are
and the command that opens the TensorBoard logs."""

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
    import shutil

    from gicl.cli import main as cli
    from gicl.data import build_val_loader
    from gicl.data.sample import held_out_split
    from gicl.evaluation.file_points import PERCEPTUAL, available_metrics
    from gicl.evaluation.metrics import PairMetrics
    from gicl.images import read_image, to_uint8, write_png
    from gicl.model_file import load_model_file
    from gicl.recipes import resolve
    from gicl.runner import default_run_dir, fit

    config = resolve(args.recipe, args.profile)
    run_dir = Path(args.run_dir or default_run_dir(config))
    out = run_dir / "demo"
    train, photo = held_out_split()
    held_out = out / "held_out"
    held_out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photo, held_out / photo.name)
    # training never sees the held-out photo; validation and the table use only it
    config["data"] = dict(config["data"], train=train, val=str(held_out), val_count=1)
    fit(config, run_dir)
    model = run_dir / list(config["stages"])[-1] / "final.pt"
    codec, _ = load_model_file(model)

    batch = next(iter(build_val_loader(config["data"])))
    original = out / "original.png"
    write_png(original, to_uint8(batch["image"]))
    x = read_image(original)
    h, w = x.shape[-2:]
    print(f"\ngicl demo: {model} on {photo.name} ({w}x{h}), held out of training")
    metrics = PairMetrics(["psnr", *(m for m in available_metrics() if m in PERCEPTUAL[:1])], "cpu")
    rows = []
    for i, point in enumerate(codec.operating_points()):
        stream, decoded = out / f"point{i}.gic", out / f"point{i}.png"
        if cli(["compress", str(original), str(stream), "--ckpt", str(model),
                "--point", json.dumps(point)]) or cli(["decompress", str(stream), str(decoded)]):
            return 2
        scores = metrics(to_uint8(x), to_uint8(read_image(decoded)))
        rows.append((point, stream.stat().st_size * 8 / (h * w), scores))
    names = metrics.names
    print("\n" + f"{'operating point':30s} {'file bpp':>9s} " + " ".join(
        f"{'PSNR dB' if n == 'psnr' else n.upper():>9s}" for n in names))
    for point, bpp, scores in rows:
        print(f"{json.dumps(point):30s} {bpp:9.4f} " + " ".join(f"{scores[n]:9.4f}" for n in names))
    if "lpips-vgg" not in names:
        print("(no LPIPS: its VGG weights are not in the torch hub cache)")
    print(f"\noutputs: {out}/point<i>.gic and point<i>.png (original.png: the held-out photo)")
    print(f"model:   {model}")
    print(f"logs:    tensorboard --logdir {run_dir}")
    return 0
