"""HVQ-CGIC codec: Control-GIC backbone + HyperVQ; forward rates, real files, other threads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import WORD_SLACK_BITS, assert_hyper_stream_cost, kodak_crop

from gicl.bitstream import split_length_prefixed
from gicl.codecs import build_codec
from gicl.errors import BitstreamError, RecipeError

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "hvq_cgic", "ch": 32, "ch_mult": [1, 1, 1, 1, 1], "num_res_blocks": 1,
    "n_embed": 64, "resolution": 64, "attn_resolutions": [8], "hyper_channels": 16,
}
POINTS = ({"ratios": [0.5, 0.4, 0.1]}, {"ratios": [0.1, 0.67, 0.23]})



@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    c = build_codec(TINY)
    c.update()
    return c.eval()


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("box", [(0, 0, 96, 64), (200, 100, 271, 149)])  # 96×64 and odd 71×49
def test_round_trip_equals_forward_and_payload_matches_tables(codec, point, box):
    x = kodak_crop("kodim23.png", box)
    with torch.no_grad():
        out = codec(x, point)
    enc, table_bits = codec.compress_with_report(x, point)
    assert torch.equal(codec.decompress(enc), out.x_hat)
    assert len(enc.sections) == 4  # masks, then coarse, medium, fine: hyper stream + indices each
    assert 8 * len(enc.sections[0]) - float(out.rate["masks"][0]) < 8  # raw bits, byte padded
    streams = codec.stream_bits(enc)
    for i, g in enumerate(("coarse", "medium", "fine"), start=1):
        hyper, ind = split_length_prefixed(enc.sections[i], g)
        assert (streams[g], streams[f"hyper_{g}"]) == (8 * len(ind), 8 * len(hyper))
        payload = 8 * len(ind)
        bound = 0.005 * table_bits[g] + WORD_SLACK_BITS
        assert abs(payload - table_bits[g]) <= bound, (g, payload, table_bits[g])
        # rANS of the rounded hyper-latents (none when all are their medians)
        key = f"hyper_{g}"
        rz, tables, payload = float(out.rate[key][0]), table_bits[key], 8 * len(hyper)
        assert_hyper_stream_cost(key, payload, tables, rz)


def test_only_present_positions_count(codec):
    x = kodak_crop("kodim15.png", (0, 0, 64, 64))
    with torch.no_grad():
        all_coarse = codec(x, {"ratios": [0.0, 0.0, 1.0]})
        all_fine = codec(x, {"ratios": [1.0, 0.0, 0.0]})
        backbone = codec.backbone(x, {"ratios": [0.0, 0.0, 1.0]})
    assert float(all_coarse.rate["fine"][0]) == 0.0 and float(all_coarse.rate["medium"][0]) == 0.0
    assert float(all_coarse.rate["coarse"][0]) > 0
    assert float(all_fine.rate["coarse"][0]) == 0.0 and float(all_fine.rate["fine"][0]) > 0
    assert torch.equal(all_coarse.rate["masks"], backbone.rate["masks"])  # Control-GIC's mask bits
    assert torch.equal(all_coarse.extras["static_rate"]["coarse"], backbone.rate["coarse"])


def test_rates_train_the_hyperprior_and_groups_split_it(codec):
    c = build_codec(TINY).train()
    x = kodak_crop("kodim15.png", (0, 0, 64, 64))
    out = c(x, POINTS[0])
    (out.losses["rate_ind"] + out.losses["rate_z"]).backward()
    groups = c.parameter_groups()
    assert set(groups) == {"backbone", "hyperprior"}
    aux = {id(p) for p in c.aux_parameters()}
    assert len(aux) == 3 and aux <= {id(q) for q in groups["hyperprior"].parameters()}
    grads = [p.grad for p in groups["hyperprior"].parameters() if id(p) not in aux]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    assert float(c.aux_loss().detach()) > 0
    pixels = 64 * 64
    total = sum(float(out.rate[k][0]) for k in ("coarse", "medium", "fine"))
    assert abs(float(out.losses["rate_ind"]) - total / pixels) < 1e-6 * total


def test_unknown_key_and_truncated_file(codec):
    with pytest.raises(RecipeError, match="codec.n_embeds"):
        build_codec({**TINY, "n_embeds": 8})
    x = kodak_crop("kodim15.png", (0, 0, 64, 64))
    enc = codec.compress(x, POINTS[0])
    with pytest.raises(BitstreamError):
        codec.decompress(type(enc)(enc.sections[:3], enc.checksums[:3], enc.point, enc.size))


def test_another_process_with_other_threads_decodes_the_same_image(codec, tmp_path):
    x = kodak_crop("kodim23.png", (200, 100, 271, 149))
    enc = codec.compress(x, POINTS[1])
    with torch.no_grad():
        x_hat = codec(x, POINTS[1]).x_hat
    torch.save({"config": TINY, "state": codec.state_dict(), "sections": enc.sections,
                "checksums": enc.checksums, "point": enc.point, "size": enc.size}, tmp_path / "enc.pt")
    threads = 1 if torch.get_num_threads() > 1 else 2
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads({threads})
        from gicl.codecs import build_codec
        from gicl.codecs.base import EncodedImage
        s = torch.load({str(tmp_path / "enc.pt")!r}, weights_only=True)
        c = build_codec(s["config"])
        c.load_state_dict(s["state"])  # the encoder's hyper-latent CDF tables, as shipped
        c.eval()
        x_hat = c.decompress(EncodedImage(s["sections"], s["checksums"], s["point"], tuple(s["size"])))
        torch.save(x_hat, {str(tmp_path / "dec.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)
    assert torch.equal(torch.load(tmp_path / "dec.pt", weights_only=True), x_hat)


def test_info_reports_the_hyperprior_apart(capsys):
    from gicl.cli import main
    from gicl.codecs.controlgic import count_split
    from gicl.recipes import resolve

    assert main(["info", "--recipe", "hvq_cgic", "--json", "--size", "32x32"]) == 0
    params = json.loads(capsys.readouterr().out)["parameters"]
    print(f"\nHVQ-CGIC parameters: {params}")
    assert abs(params["hyperprior"] - 1.6e6) <= 0.15 * 1.6e6  # paper: 132.30 M − 130.69 M
    backbone = resolve("hvq_cgic")["stages"]["controlgic"]["codec"]
    with torch.device("meta"):
        controlgic = count_split(build_codec(backbone))["total"]
    assert params["backbone"] == controlgic
    assert params["total"] == controlgic + params["hyperprior"]



def test_trained_hyperprior_file_matches_its_float_rate():
    """After the hyperprior has learnt an image's indices (stage B's objective on a fixed
    backbone), the integer tables the coder uses cost within 1 % of eq. 4's float R_ind."""
    torch.manual_seed(0)
    c = build_codec(TINY)
    x, point = kodak_crop("kodim23.png", (0, 0, 96, 64)), POINTS[0]
    for p in c.backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in c.hyperprior.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        base = c.backbone(x, point)
    lat, idx, masks = (base.extras[k] for k in ("latents", "indices", "masks"))
    for _ in range(60):
        out = c.hyperprior(lat, idx, c.codebook(), masks)
        opt.zero_grad()
        sum(out.rate_ind.values()).sum().backward()
        opt.step()
    c.update()
    c.eval()
    with torch.no_grad():
        rates = c(x, point).rate
    _, table_bits = c.compress_with_report(x, point)
    float_ind = sum(float(rates[g][0]) for g in ("coarse", "medium", "fine"))
    tables = sum(table_bits[g] for g in ("coarse", "medium", "fine"))
    print(f"\nR_ind float {float_ind:.1f} bits, integer tables {tables:.1f} bits")
    assert abs(tables - float_ind) <= 0.01 * float_ind


