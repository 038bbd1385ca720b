"""HyperVQ end to end: real sections, masks, branch subsets, and decoding in another process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from conftest import assert_hyper_stream_cost

from gicl.entropy.bottleneck import bottleneck_table_bits, hyper_bits
from gicl.entropy.hypervq import CODER_FLOOR, HyperVQ, index_bits
from gicl.entropy.hypervq_bench import snap_stability
from gicl.errors import BitstreamError
from gicl.nn.vq import nearest_codeword

BRANCHES = {"fine": 1, "medium": 2, "coarse": 4}  # Control-GIC: H/4, H/8, H/16
REPO = Path(__file__).resolve().parents[1]


def smooth_latents(h: int, w: int, seed: int) -> torch.Tensor:
    """(1, 4, h, w) spatially correlated latents: upsampled noise plus a little texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 4, h // 4 + 2, w // 4 + 2, generator=g)
    z = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return 1.5 * z + 0.1 * torch.randn(1, 4, h, w, generator=g)


def quantize(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return nearest_codeword(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), codebook).view(1, *z.shape[-2:])


@pytest.fixture(scope="module")
def setup() -> dict:
    """A three-branch (Control-GIC-like) HyperVQ briefly trained on R_ind + R_z, one shared
    K = 1024 codebook, and an odd-size image's branch maps (fine 23×17) with routing masks.

    The latents occupy the middle of the codebook (× 0.3), so a few dozen steps already
    take the index rate well below the uniform 10 bits and the distributions are peaked."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only contend on a shared CPU
    try:
        codebook = smooth_latents(64, 64, 1).permute(0, 2, 3, 1).reshape(-1, 4)[:: 4][:1024].clone()
        model = HyperVQ({name: (4, 1024) for name in BRANCHES}, channels=24)
        with torch.no_grad():  # hyper-latents that carry something: with the analysis' output
            for block in model.blocks.values():  # 5× its initial spread, fine's hyper stream is
                block.analysis[-1].weight.mul_(5)  # not all medians (empty) after the 80 steps
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        for step in range(80):
            lat = {n: 0.3 * smooth_latents(32 // s, 32 // s, 100 + 3 * step + s) for n, s in BRANCHES.items()}
            out = model(lat, {n: quantize(z, codebook) for n, z in lat.items()}, codebook)
            loss = out.bits().sum() / sum(z[0, 0].numel() for z in lat.values()) + model.aux_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.update(force=True)
    g = torch.Generator().manual_seed(7)
    latents, indices, masks = {}, {}, {}
    for name, s in BRANCHES.items():
        h, w = -(-23 // s), -(-17 // s)
        latents[name] = 0.3 * smooth_latents(h, w, 10 + s)
        indices[name] = quantize(latents[name], codebook)
        masks[name] = torch.rand(1, 1, h, w, generator=g) < 0.5
    return {"model": model, "codebook": codebook, "latents": latents, "indices": indices, "masks": masks}


def test_sections_cost_what_the_integer_tables_and_the_float_model_say(setup: dict) -> None:
    model, codebook = setup["model"], setup["codebook"]
    latents, indices, masks = setup["latents"], setup["indices"], setup["masks"]
    with torch.no_grad():
        out = model(latents, indices, codebook, masks)
    streams = model.compress(latents, indices, codebook, masks)
    assert len(streams.sections) == 6 == len(streams.checksums)
    for i, name in enumerate(BRANCHES):
        payload = 8 * len(streams.sections[2 * i + 1])
        table = streams.table_bits[name]
        assert table <= payload <= table * 1.005 + 64  # 0.5 % + 8 bytes per section
        assert table == pytest.approx(float(out.rate_ind[name]), rel=0.01)
        key = f"hyper_{name}"
        hyper = 8 * len(streams.sections[2 * i])
        assert_hyper_stream_cost(key, hyper, streams.table_bits[key], float(out.rate_z[name]))
    assert streams.sections[0]  # fine's hyper-latents: a real rANS stream
    n = sum(int(m.sum()) for m in masks.values())
    assert float(sum(out.rate_ind.values())) / n < 8.0  # trained: well below log2(1024) = 10 bits


def test_hyper_latents_all_at_their_medians_cost_no_bytes(setup: dict) -> None:
    """A hyperprior whose hyper-latents carry nothing writes empty hyper sections (no 64-bit
    rANS flush) and still decodes its indices; one symbol off the median needs a stream."""
    model, codebook = setup["model"], setup["codebook"]
    latents, indices, masks = setup["latents"], setup["indices"], setup["masks"]
    silent = HyperVQ({name: (4, 1024) for name in BRANCHES}, channels=24)
    silent.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, block in silent.blocks.items():
            last = block.analysis[-1]
            last.weight.zero_()
            last.bias.copy_(block.bottleneck.quantiles[:, 0, 1] + (0.7 if name == "coarse" else 0.3))
    silent.eval()
    streams = silent.compress(latents, indices, codebook, masks)
    hyper = dict(zip(BRANCHES, streams.sections[::2], strict=True))
    assert hyper["fine"] == b"" and hyper["medium"] == b"" and len(hyper["coarse"]) > 0
    decoded = silent.decompress(streams.sections, {n: tuple(z.shape[-2:]) for n, z in latents.items()},
                                codebook, masks, streams.checksums)
    for name in BRANCHES:
        m = masks[name][:, 0]
        assert torch.equal(decoded[name][m], indices[name][m])
    stuffed = [b"\0" * 8 if i == 0 else s for i, s in enumerate(streams.sections)]  # not what is written
    with pytest.raises(BitstreamError, match="not what the encoder writes"):
        silent.decompress(stuffed, {n: tuple(z.shape[-2:]) for n, z in latents.items()}, codebook, masks)


def test_a_separate_process_with_other_threads_decodes_the_same_symbols(setup: dict, tmp_path: Path) -> None:
    model, codebook = setup["model"], setup["codebook"]
    latents, indices, masks = setup["latents"], setup["indices"], setup["masks"]
    streams = model.compress(latents, indices, codebook, masks)
    threads = 1 if torch.get_num_threads() > 1 else 2
    torch.save(
        {
            "state": model.state_dict(), "codebook": codebook, "masks": masks,
            "sections": [torch.tensor(list(b), dtype=torch.uint8) for b in streams.sections],
            "checksums": streams.checksums,
            "shapes": {n: tuple(z.shape[-2:]) for n, z in latents.items()},
        },
        tmp_path / "stream.pt",
    )
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads({threads})
        from gicl.entropy.hypervq import HyperVQ
        s = torch.load({str(tmp_path / "stream.pt")!r}, weights_only=True)
        model = HyperVQ({{n: (4, 1024) for n in s["shapes"]}}, channels=24)
        model.load_state_dict(s["state"])  # the encoder's hyper-latent CDF tables, as shipped
        sections = [bytes(t.tolist()) for t in s["sections"]]
        out = model.eval().decompress(sections, s["shapes"], s["codebook"], s["masks"], s["checksums"])
        torch.save(out, {str(tmp_path / "decoded.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=120)
    decoded = torch.load(tmp_path / "decoded.pt", weights_only=True)
    for name in BRANCHES:
        m = masks[name][:, 0]
        assert torch.equal(decoded[name][m], indices[name][m])
        assert bool((decoded[name][~m] == 0).all())


def test_only_present_positions_are_coded_and_counted(setup: dict) -> None:
    model, codebook = setup["model"], setup["codebook"]
    latents, indices, masks = setup["latents"], setup["indices"], setup["masks"]
    with torch.no_grad():
        out = model(latents, indices, codebook, masks)
    streams = model.compress(latents, indices, codebook, masks)
    # what lies under an absent position changes neither the rate nor a single byte
    changed_lat, changed_idx = {}, {}
    for name in BRANCHES:
        absent = ~masks[name]
        changed_lat[name] = torch.where(absent, latents[name] + 3.0, latents[name])
        changed_idx[name] = torch.where(absent[:, 0], (indices[name] + 1) % 1024, indices[name])
    with torch.no_grad():
        again = model(changed_lat, changed_idx, codebook, masks)
    assert all(torch.equal(out.rate_ind[n], again.rate_ind[n]) for n in BRANCHES)
    assert model.compress(changed_lat, changed_idx, codebook, masks).sections == streams.sections
    # the rate is eq. 4 summed over exactly the present positions
    for name in BRANCHES:
        target = indices[name][masks[name][:, 0]]
        assert len(target) == len(out.mu[name]) == int(masks[name].sum())
        direct = index_bits(out.mu[name], out.sigma[name], codebook, target, CODER_FLOOR).sum()
        assert float(out.rate_ind[name]) == pytest.approx(float(direct), rel=1e-6)
    # an empty branch costs no index bits and decodes to nothing present
    empty = {n: torch.zeros_like(m) for n, m in masks.items()}
    with torch.no_grad():
        assert all(float(r) == 0.0 for r in model(latents, indices, codebook, empty).rate_ind.values())
    none = model.compress(latents, indices, codebook, empty)
    assert none.sections[1::2] == [b"", b"", b""]
    shapes = {n: tuple(z.shape[-2:]) for n, z in latents.items()}
    decoded = model.decompress(none.sections, shapes, codebook, empty, none.checksums)
    assert all(bool((d == 0).all()) for d in decoded.values())


def test_hyper_latents_over_absent_blocks_are_neither_coded_nor_counted(setup: dict) -> None:
    """Only the hyper-latents whose 4×4 block of the branch holds a present position are
    coded and counted: a branch with tokens in one block pays one hyper position's side
    information, not its whole grid's (Control-GIC's sparse branches), and still decodes."""
    model, codebook, name = setup["model"], setup["codebook"], "fine"
    z, idx = setup["latents"][name], setup["indices"][name]  # a 23×17 grid: 6×5 hyper positions
    mask = torch.zeros(1, 1, *z.shape[-2:], dtype=torch.bool)
    mask[..., 5, 9] = mask[..., 6, 10] = True  # both in the 4×4 block of hyper position (1, 2)
    block = model.blocks[name]
    with torch.no_grad():
        out = model({name: z}, {name: idx}, codebook, {name: mask})
        y_hat, likelihoods = block.bottleneck(block.analyse(z, mask))
    one_position = float(hyper_bits(block.bottleneck, y_hat, likelihoods)[0, :, 1, 2].sum())
    assert float(out.rate_z[name]) == pytest.approx(one_position, rel=1e-6)
    sparse = model.compress({name: z}, {name: idx}, codebook, {name: mask})
    dense = model.compress({name: z}, {name: idx}, codebook, {name: torch.ones_like(mask)})
    assert 8 * len(sparse.sections[0]) <= one_position * 1.01 + 64
    assert len(sparse.sections[0]) < len(dense.sections[0]) / 4
    shapes = {name: tuple(z.shape[-2:])}
    decoded = model.decompress(sparse.sections, shapes, codebook, {name: mask}, sparse.checksums)[name]
    assert torch.equal(decoded[mask[:, 0]], idx[mask[:, 0]])


def test_rvq_stages_have_their_own_codebooks_and_a_prefix_decodes_alone() -> None:
    """ProGIC-style: one branch per stage, each with its own (ever smaller) codebook; stage k's
    sections do not depend on later stages, so the first 2k sections decode stages 1..k."""
    g = torch.Generator().manual_seed(3)
    codebooks = {f"stage{i}": torch.randn(256, 4, generator=g) * 0.3**i for i in range(3)}
    model = HyperVQ({name: (4, 256) for name in codebooks}, channels=16).eval()
    model.update(force=True)
    residual = smooth_latents(12, 8, 4)
    latents, indices = {}, {}
    for name, cb in codebooks.items():
        latents[name] = residual
        indices[name] = quantize(residual, cb)
        residual = residual - cb[indices[name]].permute(0, 3, 1, 2)
    streams = model.compress(latents, indices, codebooks)
    prefix = model.decompress(streams.sections[:4], {"stage0": (12, 8), "stage1": (12, 8)}, codebooks)
    assert list(prefix) == ["stage0", "stage1"]
    assert all(torch.equal(prefix[n], indices[n]) for n in prefix)
    alone = model.compress({"stage0": latents["stage0"]}, {"stage0": indices["stage0"]}, codebooks)
    assert alone.sections == streams.sections[:2]


def test_a_wrong_checksum_or_a_damaged_section_is_a_bitstream_error(setup: dict) -> None:
    model, codebook = setup["model"], setup["codebook"]
    latents, indices, masks = setup["latents"], setup["indices"], setup["masks"]
    streams = model.compress(latents, indices, codebook, masks)
    shapes = {n: tuple(z.shape[-2:]) for n, z in latents.items()}
    wrong = list(streams.checksums)
    wrong[1] ^= 1
    with pytest.raises(BitstreamError, match="section 1"):
        model.decompress(streams.sections, shapes, codebook, masks, wrong)
    with pytest.raises(BitstreamError, match="2 sections per branch"):
        model.decompress(streams.sections[:5], shapes, codebook, masks, streams.checksums)
    damaged = list(streams.sections)
    damaged[1] = bytes([damaged[1][0] ^ 0xFF]) + damaged[1][1:]
    with pytest.raises(BitstreamError):
        model.decompress(damaged, shapes, codebook, masks, streams.checksums)


def test_aux_loss_trains_the_bottleneck_quantiles_and_update_builds_tables() -> None:
    model = HyperVQ({"only": (4, 64)}, channels=8)
    aux = model.aux_loss()
    aux.backward()
    quantiles = model.blocks["only"].bottleneck.quantiles
    assert aux.dim() == 0 and quantiles.grad is not None and float(quantiles.grad.abs().sum()) > 0
    assert model.update() is True and model.update() is False and model.update(force=True) is True


def test_the_coders_float64_hyper_synthesis_is_stable_where_float32_is_not(setup: dict) -> None:
    """Other thread counts and other kernels (channels-last) move float32 μ by ~1e-6 and
    float64 μ by ~1e-15: no location comes near enough to a snapping boundary to flip."""
    report = snap_stability(setup["model"], setup["latents"], setup["codebook"], setup["masks"])
    f32, f64 = report["float32"], report["float64"]
    assert f32["locations"] == f64["locations"] == sum(int(m.sum()) for m in setup["masks"].values())
    assert f64["max_mu_discrepancy"] < 1e-12 < f32["max_mu_discrepancy"] < 1e-4
    assert f64["max_log2_sigma_discrepancy"] < 1e-12
    assert f64["near_boundary_share"] == 0.0 and f64["flipped_share"] == 0.0
    assert f32["flipped_share"] <= f32["near_boundary_share"]


def test_update_refits_stale_tails_so_the_tables_are_the_float_rate() -> None:
    """Tails the aux loss has not moved out far enough code hyper-latents beyond them with
    escape bits; `update()` builds the tables over refitted tails, weights left as trained."""
    torch.manual_seed(0)
    model = HyperVQ({"a": (4, 64)}, channels=8)
    bottleneck = model.blocks["a"].bottleneck.eval()
    with torch.no_grad():
        medians = bottleneck.quantiles[:, 0, 1].clone()
        bottleneck.quantiles[:, 0, 0] = medians - 1.0  # stale: the density reaches ±30
        bottleneck.quantiles[:, 0, 2] = medians + 1.0
    y = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(1)) * 6 + medians.view(1, -1, 1, 1)

    def tables_over_float() -> float:
        with torch.no_grad():
            floats = float(-torch.log2(bottleneck(y)[1]).sum())
        return bottleneck_table_bits(bottleneck, y) / floats - 1

    EntropyBottleneck.update(bottleneck, force=True)  # CompressAI's own: tables over the stale range
    assert tables_over_float() > 0.1
    stale = bottleneck.quantiles.detach().clone()
    assert model.update(force=True)
    assert abs(tables_over_float()) < 0.005
    assert int(bottleneck._cdf_length.min()) > 40  # the tables' range: ±20 and more, not ±1
    assert torch.equal(bottleneck.quantiles, stale)  # the weights stay as trained
    tables = bottleneck._quantized_cdf.clone()
    model.update(force=True)  # as after loading a model file: the same tables again
    assert torch.equal(bottleneck._quantized_cdf, tables)
