"""Model facts from a recipe alone: parameters per top-level module, FLOPs, operating points."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from gicl.codecs.base import Codec


def parameter_counts(codec: Codec) -> dict[str, int]:
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in codec.named_children()}
    counts["total"] = sum(p.numel() for p in codec.parameters())
    return counts


def _counted(codec: Codec, x: Tensor, point: dict[str, Any] | None) -> int:
    """FLOPs of `codec(x, point)` by torch's FlopCounterMode (1 MAC = 2 FLOPs).

    Attention runs through the math kernel: the CPU's fused SDPA kernel is not among the
    operators FlopCounterMode knows, so its FLOPs would count as zero. Counted under
    `no_grad`, not `inference_mode`: FlopCounterMode fails under inference mode on
    parametrized weights (e.g. CompressAI's GDN).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    codec.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        codec(x, point)
    return int(counter.get_total_flops())


def forward_flops(codec: Codec, h: int, w: int, point: dict[str, Any] | None = None) -> int:
    """FLOPs of one real forward pass at h×w (minutes for a large codec at 1080p on a CPU)."""
    return _counted(codec, torch.rand(1, 3, h, w), point)


def meta_codec(config: dict[str, Any]) -> Codec:
    """The codec built on the meta device (no memory, no initialisation), except its
    integer buffers (index frequency and CDF tables, read on the host to build entropy
    codes), which are ones on the CPU: enough for parameter counts and a FLOP count."""
    from gicl.codecs.base import build_codec

    with torch.device("meta"):
        codec = build_codec(config)
    for module in codec.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and not buf.is_floating_point() and not buf.is_complex():
                setattr(module, name, torch.ones(buf.shape, dtype=buf.dtype))
    return codec


def meta_flops(codec: Codec, h: int, w: int, point: dict[str, Any] | None = None) -> int:
    """FLOPs of one forward at h×w of a `meta_codec`: shapes only, no arithmetic, so the
    count at 1080p takes about a second. `nonzero` on meta assumes every element is
    nonzero, which only shapes data-dependent selections such as the bookkeeping of coded
    index counts (no FLOPs). Raises what the forward raises when a codec needs real data."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), _MetaBincount():
        return _counted(codec, torch.empty(1, 3, h, w, device="meta"), point)


class _MetaBincount(TorchDispatchMode):
    """`bincount` (index statistics, no FLOPs) has no meta kernel; on meta its result is
    `minlength` long, the length it has whenever every index is below `minlength`."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.bincount.default and args[0].device.type == "meta":
            weights = kwargs.get("weights", args[1] if len(args) > 1 else None)
            minlength = kwargs.get("minlength", args[2] if len(args) > 2 else 0)
            dtype = torch.int64 if weights is None else weights.dtype
            return torch.empty(minlength, dtype=dtype, device="meta")
        return func(*args, **kwargs)


def flops_entry(config: dict[str, Any], codec: Codec, h: int, w: int) -> dict[str, Any]:
    """The FLOP count at h×w of `meta_codec(config)`: on the meta device, else (a codec
    whose forward needs real data) by a full forward pass, announced: it can take minutes."""
    from gicl.codecs.base import build_codec

    try:
        total, method = meta_flops(codec, h, w), "meta device"
    except (NotImplementedError, RuntimeError) as e:
        print(f"gicl: counting FLOPs at {w}x{h} with a full forward pass (the codec cannot run "
              f"on the meta device: {str(e).splitlines()[0][:120]}); this can take minutes",
              file=sys.stderr, flush=True)
        total, method = forward_flops(build_codec(config), h, w), "full forward pass"
    return {"size": f"{w}x{h}", "total": total, "method": method,
            "convention": "FLOPs = 2 x MACs (torch.utils.flop_counter)"}


def describe(config: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """`config`: a resolved recipe, or {"name", "profile", "codec"} of a model file."""
    codec = meta_codec(config["codec"])
    h, w = size
    info = {
        "recipe": config["name"], "profile": config["profile"], "codec": config["codec"]["name"],
        "parameters": parameter_counts(codec),
        "flops": flops_entry(config["codec"], codec, h, w),
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
