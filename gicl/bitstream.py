"""The `.gic` container: one compressed image, cut-able at section boundaries.

Version 2, the compact container (`docs/bitstream.md` has the rationale and figures).
Integers are unsigned LEB128 varints ("v": 7 bits per byte, low first, shortest form only)
unless a width is given; fixed-width integers are big-endian.

    size  field
    4     magic b"GICL"
    1     format version (2)
    v     n = number of header-field bytes that follow
    n     header fields:
            8  model id: the first 8 bytes of the model fingerprint (`gicl.model_file`)
            v  original height H          v  original width W
            v  p: k + 1 names `codec.operating_points()[k]`; 0 = the point follows as JSON:
               v  m, then m bytes of compact JSON (sorted keys, no spaces), UTF-8
            v  S = number of sections the encoder wrote
    2     header check: CRC-16/XMODEM (`binascii.crc_hqx`, initial value 0) of every byte above
    then for each section i < S:
    v     L = payload length; absent for the last section (i = S-1), whose payload runs to
          the end of the file (the file system already knows that length)
    4     section check: CRC-32 (`zlib.crc32`) of the *chain*
              header ‖ P ‖ r_0 ‖ … ‖ r_i,   r_j = v(j) ‖ v(L_j) ‖ c_j ‖ payload_j
          where header is every byte before section 0, P the point as compact JSON (the
          table entry when p > 0) and c_j the 2-byte symbol checksum below
    2     symbol checksum: low 16 bits of the CRC-32 of the decoded symbols
          (`gicl.codecs.base.symbols_checksum`), verified by the codec after decoding
    L     payload

One section costs 28 bytes at 768×512 (5 + 1 + 8 + 2 + 2 + 1 + 1 + 2 of header, 4 + 2 of
section fields), each further section 8 (when L < 16 384); version 1 spent 68 and 12.

What each check guarantees:
- header check, verified before the version is read: every frame since version 2 starts with
  magic, version and n, so any version's header can be checked; a damaged version byte (any
  burst of ≤ 16 bits) is reported as corruption, never as "unsupported version".
- section check, verified before any entropy decoder runs: damage (2⁻³² miss), and — since
  the chain runs through the header, the point and every earlier section and names the
  section's index — reordered, duplicated or spliced sections, a header whose damage
  slipped past its 16-bit check, and a model whose operating-point table differs from the
  writer's. Its value depends on the point table, so it is verified in `bind`, once the
  model is known.
- symbol checksum: an encoder/decoder desync (another machine's entropy model), which no
  byte check can see; bytes reaching it already passed the CRC-32, so it judges only
  decoders, whose desync is systematic (every file of that machine pair shows it) and
  whose symbols after a desync are effectively random: 16 bits miss one desynced section
  in 65 536, and a systematic desync goes unseen over n files with probability 2⁻¹⁶ⁿ.
- model id, 64 bits of the SHA-256 fingerprint: decoding with the wrong model is refused
  before anything is decoded; a given wrong model shares the id with probability 2⁻⁶⁴, and
  among a million models any two share one with probability 3·10⁻⁸.

Prefixes: the header carries S, so a stream that ends exactly after section k < S (the
sections before the last carry their length) is recognisably a prefix; `bind` accepts it
only for a codec whose `progressive` attribute is true (ProGIC: any prefix of whole stages
decodes). A cut anywhere else is refused: inside the header or a section's fields as
"truncated", inside the last section by its check ("damaged or truncated"). Trailing bytes
join the last section and fail its check.

Version 1 files (magic, version 1, codec id, 16-byte fingerprint, u32 H and W, JSON point,
u16 S, header CRC-32; per section u32 length, u32 symbol CRC-32, u32 CRC-32 of those and the
payload) are still read; their symbol CRC-32s are reduced to the 16 bits codecs now check.

Fuzz safety: parsing only slices `data` after checking each length against the bytes left,
never allocates by a count read from the stream, reads varints of at most 5 bytes, and
bounds H and W by `MAX_SIDE`; so the memory it uses is proportional to `len(data)`.
"""

