"""The codec boundary: pure PyTorch modules that every training module and tool talks to.

A codec knows its model and its bitstream, nothing about Lightning. Training modules read
`CodecOutput` (reconstruction, rate per stream, auxiliary losses, extras); tools call
`compress` / `decompress`, which must reproduce `forward(x, point).x_hat` exactly.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.registry import CODECS, signature_keywords


@dataclass
class CodecOutput:
    """What a codec's forward pass returns.

    rate: bits per image (shape (B,)) by stream name; differentiable where the codec trains
    its rate, otherwise the exact length of what `compress` would write for that stream.
    losses: auxiliary training terms owned by the model (codebook, commitment), scalars.

    Typed fields that training modules and callbacks read (None when the codec has none):
    stage_reconstructions: x̂₁..x̂_k of a progressive codec, decoded from one encoder pass.
    stage_losses: the vq loss of each quantizer stage (residual VQ), in stage order.
    index_counts: (K,) how many coded tokens used each codeword in this batch.

    extras: anything else (indices, masks, quantizers) for inspection and tests.
    """

    x_hat: Tensor
    rate: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    stage_reconstructions: list[Tensor] | None = None
    stage_losses: list[Tensor] | None = None
    index_counts: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def bits(self) -> Tensor:
        """Total bits per image over all streams, shape (B,)."""
        return sum(self.rate.values(), torch.zeros(self.x_hat.shape[0], device=self.x_hat.device))


@dataclass
class EncodedImage:
    """One image's compressed form before it is put in a container.

    sections are independently length-prefixed by the container so that a progressive
    stream can be cut at any section boundary; `checksums` hold one 16-bit checksum of the
    *decoded symbols* per section (see `symbols_checksum`) so an entropy-coder desync is an
    error.
    """

    sections: list[bytes]
    checksums: list[int]
    point: dict[str, Any]
    size: tuple[int, int]


def symbols_checksum(symbols: Tensor) -> int:
    """Low 16 bits of the CRC-32 of integer symbols as little-endian int32: identical on
    every machine. 16 bits suffice because the container's CRC-32 has already vouched for
    the bytes; this judges only a decoder desync (width argued in `gicl.bitstream`)."""
    data = symbols.detach().to("cpu", torch.int32).contiguous().numpy().astype("<i4").tobytes()
    return zlib.crc32(data) & 0xFFFF


def verify_symbols(symbols: Tensor, expected: int, section: int) -> None:
    """Raise BitstreamError when decoded symbols do not match the encoder's checksum."""
    if symbols_checksum(symbols) != expected:
        raise BitstreamError(
            f"section {section} decodes to symbols whose checksum differs from the encoder's: "
            "the file is corrupted or was written by another model"
        )


