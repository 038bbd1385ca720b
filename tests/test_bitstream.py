"""The .gic container v2: layout byte for byte, overhead, every cut point, every single-bit
flip, reordered/duplicated/spliced sections, version and header refusals, v1 files."""

from __future__ import annotations

import binascii
import itertools
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gicl import bitstream
from gicl.codecs.base import EncodedImage
from gicl.errors import BitstreamError
from gicl.evaluation import codec_io
from gicl.images import read_image

FP = "0123456789abcdef0123456789abcdef"
POINTS = [{"stages": 1}, {"stages": 2}, {"stages": 3}]
FIXTURES = Path(__file__).parent / "fixtures" / "bitstream_v1"


def codec(progressive: bool = True, points=POINTS) -> SimpleNamespace:
    """What `bind` asks of a codec: its id, whether prefixes decode, its point table."""
    return SimpleNamespace(codec_id="progic", progressive=progressive,
                           operating_points=lambda: points)


def encoded(sections=(b"abc", b"", b"\x00\xff" * 5), point=None, size=(37, 1001)):
    return EncodedImage(sections=list(sections), checksums=[7, 0xFFFF, 12345][:len(sections)],
                        point=point or {"stages": 3}, size=size)


def decode(data: bytes, c=None) -> EncodedImage:
    return bitstream.bind(bitstream.read(data), c or codec(), FP)


def test_layout_byte_for_byte():
    enc = encoded()
    data = bitstream.write(enc, FP, POINTS)
    fields = bytes.fromhex(FP)[:8] + bytes([37, 0xE9, 0x07, 3, 3])  # H, W=1001, p=2+1, S
    head = b"GICL\x02" + bytes([len(fields)]) + fields
    head += struct.pack(">H", binascii.crc_hqx(head, 0))
    crc = zlib.crc32(b'{"stages":3}', zlib.crc32(head))
    expected = [head]
    for i, (payload, checksum) in enumerate(zip(enc.sections, enc.checksums, strict=True)):
        crc = zlib.crc32(bytes([i, len(payload)]) + struct.pack(">H", checksum) + payload, crc)
        length = bytes([len(payload)]) if i < 2 else b""
        expected.append(length + struct.pack(">IH", crc, checksum) + payload)
    assert data == b"".join(expected)
    stream = bitstream.read(data)
    assert stream.header == bitstream.Header(2, FP[:16], (37, 1001), None, 2, 3, 3, len(head))
    assert stream.ends == [len(head) + 10, len(head) + 17, len(data)]
    assert decode(data) == enc


def test_point_outside_the_table_travels_as_json():
    enc = encoded(point={"ratios": [0.5, 0.25, 0.25]})
    stream = bitstream.read(bitstream.write(enc, FP, POINTS))
    assert (stream.header.point, stream.header.point_index) == (enc.point, None)
    assert bitstream.bind(stream, codec(), FP) == enc


def test_overhead_one_section_28_bytes_each_further_8_at_768x512():
    """Done-when: one section ≤ 28 bytes, each further ≤ 8 (version 1: 68 and 12)."""
    stage = bytes(1920)  # ProGIC stage 1 at 768×512: 10 bits × 48·32 latents
    for s in range(1, 6):
        enc = EncodedImage([stage] * s, [0] * s, {"stages": s}, (512, 768))
        data = bitstream.write(enc, FP, [{"stages": k} for k in range(1, 6)])
        assert len(data) - s * len(stage) == 28 + 8 * (s - 1)


def test_every_cut_is_a_prefix_at_a_section_boundary_or_refused():
    data = bitstream.write(encoded(), FP, POINTS)
    stream = bitstream.read(data)
    boundaries = [stream.header.header_bytes, *stream.ends[:-1]]
    for cut in range(len(data)):
        try:
            part = bitstream.read(data[:cut])
            back = bitstream.bind(part, codec(), FP)
        except BitstreamError as e:
            assert cut not in boundaries[1:], (cut, e)
            assert "truncated" in str(e) or "bad magic" in str(e), (cut, e)
            continue
        k = boundaries.index(cut)
        assert part.header.sections_read == k and not part.header.complete
        assert back.sections == encoded().sections[:k]
        with pytest.raises(BitstreamError, match="cannot decode a prefix"):
            bitstream.bind(part, codec(progressive=False), FP)


def test_every_single_bit_flip_is_refused_and_header_flips_before_the_version():
    data = bitstream.write(encoded(), FP, POINTS)
    header_bytes = bitstream.read(data).header.header_bytes
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BitstreamError) as e:
            decode(bytes(flipped))
        if 4 <= bit // 8 < header_bytes:  # CRC-16 sees every burst ≤ 16 bits, n the rest
            assert "header" in str(e.value) and "corrupted" in str(e.value), bit
        elif bit // 8 >= header_bytes:
            assert "section" in str(e.value), bit


def test_version_is_read_only_from_a_sound_header():
    data = bytearray(bitstream.write(encoded(), FP, POINTS))
    for version in (0, 3, 255):
        data[4] = version
        with pytest.raises(BitstreamError, match="header fails its check: the file is corrupted"):
            bitstream.read(bytes(data))
        end = bitstream.read(bitstream.write(encoded(), FP, POINTS)).header.header_bytes
        data[end - 2:end] = struct.pack(">H", binascii.crc_hqx(bytes(data[:end - 2]), 0))
        with pytest.raises(BitstreamError, match=f"format version {version} is not supported"):
            bitstream.read(bytes(data))


