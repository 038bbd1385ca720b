"""Progressive prefixes through the real `gicl decompress` code path (in-process `main`, so
every cut point of a small file can be tried quickly): a cut at a section boundary decodes
for a progressive codec, anything else is one line on stderr, exit 2, and no output file.

`BitPlaneVQ` is a minimal progressive codec for these tests: the VQGAN's 6-bit indices
split into a high and a low bit plane, one section each, so the first section alone
decodes a coarser index map. ProGIC plugs into the same path with `progressive = True`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gicl import bitstream
from gicl.cli import main
from gicl.codecs.base import CODECS, EncodedImage, build_codec, symbols_checksum, verify_symbols
from gicl.codecs.vqgan import VQGAN
from gicl.entropy import fixed
from gicl.evaluation import codec_io
from gicl.images import read_image, to_uint8
from gicl.model_file import save_model_file

TINY = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
        "z_channels": 8, "embed_dim": 8, "n_embed": 64}


class BitPlaneVQ(VQGAN):
    codec_id = "test-bitplane"
    progressive = True

    def compress(self, x, point=None):
        idx = self.encode_indices(x)
        low_bits = self.index_bits // 2
        planes = [idx >> low_bits, idx & ((1 << low_bits) - 1)]
        return EncodedImage(
            sections=[fixed.pack(planes[0], self.index_bits - low_bits),
                      fixed.pack(planes[1], low_bits)],
            checksums=[symbols_checksum(p) for p in planes], point={}, size=tuple(x.shape[-2:]))

    def decompress(self, encoded):
        h, w = encoded.size
        lh, lw = -(-h // self.multiple), -(-w // self.multiple)
        low_bits = self.index_bits // 2
        bits = [self.index_bits - low_bits, low_bits]
        planes = []  # unpack checks each section's length before anything is allocated
        for i, (section, checksum) in enumerate(zip(encoded.sections, encoded.checksums,
                                                    strict=True)):
            planes.append(fixed.unpack(section, bits[i], lh * lw))
            verify_symbols(planes[-1], checksum, i)
        idx = planes[0] << low_bits
        if len(planes) > 1:
            idx = idx + planes[1]
        return self.decode_indices(idx.view(1, lh, lw), (h, w))


@pytest.fixture
def bitplane_codec(monkeypatch: pytest.MonkeyPatch) -> type[BitPlaneVQ]:
    """Registered only for the test using it, so no other test sees a test codec."""
    monkeypatch.setitem(CODECS, BitPlaneVQ.codec_id, BitPlaneVQ)
    return BitPlaneVQ


def tiny_model(path: Path, name: str = "vqgan", seed: int = 0) -> str:
    torch.manual_seed(seed)
    return save_model_file(build_codec({"name": name, **TINY}), path)


@pytest.fixture
def small_image(tmp_path: Path, kodak: Path) -> Path:
    from PIL import Image

    out = tmp_path / "small.png"
    Image.open(kodak / "kodim05.png").crop((300, 200, 316, 214)).save(out)  # 16 wide, 14 high
    return out


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_progressive_codec_decodes_every_section_boundary_and_refuses_other_cuts(
        tmp_path, capsys, monkeypatch, bitplane_codec, small_image):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    tiny_model(tmp_path / "m.pt", BitPlaneVQ.codec_id)
    stream = tmp_path / "s.gic"
    assert run_main(capsys, "compress", str(small_image), str(stream), "--ckpt",
                    str(tmp_path / "m.pt"))[0] == 0
    data = stream.read_bytes()
    parsed = bitstream.read(data)
    boundaries = [parsed.header.header_bytes, *parsed.ends]
    model = codec_io.load_model(tmp_path / "m.pt")
    expected = {k: to_uint8(codec_io.decode(model, data[:boundaries[k]]).x_hat) for k in (1, 2)}
    assert not torch.equal(expected[1], expected[2])  # the second bit plane refines the image
    for cut in range(len(data) + 1):
        part, out = tmp_path / "cut.gic", tmp_path / f"cut{cut}.png"
        part.write_bytes(data[:cut])
        code, err = run_main(capsys, "decompress", str(part), str(out))
        if cut in boundaries[1:]:
            assert code == 0, err
            k = boundaries.index(cut)
            assert torch.equal(to_uint8(read_image(out)), expected[k])
        else:
            assert code == 2 and err.count("\n") == 1 and err.startswith("gicl: error: ")
            assert "truncated" in err or "no section" in err or "bad magic" in err, err
            assert not out.exists()
    # --stages K picks the first K sections of a complete stream
    out = tmp_path / "stage1.png"
    assert run_main(capsys, "decompress", str(stream), str(out), "--stages", "1")[0] == 0
    assert torch.equal(to_uint8(read_image(out)), expected[1])
    code, err = run_main(capsys, "decompress", str(stream), str(out), "--stages", "3")
    assert code == 2 and "holds 2 section(s) of 2; pass 1..2" in err


def test_non_progressive_codec_accepts_only_the_whole_stream(tmp_path, capsys, monkeypatch,
                                                             small_image):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    tiny_model(tmp_path / "m.pt")
    stream = tmp_path / "s.gic"
    assert run_main(capsys, "compress", str(small_image), str(stream), "--ckpt",
                    str(tmp_path / "m.pt"))[0] == 0
    data = stream.read_bytes()
    for cut in range(len(data)):
        part, out = tmp_path / "cut.gic", tmp_path / "cut.png"
        part.write_bytes(data[:cut])
        code, err = run_main(capsys, "decompress", str(part), str(out))
        assert code == 2 and err.count("\n") == 1 and not out.exists(), err
    code, err = run_main(capsys, "decompress", str(stream), str(tmp_path / "x.png"),
                         "--stages", "1")
    assert code == 2 and "codec vqgan is not progressive" in err
    assert run_main(capsys, "decompress", str(stream), str(tmp_path / "ok.png"))[0] == 0
