"""`gicl bench data`: training-stream throughput (decode + crop) on this machine.

Generates `--count` ImageNet-like JPEGs (500×375, quality 90: random 4:3 windows of the
embedded sample photos, so the files have photo statistics, ≈ ImageNet's size per image)
into one temp shard, then streams one non-resampled pass through `build_train_loader`
(256² random crop + flip, batch 16) for each `--workers` value and reports images/s and
encoded MB/s, in total and per worker. The time runs from `iter(loader)` to the last batch,
worker start-up included. `0` workers means decoding in this process (no DataLoader
workers): the per-core ceiling without inter-process transfer.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("data", help="images/s and MB/s of the training data stream")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="DataLoader worker counts to measure (default: 1 2)")
    p.add_argument("--count", type=int, default=2000, help="JPEGs to generate (default 2000)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--crop", type=int, default=256, help="crop size (default 256)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    import time

    from gicl.data import build_train_loader
    from gicl.errors import UserError
    from gicl.machine import describe_machine

    if args.count < args.batch_size or min(args.workers) < 0:
        raise UserError("--count must be >= --batch-size and --workers >= 0")
    print("machine:", json.dumps(describe_machine("cpu")))
    with tempfile.TemporaryDirectory(prefix="gicl-bench-data-") as tmp:
        pattern, megabytes = _make_shard(Path(tmp), args.count)
        print(f"data: {args.count} JPEGs 500x375 q90, {megabytes:.1f} MB "
              f"({megabytes * 1e3 / args.count:.0f} KB/image); crop {args.crop}, "
              f"random_crop_flip, batch {args.batch_size}")
        for workers in args.workers:
            cfg = {"train": pattern, "resampled": False, "crop": args.crop,
                   "num_workers": workers, "shuffle_buffer": 100}
            loader = build_train_loader(cfg, batch_size=args.batch_size)
            start = time.perf_counter()
            images = sum(batch["image"].shape[0] for batch in loader)
            seconds = time.perf_counter() - start
            rate = images / seconds
            per = f"{rate / workers:.0f} images/s per worker, " if workers else ""
            print(f"workers {workers}: {rate:.0f} images/s, "
                  f"{megabytes * images / args.count / seconds:.1f} MB/s ({per}"
                  f"{seconds * 1e3 / images:.2f} ms/image, {images} images)")
    return 0


def _make_shard(folder: Path, count: int) -> tuple[str, float]:
    """`count` 500×375 q90 JPEGs from random 4:3 windows of the sample photos, in one shard."""
    import io

    import numpy as np
    from PIL import Image

    from gicl.data.sample import sample_photo_paths
    from gicl.data.shards import Item, write_shards

    rng = np.random.default_rng(0)
    photos = [Image.open(p).convert("RGB") for p in sample_photo_paths()]
    jpegs = folder / "jpegs"
    jpegs.mkdir()
    items = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w = int(rng.integers(photo.width // 2, photo.width + 1))
        h = min(photo.height, w * 3 // 4)
        w = h * 4 // 3
        left, top = rng.integers(0, photo.width - w + 1), rng.integers(0, photo.height - h + 1)
        window = photo.crop((left, top, left + w, top + h)).resize((500, 375), Image.BICUBIC)
        buffer = io.BytesIO()
        window.save(buffer, "JPEG", quality=90)
        path = jpegs / f"{i:06d}.jpg"
        path.write_bytes(buffer.getvalue())
        items.append(Item(path.name, None, path, path.stat().st_size))
    manifest = write_shards(items, str(folder / "bench-%06d.tar"), total=count,
                            maxcount=count, progress=False)
    return str(folder / manifest["pattern"]), sum(it.size for it in items) / 1e6
