"""ProGIC codec: the paper's sizes, the progressive fixed-length bitstream, modulation gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from gicl.codecs import build_codec
from gicl.codecs.base import EncodedImage
from gicl.codecs.progic import ProGIC
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.depthconv import StageModulation

# ProGIC Table 1 (arXiv 2603.02897): parameters (M) and FLOPs (G, = 2·MACs) at 768×512.
PAPER = {"base": (33.11, 333.38), "small": (14.44, 108.28)}
# k·⌈log₂1024⌉ bits per 16×16 latent position = k·10/256 bpp (payload only)
STAGE_BPP = [0.0391, 0.0781, 0.1172, 0.1562, 0.1953]


def tiny(**kwargs) -> ProGIC:
    """A 5-stage, 1024-entry (10-bit) ProGIC with tiny widths, made non-degenerate.

    Default init gives codewords of ±1/K and identity modulation, so every stage would decode
    to nearly the same image and "decodes to stage j" could not tell stages apart; random
    codewords at the latent's scale and random modulation make every stage distinct.
    """
    torch.manual_seed(0)
    codec = build_codec({
        "name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
        "latent_channels": 32, **kwargs,
    })
    with torch.no_grad():
        for vq in codec.quantizer.stages:
            vq.embedding.weight.normal_(0.0, 0.5)
        for m in codec.modules():
            if isinstance(m, StageModulation):
                m.scale.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return codec.eval()


def kodak_crop(kodak: Path, h: int = 136, w: int = 200) -> torch.Tensor:
    """A 200×136 crop of kodim23: neither side is a multiple of 16."""
    img = np.asarray(Image.open(kodak / "kodim23.png").convert("RGB"))[100 : 100 + h, 300 : 300 + w]
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize("variant", ["base", "small"])
def test_parameter_count_matches_paper(variant: str) -> None:
    codec = ProGIC(variant=variant)
    params = sum(p.numel() for p in codec.parameters()) / 1e6
    print(f"ProGIC {variant}: {params:.3f} M parameters (paper {PAPER[variant][0]} M)")
    assert params == pytest.approx(PAPER[variant][0], rel=0.03)


@pytest.mark.parametrize("variant", ["base", "small"])
def test_flops_at_kodak_size_match_paper(variant: str) -> None:
    """Encode + decode with all 5 codebooks, one 768×512 image (FLOPs = 2·MACs).

    On the meta device: FLOPs depend on shapes only, and the count takes a second instead
    of a real 0.3-TFLOP forward (`gicl bench codec` counts on real tensors).
    """
    with torch.device("meta"):
        codec = ProGIC(variant=variant).eval()
        x = torch.empty(1, 3, 512, 768)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        codec(x)
    gflops = counter.get_total_flops() / 1e9
    print(f"ProGIC {variant}: {gflops:.2f} GFLOPs at 768×512 (paper {PAPER[variant][1]})")
    assert gflops == pytest.approx(PAPER[variant][1], rel=0.10)


def test_payload_is_exactly_k_fixed_length_stages(kodak: Path) -> None:
    codec = tiny()
    x = kodak_crop(kodak)
    h, w = x.shape[-2:]
    n = math.ceil(h / 16) * math.ceil(w / 16)  # 9·13 = 117 latent positions
    per_section = math.ceil(n * 10 / 8)  # 1170 bits → 147 bytes, 6 bits of padding
    with torch.no_grad():
        full = codec.compress(x, {"stages": 5})
        for k in range(1, 6):
            enc = codec.compress(x, {"stages": k})
            assert [len(s) for s in enc.sections] == [per_section] * k
            assert sum(len(s) for s in enc.sections) * 8 - k * (8 * per_section - 10 * n) == k * 10 * n
            assert enc.sections == full.sections[:k]  # stage-ordered: a prefix of the full stream
            rate = codec(x, {"stages": k}).rate["indices"]
            assert rate.tolist() == [k * 10 * n]
    # the paper's per-stage bpp k·10/16² (any size that is a multiple of 16)
    bpp = [codec(torch.zeros(1, 3, 64, 64), p).bits().item() / 64**2
           for p in codec.operating_points()]
    assert [round(b, 4) for b in bpp] == STAGE_BPP
    assert [codec.point_for_bpp(b, 512, 768) for b in STAGE_BPP] == codec.operating_points()


def test_every_prefix_of_sections_decodes_to_that_stage(kodak: Path) -> None:
    codec = tiny()
    x = kodak_crop(kodak)
    with torch.no_grad():
        full = codec.compress(x, {"stages": 5})
        stages = codec(x, {"stages": 5, "all_stages": True}).stage_reconstructions
        previous = None
        for k in range(1, 6):
            reference = codec(x, {"stages": k}).x_hat
            assert reference.shape == x.shape
            # the one-batch decode of all stages agrees with decoding stage k alone
            assert (stages[k - 1] - reference).abs().max() <= 1e-5
            truncated = EncodedImage(full.sections[:k], full.checksums[:k], full.point, full.size)
            decoded = codec.decompress(truncated)
            assert decoded.shape == x.shape
            assert (decoded - reference).abs().max() <= 1e-5
            # checksums of later stages may travel with a cut stream: still stage k
            cut = EncodedImage(full.sections[:k], full.checksums, full.point, full.size)
            assert torch.equal(codec.decompress(cut), decoded)
            if previous is not None:  # the stages really differ, so the check above can fail
                assert (decoded - previous).abs().max() > 1e-3
            previous = decoded


def test_broken_streams_are_errors(kodak: Path) -> None:
    codec = tiny()
    x = kodak_crop(kodak)
    with torch.no_grad():
        enc = codec.compress(x, {"stages": 2})
    with pytest.raises(BitstreamError):
        codec.decompress(EncodedImage([], [], enc.point, enc.size))
    flipped = bytes([enc.sections[1][0] ^ 0xFF]) + enc.sections[1][1:]
    with pytest.raises(BitstreamError, match="section 1"):
        codec.decompress(EncodedImage([enc.sections[0], flipped], enc.checksums, enc.point, enc.size))
    with pytest.raises(BitstreamError, match="truncated"):
        codec.decompress(EncodedImage([enc.sections[0][:-1]], enc.checksums, enc.point, enc.size))


def test_modulation_of_stage_i_is_trained_only_by_stage_i() -> None:
    """Stage i decodes with pair i only, so ∂L_j/∂(scale_i, bias_i) = 0 for j ≠ i (hence
    only losses of stages ≥ i reach it); the encoder and the GAN's last layer get all."""
    codec = tiny().train()
    x = torch.rand(2, 3, 48, 40)
    out = codec(x, {"stages": 5, "all_stages": True})
    recons = out.stage_reconstructions
    assert len(recons) == 5 and torch.equal(recons[-1], out.x_hat)
    mods = [m for m in codec.decoder.modules() if isinstance(m, StageModulation)]
    params = [p for m in mods for p in (m.scale, m.bias)]
    first_enc = codec.encoder.blocks.blocks[0].dc[0].weight
    for j, recon in enumerate(recons):
        loss = (recon - x).abs().mean()
        grads = torch.autograd.grad(loss, [*params, first_enc, codec.last_decoder_layer()],
                                    retain_graph=True)
        for g in grads[: len(params)]:
            per_stage = g.flatten(1).abs().sum(1)
            assert per_stage[j] > 0
            assert torch.count_nonzero(per_stage) == 1
        assert grads[-2].abs().sum() > 0 and grads[-1].abs().sum() > 0
    assert set(out.losses) == {"vq"} and len(out.stage_losses) == 5
    assert torch.allclose(out.losses["vq"], sum(out.stage_losses))
    assert out.extras["indices"].shape == (2, 5, 3, 3)
    assert out.extras["quantizers"] == list(codec.quantizer.stages)


