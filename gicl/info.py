"""Model facts from a recipe alone: parameters per top-level module, FLOPs, operating points."""

from __future__ import annotations

from typing import Any

import torch

from gicl.codecs.base import Codec


def parameter_counts(codec: Codec) -> dict[str, int]:
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in codec.named_children()}
    counts["total"] = sum(p.numel() for p in codec.parameters())
    return counts


def forward_flops(codec: Codec, h: int, w: int, point: dict[str, Any] | None = None) -> int:
    """FLOPs of one forward at h×w, counted by torch's FlopCounterMode (1 MAC = 2 FLOPs).

    Counted under `no_grad`, not `inference_mode`: FlopCounterMode fails under inference
    mode on parametrized weights (e.g. CompressAI's GDN).
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, h, w)
    codec.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        codec(x, point)
    return int(counter.get_total_flops())


def describe(config: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    from gicl.codecs.base import build_codec

    codec = build_codec(config["codec"])
    h, w = size
    return {
        "recipe": config["name"], "profile": config["profile"], "codec": config["codec"]["name"],
        "parameters": parameter_counts(codec),
        "flops": {"size": f"{h}x{w}", "total": forward_flops(codec, h, w),
                  "convention": "FLOPs = 2 x MACs (torch.utils.flop_counter)"},
        "operating_points": codec.operating_points(),
    }
