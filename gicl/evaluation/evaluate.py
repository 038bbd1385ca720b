"""The evaluation loop: for every operating point and image, a real compress → bytes →
decompress, metrics on the saved 8-bit reconstruction, and the files a paper table needs.

Writes into the output directory:
    images.csv     one row per (image, point): size, bytes, bpp (file size, header
                   included), payload_bpp (section payloads only), per-image metrics, timings
    summary.json   per point: means over images of every per-image column, FID/KID over
                   all 256×256 patches, the model, data and machine it ran on
    rd.png         bpp vs each metric
    report.html    RD plots, the per-image table and original/decoded crops, self-contained
    recon/pN/*.png the reconstructions the metrics were computed on

Averages follow CompressAI's convention: PSNR and bpp are means of per-image values.
Encode time covers `codec.compress` and container writing; decode time covers container
parsing and `codec.decompress` (GPU work synchronized on both ends), after one untimed
warm-up round trip.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gicl import arguments
from gicl.evaluation import codec_io
from gicl.evaluation.metric_names import PER_IMAGE
from gicl.evaluation.metrics import PairMetrics, PatchDistribution, check_sizes
from gicl.evaluation.plots import rd_plot
from gicl.evaluation.report import center_crop_uint8, write_report
from gicl.images import image_size, read_image, to_uint8, write_file, write_png
from gicl.machine import describe_machine

SUMMARY_FORMAT = "gicl-eval"


def parse_points(text: str, model: codec_io.Model) -> list[dict[str, Any]]:
    """`all` → the codec's default sweep; else a JSON object or a JSON list of objects."""
    if text == "all":
        return model.codec.operating_points()
    return arguments.parse_points(text, "--points", example=model.codec.operating_points()[-1],
                                  validate=model.codec.validate_point)


def center_crop(x: Tensor, size: int | None) -> Tensor:
    if not size:
        return x
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top:top + size, left:left + size]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: codec_io.Model, images: list[Path], points: list[dict[str, Any]],
             metrics: list[str], out: Path, crop: int | None = None) -> dict[str, Any]:
    """Run the sweep and write images.csv, summary.json, rd.png and recon/ into `out`."""
    from tqdm import tqdm

    sizes = [image_size(p) for p in images]
    if crop:
        sizes = [(min(h, crop), min(w, crop)) for h, w in sizes]
    check_sizes(metrics, sizes)
    device = model.codec.device_of()
    pair = PairMetrics(metrics, device)  # both check their weights before any work starts
    dist = PatchDistribution(metrics, device)
    rows: list[dict[str, Any]] = []
    originals: dict[str, Any] = {}  # center crops of the 8-bit originals, for report.html
    summaries: list[dict[str, Any]] = []
    # one untimed round trip first, so one-off costs (kernel selection, caches) stay out of
    # the first image's timings
    codec_io.decode(model, codec_io.encode(model, center_crop(read_image(images[0]), crop),
                                           points[0])[0])
    bar = tqdm(total=len(points) * len(images), desc="eval", unit="img", file=sys.stderr)
    for p_index, point in enumerate(points):
        tag = f"p{p_index}"
        point_rows = []
        for path in images:
            x = center_crop(read_image(path), crop)
            ref = to_uint8(x)
            if p_index == 0:
                dist.add(ref, real=True)
                originals[path.name] = center_crop_uint8(ref)
            _sync(device)
            t0 = time.perf_counter()
            data, encoded = codec_io.encode(model, x, point)
            _sync(device)
            t1 = time.perf_counter()
            decoded = codec_io.decode(model, data)
            _sync(device)
            t2 = time.perf_counter()
            rec = to_uint8(decoded.x_hat)
            write_png(out / "recon" / tag / f"{path.stem}.png", rec)
            dist.add(rec, real=False)
            h, w = ref.shape[:2]
            row = {"image": path.name, "point": json.dumps(point, sort_keys=True), "tag": tag,
                   "height": h, "width": w, "bytes": len(data),
                   "bpp": len(data) * 8 / (h * w),
                   "payload_bpp": codec_io.payload_bits(encoded) / (h * w),
                   **pair(ref, rec), "encode_ms": (t1 - t0) * 1e3, "decode_ms": (t2 - t1) * 1e3}
            point_rows.append(row)
            bar.update()
        rows += point_rows
        means = {k: sum(r[k] for r in point_rows) / len(point_rows)
                 for k in ("bpp", "payload_bpp", *PER_IMAGE, "encode_ms", "decode_ms")
                 if k in point_rows[0]}
        summaries.append({"tag": tag, "point": point, **means, **dist.compute()})
    bar.close()
    summary = {
        "format": SUMMARY_FORMAT, "version": 1,
        "model": {"path": str(model.path), "fingerprint": model.fingerprint,
                  "codec": model.codec.codec_id},
        "data": str(images[0].parent), "images": len(images), "crop": crop,
        "metrics": metrics, "device": str(device), "machine": describe_machine(device), "points": summaries,
    }
    _write_outputs(out, rows, summary)
    write_report(out, rows, summary, originals)
    return summary


def _write_outputs(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_file(out / "images.csv", text.getvalue().encode())
    write_file(out / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
    rd_plot(summary, out / "rd.png")
