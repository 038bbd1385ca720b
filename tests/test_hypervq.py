"""HyperVQ's probability model (eq. 3, 4, appendix D.5), integer tables, tail-floor, size."""

from __future__ import annotations

import math

import pytest
import torch

from gicl.codecs.controlgic import ControlGIC
from gicl.entropy.anchor_coding import (
    PRECISION,
    TAIL_RADIUS,
    TAIL_THRESHOLD,
    SnapGrid,
    decode_indices,
    encode_indices,
    exp_weights,
    frequency_chunks,
    integer_frequencies,
)
from gicl.entropy.hypervq import CODER_FLOOR, HyperVQ, anchor_logits, index_bits
from gicl.entropy.hypervq_bench import bench_anchor_coding, synthetic_parameters, tail_floor_cost
from gicl.errors import BitstreamError


def random_model(n: int, k: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(1, generator=g, dtype=torch.float64)
    codebook = torch.randn(k, d, generator=g, dtype=torch.float64) * scale
    mu = torch.randn(n, d, generator=g, dtype=torch.float64) * codebook.std()
    sigma = torch.exp(torch.randn(n, generator=g, dtype=torch.float64)) * codebook.std()
    return mu, sigma, codebook


@pytest.mark.parametrize(("k", "d", "seed"), [(16, 2, 0), (1024, 4, 1), (300, 8, 2)])
def test_eq3_equals_a_direct_softmax_of_scaled_squared_distances(k: int, d: int, seed: int) -> None:
    mu, sigma, codebook = random_model(64, k, d, seed)
    logits = -((codebook[None] - mu[:, None]) ** 2).sum(-1) / (2 * sigma[:, None] ** 2)
    direct = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    assert torch.allclose(torch.softmax(anchor_logits(mu, sigma, codebook), 1), direct, atol=1e-12, rtol=1e-9)
    target = torch.randint(k, (64,), generator=torch.Generator().manual_seed(seed))
    log_p = logits - torch.logsumexp(logits, 1, keepdim=True)  # eq. 3 in logs: no underflow
    eq4 = -log_p[torch.arange(64), target] / math.log(2.0)
    assert torch.allclose(index_bits(mu, sigma, codebook, target), eq4, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("k", "d", "seed"), [(16, 2, 3), (1024, 4, 4), (300, 8, 5)])
def test_d5_gradient_of_the_negative_log_likelihood_matches_autograd(k: int, d: int, seed: int) -> None:
    """∂(−log p_t)/∂μ = −(c_t − μ)/σ² + Σ_k p_k (c_k − μ)/σ² (appendix D.5)."""
    mu, sigma, codebook = random_model(32, k, d, seed)
    target = torch.randint(k, (32,), generator=torch.Generator().manual_seed(seed))
    mu.requires_grad_(True)
    nll = index_bits(mu, sigma, codebook, target) * math.log(2.0)  # bits → nats
    (grad,) = torch.autograd.grad(nll.sum(), mu)
    with torch.no_grad():
        p = torch.softmax(anchor_logits(mu, sigma, codebook), 1)
        s2 = (sigma * sigma)[:, None]
        diff = codebook[None] - mu[:, None]  # (N, K, d)
        expected = -(codebook[target] - mu) / s2 + (p[..., None] * diff).sum(1) / s2
    assert torch.allclose(grad, expected, rtol=1e-9, atol=1e-9)


def test_exp_weight_table_is_monotone_from_two_to_the_32_down_to_zero() -> None:
    w = exp_weights()
    assert w[0] == 1 << 32 and w[-1] == 0 and w[-2] > 0
    assert all(a >= b for a, b in zip(w, w[1:], strict=False))
    assert abs(w[64] / w[0] - math.exp(-1)) < 1e-9  # 64 steps per nat
    assert 22 < len(w) / 64 < 23.5  # the natural floor: round(2^32·e^-Δ) reaches 0 near 22.9 nats


@pytest.mark.parametrize("k", [16, 1024, TAIL_THRESHOLD + 1])
def test_integer_tables_are_legal_and_follow_eq3(k: int) -> None:
    codebook = torch.randn(k, 4, generator=torch.Generator().manual_seed(k))
    mu, sigma, _ = synthetic_parameters(codebook, 256)
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    f = integer_frequencies(mu_idx, sigma_idx, codebook, grid)
    assert f.dtype == torch.int64 and f.shape == (256, k)
    assert int(f.min()) >= 1 and bool((f.sum(1) == 1 << PRECISION).all())
    # eq. 3 at the snapped parameters and grid-rounded anchors, which the table realises up to
    # its 1/64-nat logit steps (and the normaliser's, as much again) and the 24-bit floor
    anchors = torch.round(codebook.double() / grid.mu_step) * grid.mu_step
    sigma_hat = torch.tensor([grid.sigma(int(j)) for j in sigma_idx], dtype=torch.float64)
    p = torch.softmax(anchor_logits(mu_idx.double() * grid.mu_step, sigma_hat, anchors), 1)
    big = p > 1e-3
    assert float((f.double()[big] / 2**PRECISION / p[big]).log().abs().max()) < 2.5 / 64
    # chunking changes nothing: one function of the location's own parameters
    assert torch.equal(torch.cat(list(frequency_chunks(mu_idx, sigma_idx, codebook, grid))), f)
    assert torch.equal(integer_frequencies(mu_idx[7:9], sigma_idx[7:9], codebook, grid), f[7:9])


def test_the_coder_floor_makes_eq4_what_the_integer_tables_cost() -> None:
    """Indices eq. 3 deems nearly impossible cost the tables' 24 bits; eq. 4 with the
    coder's floor says so, plain eq. 4 says 40 and more."""
    g = torch.Generator().manual_seed(7)
    codebook = torch.randn(1024, 4, generator=g)
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(codebook[:256] + 0.01 * torch.randn(256, 4, generator=g),
                                  torch.full((256,), grid.unit / 64))
    likely = torch.arange(256)
    rare = torch.argmax(torch.cdist(codebook[:256], codebook), 1)  # the farthest codeword
    symbols = torch.where(torch.arange(256) % 4 == 0, rare, likely)
    tables = encode_indices(symbols, mu_idx, sigma_idx, codebook, grid).information_bits
    anchors = torch.round(codebook.double() / grid.mu_step) * grid.mu_step
    sigma_hat = torch.tensor([grid.sigma(int(j)) for j in sigma_idx], dtype=torch.float64)
    at = (mu_idx.double() * grid.mu_step, sigma_hat, anchors, symbols)
    floored = float(index_bits(*at, CODER_FLOOR).sum())
    assert floored == pytest.approx(tables, rel=0.01)
    assert float(index_bits(*at).sum()) > 1.5 * tables
    assert float(index_bits(*at, CODER_FLOOR)[symbols == rare].min()) == pytest.approx(PRECISION, abs=0.01)
    # the gradient stays eq. 4's (D.5), so a model whose indices start below the floor learns
    mu = at[0].clone().requires_grad_(True)
    (floored_grad,) = torch.autograd.grad(index_bits(mu, *at[1:], CODER_FLOOR).sum(), mu)
    (plain_grad,) = torch.autograd.grad(index_bits(mu, *at[1:]).sum(), mu)
    assert torch.equal(floored_grad, plain_grad)
    assert bool(plain_grad[symbols == rare].abs().sum(1).gt(0).all())


def test_snapping_absorbs_perturbations_smaller_than_the_margin() -> None:
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(1024, 4, generator=g)
    grid = SnapGrid.for_codebook(codebook)
    assert grid.unit == 8.0 and grid.mu_step == 8.0 / 1024  # largest coordinate range in [8, 16)
    mu = torch.randn(4096, 4, generator=g)
    sigma = torch.exp(torch.randn(4096, generator=g))
    mu_margin, sigma_margin = grid.margins(mu, sigma)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    nudge_mu = mu.double() + 0.5 * mu_margin[:, None] * torch.sign(torch.randn(4096, 4, generator=g))
    nudge_sigma = sigma.double() * torch.exp2(0.5 * sigma_margin * torch.sign(torch.randn(4096, generator=g)))
    m2, s2 = grid.snap(nudge_mu, nudge_sigma)
    assert torch.equal(m2, mu_idx) and torch.equal(s2, sigma_idx)
    # and snapping is coarse enough to matter: a step across the margin does change it
    m3, _ = grid.snap(mu.double() + 2 * mu_margin[:, None], sigma)
    assert bool((m3 != mu_idx).any(1).float().mean() > 0.2)


def test_bounded_tail_floor_at_k16384_costs_under_0p2_percent_and_round_trips() -> None:
    codebook = torch.randn(16384, 4, generator=torch.Generator().manual_seed(1))
    for spread in (0.5, 2.0):  # a few anchors, and hundreds, carry the mass
        mu, sigma, indices = synthetic_parameters(codebook, 192, spread=spread, seed=2)
        assert abs(tail_floor_cost(codebook, mu, sigma, indices)) < 2e-3
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    f = integer_frequencies(mu_idx, sigma_idx, codebook, grid, tail_radius=TAIL_RADIUS)
    exact = integer_frequencies(mu_idx, sigma_idx, codebook, grid)
    floored = (f == 1) & (exact > 1)  # the rule did act: anchors past the radius lost their mass
    assert int(floored.sum()) > 0 and int(f.min()) == 1 and bool((f.sum(1) == 1 << PRECISION).all())
    coded = encode_indices(indices, mu_idx, sigma_idx, codebook, grid)
    assert torch.equal(decode_indices(coded.data, mu_idx, sigma_idx, codebook, grid), indices)


def test_range_coder_spends_the_integer_tables_information() -> None:
    codebook = torch.randn(1024, 4, generator=torch.Generator().manual_seed(3))
    mu, sigma, indices = synthetic_parameters(codebook, 3000, seed=3)
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    coded = encode_indices(indices, mu_idx, sigma_idx, codebook, grid)
    f = integer_frequencies(mu_idx, sigma_idx, codebook, grid)
    table_bits = float((PRECISION - torch.log2(f[torch.arange(3000), indices].double())).sum())
    assert coded.information_bits == pytest.approx(table_bits, rel=1e-12)
    assert table_bits <= 8 * len(coded.data) <= table_bits * 1.005 + 64
    assert torch.equal(decode_indices(coded.data, mu_idx, sigma_idx, codebook, grid), indices)


def test_corrupt_index_sections_are_bitstream_errors() -> None:
    codebook = torch.randn(64, 4, generator=torch.Generator().manual_seed(4))
    mu, sigma, indices = synthetic_parameters(codebook, 100, seed=4)
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    data = encode_indices(indices, mu_idx, sigma_idx, codebook, grid).data
    with pytest.raises(BitstreamError, match="truncated"):
        decode_indices(data[:-1], mu_idx, sigma_idx, codebook, grid)


def test_bench_reports_cdf_and_coding_times_with_a_round_trip() -> None:
    for k in (1024, 16384):
        r = bench_anchor_coding(k, ((12, 8), (6, 4)))
        assert r["round_trip"] and r["locations"] == 120 and r["tail_floor"] == (k > TAIL_THRESHOLD)
        assert min(r["cdf_s"], r["encode_s"], r["decode_s"]) > 0
        assert r["table_bits"] <= r["payload_bits"] <= 1.005 * r["table_bits"] + 64


def test_controlgic_hyperprior_is_1p6m_parameters_and_reads_the_codec_maps() -> None:
    """Three branches at d = 4, K = 1024 (the paper: 132.30 M − 130.69 M ≈ 1.61 M), fed with
    the maps a (tiny) Control-GIC produces: fine H/4, medium H/8, coarse H/16."""
    codec = ControlGIC(ch=32, ch_mult=[1, 1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[])
    d, k = codec.quantizer.embed_dim, codec.quantizer.n_embed
    hyper = HyperVQ({name: (d, k) for name in ("fine", "medium", "coarse")})
    assert (d, k) == (4, 1024)
    assert 1.6e6 * 0.85 <= sum(p.numel() for p in hyper.parameters()) <= 1.6e6 * 1.15
    x = torch.rand(1, 3, 80, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = codec(x, {"ratios": [0.3, 0.3, 0.4]})
    idx, masks = out.extras["indices"], out.extras["masks"]
    grids = {n: tuple(idx[n].shape[-2:]) for n in idx}
    assert grids == {"fine": (20, 12), "medium": (10, 6), "coarse": (5, 3)}
    latents = {n: codec.quantizer.embed(idx[n]) for n in idx}
    rates = hyper(latents, idx, codec.quantizer.embedding.weight, masks).rate_ind
    for n in idx:
        assert rates[n].shape == (1,) and float(rates[n]) > 0


def test_constriction_codes_with_exactly_our_integer_table() -> None:
    """Symbols sitting on floor entries (f = 1: 24 bits each) and on the largest entry: if
    constriction's fast quantiser made any of those frequencies differ from ours, every such
    symbol would cost a bit or more off the ideal; the payload is the ideal to a word or two."""
    codebook = torch.randn(1024, 4, generator=torch.Generator().manual_seed(6))
    mu, sigma, _ = synthetic_parameters(codebook, 4000, seed=6)
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    f = integer_frequencies(mu_idx, sigma_idx, codebook, grid)
    floor = (f == 1).to(torch.int64).argmax(1)  # the first floor entry of each row
    symbols = torch.where(torch.arange(4000) % 2 == 0, floor, f.argmax(1))
    assert bool((f[torch.arange(0, 4000, 2), symbols[::2]] == 1).all())
    coded = encode_indices(symbols, mu_idx, sigma_idx, codebook, grid)
    assert coded.information_bits <= 8 * len(coded.data) <= coded.information_bits + 64
    assert coded.information_bits > 2000 * 24
    assert torch.equal(decode_indices(coded.data, mu_idx, sigma_idx, codebook, grid), symbols)
