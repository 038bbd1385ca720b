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
