"""Rate–distortion points measured on real files, for validation while training.

Each point is what `gicl compress` followed by `gicl eval`'s metrics would report for that
image and operating point: the codec's `update()` tables (as `gicl export` builds them), the
container written by `codec_io.encode` (header and section fields included), decoded by
`codec_io.decode`, and the metrics of `PairMetrics` on the 8-bit images. The nominal
payload bits of a forward pass miss the container (≈ 20 % of a 64×64 file at the lowest
point), so the RD view plots file bits.

Metrics: PSNR always; MS-SSIM when the image is larger than its 5-scale window needs;
LPIPS (VGG, AlexNet) and DISTS only when their pretrained backbone files are in the hub
cache: a metric is never computed with random backbone weights.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gicl.codecs.base import Codec
from gicl.evaluation import codec_io
from gicl.evaluation.metrics import MS_SSIM_MIN_SIDE, PairMetrics, weights_needed
from gicl.images import to_uint8
from gicl.loading import hub_checkpoints_dir
from gicl.model_file import model_payload

PERCEPTUAL = ("lpips-vgg", "lpips-alex", "dists")


def available_metrics() -> list[str]:
    """psnr, ms-ssim and the perceptual metrics whose pretrained weights are present."""
    folder = hub_checkpoints_dir()
    present = [m for m in PERCEPTUAL if all((folder / f.name).is_file() for f in weights_needed(m))]
    return ["psnr", "ms-ssim", *present]


@lru_cache(maxsize=4)
def _pair_metrics(names: tuple[str, ...], device: str) -> PairMetrics:
    """Built once per process: LPIPS/DISTS backbones load in seconds, validation repeats."""
    return PairMetrics(list(names), device)


class FilePoints:
    """Measures (file bpp, metrics) of one image at one operating point of `codec`."""

    def __init__(self, codec: Codec) -> None:
        codec = getattr(codec, "_orig_mod", codec)  # torch.compile's wrapper: export sees the codec
        # model_payload runs codec.update() and hashes the weights as `gicl export` does, so
        # the container names the fingerprint the exported model file would carry
        self.model = codec_io.Model(codec, model_payload(codec)["fingerprint"], Path())
        self.metrics = available_metrics()

    def measure(self, x: Tensor, point: dict[str, Any]) -> tuple[dict[str, float], Tensor]:
        """x: (1, 3, H, W) in [0, 1]. Returns {"bpp": file bpp, metric: value} and the
        decoded image as uint8 (H, W, 3), the pixels `gicl decompress` would save."""
        h, w = x.shape[-2:]
        with torch.autocast(x.device.type, enabled=False):  # `gicl compress` runs fp32
            data, _ = codec_io.encode(self.model, x.float(), point)
            decoded = codec_io.decode(self.model, data)
        ref, rec = to_uint8(x), to_uint8(decoded.x_hat)
        small = min(h, w) <= MS_SSIM_MIN_SIDE  # too small for 5 scales: no MS-SSIM here
        names = tuple(m for m in self.metrics if not (small and m == "ms-ssim"))
        scores = _pair_metrics(names, str(self.model.codec.device_of()))(ref, rec)
        return {"bpp": len(data) * 8 / (h * w), **scores}, rec


def rd_means(rows: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    """point → {"bpp" and each metric: mean over images} (CompressAI's convention: means of
    per-image values). A metric only some images have (MS-SSIM of small ones) is left out
    of its point rather than averaged over a subset."""
    out: dict[int, dict[str, float]] = {}
    for p in sorted({int(r["point"]) for r in rows}):
        sel = [r for r in rows if r["point"] == p]
        keys = [k for k in sel[0] if k not in ("point", "image") and all(k in r for r in sel)]
        out[p] = {k: sum(r[k] for r in sel) / len(sel) for k in keys}
    return out
