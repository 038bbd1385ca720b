"""`gicl bdrate A.json B.json [--metric psnr]`: BD-rate of B against A (PCHIP), in percent."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bdrate", help="BD-rate of eval summary B against anchor A (PCHIP)")
    p.add_argument("anchor", help="summary.json of the anchor (A)")
    p.add_argument("test", help="summary.json of the codec compared (B)")
    p.add_argument("--metric", default="psnr",
                   help="psnr, ms-ssim, lpips (= lpips-vgg), lpips-alex, dists, fid, kid")
    p.add_argument("--rate", choices=("bpp", "payload_bpp"), default="bpp",
                   help="whole-file bpp (default) or section payloads only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from gicl.evaluation.bdrate import bd_rate, load_curve, metric_name
    from gicl.evaluation.metric_names import LOWER_IS_BETTER

    metric = metric_name(args.metric)
    anchor = load_curve(args.anchor, metric, args.rate)
    test = load_curve(args.test, metric, args.rate)
    result = bd_rate(anchor, test, metric)
    for note in result.notes:
        print(f"gicl: warning: {note}", file=sys.stderr)
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    print(f"A: {anchor.label}\nB: {test.label}")
    print(f"BD-rate ({metric}, PCHIP, {args.rate}): {result.rate_percent:+.4f} % "
          "(negative: B needs fewer bits than A for the same quality)")
    print(f"BD-{metric}: {result.metric_delta:+.6f} (B - A at equal rate; {better} is better)")
    return 0