def test_bench_codec_reports_the_index_coder_at_both_codebook_sizes(codec):
    """`gicl bench codec --recipe hvq_cgic`: probability-to-CDF, encode and decode times of the
    locations the default point codes, at the model's K and at K = 16384 with the tail-floor."""
    from conftest import run_cli

    proc = run_cli("bench", "codec", "--recipe", "hvq_cgic", "--profile", "smoke", "--size", "64x48",
                   "--repeats", "1", "--warmup", "0", "--no-flops", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    with torch.no_grad():
        masks = codec(torch.rand(1, 3, 48, 64), r["point"]).extras["masks"]
    coded = sum(int(m.sum()) for m in masks.values())
    small, large = r["index_coding"]
    assert (small["k"], small["tail_floor"]) == (64, False)
    assert (large["k"], large["tail_floor"]) == (16384, True)
    for c in (small, large):
        assert c["locations"] == coded and c["round_trip"]
        assert c["cdf_s"] > 0 and c["encode_s"] > 0 and c["decode_s"] > 0
    assert "HyperVQ index coding, K = 16384 (tail-floor)" in run_cli(
        "bench", "codec", "--recipe", "hvq_cgic", "--profile", "smoke", "--size", "64x48",
        "--repeats", "1", "--warmup", "0", "--no-flops").stdout


def test_a_branch_without_tokens_codes_nothing(codec):
    """All-fine: no coarse or medium token, so their hyper-latents are neither coded nor
    counted; the file still decodes to forward's reconstruction."""
    x, point = kodak_crop("kodim23.png", (0, 0, 96, 64)), {"ratios": [1.0, 0.0, 0.0]}
    encoded = codec.compress(x, point)
    assert encoded.sections[1:3] == [b"\0", b"\0"]  # coarse, medium: empty hyper and index streams
    assert len(split_length_prefixed(encoded.sections[3], "fine")[1]) > 0  # fine's indices
    with torch.no_grad():
        out = codec(x, point)
    assert float(out.rate["hyper_coarse"]) == 0.0 and float(out.rate["hyper_medium"]) == 0.0
    assert float(out.rate["hyper_fine"]) > 0.0
    assert torch.equal(codec.decompress(encoded), out.x_hat)
    stuffed = dataclasses.replace(encoded, sections=[*encoded.sections[:1], b"\0\0", *encoded.sections[2:]])
    with pytest.raises(BitstreamError, match="no coded position"):
        codec.decompress(stuffed)
