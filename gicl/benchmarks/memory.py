"""`gicl bench memory`: peak memory of one compress + decompress, each run in a fresh process.

Peak RSS (`getrusage` ru_maxrss) only grows, so every measurement runs in its own
subprocess (`python -m gicl.benchmarks.memory`): the figure is the whole process's peak
for building the codec (random weights), compressing and decompressing one image in eval
mode under `torch.no_grad()`, with the RSS after building reported beside it.

`--window N` sets every attention block's inference window (latent tokens per side, 0 =
global attention) before coding; `--compare-window M` runs a second process with window M
and reports the PSNR between the two reconstructions: how much windowed attention changes
the output (with random weights: the effect of the architecture, not of training).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gicl.arguments import add_recipe_arguments, parse_points, parse_size
from gicl.benchmarks.codec import load_input, peak_rss_mb
from gicl.errors import UserError


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "memory", help="peak RSS of one compress + decompress in a fresh process (windowing on/off)"
    )
    add_recipe_arguments(p)
    p.add_argument("--size", default="768x512", help="image WIDTHxHEIGHT (default 768x512)")
    p.add_argument("--image", type=Path, default=None,
                   help="an image tiled and cropped to --size instead of uniform noise")
    p.add_argument("--point", default=None, help="operating point as JSON (default: the codec's)")
    p.add_argument("--window", type=int, default=None,
                   help="attention window in latent tokens, 0 = global (default: the codec's)")
    p.add_argument("--compare-window", type=int, default=None, metavar="M",
                   help="also run with window M and report the PSNR between reconstructions")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per process (default 3600)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (runs inside the fresh process)."""
    import torch

    from gicl.codecs import build_inference_codec
    from gicl.machine import describe_machine
    from gicl.nn.blocks import set_attention_window

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    # the same random weights in every process: the window variants' reconstructions are
    # compared with each other, so they must be one model's
    torch.manual_seed(0)
    codec = build_inference_codec(spec["codec"]).eval()
    codec.update()  # the tables a model file carries (learned entropy models need them to code)
    if spec["window"] is not None:
        set_attention_window(codec, spec["window"])
    x = load_input(Path(spec["image"]) if spec["image"] else None, spec["height"], spec["width"])
    after_build = peak_rss_mb()
    with torch.no_grad():
        t0 = time.perf_counter()
        encoded = codec.compress(x, spec["point"])
        t1 = time.perf_counter()
        x_hat = codec.decompress(encoded)
        t2 = time.perf_counter()
    peak = peak_rss_mb()
    if spec["out"]:
        torch.save(x_hat, spec["out"])
    bits = 8 * sum(len(s) for s in encoded.sections)
    return {
        "window": spec["window"], "peak_rss_mb": peak, "rss_after_build_mb": after_build,
        "compress_s": t1 - t0, "decompress_s": t2 - t1, "bpp": bits / (x.shape[-2] * x.shape[-1]),
        "point": encoded.point, "params_m": sum(p.numel() for p in codec.parameters()) / 1e6,
        "machine": describe_machine("cpu"),
    }


def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gicl.benchmarks.memory", json.dumps(spec)],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"the measurement did not finish within {timeout:.0f} s (raise --timeout)") from None
    if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer sends SIGKILL, silently
        total_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        raise UserError(f"the measurement process was killed (SIGKILL), most likely out of memory "
                        f"({total_gib:.0f} GiB here): try a smaller --size")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"the measurement process failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    h, w = parse_size(args.size)
    for name in ("window", "compare_window"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be ≥ 0 (0 = global attention)")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be ≥ 1")
    if args.image is not None and not args.image.is_file():
        raise UserError(f"--image {args.image} does not exist")
    point = parse_points(args.point, "--point", one=True)[0] if args.point else None

    from gicl.recipes import resolve

    config = resolve(args.recipe, args.profile, args.overrides)  # fails fast, before any child
    windows = [args.window] + ([args.compare_window] if args.compare_window is not None else [])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, window in enumerate(windows):
            spec = {
                "codec": config["codec"], "height": h, "width": w, "window": window,
                "image": str(args.image) if args.image else None, "point": point,
                "threads": args.threads, "out": str(Path(tmp) / f"x_hat{i}.pt") if len(windows) > 1 else None,
            }
            runs.append(_spawn(spec, args.timeout))
        result: dict[str, Any] = {
            "recipe": config["name"], "profile": args.profile, "overrides": args.overrides,
            "codec": config["codec"], "size": {"height": h, "width": w}, "runs": runs,
        }
        if len(windows) > 1:
            import torch

            a, b = (torch.load(Path(tmp) / f"x_hat{i}.pt", weights_only=True).clamp(0, 1) for i in range(2))
            mse = float(((a - b) ** 2).mean())
            result["psnr_between_db"] = math.inf if mse == 0 else 10 * math.log10(1 / mse)
            result["max_abs_diff"] = float((a - b).abs().max())
    return result


def run(args: argparse.Namespace) -> int:
    r = measure(args)
    if args.json:
        print(json.dumps(r))
        return 0
    first = r["runs"][0]
    overrides = " ".join(f"--set {o}" for o in r["overrides"])
    print(f"codec {r['codec']['name']} from recipe {r['recipe']} [{r['profile']}] {overrides}")
    print(f"  {r['size']['width']}×{r['size']['height']}, point {first['point']}, "
          f"{first['params_m']:.2f} M parameters, one compress + decompress per fresh process")
    for run_ in r["runs"]:
        window = "codec default" if run_["window"] is None else (run_["window"] or "global")
        print(f"  window {window}: peak RSS {run_['peak_rss_mb']:.0f} MB "
              f"({run_['rss_after_build_mb']:.0f} MB after building), "
              f"compress {run_['compress_s']:.1f} s, decompress {run_['decompress_s']:.1f} s, "
              f"{run_['bpp']:.4f} bpp")
    if "psnr_between_db" in r:
        print(f"  reconstructions of the two windows: PSNR {r['psnr_between_db']:.2f} dB, "
              f"max |Δ| {r['max_abs_diff']:.4f}")
    from gicl.machine import machine_line

    print(f"  machine: {machine_line(first['machine'])}")
    return 0


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
