"""Quantizers: loss forms, straight-through gradients, RVQ residual identities, usage counts."""

import torch

from gicl.entropy import fixed
from gicl.nn.vq import ResidualVQ, VectorQuantizer, nearest_codeword, perplexity


def test_nearest_codeword_matches_brute_force():
    torch.manual_seed(0)
    z, c = torch.randn(500, 8), torch.randn(64, 8)
    brute = torch.cdist(z, c).argmin(1)
    assert torch.equal(nearest_codeword(z, c, chunk=37), brute)


def test_vq_loss_is_paper_form_and_legacy_swaps_beta():
    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3)
    vq = VectorQuantizer(16, 4, beta=0.25)
    zq, idx, loss = vq(z)
    code = vq.embedding.weight[idx].permute(0, 3, 1, 2)
    d = ((z - code) ** 2).mean()
    torch.testing.assert_close(loss, d * 1.25)  # both terms have the same value
    # gradient split: codebook term moves codewords with weight 1, commitment moves z with β
    z.requires_grad_(True)
    _, _, loss = vq(z)
    loss.backward()
    torch.testing.assert_close(z.grad, 0.25 * 2 * (z - code).detach() / z.numel())
    legacy = VectorQuantizer(16, 4, beta=0.25, legacy=True)
    legacy.load_state_dict(vq.state_dict())
    z2 = z.detach().clone().requires_grad_(True)
    legacy(z2)[2].backward()
    torch.testing.assert_close(z2.grad, 2 * (z2 - code).detach() / z2.numel())


def test_straight_through_value_exact_and_gradient_identity():
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 4)
    z = torch.randn(1, 4, 5, 5, requires_grad=True)
    zq, idx, _ = vq(z)
    assert torch.equal(zq, vq.embed(idx))  # bit-exact value, so decode == forward
    (zq * 3).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))


def test_residual_vq_prefixes_are_sums_of_stage_codewords():
    torch.manual_seed(0)
    rvq = ResidualVQ(3, 16, 4)
    y = torch.randn(2, 4, 3, 3, requires_grad=True)
    prefixes, idx, losses = rvq(y)
    assert idx.shape == (2, 3, 3, 3) and len(losses) == 3
    for k in range(1, 4):
        assert torch.equal(prefixes[k - 1], rvq.decode(idx[:, :k]))
    # each later stage quantizes the residual left by the earlier ones
    r2 = y - rvq.decode(idx[:, :1])
    assert torch.equal(idx[:, 1], rvq.stages[1].indices(r2))
    prefixes[-1].sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))  # one straight-through estimator


def test_usage_counts_on_device_and_mask():
    vq = VectorQuantizer(8, 2)
    vq.train()
    z = torch.randn(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    _, idx, _ = vq(z, mask)
    counts = vq.usage_counts(reset=True)
    assert int(counts.sum()) == 8
    assert torch.equal(counts, torch.bincount(idx[0, :2].reshape(-1), minlength=8))
    assert int(vq.usage.sum()) == 0
    assert abs(perplexity(torch.tensor([5, 5, 0, 0])) - 2.0) < 1e-5


def test_fixed_length_pack_round_trip_and_length():
    torch.manual_seed(0)
    for bits in (1, 7, 10, 14):
        v = torch.randint(0, 2**bits, (1000,))
        data = fixed.pack(v, bits)
        assert len(data) * 8 == fixed.packed_bits(1000, bits) < 1000 * bits + 8
        assert torch.equal(fixed.unpack(data, bits, 1000), v)
