"""`gicl export CKPT OUT.pt [--raw]`: a runner checkpoint → a model file with everything a
decoder needs; the EMA weights when the stage kept a model EMA (as its final.pt), the raw
ones with `--raw`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a training checkpoint as a model file")
    p.add_argument("ckpt", help="a stage's checkpoints/last.ckpt (or an existing model file)")
    p.add_argument("out", help="output model file (.pt)")
    p.add_argument("--no-clobber", action="store_true", help="refuse to replace an existing OUT")
    p.add_argument("--raw", action="store_true",
                   help="write the raw weights of a checkpoint that keeps a model EMA "
                        "(default: the EMA weights, as final.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gicl.errors import UserError
    from gicl.evaluation import codec_io
    from gicl.images import check_output
    from gicl.model_file import save_model_file

    check_output(args.out, args.ckpt, no_clobber=args.no_clobber)
    codec, meta = codec_io.codec_from_checkpoint(args.ckpt, args.raw)
    codec = codec.for_inference()  # a shipped file holds no training-only parts
    try:
        fingerprint = save_model_file(codec, args.out, meta)
    except OSError as e:
        raise UserError(f"cannot write {args.out}: {e.strerror or e}") from None
    codec_io.load_model(args.out)  # re-read what was written, and register it
    params = sum(p.numel() for p in codec.parameters())
    print(f"{args.out}: codec {codec.codec_id}, {params / 1e6:.3f} M parameters, "
          f"{meta.get('weights', 'raw')} weights, fingerprint {fingerprint}")
    return 0
