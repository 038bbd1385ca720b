"""Codecs: pure nn.Modules with forward / compress / decompress (no Lightning)."""

from gicl.codecs import controlgic, glc, progic, vqgan  # noqa: F401  (registers)
from gicl.codecs.base import CODECS, Codec, CodecOutput, EncodedImage, build_codec

__all__ = ["CODECS", "Codec", "CodecOutput", "EncodedImage", "build_codec"]
