"""Import the authors' Control-GIC checkpoint (lianqi1008/Control-GIC, Lightning `.ckpt`).

The one name table (`official_name`): gicl name → official name, by three rules in order.
1. Branch prefixes, first match wins (`BRANCH_PREFIXES`). The authors' un-suffixed encoder
   `mid`/`norm_out`/`conv_out` and decoder `conv_in`/`mid` are their **medium** branch, while
   gicl's un-suffixed ones are the coarse branch, so a name-matching import would swap them:

   | gicl                        | official                       |
   |-----------------------------|--------------------------------|
   | encoder.mid / norm_out / conv_out | encoder.mid_coarse / norm_out_coarse / conv_out_coarse |
   | encoder.*_medium            | encoder.mid / norm_out / conv_out |
   | decoder.conv_in / mid       | decoder.conv_in_coarse / mid_coarse |
   | decoder.conv_in_medium / mid_medium | decoder.conv_in / mid   |
   | quantizer.                  | quantize.                      |
   Everything else (down/up levels, *_fine, quant_conv, post_quant_conv) keeps its name.
2. gicl wraps every block norm in `Norm` (`norm1.norm.…`): that level is dropped.
3. In the decoder, MoVQ's SpatialNorm calls its GroupNorm `norm_layer` (gicl: `norm`).
`index_frequencies` (the Huffman table) comes from the 1024 scalars
`quantize.embedding_counter.<k>`. With `ema=True` every weight is read from its EMA copy
instead: LitEma stores `encoder.down.0.block.0.conv1.weight` as
`ema_encoder.down0block0conv1weight` (module prefix `ema_`, dots removed); the authors'
inference uses the raw weights, so raw is the default. Tensors not used (training loss:
discriminator and LPIPS `loss.*`; the EMA copies, or the raw ones under `ema=True`; EMA
bookkeeping) are reported by group.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from gicl.codecs.base import build_codec
from gicl.codecs.controlgic import OFFICIAL_BEHAVIOUR
from gicl.errors import UserError
from gicl.importers import ImportReport
from gicl.loading import read_foreign_checkpoint
from gicl.model_file import save_model_file

SOURCE = "lianqi1008/Control-GIC"
# configs/config_inference.yaml of the authors' code (ratios there: coarse 0.1, medium 0.4);
# the VQ loss puts β on the codebook term ("legacy") as their VectorQuantize2 does
OFFICIAL_CONFIG: dict[str, Any] = {
    "name": "controlgic", "ch": 128, "ch_mult": [1, 2, 2, 4, 4], "num_res_blocks": 2,
    "attn_resolutions": [32], "resolution": 256, "z_channels": 4, "embed_dim": 4,
    "n_embed": 1024, "legacy_vq": True, "default_ratios": [0.5, 0.4, 0.1], **OFFICIAL_BEHAVIOUR,
}
BRANCH_PREFIXES = (
    ("encoder.mid.", "encoder.mid_coarse."),
    ("encoder.norm_out.", "encoder.norm_out_coarse."),
    ("encoder.conv_out.", "encoder.conv_out_coarse."),
    ("encoder.mid_medium.", "encoder.mid."),
    ("encoder.norm_out_medium.", "encoder.norm_out."),
    ("encoder.conv_out_medium.", "encoder.conv_out."),
    ("decoder.conv_in.", "decoder.conv_in_coarse."),
    ("decoder.mid.", "decoder.mid_coarse."),
    ("decoder.conv_in_medium.", "decoder.conv_in."),
    ("decoder.mid_medium.", "decoder.mid."),
    ("quantizer.", "quantize."),
)
COUNTER = "quantize.embedding_counter."
TABLE = "index_frequencies"


def official_name(name: str) -> str:
    """The authors' name of gicl's Control-GIC tensor `name` (module docstring)."""
    for ours, theirs in BRANCH_PREFIXES:
        if name.startswith(ours):
            name = theirs + name[len(ours):]
            break
    name = re.sub(r"\b(norm[12]?|norm_out)\.norm\.", r"\1.", name)
    if name.startswith("decoder."):
        name = re.sub(r"\b(norm[12]?|norm_out)\.norm\.(weight|bias)$", r"\1.norm_layer.\2", name)
    return name


def ema_name(official: str) -> str:
    """LitEma's name of an official parameter: `ema_<module>.` + the rest without dots."""
    module, rest = official.split(".", 1)
    return f"ema_{module}.{rest.replace('.', '')}"


def _state_dict(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state_dict: pass the authors' Control-GIC .ckpt")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _group(name: str) -> str:
    """Report group of an unused tensor: its first two name parts (`loss.discriminator`)."""
    return ".".join(name.split(".")[:2]) if not name.startswith("ema_") else name.split(".")[0]


def map_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], *, ema: bool,
              path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """gicl state dict from the official one, and the unused tensors counted by group.

    `expected`: gicl's names and shapes. One line naming what is missing or misshapen."""
    out, used, missing = {}, set(), []
    for name, shape in expected.items():
        if name == TABLE:
            keys = [f"{COUNTER}{k}" for k in range(shape[0])]
            if not all(k in state for k in keys):
                missing.append(f"{COUNTER}<k> for k < {shape[0]}")
                continue
            counts = torch.cat([state[k].reshape(-1)[:1] for k in keys]).double()
            if bool((counts < 0).any()) or not torch.equal(counts, counts.round()):
                raise UserError(f"{path}: {COUNTER}<k> must hold non-negative integer counts")
            out[name] = counts.to(torch.int64)
            used.update(keys)
            continue
        key = official_name(name)
        key = ema_name(key) if ema else key
        if key not in state:
            missing.append(key)
            continue
        if state[key].shape != shape:
            raise UserError(f"{path}: {key} has shape {tuple(state[key].shape)}, the Control-GIC "
                            f"architecture needs {tuple(shape)}")
        out[name] = state[key].to(torch.float32)
        used.add(key)
    if missing:
        raise UserError(f"{path} is not a Control-GIC checkpoint: {len(missing)} of "
                        f"{len(expected)} tensors missing, e.g. {', '.join(missing[:3])}")
    return out, dict(Counter(_group(k) for k in state if k not in used))


def import_checkpoint(path: str | Path, out: str | Path, *, ema: bool = False) -> ImportReport:
    """Read the authors' checkpoint safely and write a gicl model file with official behaviour."""
    path, out = Path(path), Path(out)
    state = _state_dict(read_foreign_checkpoint(path), path)
    with torch.device("meta"):  # names and shapes only; the real codec is built once, below
        expected = {k: v.shape for k, v in build_codec(OFFICIAL_CONFIG).state_dict().items()}
    mapped, unused = map_state(state, expected, ema=ema, path=path)
    codec = build_codec(OFFICIAL_CONFIG)
    codec.load_state_dict(mapped, strict=True)
    weights = "ema" if ema else "raw"
    fingerprint = save_model_file(codec, out, meta={"imported_from": SOURCE, "weights": weights,
                                                    "checkpoint": path.name})
    return ImportReport(out=out, fingerprint=fingerprint, loaded=len(mapped), weights=weights,
                        unused=unused, behaviour=codec.behaviour())
