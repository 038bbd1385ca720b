"""Timing and stability measurements of HyperVQ's exact index coding.

`bench_anchor_coding` times the three costs of coding one image's indices — the
probability-to-CDF step (snap μ, σ and build the integer tables, `frequency_chunks`),
range encoding and range decoding (each of which rebuilds the tables, as a decoder must) —
for given branch grids, e.g. Control-GIC's at 768×512: fine 192×128, medium 96×64,
coarse 48×32. The hyper-synthesis is not timed: it is a small convolution stack, and the
coding cost depends on the number of locations and K, not on how μ and σ were predicted,
so the parameters here are synthetic (codeword + Gaussian noise, σ from a fixed spread).

`snap_stability` says how often a location lies so close to a snapping boundary that the
float discrepancy between two evaluations of the same hyper-synthesis (another thread count,
other kernels, another precision) would change its integer table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gicl.entropy.anchor_coding import (
    PRECISION,
    SnapGrid,
    decode_indices,
    encode_indices,
    frequency_chunks,
    tail_radius_for,
)
from gicl.entropy.hypervq import anchor_logits, branch_mask, codebook_for, present

CONTROLGIC_768x512 = ((192, 128), (96, 64), (48, 32))


def synthetic_parameters(
    codebook: Tensor, n: int, *, spread: float = 0.5, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """(μ, σ, indices) with μ near a random codeword and the index drawn from eq. 3.

    σ is `spread` times the mean nearest-neighbour distance of the codebook, so each location
    spreads its mass over a handful of anchors (a few bits per index, as a trained model).
    """
    g = torch.Generator().manual_seed(seed)
    k, d = codebook.shape
    sample = codebook[torch.randint(k, (min(k, 2048),), generator=g)]
    nn_dist = torch.cdist(sample, codebook).topk(2, largest=False).values[:, 1].mean()
    sigma = torch.full((n,), float(spread * nn_dist))
    mu = codebook[torch.randint(k, (n,), generator=g)] + sigma[:, None] * torch.randn(n, d, generator=g)
    indices = torch.cat([
        torch.multinomial(torch.softmax(anchor_logits(m, s, codebook), 1), 1, generator=g)[:, 0]
        for m, s in zip(mu.split(1024), sigma.split(1024), strict=True)
    ])
    return mu, sigma, indices


def bench_anchor_coding(
    k: int, shapes: Sequence[tuple[int, int]] = CONTROLGIC_768x512, *, d: int = 4, seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Seconds for CDF preparation, encoding and decoding of all `shapes` locations at
    codebook size k (tail-floor on above the threshold), with bits and a round-trip check."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, d, generator=g)
    n = sum(h * w for h, w in shapes)
    mu, sigma, indices = synthetic_parameters(codebook, n, seed=seed)
    grid = SnapGrid.for_codebook(codebook)
    mu, sigma, codebook = mu.to(device), sigma.to(device), codebook.to(device)

    t0 = time.perf_counter()
    mu_idx, sigma_idx = grid.snap(mu, sigma)
    for f in frequency_chunks(mu_idx, sigma_idx, codebook, grid, tail_radius=tail_radius_for(k)):
        f.cpu()
    t1 = time.perf_counter()
    coded = encode_indices(indices, mu_idx, sigma_idx, codebook, grid)
    t2 = time.perf_counter()
    decoded = decode_indices(coded.data, mu_idx, sigma_idx, codebook, grid)
    t3 = time.perf_counter()
    return {
        "k": k, "locations": n, "tail_floor": tail_radius_for(k) is not None,
        "cdf_s": t1 - t0, "encode_s": t2 - t1, "decode_s": t3 - t2,
        "payload_bits": 8 * len(coded.data), "table_bits": coded.information_bits,
        "round_trip": bool(torch.equal(decoded, indices)),
    }


def tail_floor_cost(codebook: Tensor, mu: Tensor, sigma: Tensor, indices: Tensor) -> float:
    """Relative rate cost of the bounded tail-floor: Σ −log₂ f_t with it over Σ without, − 1."""
    grid = SnapGrid.for_codebook(codebook)
    mu_idx, sigma_idx = grid.snap(mu, sigma)

    def bits(radius: float | None) -> float:
        total, start = 0.0, 0
        for f in frequency_chunks(mu_idx, sigma_idx, codebook, grid, tail_radius=radius):
            chosen = f.gather(1, indices[start : start + len(f), None].to(f.device)).double()
            total += float((PRECISION - torch.log2(chosen)).sum())
            start += len(f)
        return total

    return bits(tail_radius_for(codebook.shape[0])) / bits(None) - 1.0


def _evaluate(
    block: torch.nn.Module, y_hat: Tensor, size: tuple[int, int], grid: SnapGrid, mask: Tensor, *,
    threads: int, float64: bool, channels_last: bool,
) -> tuple[Tensor, Tensor]:
    """Present positions' μ, σ from one evaluation of a branch's hyper-synthesis."""
    torch.set_num_threads(threads)
    y = y_hat.contiguous(memory_format=torch.channels_last) if channels_last else y_hat
    mu, sigma = block.parameters_for(y, size, grid, float64=float64)
    return present(mu, mask), present(sigma, mask)


@torch.no_grad()
def snap_stability(
    model: torch.nn.Module,
    latents: Mapping[str, Tensor],
    codebooks: Tensor | Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None = None,
    *,
    threads: tuple[int, int] = (1, 2),
) -> dict[str, dict[str, float]]:
    """Per-location snapping robustness of a HyperVQ model's μ, σ on these latents.

    For each precision of the hyper-synthesis — float32 (training's) and float64 (the
    coder's) — the same quantized hyper-latents go through it at `threads[0]` (the
    reference) and at `threads[1]` CPU threads and with channels-last inputs (other kernels,
    a stand-in for another machine); float32 is also compared with float64. Reported per
    precision: the largest μ and log₂σ discrepancies seen, the share of locations whose
    margin to a snapping boundary is below those (could flip), and the share whose snapped
    indices did differ from the reference's (did flip).
    """
    report: dict[str, dict[str, float]] = {}
    before = torch.get_num_threads()
    try:
        for float64 in (False, True):
            n = flips = near = 0
            mu_err = log_sigma_err = 0.0
            margins: list[tuple[Tensor, Tensor]] = []
            for name, z in latents.items():
                codebook = codebook_for(codebooks, name)
                grid = SnapGrid.for_codebook(codebook)
                block = model.blocks[name]
                mask = branch_mask(masks, name, z)
                y_hat = block.bottleneck(block.analyse(z, mask))[0]
                size = tuple(z.shape[-2:])

                at = (block, y_hat, size, grid, mask)
                mu, sigma = _evaluate(*at, threads=threads[0], float64=float64, channels_last=False)
                others = [
                    _evaluate(*at, threads=threads[1], float64=float64, channels_last=False),
                    _evaluate(*at, threads=threads[0], float64=float64, channels_last=True),
                ]
                if not float64:
                    others.append(_evaluate(*at, threads=threads[0], float64=True, channels_last=False))
                ref = grid.snap(mu, sigma)
                differs = torch.zeros(len(mu), dtype=torch.bool)
                for mu_o, sigma_o in others:
                    other = grid.snap(mu_o, sigma_o)
                    differs |= (ref[0] != other[0]).any(1) | (ref[1] != other[1])
                    if len(mu):
                        mu_err = max(mu_err, float((mu_o.double() - mu.double()).abs().max()))
                        ratio = sigma_o.double() / sigma.double()
                        log_sigma_err = max(log_sigma_err, float(torch.log2(ratio).abs().max()))
                flips += int(differs.sum())
                margins.append(grid.margins(mu, sigma))
                n += len(mu)
            for mu_margin, sigma_margin in margins:
                near += int(((mu_margin <= mu_err) | (sigma_margin <= log_sigma_err)).sum())
            report["float64" if float64 else "float32"] = {
                "locations": n, "max_mu_discrepancy": mu_err, "max_log2_sigma_discrepancy": log_sigma_err,
                "near_boundary_share": near / max(n, 1), "flipped_share": flips / max(n, 1),
            }
    finally:
        torch.set_num_threads(before)
    return report
