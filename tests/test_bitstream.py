"""The .gic container: layout, round trip, every cut point, every single-bit flip, refusals."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import pytest

from gicl import bitstream
from gicl.codecs.base import EncodedImage
from gicl.errors import BitstreamError

FP = "0123456789abcdef0123456789abcdef"


def encoded(sections=(b"abc", b"", b"\x00\xff" * 5)) -> EncodedImage:
    return EncodedImage(sections=list(sections), checksums=[7, 0xFFFFFFFF, 123456][:len(sections)],
                        point={"stages": 3, "ratio": [0.5, 0.25]}, size=(37, 1001))


def test_round_trip_keeps_every_field():
    enc = encoded()
    header, back = bitstream.read(bitstream.write(enc, FP, "progic"))
    assert back == enc
    assert (header.codec_id, header.fingerprint, header.size, header.version) == (
        "progic", FP, (37, 1001), 1)
    assert header.sections_total == header.sections_read == 3 and header.complete


def test_layout_matches_the_documented_offsets():
    data = bitstream.write(encoded(), FP, "progic")
    n = len("progic")
    point = b'{"ratio":[0.5,0.25],"stages":3}'
    m = len(point)
    assert data[:4] == b"GICL" and data[4] == 1 and data[5] == n and data[6:6 + n] == b"progic"
    assert data[6 + n:22 + n] == bytes.fromhex(FP)
    assert struct.unpack(">IIH", data[22 + n:32 + n]) == (37, 1001, m)
    assert data[32 + n:32 + n + m] == point
    assert struct.unpack(">H", data[32 + n + m:34 + n + m]) == (3,)
    end = 38 + n + m
    assert struct.unpack(">I", data[end - 4:end])[0] == zlib.crc32(data[:end - 4])
    length, checksum, crc = struct.unpack(">III", data[end:end + 12])
    assert (length, checksum) == (3, 7) and data[end + 12:end + 15] == b"abc"
    assert crc == zlib.crc32(data[end:end + 8] + b"abc")
    total = end + sum(bitstream.SECTION_FIELDS + len(s) for s in encoded().sections)
    assert len(data) == total and bitstream.read(data)[0].header_bytes == end


def test_every_cut_point_is_a_prefix_at_section_ends_and_an_error_elsewhere():
    enc = encoded()
    data = bitstream.write(enc, FP, "progic")
    header_bytes = bitstream.read(data)[0].header_bytes
    boundaries = {header_bytes}
    for s in enc.sections:
        boundaries.add(max(boundaries) + bitstream.SECTION_FIELDS + len(s))
    for cut in range(len(data)):
        if cut in boundaries:
            header, back = bitstream.read(data[:cut])
            k = sorted(boundaries).index(cut)
            assert header.sections_read == k and not header.complete
            assert back.sections == enc.sections[:k] and back.checksums == enc.checksums[:k]
        else:
            with pytest.raises(BitstreamError, match="truncated|bad magic"):
                bitstream.read(data[:cut])


def test_every_single_bit_flip_is_an_error():
    data = bitstream.write(encoded(), FP, "vqgan")
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BitstreamError):
            bitstream.read(bytes(flipped))


def test_section_corruption_is_named_as_a_checksum_failure():
    data = bytearray(bitstream.write(encoded(), FP, "vqgan"))
    data[-1] ^= 0x10
    with pytest.raises(BitstreamError, match="section 2 fails its CRC"):
        bitstream.read(bytes(data))


def test_unsupported_version_garbage_and_trailing_bytes():
    data = bitstream.write(encoded(), FP, "vqgan")
    with pytest.raises(BitstreamError, match="version 2 is not supported"):
        bitstream.read(data[:4] + b"\x02" + data[5:])
    with pytest.raises(BitstreamError, match="not a gicl bitstream"):
        bitstream.read(b"\x89PNG\r\n\x1a\n" + data)
    with pytest.raises(BitstreamError, match="follow the last of 3 sections"):
        bitstream.read(data + b"\x00")
    with pytest.raises(BitstreamError, match="bad magic"):
        bitstream.read(b"")


def test_check_decodable_refuses_other_models_and_prefixes_of_non_progressive_codecs():
    data = bitstream.write(encoded(), FP, "vqgan")
    full, _ = bitstream.read(data)
    prefix, _ = bitstream.read(data[:full.header_bytes + 15])
    empty, _ = bitstream.read(data[:full.header_bytes])
    plain = SimpleNamespace(codec_id="vqgan")
    progressive = SimpleNamespace(codec_id="vqgan", progressive=True)
    bitstream.check_decodable(full, plain, FP)
    bitstream.check_decodable(prefix, progressive, FP)
    with pytest.raises(BitstreamError, match="1 of 3 sections.*cannot decode a prefix"):
        bitstream.check_decodable(prefix, plain, FP)
    with pytest.raises(BitstreamError, match="no section"):
        bitstream.check_decodable(empty, progressive, FP)
    other = "f" * 32
    with pytest.raises(BitstreamError, match=f"model {FP} \\(codec vqgan\\).*{other} \\(codec progic"):
        bitstream.check_decodable(full, SimpleNamespace(codec_id="progic"), other)


def test_header_size_is_bounded():
    with pytest.raises(ValueError, match="outside"):
        bitstream.write(EncodedImage([b""], [0], {}, (bitstream.MAX_SIDE + 1, 4)), FP, "vqgan")
