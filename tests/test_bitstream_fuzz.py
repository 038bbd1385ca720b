"""Seeded mutation fuzz of `.gic` files for every codec, through `codec_io.decode` (container
read, model binding, the codec's decoder): VQGAN, ProGIC and Control-GIC with tiny models.

Mutants of each codec's file: truncation at every byte, random bit flips, byte insertion and
deletion, whole sections reordered / duplicated / dropped / spliced from another file (as a
tool that reassembles sections would write them), header fields set to extremes (with and
without a recomputed header check), garbage behind the magic. Each must be refused with one
line (`BitstreamError`/`UserError`) — or decode, but only when it is a *legal* file: the
original, the donor file it was spliced with, or a whole-section prefix of one of them for a
progressive codec. Any other decode is a silent success.

"Sealed" mutants are written by `bitstream.write` itself around altered payloads, sizes,
points or section lists: valid containers by construction, so they reach the codecs'
entropy decoders and symbol checksums. They must decode or be refused the same way; they
are counted apart, never as silent successes.

Counted: crashes (any other exception, or a multi-line message), hangs (a decode over
`HANG_S`), silent successes. All must be 0. `GICL_FUZZ_MUTANTS` sets the random mutants per
codec (default 700: ≥ 2 000 per run with the truncations); `make fuzz` runs a longer campaign.
"""

from __future__ import annotations

import binascii
import faulthandler
import os
import random
import resource
import struct
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_bitstream import reassemble, records
from test_bitstream_progressive import TINY as VQGAN_TINY
from test_glc_fill import TINY as GLC_TINY
from test_glc_vqvae import TINY as GLC_VQVAE_TINY
from test_hvq_cgic import TINY as HVQ_CGIC_TINY
from test_hvq_progic import TINY as HVQ_PROGIC_TINY
from test_hvq_progic import TINY_VQGAN as HVQ_VQGAN_TINY

from gicl import bitstream
from gicl.codecs.base import build_codec
from gicl.errors import UserError
from gicl.evaluation import codec_io
from gicl.model_file import save_model_file

MUTANTS = int(os.environ.get("GICL_FUZZ_MUTANTS", "700"))
HANG_S = 10.0  # one decode of these tiny models takes milliseconds
FIXTURES = Path(__file__).parent / "fixtures" / "bitstream_v1"
CONTROLGIC_TINY = {"name": "controlgic", "ch": 32, "ch_mult": [1, 1, 1, 1, 1],
                   "num_res_blocks": 1, "n_embed": 64, "resolution": 64, "attn_resolutions": [8]}
SIDES = [0, 1, bitstream.MAX_SIDE, bitstream.MAX_SIDE + 1, (1 << 35) - 1]


def model(tmp: Path, name: str) -> codec_io.Model:
    if name == "progic":  # the 3-stage, 16-codeword ProGIC of the v1 fixture
        return codec_io.load_model(FIXTURES / "progic-tiny.pt")
    torch.manual_seed(0)
    coder = {"entropy_coder": "range"} if name == "controlgic-range" else {}
    named = {"vqgan": {"name": "vqgan", **VQGAN_TINY}, "glc": GLC_TINY, "hvq_cgic": HVQ_CGIC_TINY,
             "glc_vqvae": GLC_VQVAE_TINY, "hvq_progic": HVQ_PROGIC_TINY,
             "hvq_vqgan": HVQ_VQGAN_TINY}
    codec = build_codec(named.get(name) or {**CONTROLGIC_TINY, **coder})
    if name.startswith("controlgic"):  # a skewed entropy table, zeros included
        table = torch.rand(64, generator=torch.Generator().manual_seed(1)) ** 4 * 1000
        codec.index_frequencies.copy_(table.long())
    save_model_file(codec, tmp / f"{name}.pt")
    return codec_io.load_model(tmp / f"{name}.pt")