def records(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Split a v2 file into its head and per section (check + symbol checksum, payload)."""
    stream = bitstream.read(data)
    return stream.head, [(data[end - len(p) - 6:end - len(p)], p)
                         for end, p in zip(stream.ends, stream.sections, strict=True)]


def reassemble(head: bytes, recs: list[tuple[bytes, bytes]]) -> bytes:
    """What a tool that shuffles whole sections writes: each keeps its stored fields, and
    lengths are re-framed (every section but the last carries one)."""
    last = len(recs) - 1
    return head + b"".join((bitstream.varint(len(p)) if i < last else b"") + f + p
                           for i, (f, p) in enumerate(recs))


def test_reordered_duplicated_and_spliced_sections_are_refused():
    sections = [b"abc", b"defg", b"\x00\xff" * 5]
    data = bitstream.write(encoded(sections), FP, POINTS)
    other = bitstream.write(EncodedImage([b"xyz", b"defg", b"\x01\xff" * 5], [7, 0xFFFF, 999],
                                         {"stages": 3}, (37, 1001)), FP, POINTS)
    head, recs = records(data)
    _, other_recs = records(other)
    assert reassemble(head, recs) == data  # the tool itself is faithful
    mutants = [reassemble(head, list(p)) for p in itertools.permutations(recs)][1:]
    mutants += [reassemble(head, [recs[i], recs[i], *recs[i + 1:]][:3]) for i in range(2)]
    mutants += [reassemble(head, [*recs[:i], other_recs[i], *recs[i + 1:]]) for i in range(3)]
    mutants += [reassemble(head, recs[:1] + other_recs[1:])]  # same payload, other file
    for mutant in mutants:
        with pytest.raises(BitstreamError, match="fails its check"):
            decode(mutant)


def test_trailing_bytes_and_junk_are_refused():
    data = bitstream.write(encoded(), FP, POINTS)
    for bad in (data + b"\x00", data + data, b"\x89PNG\r\n\x1a\n" + data, b"", b"GICL"):
        with pytest.raises(BitstreamError):
            decode(bad)


def test_model_id_point_index_and_table_mismatches_are_refused():
    data = bitstream.write(encoded(), FP, POINTS)
    with pytest.raises(BitstreamError, match="written by model 0123456789abcdef"):
        bitstream.bind(bitstream.read(data), codec(), "f" * 32)
    with pytest.raises(BitstreamError, match="operating point #2 and the model has 2"):
        decode(data, codec(points=POINTS[:2]))
    with pytest.raises(BitstreamError, match="operating points differ"):
        decode(data, codec(points=[{"stages": 1}, {"stages": 2}, {"stages": 4}]))


def test_non_shortest_varint_is_refused():
    data = bytearray(bitstream.write(encoded(), FP, POINTS))
    fields = data[6:6 + data[5]]
    padded = fields[:8] + bytes([37 | 0x80, 0]) + fields[9:]  # H=37 in two bytes
    head = b"GICL\x02" + bytes([len(padded)]) + padded
    head += struct.pack(">H", binascii.crc_hqx(head, 0))
    with pytest.raises(BitstreamError, match="invalid number"):
        bitstream.read(head + data[8 + data[5]:])


def test_writer_refuses_what_the_reader_would():
    with pytest.raises(ValueError, match="outside"):
        bitstream.write(encoded(size=(bitstream.MAX_SIDE + 1, 4)), FP, POINTS)
    with pytest.raises(ValueError, match="16 bits"):
        bitstream.write(EncodedImage([b""], [1 << 16], {}, (4, 4)), FP, POINTS)
    with pytest.raises(ValueError, match="at least one section"):
        bitstream.write(EncodedImage([], [], {}, (4, 4)), FP, POINTS)


def test_version_1_file_from_the_old_writer_decodes(tmp_path, monkeypatch):
    """The fixture was written by the v1 container (gicl before v2) from source.png with the
    tiny ProGIC beside it; v2 decodes it to the image of a fresh v2 encode, in 46 of its 98
    bytes (v1: 56 header bytes + 12 per section)."""
    monkeypatch.setenv("GICL_CACHE", str(tmp_path))
    model = codec_io.load_model(FIXTURES / "progic-tiny.pt")
    v1 = (FIXTURES / "source-stages3.gic").read_bytes()
    stream = bitstream.read(v1)
    assert (stream.header.version, stream.header.codec_id, stream.header.point) == (
        1, "progic", {"stages": 3})
    assert stream.header.header_bytes == 56 and len(v1) == 56 + 3 * (12 + 2)
    v2, enc = codec_io.encode(model, read_image(FIXTURES / "source.png"), {"stages": 3})
    assert bitstream.read(v2).sections == stream.sections and len(v2) == 46
    assert torch.equal(codec_io.decode(model, v1).x_hat, codec_io.decode(model, v2).x_hat)
    assert codec_io.decode(model, v1, stages=2).bytes_used == 56 + 2 * 14
    damaged = bytearray(v1)
    damaged[-1] ^= 1
    with pytest.raises(BitstreamError, match="section 2 fails its CRC"):
        bitstream.read(bytes(damaged))