from __future__ import annotations

import binascii
import json
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any

from gicl.codecs.base import EncodedImage
from gicl.errors import BitstreamError

MAGIC = b"GICL"
VERSION = 2
MODEL_ID_BYTES = 8
MAX_SIDE = 1 << 16  # a larger side is refused: the decoder's memory grows with H·W
SYMBOL_CHECKSUM_MASK = 0xFFFF
_VARINT_MAX_BYTES = 5  # 35 bits: far beyond any payload, keeps parsing bounded
_V1_FINGERPRINT_BYTES = 16
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    """The header's fields. `model_id` is hex: 8 bytes (v2) or the whole 16-byte fingerprint
    (v1). `point` is the JSON point when one was stored, else None and `point_index` names
    the model's table entry. `codec_id` is stored by v1 only."""

    version: int
    model_id: str
    size: tuple[int, int]
    point: dict[str, Any] | None
    point_index: int | None
    sections_total: int
    sections_read: int
    header_bytes: int
    codec_id: str | None = None

    @property
    def complete(self) -> bool:
        return self.sections_read == self.sections_total

    def names_model(self, fingerprint: str) -> bool:
        return fingerprint.startswith(self.model_id)


@dataclass(frozen=True)
class Stream:
    """A parsed container (or prefix): the header, the sections and what `bind` verifies.

    `ends[i]` is the byte offset where section i ends, so `ends[k - 1]` is the size of the
    k-section prefix; `checks` holds the stored v2 section checks (v1 verified its CRCs in
    `read` already, so it is empty there); `head` is every byte before section 0.
    """

    header: Header
    sections: list[bytes]
    checksums: list[int]
    ends: list[int]
    checks: list[int]
    head: bytes

    def prefix(self, k: int) -> Stream:
        """The first k sections, as if the file had been cut after section k - 1."""
        return replace(self, header=replace(self.header, sections_read=k),
                       sections=self.sections[:k], checksums=self.checksums[:k],
                       ends=self.ends[:k], checks=self.checks[:k])

    @property
    def bytes_used(self) -> int:
        return self.ends[-1] if self.ends else self.header.header_bytes


def canonical_json(point: dict[str, Any]) -> bytes:
    return json.dumps(point, sort_keys=True, separators=(",", ":")).encode()


def varint(n: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_prefixed(head: bytes, rest: bytes) -> bytes:
    """Two streams in one section: `head`'s length (varint), `head`, then `rest`."""
    return varint(len(head)) + head + rest


def split_length_prefixed(section: bytes, what: str) -> tuple[bytes, bytes]:
    """The inverse of `length_prefixed`; a section too short for its prefix raises
    BitstreamError naming `what`."""
    r = _Reader(section)
    head = r.take(r.varint(what), what)
    return head, section[r.pos:]


def _chain(crc: int, index: int, payload: bytes, checksum: int) -> int:
    """Extend the section-check chain by section `index` (see the module docstring)."""
    record = varint(index) + varint(len(payload)) + _U16.pack(checksum)
    return zlib.crc32(payload, zlib.crc32(record, crc))


def write(encoded: EncodedImage, fingerprint: str, points: list[dict[str, Any]]) -> bytes:
    """Serialize one encoded image; the inverse of `read` + `bind`.

    `points` is the codec's `operating_points()`: a point found there is stored as its index.
    """
    model_id = bytes.fromhex(fingerprint)[:MODEL_ID_BYTES]
    h, w = encoded.size
    if len(model_id) != MODEL_ID_BYTES:
        raise ValueError(f"fingerprint '{fingerprint}' is shorter than a model id")
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"image size {h}x{w} outside 1..{MAX_SIDE}")
    if not encoded.sections or len(encoded.sections) != len(encoded.checksums):
        raise ValueError("an image needs at least one section and one checksum per section")
    if any(not 0 <= c <= SYMBOL_CHECKSUM_MASK for c in encoded.checksums):
        raise ValueError("symbol checksums are 16 bits (gicl.codecs.base.symbols_checksum)")
    point = canonical_json(encoded.point)
    table = [canonical_json(p) for p in points]
    point_field = varint(table.index(point) + 1) if point in table else (
        varint(0) + varint(len(point)) + point)
    fields = model_id + varint(h) + varint(w) + point_field + varint(len(encoded.sections))
    head = MAGIC + bytes([VERSION]) + varint(len(fields)) + fields
    head += _U16.pack(binascii.crc_hqx(head, 0))
    parts, crc = [head], zlib.crc32(point, zlib.crc32(head))
    last = len(encoded.sections) - 1
    for i, (payload, checksum) in enumerate(zip(encoded.sections, encoded.checksums,
                                                strict=True)):
        crc = _chain(crc, i, payload, checksum)
        length = varint(len(payload)) if i < last else b""
        parts += [length, _U32.pack(crc), _U16.pack(checksum), payload]
    return b"".join(parts)


