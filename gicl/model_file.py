"""Model files: everything a decoder needs, loadable with `weights_only=True`; the one
place that reads and writes codec weights (model files and the runner's checkpoints).

Schema, version 2 (a plain dict of tensors and builtins):
    format: "gicl-model"      version: 2
    codec: the codec's config (its recipe section), enough to rebuild it with build_codec
    state_dict: the weights the decoder uses and the persistent buffers (frequency tables,
                CDF tables that `Codec.update()` built: they travel here, with the weights);
                the EMA parameters when the stage kept a model EMA, else the raw ones
    fingerprint: SHA-256 (32 hex digits) over the config, the flags and every tensor's bytes,
                so that a bitstream names the exact model it needs
    meta: where it came from (recipe, stage, iteration, source checkpoint), `plugins`,
          the modules that register a codec defined outside gicl (imported before building),
          and `weights`: "ema" or "raw" (with `ema`: the EMA's decay, start, every)
    flags: behaviour switches a decoder must honour, by name ({} today)
    precision: the dtype of the floating-point weights ("float32", "bfloat16", ...)
Version 1 files (no flags / precision) are read as version 2 with the defaults; their
fingerprints are unchanged (empty flags are not hashed). Version 2 files written before
EMA training existed carry `ema_state_dict: None`, which the reader drops: a file holds one
set of weights, the decoder's, and `meta.weights` names it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gicl.atomic import atomic_torch_save
from gicl.codecs.base import Codec, build_codec, validate_codec_config
from gicl.errors import UserError
from gicl.registry import import_plugins

MODEL_FORMAT = "gicl-model"
MODEL_VERSION = 2
READABLE_VERSIONS = (1, 2)
# where a runner checkpoint keeps the EMA copy of the codec: the training module's `ema`
# (timm ModelEmaV3, gicl.training.ema), which holds the copy as its `module`
CHECKPOINT_EMA_PREFIX = "ema.module."


def fingerprint(codec_config: dict[str, Any], state_dict: dict[str, torch.Tensor],
                flags: dict[str, Any] | None = None) -> str:
    h = hashlib.sha256(json.dumps(codec_config, sort_keys=True, default=str).encode())
    if flags:
        h.update(json.dumps(flags, sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def _precision(state: dict[str, torch.Tensor]) -> str:
    dtypes = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()}
    return "+".join(sorted(dtypes)) or "none"


def model_payload(codec: Codec, meta: dict[str, Any] | None = None,
                  flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model file's dict; calls `codec.update()` first so built tables are saved."""
    codec.update()
    state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
    flags = dict(flags or {})
    return {
        "format": MODEL_FORMAT, "version": MODEL_VERSION, "codec": codec.config,
        "state_dict": state, "fingerprint": fingerprint(codec.config, state, flags),
        "meta": meta or {}, "flags": flags, "precision": _precision(state),
    }


def save_model_file(codec: Codec, path: str | Path, meta: dict[str, Any] | None = None) -> str:
    """Write the model file atomically; returns its fingerprint."""
    payload = model_payload(codec, meta)
    atomic_torch_save(payload, path)
    return payload["fingerprint"]