def image(seed: int, h: int, w: int) -> torch.Tensor:
    """Smooth gradients plus noise: non-trivial indices, rates and masks."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, h)[:, None] * torch.linspace(0, 1, w)[None, :]
    return (0.6 * ramp + 0.4 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


def legal_files(m: codec_io.Model, data: bytes) -> set[bytes]:
    """The file, and for a progressive codec every prefix of whole sections (≥ 1)."""
    if not m.codec.progressive:
        return {data}
    return {data[:end] for end in bitstream.read(data).ends}


def seal_head(head: bytes) -> bytes:
    return head[:-2] + struct.pack(">H", binascii.crc_hqx(head[:-2], 0))


def header_extreme(rng: random.Random, data: bytes) -> bytes:
    """One header field (version, n, H, W, point, S) at an extreme value, the rest intact;
    the header check recomputed half the time (the section checks then still object)."""
    stream = bitstream.read(data)
    h = stream.header
    fields = {"h": bitstream.varint(h.size[0]), "w": bitstream.varint(h.size[1]),
              "p": bitstream.varint(h.point_index + 1), "s": bitstream.varint(h.sections_total)}
    version, field = 2, rng.choice(["version", "n", "h", "w", "p", "json", "s"])
    if field == "version":
        version = rng.choice([0, 1, 3, 255])
    elif field in ("h", "w"):
        fields[field] = bitstream.varint(rng.choice(SIDES))
    elif field == "p":
        fields["p"] = bitstream.varint(rng.choice([2, 255, (1 << 35) - 1]))
    elif field == "json":
        raw = rng.choice([b"{}", b"[]", b"null", b'{"a":', rng.randbytes(rng.randrange(40))])
        fields["p"] = b"\x00" + bitstream.varint(rng.choice([len(raw), (1 << 35) - 1])) + raw
    elif field == "s":
        fields["s"] = bitstream.varint(rng.choice([0, 1, 2, 5, (1 << 35) - 1]))
    body = bytes.fromhex(h.model_id) + b"".join(fields.values())
    n = len(body) if field != "n" else rng.choice([0, len(body) - 1, len(body) + 1, 1 << 30])
    head = b"GICL" + bytes([version]) + bitstream.varint(n) + body + stream.head[-2:]
    return (seal_head(head) if rng.random() < 0.5 else head) + data[h.header_bytes:]


def sealed(rng: random.Random, m: codec_io.Model, data: bytes) -> bytes:
    """A valid container, written by the writer, around altered content."""
    stream = bitstream.read(data)
    enc = bitstream.bind(stream, m.codec, m.fingerprint)
    kind = rng.randrange(4)
    if kind == 0:  # payload bytes replaced, symbol checksums kept
        sections = [bytearray(s) for s in enc.sections]
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(sections))
            if sections[i]:
                sections[i][rng.randrange(len(sections[i]))] = rng.randrange(256)
        enc = replace(enc, sections=[bytes(s) for s in sections])
    elif kind == 1:  # any valid size
        enc = replace(enc, size=(rng.choice(SIDES[1:3] + [rng.randint(1, 99)]),
                                 rng.choice(SIDES[1:3] + [rng.randint(1, 99)])))
    elif kind == 2:  # sections dropped or repeated, with their checksums
        order = [rng.randrange(len(enc.sections)) for _ in range(rng.randint(1, 5))]
        enc = replace(enc, sections=[enc.sections[i] for i in order],
                      checksums=[enc.checksums[i] for i in order])
    else:  # an operating point no codec table holds
        enc = replace(enc, point=rng.choice([{"stages": 99}, {"ratios": [1e308, -1, 0]},
                                             {"x": "y" * 50}]))
    return bitstream.write(enc, m.fingerprint, m.codec.operating_points())


def mutate(rng: random.Random, data: bytes, donors: list[bytes]) -> tuple[str, bytes]:
    kind = rng.choice(["flip", "insert", "delete", "sections", "splice", "header", "garbage"])
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "insert":
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == "delete":
        at = rng.randrange(len(out))
        del out[at:at + rng.randint(1, 16)]
    elif kind == "sections":  # reorder, duplicate or drop whole sections
        head, recs = records(data)
        order = [rng.randrange(len(recs)) for _ in range(rng.randint(1, len(recs) + 2))]
        out = bytearray(reassemble(head, [recs[i] for i in order]))
    elif kind == "splice":  # one section from another file of the same model
        head, recs = records(data)
        other = records(rng.choice(donors))[1]
        i = rng.randrange(len(recs))
        recs[i] = other[min(i, len(other) - 1)]
        out = bytearray(reassemble(head, recs))
    elif kind == "header":
        out = bytearray(header_extreme(rng, data))
    else:
        out = bytearray(data[:5] + rng.randbytes(rng.randrange(200)))
    return kind, bytes(out)


def attempt(m: codec_io.Model, mutant: bytes, counts: Counter, crashes: list[str]) -> bool:
    """Decode one mutant; True when it decoded. Counts refusals, crashes and hangs."""
    start = time.perf_counter()
    try:
        decoded = codec_io.decode(m, mutant)
    except UserError as e:  # BitstreamError included
        counts["refused"] += 1
        if "\n" in str(e):
            crashes.append(f"multi-line message: {e!r}")
        return False
    except Exception as e:  # noqa: BLE001 - any other exception is the finding
        crashes.append(f"{type(e).__name__}: {e}")
        return False
    finally:
        if time.perf_counter() - start > HANG_S:
            counts["hangs"] += 1
    assert tuple(decoded.x_hat.shape) == (1, 3, *decoded.header.size)
    return True


@pytest.fixture
def one_thread():
    """Tiny decodes run fastest on one thread, above all on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_mutated_streams_are_refused_or_legal_for_every_codec(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    sizes = {"vqgan": (16, 16), "progic": (32, 32), "controlgic": (32, 32), "glc": (64, 64),
             "hvq_cgic": (32, 32), "glc_vqvae": (16, 16), "hvq_progic": (32, 32),
             "hvq_vqgan": (16, 16)}
    totals: Counter = Counter()
    crashes: list[str] = []
    slowest = 0.0
    rss_before = None
    faulthandler.dump_traceback_later(max(600, MUTANTS), exit=True)
    try:
        for name, (h, w) in sizes.items():
            m = model(tmp_path, name)
            point = m.codec.operating_points()[-1]  # every section in use
            data = codec_io.encode(m, image(0, h, w), point)[0]
            donors = [codec_io.encode(m, image(1, h, w), point)[0],  # the same header
                      codec_io.encode(m, image(2, h + 16, w), point)[0]]
            legal = legal_files(m, data) | set().union(*(legal_files(m, d) for d in donors))
            codec_io.decode(m, data)  # warm-up: the baseline for the memory bound
            rss_before = rss_before or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rng = random.Random(f"gicl-fuzz-{name}")
            counts: Counter = Counter()
            mutants = [("truncate", data[:cut]) for cut in range(len(data))]
            mutants += [("sealed", sealed(rng, m, data)) if rng.random() < 0.06
                        else mutate(rng, data, donors) for _ in range(MUTANTS)]
            for kind, mutant in mutants:
                counts[kind] += 1
                start = time.perf_counter()
                if attempt(m, mutant, counts, crashes):
                    if kind == "sealed":
                        counts["sealed decoded"] += 1
                    elif mutant in legal:
                        counts["legal"] += 1
                        counts[f"legal {kind}"] += 1
                    else:
                        counts["silent"] += 1
                        crashes.append(f"silent success ({name}, {kind}): {mutant.hex()}")
                slowest = max(slowest, time.perf_counter() - start)
            print(f"\n{name} ({len(data)} bytes): {dict(counts)}")
            totals.update(counts)
            if m.codec.progressive:  # every cut at a section boundary decoded
                assert counts["legal"] >= len(legal_files(m, data)) - 1
    finally:
        faulthandler.cancel_dump_traceback_later()
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    kinds = ["truncate", "flip", "insert", "delete", "sections", "splice", "header", "garbage",
             "sealed"]
    mutants = sum(totals[k] for k in kinds)
    print(f"fuzz: {mutants} mutants, refused {totals['refused']}, legal {totals['legal']}, "
          f"sealed decoded {totals['sealed decoded']} of {totals['sealed']}; crashes "
          f"{len(crashes) - totals['silent']}, hangs {totals['hangs']}, silent successes "
          f"{totals['silent']}; slowest {slowest * 1e3:.0f} ms, peak RSS +{growth_mib:.0f} MiB")
    assert crashes == [], crashes[:5]
    assert totals["hangs"] == 0
    assert all(totals[k] for k in kinds), totals
    assert mutants >= min(2000, 3 * MUTANTS)
    assert growth_mib < 256


@pytest.mark.parametrize("name", ["vqgan", "progic", "controlgic", "controlgic-range", "glc",
                                  "glc_vqvae", "hvq_cgic", "hvq_progic", "hvq_vqgan"])
def test_every_section_type_refuses_trailing_bytes(tmp_path, monkeypatch, one_thread, name):
    """Fixed-length (VQGAN, ProGIC, the Control-GIC masks), Huffman, range-coded and HyperVQ
    (rANS hyper-latents, range-coded indices) sections, empty ones included, each with 4 extra
    bytes in an otherwise valid container."""
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    m = model(tmp_path, name)
    point = m.codec.operating_points()[0]  # Control-GIC: the medium/fine sections are empty
    enc = m.codec.compress(image(0, 32, 32), point)
    if name.startswith("controlgic"):
        assert not all(enc.sections)  # the empty-section case is exercised
    if name == "hvq_cgic":
        assert b"\0" in enc.sections  # a branch without tokens: empty hyper and index streams
    codec_io.decode(m, bitstream.write(enc, m.fingerprint, m.codec.operating_points()))
    for i in range(len(enc.sections)):
        sections = [s + bytes(4) if j == i else s for j, s in enumerate(enc.sections)]
        data = bitstream.write(replace(enc, sections=sections), m.fingerprint,
                               m.codec.operating_points())
        with pytest.raises(UserError, match="trailing"):
            codec_io.decode(m, data)