class _Reader:
    """Cursor over `data` that refuses to read past its end (the only way lengths are used)."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise BitstreamError(f"the file ends inside the {what}: it is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return _U16.unpack(self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 7 * _VARINT_MAX_BYTES, 7):
            byte = self.u8(what)
            if byte == 0 and shift:
                break  # a non-shortest encoding: no writer makes it
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise BitstreamError(f"the {what} holds an invalid number: the file is corrupted")


def read(data: bytes) -> Stream:
    """Parse a container (or a prefix of whole sections); raise BitstreamError otherwise.

    Checks everything that needs no model: magic, header check, version, layout, lengths.
    The v2 section checks need the model's point table and are verified by `bind`.
    """
    data = bytes(data)
    if data[:4] != MAGIC:
        raise BitstreamError("not a gicl bitstream (bad magic bytes): pass a file written by "
                             "`gicl compress`")
    if data[4:5] == b"\x01":
        return _read_v1(data)
    r = _Reader(data, 5)
    n = r.varint("header")
    if n + 2 > r.left():
        raise BitstreamError("the file ends inside the header: it is truncated, or the header "
                             "is corrupted")
    r.take(n, "header")
    head_end = r.pos
    if r.u16("header") != binascii.crc_hqx(data[:head_end], 0):
        raise BitstreamError("the header fails its check: the file is corrupted")
    version = data[4]
    if version != VERSION:
        raise BitstreamError(f"bitstream format version {version} is not supported (this gicl "
                             f"reads versions 1 and {VERSION}): decode it with a newer gicl")
    f = _Reader(data, head_end - n, head_end)
    model_id = f.take(MODEL_ID_BYTES, "header").hex()
    h, w = f.varint("header"), f.varint("header")
    p = f.varint("header")
    point = _parse_point(f.take(f.varint("header"), "header")) if p == 0 else None
    total = f.varint("header")
    if f.left() or not total or not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise BitstreamError(f"the header holds an invalid layout, image size {h}x{w} or "
                             f"section count {total}: the file is corrupted")
    header_bytes = r.pos
    sections, checksums, ends, checks = [], [], [], []
    while r.left() and len(sections) < total:
        i = len(sections)
        what = f"fields of section {i} of {total}"
        length = r.varint(what) if i < total - 1 else None
        checks.append(r.u32(what))
        checksums.append(r.u16(what))
        sections.append(r.take(r.left() if length is None else length,
                               f"section {i} of {total}"))
        ends.append(r.pos)
    header = Header(VERSION, model_id, (h, w), point, None if p == 0 else p - 1, total,
                    len(sections), header_bytes)
    return Stream(header, sections, checksums, ends, checks, data[:header_bytes])


def _parse_point(raw: bytes) -> dict[str, Any]:
    try:
        point = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        point = None
    if not isinstance(point, dict):
        raise BitstreamError("the header holds an unreadable operating point: the file is "
                             "corrupted")
    return point


def _read_v1(data: bytes) -> Stream:
    """Version 1 (see the module docstring): its header CRC and section CRCs, checked here."""
    r = _Reader(data, 5)
    cid = r.take(r.u8("header"), "header")
    fp = r.take(_V1_FINGERPRINT_BYTES, "header")
    h, w = r.u32("header"), r.u32("header")
    point_raw = r.take(r.u16("header"), "header")
    total = r.u16("header")
    header_end = r.pos
    if r.u32("header") != zlib.crc32(data[:header_end]):
        raise BitstreamError("the header fails its CRC check: the file is corrupted")
    point = _parse_point(point_raw)
    try:
        codec_id = cid.decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("the header holds an unreadable codec id: the file is "
                             "corrupted") from None
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise BitstreamError(f"the header holds an invalid image size {h}x{w}: the file is "
                             "corrupted")
    header_bytes = r.pos
    sections, checksums, ends = [], [], []
    while r.left():
        i = len(sections)
        if i == total:
            raise BitstreamError(f"{r.left()} bytes follow the last of {total} sections: the "
                                 "file is corrupted")
        meta = r.take(8, f"length field of section {i}")
        crc = r.u32(f"length field of section {i}")
        length, checksum = struct.unpack(">II", meta)
        payload = r.take(length, f"section {i} of {total}")
        if zlib.crc32(payload, zlib.crc32(meta)) != crc:
            raise BitstreamError(f"section {i} fails its CRC check: the file is corrupted")
        sections.append(payload)
        checksums.append(checksum & SYMBOL_CHECKSUM_MASK)
        ends.append(r.pos)
    header = Header(1, fp.hex(), (h, w), point, None, total, len(sections), header_bytes,
                    codec_id)
    return Stream(header, sections, checksums, ends, [], data[:header_bytes])


def bind(stream: Stream, codec: Any, fingerprint: str) -> EncodedImage:
    """The image `codec` (model `fingerprint`) decodes from `stream`, after every check that
    can run before decoding; BitstreamError saying why otherwise.

    A prefix of whole sections is decodable only by a codec with `progressive = True`, and
    only when at least one section is present.
    """
    header = stream.header
    if not header.names_model(fingerprint):
        written_by = header.model_id + (f" (codec {header.codec_id})" if header.codec_id else "")
        raise BitstreamError(
            f"the stream was written by model {written_by}; the model given is "
            f"{fingerprint[:len(header.model_id)]} (codec {codec.codec_id}): pass --ckpt with "
            "the model that wrote it")
    point = header.point
    if point is None:
        table = codec.operating_points()
        if header.point_index >= len(table):
            raise BitstreamError(
                f"the stream names operating point #{header.point_index} and the model has "
                f"{len(table)}: the file is corrupted or was written by another gicl")
        point = table[header.point_index]
    if header.version >= 2:
        crc = zlib.crc32(canonical_json(point), zlib.crc32(stream.head))
        for i, (payload, checksum, check) in enumerate(zip(stream.sections, stream.checksums,
                                                           stream.checks, strict=True)):
            crc = _chain(crc, i, payload, checksum)
            if crc != check:
                raise BitstreamError(
                    f"section {i} of {header.sections_total} fails its check: the file is "
                    "damaged, truncated, assembled from other files, or its model's "
                    "operating points differ from the writer's")
    if header.sections_read == 0:
        raise BitstreamError(f"the stream holds no section of {header.sections_total}: "
                             "it is truncated")
    if not header.complete and not getattr(codec, "progressive", False):
        raise BitstreamError(
            f"the stream holds {header.sections_read} of {header.sections_total} sections "
            f"and codec {codec.codec_id} cannot decode a prefix: the file is truncated")
    return EncodedImage(sections=list(stream.sections), checksums=list(stream.checksums),
                        point=point, size=header.size)
