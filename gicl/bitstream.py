"""The `.gic` container: one compressed image, cut-able at section boundaries.

Byte layout (all integers big-endian, CRC-32 as in `zlib.crc32`):

    offset   size  field
    0        4     magic b"GICL"
    4        1     format version (1)
    5        1     n = length of the codec id
    6        n     codec id, ASCII (`Codec.codec_id`)
    6+n      16    model fingerprint (`gicl.model_file.fingerprint`, 32 hex digits as bytes)
    22+n     4     original height H
    26+n     4     original width W
    30+n     2     m = length of the operating point
    32+n     m     operating point, compact JSON (sorted keys, no spaces), UTF-8
    32+n+m   2     S = number of sections the encoder wrote
    34+n+m   4     CRC-32 of every header byte before it
    then for each section i < S:
             4     L = payload length
             4     the codec's checksum of the decoded symbols (`EncodedImage.checksums[i]`)
             4     CRC-32 of the 8 bytes above followed by the payload
             L     payload

The header carries S, so a stream that ends exactly after section k < S is recognisably a
*prefix*: `read` returns it with k sections and `Header.complete` False, and
`check_decodable` accepts it only for a codec whose `progressive` attribute is true (ProGIC:
any prefix of whole stages decodes). Anything else — a cut inside a section, trailing bytes,
a flipped bit (header or section CRC), a version this reader does not know — raises
`BitstreamError` with one line that says which.

Why two checks per section: the CRC catches damage to the stored bytes before any entropy
decoder runs on them; the symbol checksum (verified by the codec after decoding) catches an
encoder/decoder desync on another machine, which a byte CRC cannot see.

Fuzz safety: parsing only slices `data` after checking each length against the bytes left,
never allocates by a count read from the stream, and bounds H and W by `MAX_SIDE`; so the
memory it uses is proportional to `len(data)`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from gicl.codecs.base import EncodedImage
from gicl.errors import BitstreamError

MAGIC = b"GICL"
VERSION = 1
FINGERPRINT_BYTES = 16
MAX_SIDE = 1 << 16  # a larger side is refused: the decoder's memory grows with H·W
SECTION_FIELDS = 12  # payload length, symbol checksum, CRC: three u32 before each payload
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    version: int
    codec_id: str
    fingerprint: str
    size: tuple[int, int]
    point: dict[str, Any]
    sections_total: int
    sections_read: int
    header_bytes: int

    @property
    def complete(self) -> bool:
        return self.sections_read == self.sections_total


def write(encoded: EncodedImage, fingerprint: str, codec_id: str) -> bytes:
    """Serialize one encoded image; the inverse of `read`."""
    cid = codec_id.encode("ascii")
    fp = bytes.fromhex(fingerprint)
    point = json.dumps(encoded.point, sort_keys=True, separators=(",", ":")).encode()
    h, w = encoded.size
    if not 0 < len(cid) < 256 or len(fp) != FINGERPRINT_BYTES:
        raise ValueError(f"codec id '{codec_id}' or fingerprint '{fingerprint}' cannot be stored")
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ValueError(f"image size {h}x{w} outside 1..{MAX_SIDE}")
    if len(point) > 0xFFFF or len(encoded.sections) > 0xFFFF:
        raise ValueError("operating point or section count too large for the container")
    head = b"".join([
        MAGIC, bytes([VERSION, len(cid)]), cid, fp, _U32.pack(h), _U32.pack(w),
        _U16.pack(len(point)), point, _U16.pack(len(encoded.sections)),
    ])
    parts = [head, _U32.pack(zlib.crc32(head))]
    for payload, checksum in zip(encoded.sections, encoded.checksums, strict=True):
        meta = struct.pack(">II", len(payload), checksum)
        parts += [meta, _U32.pack(zlib.crc32(payload, zlib.crc32(meta))), payload]
    return b"".join(parts)


class _Reader:
    """Cursor over `data` that refuses to read past its end (the only way lengths are used)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
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


def read(data: bytes) -> tuple[Header, EncodedImage]:
    """Parse a container (or a prefix of whole sections); raise BitstreamError otherwise."""
    data = bytes(data)
    r = _Reader(data)
    if r.take(min(4, len(data)), "magic") != MAGIC:
        raise BitstreamError("not a gicl bitstream (bad magic bytes): pass a file written by "
                             "`gicl compress`")
    version = r.u8("header")
    if version != VERSION:
        raise BitstreamError(f"bitstream format version {version} is not supported (this gicl "
                             f"reads version {VERSION}): decode it with the gicl that wrote it")
    cid = r.take(r.u8("header"), "header")
    fp = r.take(FINGERPRINT_BYTES, "header")
    h, w = r.u32("header"), r.u32("header")
    point_raw = r.take(r.u16("header"), "header")
    total = r.u16("header")
    header_end = r.pos
    if r.u32("header") != zlib.crc32(data[:header_end]):
        raise BitstreamError("the header fails its CRC check: the file is corrupted")
    try:
        codec_id = cid.decode("ascii")
        point = json.loads(point_raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BitstreamError("the header holds an unreadable codec id or operating point: "
                             "the file is corrupted") from None
    if not isinstance(point, dict) or not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise BitstreamError(f"the header holds an invalid image size {h}x{w} or operating "
                             "point: the file is corrupted")
    header_bytes = r.pos
    sections: list[bytes] = []
    checksums: list[int] = []
    while r.pos < len(data):
        i = len(sections)
        if i == total:
            raise BitstreamError(f"{len(data) - r.pos} bytes follow the last of {total} "
                                 "sections: the file is corrupted")
        meta = r.take(8, f"length field of section {i}")
        crc = r.u32(f"length field of section {i}")
        length, checksum = struct.unpack(">II", meta)
        payload = r.take(length, f"section {i} of {total}")
        if zlib.crc32(payload, zlib.crc32(meta)) != crc:
            raise BitstreamError(f"section {i} fails its CRC check: the file is corrupted")
        sections.append(payload)
        checksums.append(checksum)
    header = Header(version, codec_id, fp.hex(), (h, w), point, total, len(sections),
                    header_bytes)
    return header, EncodedImage(sections=sections, checksums=checksums, point=point, size=(h, w))


def check_decodable(header: Header, codec: Any, fingerprint: str) -> None:
    """Refuse a stream that `codec` (with model `fingerprint`) cannot decode, saying why.

    A prefix of whole sections is decodable only by a codec with `progressive = True`, and
    only when at least one section is present.
    """
    if header.codec_id != codec.codec_id or header.fingerprint != fingerprint:
        raise BitstreamError(
            f"the stream was written by model {header.fingerprint} (codec {header.codec_id}); "
            f"the model given is {fingerprint} (codec {codec.codec_id}): pass --ckpt with "
            "the model that wrote it")
    if header.sections_read == 0:
        raise BitstreamError(f"the stream holds no section of {header.sections_total}: "
                             "it is truncated")
    if not header.complete and not getattr(codec, "progressive", False):
        raise BitstreamError(
            f"the stream holds {header.sections_read} of {header.sections_total} sections "
            f"and codec {codec.codec_id} cannot decode a prefix: the file is truncated")