def _upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-1 payload with the version-2 fields at their defaults."""
    out = {"flags": {}, **payload}
    out.pop("ema_state_dict", None)  # always None in the files that have it
    out["meta"] = dict(out.get("meta") or {})
    out.setdefault("precision", _precision(payload["state_dict"]))
    out["version"] = MODEL_VERSION
    return out


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
    if payload.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} has model format version {payload.get('version')}; this gicl "
                        f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: upgrade gicl")
    return _upgrade(payload)


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[Codec, dict[str, Any]]:
    """Build the codec from its stored config, load its weights, `update()` (eval mode)."""
    payload = read_model_file(path)
    import_plugins(payload["meta"].get("plugins") or [])
    codec = build_codec(payload["codec"])
    codec.load_state_dict(payload["state_dict"])
    codec.update()
    return codec.to(device).eval(), payload


def read_codec_weights(path: str | Path, raw: bool = False
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(codec config, codec state dict, meta) from a model file or a runner's Lightning
    checkpoint (codec weights under `codec.`, config in `ckpt["gicl"]`); one reader for
    `init:` in recipes and for `gicl export`. The plugins the file names are imported, so
    the caller can build its codec.

    A checkpoint of a stage with a model EMA yields the EMA parameters (under
    `CHECKPOINT_EMA_PREFIX`) with the raw buffers, as its `final.pt` holds them; `raw` the
    raw parameters. `meta["weights"]` says which ("ema" or "raw")."""
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
        if raw and payload["meta"].get("weights") == "ema":
            raise UserError(f"{path} is a model file with EMA weights only: pass the training "
                            "checkpoint it came from (checkpoints/last.ckpt) for the raw ones")
        import_plugins(payload["meta"].get("plugins") or [])
        return payload["codec"], payload["state_dict"], payload["meta"]
    info = ckpt.get("gicl") if isinstance(ckpt, dict) else None
    if not isinstance(info, dict) or "codec" not in info or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a gicl training checkpoint (no 'gicl' codec config "
                        "or 'state_dict'): pass a stage's checkpoints/last.ckpt")
    state = {k[len("codec."):]: v for k, v in dict(ckpt["state_dict"]).items() if k.startswith("codec.")}
    meta = {k: info[k] for k in ("recipe", "stage", "plugins") if k in info}
    ema = info.get("ema")
    meta["weights"] = "ema" if ema and not raw else "raw"
    if ema:
        meta["ema"] = {k: v for k, v in ema.items() if k != "parameters"}
        if not raw:
            state.update({k: ckpt["state_dict"][CHECKPOINT_EMA_PREFIX + k] for k in ema["parameters"]})
    meta.update(source=str(path.resolve()), global_step=int(ckpt.get("global_step", -1)))
    import_plugins(meta.get("plugins") or [])
    return info["codec"], state, meta


def _renamed(state: dict[str, torch.Tensor],
             prefixes: dict[str, str | list[str]]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Stored keys under their mapped names (longest matching source prefix wins; a list of
    targets initialises several tensor sets from one) and the stored keys no prefix maps.
    Without a map every key keeps its name."""
    if not prefixes:
        return dict(state), []
    order = sorted(prefixes, key=len, reverse=True)
    out, unmapped = {}, []
    for key, value in state.items():
        src = next((p for p in order if key.startswith(p)), None)
        if src is None:
            unmapped.append(key)
            continue
        targets = prefixes[src]
        for target in [targets] if isinstance(targets, str) else targets:
            out[target + key[len(src):]] = value
    return out, unmapped


def _summary(keys: list[str]) -> str:
    """'N (first, second, ...)' for a log line."""
    return f"{len(keys)}" + (f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else "")


def load_codec_weights(codec: Codec, path: Path, prefixes: dict[str, str | list[str]] | None = None,
                       strict: bool = False) -> None:
    """Initialise `codec` from a model file or a runner checkpoint (a recipe's `init:`).

    Without `prefixes` the stored codec must be the same kind as `codec`. With them (e.g.
    {"encoder.": "analysis.encoder."}) any codec's weights load under the new names: stored
    keys no prefix maps are unused; a list of targets loads one stored set into several
    (GLC: the VQ-VAE codebook initialises the hyper codebook too). Logs what was loaded,
    what starts fresh and what was unused; `strict` makes anything fresh or unused an error.
    """
    import logging

    log = logging.getLogger("gicl")
    config, state, _ = read_codec_weights(path)
    validate_codec_config(config, f"init {path}")
    name = config.get("name")
    if not prefixes and name != codec.codec_id:
        raise UserError(f"{path} holds a '{name}' codec; this stage trains '{codec.codec_id}': "
                        "give init.map (stored prefix → codec prefix) to load it across codecs")
    mapped, unmapped = _renamed(state, prefixes or {})
    own = codec.state_dict()
    unused = unmapped + [k for k in mapped if k not in own]
    loaded = [k for k in mapped if k in own]
    fresh = [k for k in own if k not in mapped]
    if strict and (fresh or unused):
        raise UserError(f"init from {path} (strict): {_summary(fresh)} codec tensors have no "
                        f"stored value, {_summary(unused)} stored tensors are unused")
    try:
        codec.load_state_dict({k: mapped[k] for k in loaded}, strict=False)
    except RuntimeError as e:  # shape mismatches: name the first
        problem = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UserError(f"init from {path}: stored weights do not fit this codec ({problem})") from None
    log.info("init from %s: loaded %s; start fresh %s; unused %s", path, _summary(loaded),
             _summary(fresh), _summary(unused))
