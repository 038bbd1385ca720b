"""`gicl compress IMAGE OUT --ckpt MODEL [--bpp X | --point JSON]`: write a .gic file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="compress an image into a .gic bitstream")
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    p.add_argument("out", help="output bitstream file")
    p.add_argument("--ckpt", required=True, help="model file written by `gicl export`")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, help="target bits per pixel (nearest operating point)")
    rate.add_argument("--point", help="operating point as JSON, e.g. '{\"stages\": 2}'")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--no-clobber", action="store_true", help="refuse to replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time

    from gicl.evaluation import codec_io
    from gicl.images import check_output, load_image, write_file

    check_output(args.out, args.image, args.ckpt, no_clobber=args.no_clobber)
    device = codec_io.resolve_device(args.device)
    image = load_image(args.image)
    if image.composited_alpha:
        print(f"gicl: note: {args.image} has transparent pixels; coded composited over white "
              "(as training sees them)", file=sys.stderr)
    x = image.to_float()
    model = codec_io.load_model(args.ckpt, device)
    h, w = x.shape[-2:]
    point = codec_io.choose_point(model.codec, args.point, args.bpp, h, w)
    start = time.perf_counter()
    data, encoded = codec_io.encode(model, x, point)
    ms = (time.perf_counter() - start) * 1e3
    write_file(args.out, data)
    payload_bpp = codec_io.payload_bits(encoded) / (h * w)
    print(f"{args.out}: {len(data)} bytes, {w}x{h}, {len(data) * 8 / (h * w):.6f} bpp "
          f"(payload {payload_bpp:.6f} bpp), "
          f"{len(encoded.sections)} section(s), point {json.dumps(point)}, "
          f"encode {ms:.1f} ms")
    estimate = model.codec.estimate_bpp(point, h, w) if args.bpp is not None else None
    if estimate is not None:  # what --bpp chose by, beside what the stream really took
        print(f"rate control: target {args.bpp:g} bpp, estimate {estimate:.6f} bpp, "
              f"real payload {payload_bpp:.6f} bpp")
    return 0
