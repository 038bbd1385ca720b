"""`gicl bench data`: training-stream throughput (decode + crop) next to raw JPEG decoding.

Generates `--count` ImageNet-like JPEGs (500×375, quality 90: random 4:3 windows of the
embedded sample photos, so the files have photo statistics, ≈ ImageNet's size per image)
into one temp shard. First the baseline: raw decoding of the same files, already in memory,
on one core in this process — torchvision `decode_jpeg` (the decoder the stream uses) and
PIL. Then one non-resampled pass through `build_train_loader` (256² random crop + flip,
batch 16, uint8 batches as training receives them) for each `--workers` value.

Two times per pass: start-up, from `iter(loader)` until every worker has delivered its first
batch (worker processes forked, shard opened, shuffle buffer filled), and the steady state
after that. The stream's workers are not persistent (data/stream.py: each epoch's iterator
must see the new epoch and resume position), so start-up is paid once per epoch, not per
batch; the per-worker percentage of raw decoding uses the steady state, against raw
`decode_jpeg` timed again on a quarter of the files just before and just after the pass
(their mean): on a shared machine the load moves during a run. `0` workers means
decoding in this process (no DataLoader workers): the per-core ceiling without
inter-process transfer.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("data", help="images/s of the training data stream beside raw JPEG decoding")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="DataLoader worker counts to measure (default: 1 2)")
    p.add_argument("--count", type=int, default=2000, help="JPEGs to generate (default 2000)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--crop", type=int, default=256, help="crop size (default 256)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from gicl.errors import UserError
    from gicl.machine import describe_machine, machine_line

    if min(args.workers) < 0:
        raise UserError("--workers must be >= 0")
    if args.count < args.batch_size * (max(args.workers) + 1):
        raise UserError("--count must be at least --batch-size × (largest --workers + 1), so every "
                        "worker delivers a batch after start-up")
    torch.set_num_threads(1)  # one core per decoder, in the baseline and in the stream
    with tempfile.TemporaryDirectory(prefix="gicl-bench-data-") as tmp:
        pattern, files = _make_shard(Path(tmp), args.count)
        megabytes = sum(len(f) for f in files) / 1e6
        print(f"data: {args.count} JPEGs 500x375 q90, {megabytes:.1f} MB "
              f"({megabytes * 1e3 / args.count:.0f} KB/image); crop {args.crop}, "
              f"random_crop_flip, batch {args.batch_size}, uint8 batches")
        raw = {name: args.count / _decode_seconds(files, name) for name in ("decode_jpeg", "PIL")}
        for name, rate in raw.items():
            print(f"raw {name:11s} 1 core: {rate:6.0f} images/s ({1e3 / rate:.2f} ms/image, "
                  "whole image, bytes in memory)")
        print("stream: steady state after every worker's first batch; start-up (fork, shard "
              "open, shuffle buffer) is paid once per epoch; % of raw decode_jpeg per worker, "
              "timed again just before and after each pass (mean), so load that changes "
              "during the run moves both")
        probe = files[:max(args.batch_size, args.count // 4)]
        for workers in args.workers:
            before = _decode_seconds(probe, "decode_jpeg")
            startup, images, seconds = _stream(pattern, args, workers)
            baseline = 2 * len(probe) / (before + _decode_seconds(probe, "decode_jpeg"))
            rate = images / seconds
            per = rate / max(1, workers)
            unit = "worker" if workers else "process"
            print(f"workers {workers}: {rate:6.0f} images/s steady, {per:.0f} per {unit} = "
                  f"{100 * per / baseline:.0f} % of raw decode_jpeg ({baseline:.0f}/s around "
                  f"this pass; {1e3 / per:.2f} ms/image per {unit}); start-up "
                  f"{startup * 1e3:.0f} ms")
    print(f"machine: {machine_line(describe_machine('cpu'))}")
    return 0


def _decode_seconds(files: list[bytes], decoder: str) -> float:
    """Seconds to decode every file once to RGB pixels with `decoder`, on this core."""
    import io
    import time

    import numpy as np
    import torch
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    start = time.perf_counter()
    for data in files:
        if decoder == "decode_jpeg":
            decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        else:
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return time.perf_counter() - start


def _stream(pattern: str, args: argparse.Namespace, workers: int) -> tuple[float, int, float]:
    """(start-up seconds, images after start-up, their seconds) of one pass."""
    import time

    from gicl.data import build_train_loader

    cfg = {"train": pattern, "resampled": False, "crop": args.crop, "num_workers": workers,
           "shuffle_buffer": 100}
    loader = build_train_loader(cfg, batch_size=args.batch_size)
    start = time.perf_counter()
    images, first = 0, max(1, workers)  # batch k comes from worker k mod W
    for k, batch in enumerate(loader):
        if k == first - 1:
            steady = time.perf_counter()
        elif k >= first:
            images += batch["image"].shape[0]
    return steady - start, images, time.perf_counter() - steady


def _make_shard(folder: Path, count: int) -> tuple[str, list[bytes]]:
    """`count` 500×375 q90 JPEGs from random 4:3 windows of the sample photos, in one shard;
    returns the shard pattern and the files' bytes."""
    import io

    import numpy as np
    from PIL import Image

    from gicl.data.sample import sample_photo_paths
    from gicl.data.shards import Item, write_shards

    rng = np.random.default_rng(0)
    photos = [Image.open(p).convert("RGB") for p in sample_photo_paths()]
    jpegs = folder / "jpegs"
    jpegs.mkdir()
    items, files = [], []
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
        files.append(buffer.getvalue())
        items.append(Item(path.name, None, path, path.stat().st_size))
    manifest = write_shards(items, str(folder / "bench-%06d.tar"), total=count,
                            maxcount=count, progress=False)
    return str(folder / manifest["pattern"]), files
