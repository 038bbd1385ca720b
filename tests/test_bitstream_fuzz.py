"""Mutation fuzzing of the container and the codecs' decoders, in-process.

2 400 mutated streams (truncations, bit flips, garbage, and mutations re-sealed with valid
CRCs so that they reach the codec's entropy decoding and symbol checksums) must each either
decode to an image of the header's size or raise BitstreamError: no other exception, no
hang (a watchdog kills the run after 120 s), no memory growth beyond 256 MiB of peak RSS.
"""

from __future__ import annotations

import faulthandler
import random
import resource
import struct
import time
import zlib

import pytest
from test_bitstream_progressive import BitPlaneVQ, tiny_model

from gicl import bitstream
from gicl.errors import BitstreamError
from gicl.evaluation import codec_io
from gicl.images import read_image


def reseal(data: bytearray, header_bytes: int) -> bytes:
    """Recompute the header CRC and every section CRC of a stream whose lengths are intact."""
    data[header_bytes - 4:header_bytes] = struct.pack(">I", zlib.crc32(data[:header_bytes - 4]))
    pos = header_bytes
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        data[pos + 8:pos + 12] = struct.pack(">I", zlib.crc32(data[pos:pos + 8] + data[pos + 12:end]))
        pos = end
    return bytes(data)


def mutate(rng: random.Random, data: bytes, header_bytes: int) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:  # truncation
        return data[:rng.randrange(len(data))]
    if kind == 1:  # random bit flips anywhere
        out = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 2:  # garbage, sometimes behind a valid magic and version
        garbage = rng.randbytes(rng.randrange(400))
        return (data[:5] + garbage) if rng.random() < 0.5 else garbage
    if kind == 3:  # payload bytes changed, CRCs recomputed: reaches the codec's decoder
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(header_bytes, len(out))] = rng.randrange(256)
        return reseal(out, header_bytes)
    if kind == 4:  # image size in the header changed, CRCs recomputed
        out = bytearray(data)
        n = out[5]
        h, w = rng.randint(1, bitstream.MAX_SIDE), rng.choice([rng.randint(1, 64), 1 << 16])
        out[22 + n:30 + n] = struct.pack(">II", h, w)
        return reseal(out, header_bytes)
    out = bytearray(data)  # operating point bytes replaced, CRCs recomputed
    n = out[5]
    m = struct.unpack(">H", out[30 + n:32 + n])[0]
    out[32 + n:32 + n + m] = bytes(rng.choice(b'{}[]":,0123456789ab ') for _ in range(m))
    return reseal(out, header_bytes)


@pytest.mark.parametrize("codec_id", ["vqgan", BitPlaneVQ.codec_id])
def test_mutated_streams_decode_or_raise_bitstream_error(tmp_path, kodak, monkeypatch, codec_id):
    from gicl.codecs.base import CODECS

    monkeypatch.setitem(CODECS, BitPlaneVQ.codec_id, BitPlaneVQ)
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    tiny_model(tmp_path / "m.pt", codec_id)
    model = codec_io.load_model(tmp_path / "m.pt")
    x = read_image(kodak / "kodim07.png")[..., 100:114, 200:216]
    data, _ = codec_io.encode(model, x, {})
    header_bytes = bitstream.read(data)[0].header_bytes
    codec_io.decode(model, data)  # warm-up: the baseline for the memory bound
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(f"fuzz-{codec_id}")
    outcomes = {"decoded": 0, "refused": 0}
    slowest = 0.0
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        for _ in range(1200):
            sample = mutate(rng, data, header_bytes)
            start = time.perf_counter()
            try:
                decoded = codec_io.decode(model, sample)
            except BitstreamError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
            else:
                assert tuple(decoded.x_hat.shape) == (1, 3, *decoded.header.size)
                outcomes["decoded"] += 1
            slowest = max(slowest, time.perf_counter() - start)
    finally:
        faulthandler.cancel_dump_traceback_later()
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"{codec_id}: {outcomes}, slowest {slowest * 1e3:.1f} ms, peak RSS +{growth_mib:.1f} MiB")
    assert outcomes["refused"] > 1000
    assert slowest < 10.0
    assert growth_mib < 256
