"""`gicl bench rate`: what a HyperVQ model's files cost against its tables and its float rate.

For every image of a folder and every operating point, the model file's codec
- runs `forward` in eval mode: the float rates R_ind (eq. 4) and R_z per stream, and x̂;
- compresses the image into a real container (`compress_with_report`): each entropy-coded
  stream's payload bits, and −log₂ of the integer tables it was coded with;
and, in a separate process with another thread count, decodes every file again: every
section's symbol checksum must match (the same symbols, bit for bit), and x̂ is compared
with the encoder's (the float networks around the entropy model may differ in the last bits
under another thread count; the symbols may not).

Per point it prints the mean file bpp (container included), the payload, table and float
bpp of the coded streams, and the two bounds a serious entropy model must meet: each
stream's payload within 0.5 % + 8 bytes of its tables (the coder's flush and byte rounding),
and each image's table bits within 1 % (+ 1 bit) of its float R_ind + R_z (the integer
tables really are the model's distribution). Streams of an absent branch (no token at that point) code
nothing and count nothing. A hyper stream whose hyper-latents are all their medians is
empty and uses no table (`gicl.entropy.hypervq.hyper_stream`): its float R_z, which the file
does not pay, is left out of that comparison and reported as `uncoded_float_bpp`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gicl.errors import UserError

PAYLOAD_SLACK = 0.005  # payload ≤ tables · (1 + this) + FLUSH_BITS per stream
FLUSH_BITS = 64  # 8 bytes per stream: a 32-bit coder state flushed, rounded to bytes
FLOAT_SLACK = 0.01  # |tables − float| ≤ this · float + FLOAT_SLACK_BITS per image
FLOAT_SLACK_BITS = 1.0  # a nearly certain stream (0.07 bits) cannot match its float to 1 %


def register(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "rate", help="a HyperVQ model's file bits against its integer tables and float rate"
    )
    p.add_argument("--ckpt", required=True, help="model file written by `gicl export`/`fit`")
    p.add_argument("--data", required=True, help="folder of images (e.g. Kodak)")
    p.add_argument("--points", default="all",
                   help="'all' (the codec's sweep), a JSON point or a JSON list of points")
    p.add_argument("--limit", type=int, help="only the first N images (by name)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the encoder")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="torch threads of the decoding process (default: 1, or 2 if --threads is 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def stream_rows(codec: Any, x: Any, point: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """One image at one point: per stream (payload, tables, float) bits, the encoded image
    and the forward x̂ (what any decoder must reproduce)."""
    import torch

    with torch.no_grad():
        out = codec(x, point)
    encoded, tables = codec.compress_with_report(x, point)
    payload = codec.stream_bits(encoded)
    streams = {k: {"payload": payload[k], "tables": tables[k], "float": float(out.rate[k][0])}
               for k in tables}
    return streams, encoded, out.x_hat


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per point: mean bpp figures, the worst gaps, and whether both bounds hold everywhere."""
    def bpp(part: str) -> float:
        return sum(sum(s[part] for s in r["streams"].values()) / r["pixels"] for r in rows) / len(rows)

    excess_bits, float_gap = 0.0, 0.0
    payload_ok = float_ok = True
    for r in rows:
        for s in r["streams"].values():
            if s["payload"] == 0:
                continue
            excess_bits = max(excess_bits, s["payload"] - s["tables"])
            payload_ok &= s["tables"] <= s["payload"] <= s["tables"] * (1 + PAYLOAD_SLACK) + FLUSH_BITS
        coded = [s for s in r["streams"].values() if s["tables"] > 0]
        tables, floats = sum(s["tables"] for s in coded), sum(s["float"] for s in coded)
        float_gap = max(float_gap, abs(tables - floats) / max(floats, 1e-9))
        float_ok &= abs(tables - floats) <= FLOAT_SLACK * floats + FLOAT_SLACK_BITS
    return {
        "images": len(rows),
        "file_bpp": sum(r["file_bits"] / r["pixels"] for r in rows) / len(rows),
        "payload_bpp": bpp("payload"), "table_bpp": bpp("tables"), "float_bpp": bpp("float"),
        "uncoded_float_bpp": sum(sum(s["float"] for s in r["streams"].values() if s["tables"] == 0)
                                 / r["pixels"] for r in rows) / len(rows),
        "max_payload_excess_bits": excess_bits, "payload_within_bound": payload_ok,
        "max_tables_vs_float": float_gap, "tables_within_bound": float_ok,
    }


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from gicl import bitstream
    from gicl.evaluation import codec_io
    from gicl.evaluation.evaluate import parse_points
    from gicl.images import list_images, read_image
    from gicl.machine import describe_machine

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be positive")
    for name in ("threads", "decode_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images = list_images(args.data, args.limit)
    model = codec_io.load_model(args.ckpt, "cpu")
    codec = model.codec.eval()
    if not hasattr(codec, "stream_bits"):
        raise UserError(f"codec {codec.codec_id} has no HyperVQ entropy model: `bench rate` "
                        "measures hvq_cgic, hvq_progic and hvq_vqgan model files")
    points = parse_points(args.points, model)
    decode_threads = args.decode_threads or (2 if torch.get_num_threads() == 1 else 1)
    by_point: dict[str, list[dict[str, Any]]] = {json.dumps(p): [] for p in points}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bar = tqdm(total=len(images) * len(points), desc="bench rate", unit="img", file=sys.stderr)
        for i, path in enumerate(images):
            x = read_image(path)
            for j, point in enumerate(points):
                streams, encoded, x_hat = stream_rows(codec, x, point)
                data = bitstream.write(encoded, model.fingerprint, codec.operating_points())
                (Path(tmp) / f"{i}_{j}.gic").write_bytes(data)
                torch.save(x_hat, Path(tmp) / f"{i}_{j}.pt")
                by_point[json.dumps(point)].append({
                    "image": path.name, "pixels": x.shape[-2] * x.shape[-1],
                    "file_bits": 8 * len(data), "streams": streams,
                })
                bar.update()
        bar.close()
        encode_s = time.perf_counter() - start
        decoded = _decode_elsewhere(Path(args.ckpt), Path(tmp), decode_threads)
    result = {
        "model": str(args.ckpt), "codec": codec.codec_id, "data": str(args.data),
        "threads": torch.get_num_threads(), "encode_and_forward_s": encode_s,
        "points": {p: summarise(rows) for p, rows in by_point.items()},
        "decode": decoded, "machine": describe_machine("cpu"),
    }
    print(json.dumps(result) if args.json else report(result))
    return 0 if not decoded["desyncs"] else 1


def _decode_elsewhere(ckpt: Path, folder: Path, threads: int) -> dict[str, Any]:
    """Decode every file of `folder` in a fresh process with `threads` torch threads."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "gicl.benchmarks.rate", str(ckpt), str(folder), str(threads)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"the decoding process failed (exit {proc.returncode}): {tail}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - start}


def decode_folder(ckpt: Path, folder: Path, threads: int) -> dict[str, Any]:
    """(in the decoding process) Every .gic of `folder` decoded — each section's symbol
    checksum verified — and compared with the encoder's x̂ saved beside it."""
    import torch

    from gicl.errors import BitstreamError
    from gicl.evaluation import codec_io

    torch.set_num_threads(threads)
    model = codec_io.Model(*_loaded(ckpt))
    files, desyncs, max_diff = 0, [], 0.0
    for path in sorted(folder.glob("*.gic")):
        files += 1
        try:
            x_hat = codec_io.decode(model, path.read_bytes()).x_hat
        except BitstreamError as e:  # a symbol checksum (or the stream itself) disagrees
            desyncs.append(f"{path.name}: {e}")
            continue
        reference = torch.load(path.with_suffix(".pt"), weights_only=True)
        max_diff = max(max_diff, float((x_hat - reference).abs().max()))
    return {"files": files, "desyncs": desyncs, "threads": torch.get_num_threads(),
            "max_abs_x_hat_difference": max_diff}


def _loaded(ckpt: Path) -> tuple[Any, str, Path]:
    from gicl.model_file import load_model_file

    codec, payload = load_model_file(ckpt)
    return codec.eval(), payload["fingerprint"], ckpt


def report(result: dict[str, Any]) -> str:
    from gicl.machine import machine_line

    lines = [f"codec {result['codec']} from {result['model']}, images in {result['data']}, "
             f"{result['threads']} torch threads",
             "point | images | file bpp | payload bpp | tables bpp | float bpp | of it uncoded | "
             "payload − tables per stream, worst | |tables − float| per image, worst"]
    for point, s in result["points"].items():
        payload_ok, tables_ok = (("within" if s[k] else "OUTSIDE")
                                 for k in ("payload_within_bound", "tables_within_bound"))
        lines.append(
            f"{point} | {s['images']} | {s['file_bpp']:.5f} | {s['payload_bpp']:.5f} | "
            f"{s['table_bpp']:.5f} | {s['float_bpp']:.5f} | {s['uncoded_float_bpp']:.5f} | "
            f"{s['max_payload_excess_bits']:.1f} bits ({payload_ok} 0.5 % + 64 bits) | "
            f"{100 * s['max_tables_vs_float']:.3f} % ({tables_ok} 1 % + 1 bit)")
    d = result["decode"]
    lines.append(f"decoded in another process with {d['threads']} thread(s): {d['files']} files, "
                 f"{len(d['desyncs'])} with symbols differing from the encoder's (every section's "
                 f"checksum verified){''.join('; ' + s for s in d['desyncs'][:3])}; x̂ within "
                 f"{d['max_abs_x_hat_difference']:.1e} of the encoder's forward (float networks "
                 "under other threads)")
    lines.append(f"time: encode + forward {result['encode_and_forward_s']:.1f} s, decode "
                 f"{d['seconds']:.1f} s")
    lines.append(f"machine: {machine_line(result['machine'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    ckpt, folder, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(decode_folder(ckpt, folder, threads)))
