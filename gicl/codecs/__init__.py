"""Codecs: pure nn.Modules with forward / compress / decompress (no Lightning).

Built-in codecs are registered by name in `gicl.registry` (`CODECS`) and decorated with
`@register_codec`; importing this package imports them all.
"""

from gicl.codecs import controlgic, glc, progic, vqgan  # noqa: F401  (registers)
from gicl.codecs.base import Codec, CodecOutput, EncodedImage, build_codec, build_inference_codec
from gicl.registry import CODECS

__all__ = ["CODECS", "Codec", "CodecOutput", "EncodedImage", "build_codec", "build_inference_codec"]
