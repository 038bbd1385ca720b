"""HyperVQ's hyper-latent bottleneck: integer tables with a known floor per symbol, and a float
R_z that states what those tables and CompressAI's escape code make a file pay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from compressai._CXX import pmf_to_quantized_cdf

from gicl.entropy.bottleneck import (
    FlooredBottleneck,
    bottleneck_table_bits,
    floored_quantized_cdf,
    hyper_bits,
)
from gicl.entropy.rans_bits import rans_table_bits

TOTAL = 1 << 16


def wide_pmf(rare: float) -> list[float]:
    """A hyperprior-like table: a peaked core, 300 symbols far below 2⁻¹⁶, one at `rare`."""
    core = [0.4, 0.3, 0.2, 0.1 - rare - 300 * 1e-9]
    return core + [rare] + [1e-9] * 300


def test_every_symbol_gets_one_count_and_the_rest_follows_the_pmf() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([305, 40, 7])
    prob = torch.zeros(3, 305)
    prob[0] = torch.tensor(wide_pmf(2.0**-12))
    prob[1, :40] = torch.rand(40, generator=g) ** 4
    prob[2, :7] = torch.softmax(torch.randn(7, generator=g) * 5, 0)
    cdf = floored_quantized_cdf(prob, lengths)
    assert cdf.shape == (3, 306) and cdf.dtype == torch.int32
    for c, n in enumerate(lengths.tolist()):
        counts = cdf[c, 1 : n + 1] - cdf[c, :n]
        assert cdf[c, 0] == 0 and cdf[c, n] == TOTAL and bool((cdf[c, n + 1 :] == 0).all())
        ideal = 1 + prob[c, :n].double() / prob[c, :n].double().sum() * (TOTAL - n)
        assert bool((counts >= 1).all()) and float((counts - ideal).abs().max()) < 1.0
    assert torch.equal(cdf, floored_quantized_cdf(prob.clone(), lengths))  # a function of the pmf


def test_a_rare_symbol_keeps_its_probability_where_compressai_flattens_it() -> None:
    """Why the tables are ours: CompressAI's rounding gives each symbol that rounded to zero a
    count stolen from the rarest symbols above one, so in a wide table a symbol of
    probability 2⁻¹² is coded at 16 bits; here at 12."""
    pmf = wide_pmf(2.0**-12)
    theirs = pmf_to_quantized_cdf(pmf, 16)
    ours = floored_quantized_cdf(torch.tensor([pmf]), torch.tensor([len(pmf)]))[0].tolist()
    assert theirs[5] - theirs[4] == 1
    assert 16 - math.log2(ours[5] - ours[4]) == pytest.approx(12.0, abs=0.1)


@pytest.fixture(scope="module")
def stale_bottleneck() -> FlooredBottleneck:
    """A fresh bottleneck: its quantiles sit at ±10 while its density's 10⁻⁹ tails lie near
    ±210 (stale, as after a short run), so its tables are built over refitted tails."""
    torch.manual_seed(0)
    bottleneck = FlooredBottleneck(3).eval()
    bottleneck.update(force=True)
    return bottleneck


def test_hyper_latent_float_bits_are_what_the_tables_and_escape_code_cost(stale_bottleneck) -> None:
    """Each value coded alone: covered values (the core, the far tails the tables hold at
    their floor) and escaped ones (beyond the tables, overflow symbol + bypass chunks)."""
    b = stale_bottleneck
    medians = b.quantiles[:, 0, 1].detach()
    offsets = torch.arange(-400.0, 401.0, 7.0)
    y = (medians[:, None] + offsets[None]).reshape(1, 3, -1, 1)
    with torch.no_grad():
        y_hat, likelihoods = b(y)
        floats = hyper_bits(b, y_hat, likelihoods).reshape(3, -1)
    symbols = torch.round(y - medians.view(1, 3, 1, 1)).int().reshape(3, -1)
    tables = (b._quantized_cdf.tolist(), b._cdf_length.tolist(), b._offset.tolist())
    value = symbols - b._offset[:, None]
    escaped = (value < 0) | (value >= b._cdf_length[:, None] - 2)
    assert 0 < int(escaped.sum()) < escaped.numel() and int((likelihoods <= 1e-9).sum()) > int(escaped.sum())
    costs = torch.tensor([[rans_table_bits(np.array([int(s)]), np.array([c]), *tables) for s in symbols[c]]
                          for c in range(3)])
    gap = (floats.double() - costs).abs()
    assert float(gap[escaped].max()) < 0.01
    assert float(gap[~escaped].max()) < 0.6  # a count rounded down on a 1–2-count symbol
    assert float(floats.sum()) == pytest.approx(float(costs.sum()), rel=0.005)
    torch.manual_seed(0)
    unbuilt = FlooredBottleneck(3).eval()  # the same weights, no tables yet: the range it would build
    assert torch.allclose(hyper_bits(unbuilt, y_hat, likelihoods).reshape(3, -1), floats)
    assert float((-torch.log2(likelihoods).reshape(3, -1) - costs).abs().max()) > 10  # the float alone


def test_table_bits_are_the_length_of_compressais_stream_escapes_included(stale_bottleneck) -> None:
    """`rans_table_bits` (through `bottleneck_table_bits`) against the rANS string CompressAI
    writes, for values inside the tables and escaped far beyond them (bypass chunks)."""
    b = stale_bottleneck
    medians = b.quantiles[:, 0, 1].detach()
    far = torch.logspace(2.5, 6.0, 100).round()  # 316 … 10⁶: 3 to 6 bypass chunks
    offsets = torch.cat([torch.arange(-30.0, 31.0), far, -far])
    y = (medians[:, None] + offsets[None]).reshape(1, 3, -1, 1)
    ideal = bottleneck_table_bits(b, y)
    written = 8 * len(b.compress(y)[0])
    assert ideal <= written <= ideal * 1.005 + 64


def test_hyper_latent_bits_have_the_gradient_of_the_log_likelihood(stale_bottleneck) -> None:
    b = stale_bottleneck
    offsets = torch.tensor([0.0, 3.0, 90.0, 300.0])
    y_hat = (b.quantiles[:, 0, 1].detach()[:, None] + offsets).reshape(1, 3, 4, 1)
    likelihoods = torch.tensor([0.3, 1e-3, 1e-7, 1e-9]).repeat(3).reshape(1, 3, 4, 1).requires_grad_()
    (grad,) = torch.autograd.grad(hyper_bits(b, y_hat, likelihoods).sum(), likelihoods)
    assert torch.allclose(grad, -1 / (likelihoods.detach() * math.log(2.0)))
