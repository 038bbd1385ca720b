"""Import the authors' GLC checkpoint (jzyustc/GLC @ 126db25, `GLC_Image(N=256)`).

gicl's GLC keeps the official module structure and tensor names, so the name table is one
rule: strip a DDP `module.` prefix (`gicl.codecs.glc.import_official_state_dict`). The file is
either a plain state dict or a dict holding one under `state_dict`, `net`, `net_g` or `model`;
it is read by `gicl.loading.read_foreign_checkpoint` (no pickled code runs).

The exported codec is the inference codec (104.64 M parameters): the two code predictors
(`code_pred_loss`, `code_pred_pix_loss`; 55.15 M, losses of stages II/III only) and the VQ-VAE's
own codebook (`vqgan.quantize`; 4.19 M, stage I's bottleneck, E_VQ of stage III and the
initialisation of `z_vq`) are training state and are left out, reported as unused, unless
`with_code_predictors` asks for them (then the file holds the whole 163.99 M training model, a
starting point for stage II/III through a recipe's `init:`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from gicl.codecs.base import build_codec
from gicl.codecs.glc import import_official_state_dict
from gicl.errors import UserError
from gicl.importers import ImportReport
from gicl.loading import read_foreign_checkpoint
from gicl.model_file import save_model_file

SOURCE = "jzyustc/GLC"
OFFICIAL_CONFIG: dict[str, Any] = {"name": "glc"}  # the codec's defaults are GLC_Image(N=256)
WRAPPERS = ("state_dict", "net", "net_g", "model")


def _state_dict(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict, or of the one a wrapper key holds."""
    for _ in range(2):  # e.g. {"net": {"state_dict": ...}}
        if isinstance(ckpt, dict):
            inner = next((ckpt[k] for k in WRAPPERS if isinstance(ckpt.get(k), dict)), None)
            ckpt = inner if inner is not None else ckpt
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds no state dict: pass the authors' GLC checkpoint")
    return {k: v for k, v in ckpt.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _group(name: str) -> str:
    """Report group of an unused tensor: `code_pred_loss`, `vqgan.quantize`, ..."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "vqgan" else parts[0]


def map_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], *,
              path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """gicl state dict (float32) from the official one, and the unused tensors by group.

    `expected`: gicl's names and shapes. One line naming what is missing or misshapen."""
    state = import_official_state_dict(state)
    missing = [k for k in expected if k not in state]
    if missing:
        raise UserError(f"{path} is not a GLC checkpoint: {len(missing)} of {len(expected)} "
                        f"tensors missing, e.g. {', '.join(missing[:3])}")
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise UserError(f"{path}: {name} has shape {tuple(state[name].shape)}, the GLC "
                            f"architecture needs {tuple(shape)}")
    out = {k: state[k].to(torch.float32).contiguous() for k in expected}
    return out, dict(Counter(_group(k) for k in state if k not in expected))


def import_checkpoint(path: str | Path, out: str | Path, *, with_code_predictors: bool = False,
                      config: dict[str, Any] | None = None) -> ImportReport:
    """Read the authors' checkpoint safely and write a gicl model file.

    `config`: the codec config (default the official build; tests pass a narrower GLC)."""
    path, out = Path(path), Path(out)
    config = {**(config or OFFICIAL_CONFIG), "training_parts": with_code_predictors}
    state = _state_dict(read_foreign_checkpoint(path), path)
    codec = build_codec(config)
    expected = {k: v.shape for k, v in codec.state_dict().items()}
    mapped, unused = map_state(state, expected, path=path)
    codec.load_state_dict(mapped, strict=True)
    fingerprint = save_model_file(codec.eval(), out, meta={"imported_from": SOURCE,
                                                           "checkpoint": path.name})
    return ImportReport(out=out, fingerprint=fingerprint, loaded=len(mapped), weights="raw",
                        unused=unused)
