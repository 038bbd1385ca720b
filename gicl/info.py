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
    """`config`: a resolved recipe, or {"name", "profile", "codec"} of a model file."""
    from gicl.codecs.base import build_codec

    codec = build_codec(config["codec"])
    h, w = size
    info = {
        "recipe": config["name"], "profile": config["profile"], "codec": config["codec"]["name"],
        "parameters": parameter_counts(codec),
        "flops": {"size": f"{h}x{w}", "total": forward_flops(codec, h, w),
                  "convention": "FLOPs = 2 x MACs (torch.utils.flop_counter)"},
        "operating_points": codec.operating_points(),
    }
    if hasattr(codec, "parameter_split"):  # inference codec vs training-only parts (GLC)
        info["parameter_split"] = codec.parameter_split()
    if hasattr(codec, "behaviour"):  # options that decide how the codec computes
        info["behaviour"] = codec.behaviour()
    return info


def model_file_config(path: str, overrides: list[str]) -> dict[str, Any]:
    """A model file's codec config with `codec.KEY=VALUE` overrides, as `describe` takes it."""
    from gicl.errors import RecipeError
    from gicl.model_file import read_model_file
    from gicl.recipes import parse_override

    codec = dict(read_model_file(path)["codec"])
    for item in overrides:
        keys, value = parse_override(item)
        if len(keys) != 2 or keys[0] != "codec" or keys[1] not in codec:
            raise RecipeError(f"--set on a model file takes codec.KEY=VALUE with a key of its codec "
                              f"({', '.join(sorted(codec))}), got '{item}'")
        codec[keys[1]] = value
    return {"name": str(path), "profile": "model file", "codec": codec}
