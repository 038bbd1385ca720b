"""`gicl eval --ckpt MODEL --data DIR --out DIR`: RD sweep with real bitstreams and metrics."""

from __future__ import annotations

import argparse

from gicl.evaluation.metric_names import METRICS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model: real bitstreams, bpp, quality metrics")
    p.add_argument("--ckpt", required=True, help="model file written by `gicl export`")
    p.add_argument("--data", required=True, help="folder of evaluation images (e.g. Kodak)")
    p.add_argument("--out", required=True, help="output folder for CSV, JSON, plot, PNGs")
    p.add_argument("--points", default="all",
                   help="'all' (the codec's sweep), a JSON point or a JSON list of points")
    p.add_argument("--metrics", default=",".join(METRICS),
                   help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (by name)")
    p.add_argument("--crop", type=int, help="center-crop images to at most N×N first")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gicl.errors import UserError
    from gicl.evaluation import codec_io
    from gicl.evaluation.evaluate import evaluate, parse_points
    from gicl.evaluation.metrics import parse_metrics
    from gicl.images import list_images

    metrics = parse_metrics(args.metrics)
    if args.limit is not None and args.limit < 1 or args.crop is not None and args.crop < 1:
        raise UserError("--limit and --crop must be positive")
    images = list_images(args.data, args.limit)
    model = codec_io.load_model(args.ckpt, codec_io.resolve_device(args.device))
    points = parse_points(args.points, model)
    summary = evaluate(model, images, points, metrics, Path(args.out), args.crop)
    keys = ["bpp", "payload_bpp", *metrics]
    print(f"{len(images)} image(s), {len(points)} point(s) → {args.out}")
    print(" ".join(f"{k:>11}" for k in keys))
    for p in summary["points"]:
        print(" ".join(f"{p[k]:11.5f}" for k in keys))
    return 0
