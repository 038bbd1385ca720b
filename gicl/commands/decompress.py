"""`gicl decompress IN OUT.png [--ckpt MODEL] [--stages K]`: decode a .gic file (or a
progressive prefix of one) to PNG."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decompress", help="decode a .gic bitstream to PNG")
    p.add_argument("input", help="bitstream written by `gicl compress` (or a prefix of one)")
    p.add_argument("out", help="output PNG")
    p.add_argument("--ckpt", help="model file (default: the registered model the stream names)")
    p.add_argument("--stages", type=int,
                   help="progressive codecs: decode only the first K sections")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--no-clobber", action="store_true", help="refuse to replace an existing OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from gicl import bitstream
    from gicl.errors import UserError
    from gicl.evaluation import codec_io
    from gicl.images import check_output, to_uint8, write_png

    path = Path(args.input)
    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"output {args.out} must end in .png")
    check_output(args.out, args.input, *([args.ckpt] if args.ckpt else []),
                 no_clobber=args.no_clobber)
    device = codec_io.resolve_device(args.device)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read bitstream {path}: {e.strerror or e}") from None
    stream = bitstream.read(data)
    header = stream.header
    model = codec_io.model_for_stream(header, args.ckpt, device)
    start = time.perf_counter()
    decoded = codec_io.decode(model, data, args.stages, stream)
    ms = (time.perf_counter() - start) * 1e3
    write_png(args.out, to_uint8(decoded.x_hat))
    h, w = header.size
    used = decoded.header
    print(f"{args.out}: {w}x{h} from {used.sections_read} of {used.sections_total} section(s), "
          f"{decoded.bytes_used} of {len(data)} bytes ({decoded.bytes_used * 8 / (h * w):.6f} "
          f"bpp), decode {ms:.1f} ms")
    return 0
