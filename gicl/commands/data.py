"""`gicl data shards|sample|kodak`: build training shards, fetch the public evaluation set."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build WebDataset training shards")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = actions.add_parser(
        "shards", help="write shards (original bytes) from an image folder, file list or tars",
        description="Write WebDataset shards holding the original image bytes, plus a "
                    "manifest JSON beside them. SRC: an image folder tree (ImageNet "
                    "train/<wnid>/*.JPEG: the folder is stored as the class), a folder with "
                    "--list, or uncompressed tar file(s) (a brace pattern; ImageNet's tar of "
                    "per-class tars included).")
    s.add_argument("src", metavar="SRC", help="image folder, or .tar file / brace pattern")
    s.add_argument("out_pattern", metavar="OUT_PATTERN",
                   help="shard file names with a shard number, e.g. shards/imagenet-%%06d.tar")
    s.add_argument("--maxcount", type=int, default=1000, help="images per shard (default 1000)")
    s.add_argument("--maxsize", type=int, default=1_000_000_000,
                   help="image bytes per shard (default 1e9)")
    s.add_argument("--list", metavar="FILE",
                   help="only the images named in FILE (one path per line, relative to SRC)")
    s.add_argument("--sample", type=int, metavar="N", help="a random subset of N images")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the subset and of the shuffled write order (default 0)")
    s.add_argument("--drop-undecodable", action="store_true",
                   help="leave out files the training reader cannot decode (default: store "
                        "them, and list them in the manifest; the loader skips them)")
    s.set_defaults(func=run_shards)

    m = actions.add_parser("sample", help="build the embedded sample shards into OUT")
    m.add_argument("out", metavar="OUT", help="folder for the shards and their manifest")
    m.set_defaults(func=run_sample)

    k = actions.add_parser(
        "kodak", help="download the 24 Kodak images and verify their SHA-256 sums",
        description="Download the 24 Kodak test images (768x512 PNG) into DIR, checking each "
                    "file against its published SHA-256. Files already present and correct are "
                    "kept; an interrupted download resumes when the same command runs again.")
    k.add_argument("dir", metavar="DIR", nargs="?", default="kodak",
                   help="target folder (default: ./kodak)")
    k.add_argument("--url", help="another base URL serving the same files (a mirror)")
    k.set_defaults(func=run_kodak)


def run_shards(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from gicl.data.shards import check_pattern, manifest_path, select, source_items, write_shards

    check_pattern(args.out_pattern)
    items = select(source_items(args.src, args.list), args.sample, args.seed)
    manifest = write_shards(
        items, args.out_pattern, total=len(items), maxcount=args.maxcount, maxsize=args.maxsize,
        info={"source": str(Path(args.src).resolve()), "list": args.list,
              "sample": args.sample, "seed": args.seed},
        drop_undecodable=args.drop_undecodable)
    pattern = Path(args.out_pattern).parent / manifest["pattern"]
    bad = manifest["undecodable"]
    if bad:
        fate = ("left out (--drop-undecodable)" if args.drop_undecodable
                else "stored; training skips them, --drop-undecodable leaves them out")
        print(f"gicl: warning: {len(bad)} file(s) cannot be decoded, e.g. {bad[0]['path']} "
              f"({bad[0]['reason']}): {fate}; all listed in the manifest", file=sys.stderr)
    print(f"wrote {len(manifest['shards'])} shard(s), {manifest['samples']} images, "
          f"{manifest['bytes'] / 1e6:.1f} MB; manifest {manifest_path(args.out_pattern)}")
    print(f"train with: --set data.train='{pattern}'")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from gicl.data import sample_shards

    print(f"train with: --set data.train='{sample_shards(args.out)}'")
    return 0


def run_kodak(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gicl.data.download import fetch

    files = fetch("kodak", Path(args.dir), args.url)
    print(f"{len(files)} Kodak images verified in {args.dir}")
    return 0