def test_configuration_errors() -> None:
    with pytest.raises(RecipeError, match="variant"):
        build_codec({"name": "progic", "variant": "large"})
    with pytest.raises(RecipeError, match="codec.width"):
        build_codec({"name": "progic", "width": 3})
    with pytest.raises(RecipeError, match="enc_blocks"):
        build_codec({"name": "progic", "enc_blocks": 0})
    codec = tiny(num_stages=3)
    assert codec.operating_points() == [{"stages": 1}, {"stages": 2}, {"stages": 3}]
    with pytest.raises(UserError, match="1..3"):
        codec(torch.rand(1, 3, 16, 16), {"stages": 4})


def test_bench_codec_cli_reports_real_stream() -> None:
    """`gicl bench codec` builds the recipe's codec and measures its real bitstream: smoke
    ProGIC (64 codes → 6 bits) at 40×24 has 3·2 positions, 36 bits → 5 bytes per stage."""
    from conftest import run_cli

    proc = run_cli("bench", "codec", "--recipe", "progic", "--profile", "smoke",
                   "--set", "codec.num_stages=4", "--size", "40x24", "--repeats", "2",
                   "--warmup", "0", "--point", '{"stages": 3}', "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["point"] == {"stages": 3} and r["codec"]["num_stages"] == 4
    assert r["bits"] == 3 * 40 and r["size"] == {"height": 24, "width": 40}
    assert len(r["compress_runs_ms"]) == 2 and r["gflops"] > 0 and r["peak_rss_mb"] > 0
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    bad = run_cli("bench", "codec", "--recipe", "progic", "--size", "768by512")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "gicl: error: --size expects WIDTHxHEIGHT such as 768x512, got '768by512'"
    ]
