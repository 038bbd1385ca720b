"""Exported model files: everything a decoder needs, loadable with `weights_only=True`.

Layout (a plain dict of tensors and builtins):
    {"format": "gicl-model", "version": 1, "codec": <codec config dict>,
     "state_dict": {...}, "fingerprint": <hex>, "meta": {"recipe":..., "stage":...}}
Frequency tables and integer CDF tables are persistent buffers of the codec, so they travel
in `state_dict`. The fingerprint is a SHA-256 over the config and every tensor's bytes, so a
bitstream can name the exact model it needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gicl.atomic import atomic_torch_save
from gicl.codecs.base import Codec, build_codec
from gicl.errors import UserError

MODEL_FORMAT = "gicl-model"
MODEL_VERSION = 1


def fingerprint(codec_config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(codec_config, sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def model_payload(codec: Codec, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
    return {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "codec": codec.config,
        "state_dict": state, "fingerprint": fingerprint(codec.config, state), "meta": meta or {},
    }


def save_model_file(codec: Codec, path: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Write the model file atomically; returns its fingerprint."""
    payload = model_payload(codec, meta)
    atomic_torch_save(payload, path)
    return payload["fingerprint"]


def read_model_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path} is not a readable gicl model file ({type(e).__name__}): "
                        "pass a file written by `gicl export` or a stage's final.pt") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a gicl model file: export one with `gicl export CKPT OUT.pt`")
    if payload.get("version") != MODEL_VERSION:
        raise UserError(f"{path} has model format version {payload.get('version')}; "
                        f"this gicl reads version {MODEL_VERSION}")
    return payload


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[Codec, dict[str, Any]]:
    """Build the codec from its stored config and load its weights (eval mode)."""
    payload = read_model_file(path)
    codec = build_codec(payload["codec"])
    codec.load_state_dict(payload["state_dict"])
    return codec.to(device).eval(), payload


def read_codec_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(codec config, codec state dict, meta) from a model file or a runner's Lightning
    checkpoint (codec weights under `codec.`, config in `ckpt["gicl"]`); one reader for
    `init:` in recipes and for `gicl export`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path} is not a checkpoint loadable with weights_only=True "
                        f"({type(e).__name__}): pass a stage's checkpoints/last.ckpt") from None
    if isinstance(ckpt, dict) and ckpt.get("format") == MODEL_FORMAT:
        payload = read_model_file(path)
        return payload["codec"], payload["state_dict"], payload.get("meta", {})
    info = ckpt.get("gicl") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or "codec" not in info or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a gicl training checkpoint (no 'gicl' codec config "
                        "or 'state_dict'): pass a stage's checkpoints/last.ckpt")
    state = {k[len("codec."):]: v for k, v in dict(ckpt["state_dict"]).items() if k.startswith("codec.")}
    meta = {k: info[k] for k in ("recipe", "stage") if k in info}
    meta.update(source=str(path.resolve()), global_step=int(ckpt.get("global_step", -1)))
    return info["codec"], state, meta