def _non_finite(value: Any) -> float | None:
    """The first NaN or ±inf inside a JSON-like value (dicts, lists, numbers), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        bad = _non_finite(item)
        if bad is not None:
            return bad
    return None


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad H and W up to a multiple (replicate works for any pad size)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


class Codec(nn.Module):
    """Base class of every codec: a pure `nn.Module` (no Lightning, no training code).

    Subclasses set `codec_id` (registered name), `multiple` (padding granularity) and
    implement `forward`, `operating_points`, `compress`, `decompress`; `forward(x, point)`
    and `decompress(compress(x, point))` must give the same x̂. Optional: `aux_loss` and
    `aux_parameters` (a learned entropy model's own objective), `update` (build tables
    from the weights before they are saved).
    """

    codec_id: ClassVar[str] = ""
    multiple: ClassVar[int] = 16
    progressive: ClassVar[bool] = False  # True: any prefix of whole sections decodes

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        raise NotImplementedError

    def operating_points(self) -> list[dict[str, Any]]:
        """The default RD sweep, low rate first."""
        raise NotImplementedError

    def validate_point(self, point: Any) -> dict[str, Any]:
        """`point` if it is a valid operating point of this codec, else a one-line UserError.

        Every operating point a user gives (`compress --point`, `eval --points`, a stage's
        `train_point`) passes here before it reaches the model or a file header: a JSON
        object, only finite numbers (a NaN or inf would also make the header's JSON
        non-standard), and the codec's own keys and ranges (`check_point`)."""
        if not isinstance(point, dict):
            raise UserError(f"an operating point must be a JSON object such as "
                            f"{json.dumps(self.operating_points()[-1])}, got {point!r}")
        bad = _non_finite(point)
        if bad is not None:
            raise UserError(f"operating point {point!r} holds the non-finite number {bad}; "
                            f"valid points look like {json.dumps(self.operating_points()[-1])}")
        self.check_point(point)
        return point

    def check_point(self, point: dict[str, Any]) -> None:
        """Codec-specific rules (UserError naming the valid keys and ranges). The default
        accepts exactly the points of `operating_points()`."""
        points = self.operating_points()
        known = sorted({key for p in points for key in p})
        unknown = sorted(set(point) - set(known))
        if unknown:
            raise UserError(f"unknown key '{unknown[0]}' in a {self.codec_id} operating point "
                            f"(known: {', '.join(known) or 'none'}; valid points: "
                            f"{json.dumps(points)})")
        if point not in points:
            raise UserError(f"{json.dumps(point)} is not an operating point of {self.codec_id}; "
                            f"valid points: {json.dumps(points)}")

    def point_for_bpp(self, bpp: float, h: int, w: int) -> dict[str, Any]:
        """The operating point whose rate is nearest to `bpp` for an h×w image.

        The default estimates each point's rate from a forward pass on a flat grey image,
        which is exact for fixed-length codecs; entropy-coded codecs override it.
        """
        x = torch.full((1, 3, h, w), 0.5, device=self.device_of())
        with torch.no_grad():
            rates = [float(self(x, p).bits()[0]) / (h * w) for p in self.operating_points()]
        best = min(range(len(rates)), key=lambda i: abs(rates[i] - bpp))
        return self.operating_points()[best]

    def estimate_bpp(self, point: dict[str, Any], h: int, w: int) -> float | None:
        """The payload bpp the codec's rate control expects for an h×w image at `point`,
        known before encoding (`gicl compress --bpp` prints it beside the real payload);
        None for codecs without such an estimate."""
        return None

    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        raise NotImplementedError

    def decompress(self, encoded: EncodedImage) -> Tensor:
        raise NotImplementedError

    def last_decoder_layer(self) -> Tensor:
        """The weight the adaptive GAN weight differentiates against (taming)."""
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, nn.Module]:
        """Named groups a recipe can freeze or train, e.g. encoder, decoder, quantizer."""
        return dict(self.named_children())

    def device_of(self) -> torch.device:
        return next(self.parameters()).device

    def aux_parameters(self) -> list[nn.Parameter]:
        """Parameters trained only by `aux_loss` (e.g. CompressAI EntropyBottleneck
        `quantiles`), stepped by the stage's `aux` optimizer and left out of the others."""
        return []

    def aux_loss(self) -> Tensor | None:
        """The objective of `aux_parameters` (CompressAI: `EntropyBottleneck.loss()`), or None."""
        return None

    def for_inference(self) -> Codec:
        """This codec as a shipped model file holds it: without the parts only training
        uses (GLC's code predictors and VQ-VAE codebook). `gicl export` uses it; stage
        hand-over files (`final.pt`) keep everything. Default: itself."""
        return self

    @classmethod
    def inference_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The recipe config of `for_inference`'s codec (GLC: `training_parts: false`), so
        that the benchmarks build what a model file rebuilds, without first allocating (and
        leaving in the heap) the training-only parts. Default: the config itself."""
        return config

    def update(self) -> None:
        """Build what coding needs from the current weights (e.g. CDF tables of a learned
        entropy model) into persistent buffers. Called before every model file is written
        and after one is loaded, so the tables travel with the weights. Default: nothing."""


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec buildable from a recipe by its `codec_id`."""
    return CODECS.register(cls.codec_id, cls)


def build_codec(config: dict[str, Any], where: str = "codec") -> Codec:
    """Build a codec from its recipe section: `{"name": <codec_id>, **constructor kwargs}`."""
    config = dict(config)
    name = config.pop("name", None)
    cls = CODECS.load(name, f"{where}.name")
    accepted = signature_keywords(cls)
    for key in config if accepted is not None else ():
        if key not in accepted:
            raise RecipeError(f"unknown key '{where}.{key}' (known: {', '.join(sorted(accepted))})")
    codec = cls(**config)
    codec.config = {"name": name, **config}
    return codec


def build_inference_codec(config: dict[str, Any]) -> Codec:
    """A codec as a shipped model file rebuilds it (random weights): what the benchmarks
    time and measure."""
    return build_codec(CODECS.load(config.get("name"), "codec.name").inference_config(config))


def validate_codec_config(config: Any, source: str) -> None:
    """A codec config read from a file (`init:` of a stage), checked as a recipe's is: a
    registered codec, known keys, finite numbers, values its constructor accepts. The codec
    is built on the meta device, so no weights are allocated; weights are checked (names and
    shapes) when they are loaded into the stage's codec."""
    if not isinstance(config, dict):
        raise UserError(f"{source}: the stored codec config is not a mapping ({config!r})")
    bad = _non_finite(config)
    if bad is not None:
        raise UserError(f"{source}: the stored codec config holds the non-finite number {bad}")
    try:
        with torch.device("meta"):
            build_codec(config)
    except RecipeError as e:
        raise UserError(f"{source}: the stored codec config is invalid: {e}") from None
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:
        raise UserError(f"{source}: the stored codec config cannot build a codec "
                        f"({type(e).__name__}: {e})") from None
