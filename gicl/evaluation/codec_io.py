"""Real round trips: image → codec.compress → container bytes → codec.decompress.

Used by `gicl compress` / `decompress` / `eval`, so that evaluation measures exactly the
files a user gets. Also the model registry: a small JSON file mapping model fingerprints to
exported model paths (written by `export` and `compress`), so `gicl decompress IN OUT` finds
the model a stream names without `--ckpt`. It lives in `$GICL_CACHE/models.json`, else
`$XDG_CACHE_HOME/gicl/models.json`, else `~/.cache/gicl/models.json`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gicl import bitstream
from gicl.atomic import atomic_write_bytes
from gicl.codecs.base import Codec, EncodedImage
from gicl.errors import UserError
from gicl.model_file import load_model_file


@dataclass
class Model:
    codec: Codec
    fingerprint: str
    path: Path


@dataclass
class Decoded:
    x_hat: Tensor
    header: bitstream.Header  # sections_read: the sections decoded
    bytes_used: int  # header plus the sections decoded: the size of the prefix that was used


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None) -> torch.device:
    """`--device`: cpu or cuda[:N], checked against this machine; None → `default_device()`."""
    if name is None:
        return torch.device(default_device())
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"--device expects cpu or cuda[:N], got '{name}'")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {name}: torch sees no CUDA device on this machine; "
                            "use --device cpu")
        if device.index is not None and device.index >= count:
            raise UserError(f"--device {name}: this machine has {count} CUDA device(s), "
                            f"cuda:0..cuda:{count - 1}")
    return device


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load an exported model file and remember its path under its fingerprint."""
    path = Path(path).resolve()
    codec, payload = load_model_file(path, device)
    model = Model(codec, payload["fingerprint"], path)
    register_model(model)
    return model


def registry_path() -> Path:
    if os.environ.get("GICL_CACHE"):
        root = Path(os.environ["GICL_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gicl"
    return root / "models.json"


def _read_registry() -> dict[str, Any]:
    try:
        entries = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def register_model(model: Model) -> None:
    """Record fingerprint → path; a registry that cannot be written only costs a warning."""
    entries = _read_registry()
    entry = {"path": str(model.path), "codec": model.codec.codec_id}
    if entries.get(model.fingerprint) == entry:
        return
    entries[model.fingerprint] = entry
    try:
        atomic_write_bytes(registry_path(), json.dumps(entries, indent=1, sort_keys=True).encode())
    except OSError as e:
        print(f"gicl: warning: cannot update the model registry {registry_path()}: {e}",
              file=sys.stderr)


def model_for_stream(header: bitstream.Header, ckpt: str | Path | None,
                     device: str | torch.device = "cpu") -> Model:
    """The model that decodes `header`'s stream: `ckpt` if given, else the registered one
    whose fingerprint starts with the stream's model id."""
    if ckpt is not None:
        return load_model(ckpt, device)
    for fingerprint, entry in _read_registry().items():
        if header.names_model(fingerprint) and Path(entry["path"]).is_file():
            model = load_model(entry["path"], device)
            if header.names_model(model.fingerprint):
                return model
    raise UserError(f"the stream needs model {header.model_id}, which is not in the model "
                    f"registry {registry_path()}: pass --ckpt MODEL")


def choose_point(codec: Codec, point_json: str | None, bpp: float | None, h: int,
                 w: int) -> dict[str, Any]:
    """The operating point from `--point JSON` (checked by `codec.validate_point`), else
    nearest to `--bpp`, else the codec's highest-rate default point (the last of
    `operating_points()`)."""
    if point_json is not None:
        from gicl.arguments import parse_points

        return parse_points(point_json, "--point", one=True, example=codec.operating_points()[-1],
                            validate=codec.validate_point)[0]
    if bpp is not None:
        if not math.isfinite(bpp) or bpp <= 0:
            raise UserError(f"--bpp must be a positive finite number of bits per pixel, got {bpp}")
        return codec.point_for_bpp(bpp, h, w)
    return codec.operating_points()[-1]


def encode(model: Model, x: Tensor, point: dict[str, Any]) -> tuple[bytes, EncodedImage]:
    """Compress one (1, 3, H, W) image in [0, 1] into container bytes."""
    with torch.no_grad():
        encoded = model.codec.compress(x.to(model.codec.device_of()), point)
    return bitstream.write(encoded, model.fingerprint, model.codec.operating_points()), encoded


def decode(model: Model, data: bytes, stages: int | None = None,
           stream: bitstream.Stream | None = None) -> Decoded:
    """Decompress container bytes (or a progressive prefix), optionally only `stages` sections.

    `stream` may be passed when the caller already parsed `data`.
    """
    if stream is None:
        stream = bitstream.read(data)
    codec = model.codec
    if stages is not None:
        header = stream.header
        if not getattr(codec, "progressive", False):
            raise UserError(f"--stages: codec {codec.codec_id} is not progressive; "
                            "decode the whole stream")
        if not 1 <= stages <= header.sections_read:
            raise UserError(f"--stages {stages}: the stream holds {header.sections_read} "
                            f"section(s) of {header.sections_total}; pass 1..{header.sections_read}")
        stream = stream.prefix(stages)
    encoded = bitstream.bind(stream, codec, model.fingerprint)
    with torch.no_grad():
        x_hat = codec.decompress(encoded)
    return Decoded(x_hat, stream.header, stream.bytes_used)


def payload_bits(encoded: EncodedImage) -> int:
    """Bits of the sections' payloads alone (no container header or section fields)."""
    return 8 * sum(len(s) for s in encoded.sections)


def codec_from_checkpoint(path: str | Path, raw: bool = False) -> tuple[Codec, dict[str, Any]]:
    """The codec held by a runner's Lightning checkpoint, or by an existing model file.

    A checkpoint holds `state_dict` (the codec's weights under `codec.`, the discriminator's
    and losses' under other prefixes, which are dropped) and `gicl = {"codec": <config>,
    "recipe": ..., "stage": ...}`. Returns the codec (CPU, eval mode) and the meta to store.
    With a model EMA in the checkpoint the codec holds the EMA parameters, unless `raw`.
    """
    from gicl.codecs.base import build_codec
    from gicl.model_file import read_codec_weights

    config, state, meta = read_codec_weights(path, raw)
    codec = build_codec(config)
    try:
        codec.load_state_dict(state)
    except RuntimeError as e:  # missing / unexpected keys or shapes: one line per problem
        problem = str(e).splitlines()[1].strip()
        raise UserError(f"{path}: the codec weights do not match codec config "
                        f"{config.get('name')} ({problem})") from None
    return codec.eval(), meta
