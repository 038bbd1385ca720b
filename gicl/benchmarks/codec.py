"""`gicl bench codec`: compress / decompress latency, FLOPs and peak memory of a recipe's codec.

Random weights (latency does not depend on them), eval mode, `torch.no_grad()`, batch 1:
warm-up runs, then the median of `--repeats` timed runs of `compress` and of `decompress`,
with the machine named so that figures from different machines are never compared blindly.
FLOPs (= 2·MACs, `FlopCounterMode`, under `no_grad` — it fails under inference_mode on
parametrized weights) are those of one `forward` at the codec's default operating point;
the achieved GFLOP/s divides them by the median compress + decompress time.

Codecs that code their indices with HyperVQ (`hvq_cgic`) also get the index coder's own
costs at this size and point (`gicl.entropy.hypervq_bench`): probability-to-CDF (snapping
μ, σ and building the integer tables), range encoding and decoding of as many locations as
the point codes per branch, at the codec's codebook size and at K = 16384 (tail-floor on).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gicl.arguments import add_recipe_arguments, parse_points, parse_size
from gicl.errors import UserError


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "codec", help="compress/decompress latency, FLOPs and peak memory of a recipe's codec"
    )
    add_recipe_arguments(p)
    p.add_argument("--size", default="768x512", help="image WIDTHxHEIGHT (default 768x512)")
    p.add_argument("--image", type=Path, default=None,
                   help="an image tiled and cropped to --size instead of uniform noise")
    p.add_argument("--point", default=None,
                   help='operating point as JSON, e.g. \'{"stages": 3}\' (default: the codec\'s)')
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip FLOP counting")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--against", action="append", default=[], metavar="NAME",
                   help="a peer measured in the same run (repeatable): compressai:ARCH:QUALITY, "
                        "pillow:jpeg|webp|avif:QUALITY, official-glc:CHECKOUT, "
                        "official-controlgic:CHECKOUT")
    p.set_defaults(func=run)


def load_input(image: Path | None, h: int, w: int) -> Any:
    """(1, 3, h, w) in [0, 1]: the image tiled to cover h×w and cropped, or seeded noise."""
    import numpy as np
    import torch

    if image is None:
        return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    from PIL import Image, UnidentifiedImageError

    try:
        arr = np.asarray(Image.open(image).convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"cannot read --image {image}: {e}") from None
    reps = (-(-h // arr.shape[0]), -(-w // arr.shape[1]), 1)
    arr = np.tile(arr, reps)[:h, :w]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def measure(args: argparse.Namespace) -> dict[str, Any]:
    # arguments first: a typo fails in a blink, before torch and the recipe load
    h, w = parse_size(args.size)
    if args.repeats < 1 or args.warmup < 0:
        raise UserError("--repeats must be ≥ 1 and --warmup ≥ 0")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be ≥ 1")
    point = parse_points(args.point, "--point", one=True)[0] if args.point else None
    from gicl.peers import check_peer, measure_peers, parse_peer
    from gicl.recipes import resolve

    peers = [parse_peer(spec) for spec in args.against]

    config = resolve(args.recipe, args.profile, args.overrides)  # before torch: errors are quick

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gicl.codecs import build_inference_codec
    from gicl.evaluation.codec_io import resolve_device
    from gicl.machine import describe_machine

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    for peer in peers:
        check_peer(peer)
    torch.manual_seed(0)  # random weights, the same in every run: payload figures repeat
    codec = build_inference_codec(config["codec"]).eval().to(device)
    codec.update()  # the tables a model file carries (CompressAI bottlenecks need them to code)
    x = load_input(args.image, h, w).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    enc_ms, dec_ms = [], []
    with torch.no_grad():
        for i in range(args.warmup + args.repeats):
            sync()
            t0 = time.perf_counter()
            encoded = codec.compress(x, point)
            sync()
            t1 = time.perf_counter()
            codec.decompress(encoded)
            sync()
            t2 = time.perf_counter()
            if i >= args.warmup:
                enc_ms.append((t1 - t0) * 1e3)
                dec_ms.append((t2 - t1) * 1e3)
        rss = peak_rss_mb()
        flops = None
        if args.flops:
            with FlopCounterMode(display=False) as counter:
                codec(x, point)
            flops = counter.get_total_flops()
        coding = index_coding_costs(codec, x, point)
    bits = 8 * sum(len(s) for s in encoded.sections)
    result = {
        "recipe": config["name"], "profile": args.profile, "overrides": args.overrides,
        "codec": config["codec"], "size": {"height": h, "width": w},
        "point": encoded.point, "params_m": sum(p.numel() for p in codec.parameters()) / 1e6,
        "gflops": None if flops is None else flops / 1e9,
        "bits": bits, "bpp": bits / (h * w), "repeats": args.repeats, "warmup": args.warmup,
        "compress_ms": statistics.median(enc_ms), "decompress_ms": statistics.median(dec_ms),
        "compress_runs_ms": enc_ms, "decompress_runs_ms": dec_ms, "peak_rss_mb": rss,
        # achieved arithmetic rate: a forward is one encode + one decode, as compress +
        # decompress are (wall clock, so a loaded machine lowers it)
        "gflop_per_s": None if flops is None else flops / 1e6 / (
            statistics.median(enc_ms) + statistics.median(dec_ms)),
        "machine": describe_machine(device),
    }
    if coding:
        result["index_coding"] = coding
    if peers:  # after gicl's own peak RSS was read: in-process peers do not inflate it
        result["peers"] = measure_peers(peers, x, args.warmup, args.repeats,
                                        (result["compress_ms"], result["decompress_ms"]))
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


LARGE_CODEBOOK = 16384  # HyperVQ's tail-floor regime (appendix B.3)


def index_coding_costs(codec: Any, x: Any, point: dict[str, Any] | None) -> list[dict[str, Any]]:
    """HyperVQ index coding at the locations this image and point code, for the codec's K
    and for K = 16384; [] for codecs without a HyperVQ entropy model."""
    from gicl.entropy.hypervq import HyperVQ
    from gicl.entropy.hypervq_bench import bench_anchor_coding

    if not isinstance(getattr(codec, "hyperprior", None), HyperVQ):
        return []
    masks = codec(x, point).extras["masks"]
    shapes = [(int(m.sum()), 1) for m in masks.values()]
    k, d = codec.codebook().shape
    return [bench_anchor_coding(size, shapes, d=d, device=x.device) for size in (k, LARGE_CODEBOOK)]


def run(args: argparse.Namespace) -> int:
    r = measure(args)
    from gicl.machine import machine_line

    if args.json:
        print(json.dumps(r))
        return 0
    m = r["machine"]
    overrides = " ".join(f"--set {o}" for o in r["overrides"])
    print(f"codec {r['codec']['name']} from recipe {r['recipe']} [{r['profile']}] {overrides}")
    print(f"  {r['size']['width']}×{r['size']['height']}, point {r['point']}, "
          f"{r['params_m']:.2f} M parameters"
          + ("" if r["gflops"] is None else f", {r['gflops']:.2f} GFLOPs per forward"))
    print(f"  payload {r['bits']} bits = {r['bpp']:.4f} bpp")
    print(f"  compress   {r['compress_ms']:9.1f} ms  (median of {r['repeats']}, "
          f"{r['warmup']} warm-up)")
    print(f"  decompress {r['decompress_ms']:9.1f} ms")
    if r["gflop_per_s"] is not None:
        print(f"  achieved   {r['gflop_per_s']:9.1f} GFLOP/s (GFLOPs per forward / "
              "(compress + decompress))")
    for c in r.get("index_coding", []):
        print(f"  HyperVQ index coding, K = {c['k']}{' (tail-floor)' if c['tail_floor'] else ''}, "
              f"{c['locations']} locations: probability-to-CDF {c['cdf_s'] * 1e3:.1f} ms, "
              f"encode {c['encode_s'] * 1e3:.1f} ms, decode {c['decode_s'] * 1e3:.1f} ms "
              f"(synthetic μ, σ; round trip {'ok' if c['round_trip'] else 'FAILED'})")
    print(f"  peak RSS   {r['peak_rss_mb']:9.0f} MB"
          + (f", peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""))
    from gicl.peers import peer_lines

    for line in peer_lines(r.get("peers", [])):
        print(line)
    print(f"  machine: {machine_line(m)}")
    return 0
