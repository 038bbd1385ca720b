"""HyperVQ: a hyperprior entropy model for VQ indices (Niu et al., arXiv:2512.07192).

The paper moves probability modelling into the codebook's embedding space: a hyperprior
predicts, per location, an isotropic Gaussian N(μ, σ²I) in R^d, and the codewords are
fixed "anchors" whose categorical probabilities follow from their distances,

    (3)  p(ind = k) = softmax_k(−‖c_k − μ‖² / 2σ²),
    (4)  R_ind = Σ_locations −log₂ p(ind_true)   (bits; differentiable in μ and σ),

with p bounded below by the range coder's least probability 2⁻²⁴ (`index_bits`), so that
R_ind is what the integer tables cost even for indices eq. 3 deems nearly impossible.

This module is that entropy model, independent of any backbone. One *branch* is one index
map with its own hyperprior: a Control-GIC granularity (fine H/4, medium H/8, coarse H/16,
one shared codebook), the single map of a VQGAN, or one ProGIC RVQ stage (its own codebook;
each stage's hyper-stream is a separate section, so a prefix of stages decodes alone).

The H Block (the paper names it but gives no layers; our choice, after Ballé et al. 2018's
scale hyperprior at a width that meets the paper's parameter budget):
- hyper-analysis: input `[z·m, m]` (d + 1 channels: the masked latent and the routing mask,
  so absent positions cost no hyper bits and the network knows which positions count),
  3×3 conv s1 → LeakyReLU → 5×5 conv s2 → LeakyReLU → 5×5 conv s2, C channels (H/4 of the
  branch). The branch is zero-padded to a multiple of 4 first and the output cropped back.
- hyper-latents through CompressAI's `EntropyBottleneck(C)` (uniform noise in training,
  rounding about the medians at inference, its own rANS stream, `aux_loss`, `update`), its
  integer tables built with a known floor per symbol and R_z the −log₂ of what they give
  (`gicl.entropy.bottleneck`).
- hyper-synthesis: 5×5 deconv s2 → LeakyReLU → 5×5 deconv s2 → LeakyReLU → 3×3 conv to
  d + 1 channels: μ (d) and log σ (1).
- C = 72: three Control-GIC branches (d = 4) hold 1.60 M parameters, the paper's
  132.30 M − 130.69 M = 1.61 M for HVQ-CGIC.

Choices where the paper is silent:
- σ = unit·exp(s), where `unit` is the power of two below the codebook's largest coordinate
  range (`SnapGrid`): the network's output is scale-free, so a small residual codebook needs
  no other initialisation; it starts at unit/4 (the σ output's bias), about the
  codeword spacing of K = 1024 in d = 4, so the first rates are not those of a uniform
  table. σ is clamped to the coder's σ table range with a straight-through
  gradient (the clamp never blocks learning).
- The anchors are detached in the rate ("fixed anchors", §3.2.3): the rate moves μ, σ and,
  through the hyper-analysis and commitment, the encoder; it does not drag codewords.
- Masked branches: only positions present in the mask are coded and counted (the masks
  themselves are the backbone's business, sent before the indices). The same holds for
  the hyper-latents: only those whose 4×4 block of the branch holds a present position
  are coded and counted in R_z (`hyper_mask`); the others take the bottleneck's medians
  on both sides. So a sparse branch pays side information in proportion to its tokens,
  and a branch with no present position codes nothing (two empty sections).

Exact coding (integer tables identical on encoder and decoder machines, 24-bit range coder,
bounded tail-floor above 4096 codewords) is `gicl.entropy.anchor_coding`; for it the
hyper-synthesis runs in float64, which keeps machines' μ, σ within ~10⁻¹⁵ of each other
(float32: ~10⁻⁵, enough to move 0.03 % of locations across a snapping boundary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from gicl.codecs.base import symbols_checksum, verify_symbols
from gicl.entropy import MAX_RANS_SYMBOL
from gicl.entropy.anchor_coding import MU_CLAMP_UNITS, PRECISION, SnapGrid, decode_indices, encode_indices
from gicl.entropy.bottleneck import (
    FlooredBottleneck,
    bottleneck_table_bits,
    hyper_bits,
    with_coder_floor,
)
from gicl.errors import BitstreamError

HYPER_CHANNELS = 72
HYPER_STRIDE = 4  # two stride-2 layers
HYPER_INIT_SCALE = 10.0  # CompressAI's EntropyBottleneck default
INITIAL_SIGMA_UNITS = 0.25
CODER_FLOOR = 2.0**-PRECISION  # each symbol's least probability in the index coder's tables
NOTHING = torch.zeros(0, dtype=torch.int64)  # what an empty branch's sections carry


class HyperAnalysis(nn.Sequential):
    def __init__(self, d: int, channels: int) -> None:
        super().__init__(
            conv(d + 1, channels, kernel_size=3, stride=1), nn.LeakyReLU(inplace=True),
            conv(channels, channels), nn.LeakyReLU(inplace=True),
            conv(channels, channels),
        )


class HyperSynthesis(nn.Sequential):
    def __init__(self, d: int, channels: int) -> None:
        super().__init__(
            deconv(channels, channels), nn.LeakyReLU(inplace=True),
            deconv(channels, channels), nn.LeakyReLU(inplace=True),
            conv(channels, d + 1, kernel_size=3, stride=1),
        )
        with torch.no_grad():  # start at σ ≈ unit/4: a handful of anchors, not a uniform table
            self[-1].bias[d] = math.log(INITIAL_SIGMA_UNITS)


class HBlock(nn.Module):
    """One branch's hyperprior: analysis, factorized bottleneck, synthesis."""

    def __init__(self, d: int, k: int, channels: int, init_scale: float = HYPER_INIT_SCALE) -> None:
        super().__init__()
        self.d, self.k = d, k
        self.analysis = HyperAnalysis(d, channels)
        self.bottleneck = FlooredBottleneck(channels, init_scale=init_scale)
        self.synthesis = HyperSynthesis(d, channels)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:  # type: ignore[override]
        """Size the bottleneck's CDF buffers to the saved ones first (they are empty until
        `update()`), so a decoder loads the encoder's integer tables instead of rebuilding
        them; runs at any nesting depth, unlike an override of `load_state_dict`."""
        for name in ("_quantized_cdf", "_offset", "_cdf_length"):
            key = f"{prefix}bottleneck.{name}"
            if key in state_dict:
                getattr(self.bottleneck, name).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def analyse(self, z: Tensor, mask: Tensor) -> Tensor:
        x = torch.cat([z * mask, mask.to(z.dtype)], 1)
        h, w = x.shape[-2:]
        return self.analysis(F.pad(x, (0, (-w) % HYPER_STRIDE, 0, (-h) % HYPER_STRIDE)))

    def fill(self) -> Tensor:
        """(1, C, 1, 1): the value of a hyper-latent that is not coded (no present position
        under it), the bottleneck's medians (its most probable value), detached: the
        quantiles learn from the aux loss only."""
        return self.bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)

    def scatter_kept(self, column: Tensor, keep: Tensor) -> Tensor:
        """(1, C, h, w) hyper-latents from the decoded column (1, C, N, 1) of the kept ones;
        the others are `fill()`, on encoder and decoder alike."""
        out = self.fill().to(column.device, column.dtype).expand(1, -1, *keep.shape).clone()
        out[:, :, keep] = column[..., 0]
        return out

    def parameters_for(
        self, y_hat: Tensor, size: tuple[int, int], grid: SnapGrid, *, float64: bool = False
    ) -> tuple[Tensor, Tensor]:
        """μ (B, d, H, W) and σ (B, H, W) from quantized hyper-latents.

        float64: run the hyper-synthesis in double precision (the coder's path, see
        `HyperVQ.compress`); training uses the module's own precision.
        """
        if float64:
            weights = {k: v.double() for k, v in self.synthesis.named_parameters()}
            out = torch.func.functional_call(self.synthesis, weights, (y_hat.double(),))
        else:
            out = self.synthesis(y_hat)
        out = out[..., : size[0], : size[1]]
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # bf16 autocast: not for σ, μ
        log_sigma = out[:, self.d] + math.log(grid.unit)
        lo, hi = math.log(grid.sigma_min), math.log(grid.sigma_max)
        log_sigma = log_sigma + (log_sigma.clamp(lo, hi) - log_sigma).detach()  # straight-through clamp
        return out[:, : self.d], torch.exp(log_sigma)


def anchor_logits(mu: Tensor, sigma: Tensor, codebook: Tensor) -> Tensor:
    """Eq. 3's logits (N, K) for μ (N, d), σ (N,), codebook (K, d), up to a per-row constant.

    ‖c − μ‖² = ‖c‖² − 2μ·c + ‖μ‖²; the ‖μ‖² term is the same for every k and cancels in the
    softmax, so the logits are (2μ·c − ‖c‖²)/2σ² (one GEMM, no (N, K, d) tensor).
    At least float32 and outside autocast: in bf16 the logits' differences, which carry the
    rate, would drown in the rounding of their large common part.
    """
    dtype = torch.promote_types(mu.dtype, torch.float32)
    with torch.autocast(mu.device.type, enabled=False):
        mu, sigma, c = mu.to(dtype), sigma.to(dtype), codebook.to(dtype)
        return (2.0 * mu @ c.t() - (c * c).sum(1)[None, :]) / (2.0 * sigma * sigma)[:, None]


def clamp_to_coder_box(mu: Tensor, codebook: Tensor, grid: SnapGrid) -> Tensor:
    """μ clamped to the codebook's box widened by `MU_CLAMP_UNITS` units, as the exact coder
    clamps it: without it a hyperprior learns to put μ far outside the codebook, where
    eq. 3 still singles out the target by direction alone but the coder's table, computed
    at the clamped μ, does not (its rate would be up to the 24-bit floor per index)."""
    margin = MU_CLAMP_UNITS * grid.unit
    c = codebook.detach().to(mu.dtype)
    return torch.minimum(torch.maximum(mu, c.min(0).values - margin), c.max(0).values + margin)


def index_bits(mu: Tensor, sigma: Tensor, codebook: Tensor, target: Tensor, floor: float = 0.0) -> Tensor:
    """Eq. 4 per location: −log₂ p(target) in bits (N,), differentiable in μ and σ.

    floor: the least probability the coder gives a symbol (`CODER_FLOOR`). The integer tables
    realise `(1 − K·floor)·p + floor` (`anchor_coding`, step 4), so with it the value is what
    the file pays: an index eq. 3 deems nearly impossible costs the table's 24 bits, not the
    40 or 60 of its float probability. The gradient stays eq. 4's (D.5), as CompressAI's
    likelihood bound passes gradients that raise a likelihood: the floor's own gradient
    vanishes below it, and a model that starts with its indices there would never learn.
    Without a floor, plain eq. 4.
    """
    log_p = -F.cross_entropy(anchor_logits(mu, sigma, codebook), target, reduction="none")
    if floor > 0.0:
        log_p = with_coder_floor(log_p, floor, codebook.shape[0])
    return -log_p / math.log(2.0)


@dataclass
class HyperVQOutput:
    """rate_ind / rate_z: bits per image (B,) by branch; mu, sigma: per-location parameters of
    the present positions (N, d) and (N,), in mask order, for tools and tests."""

    rate_ind: dict[str, Tensor] = field(default_factory=dict)
    rate_z: dict[str, Tensor] = field(default_factory=dict)
    mu: dict[str, Tensor] = field(default_factory=dict)
    sigma: dict[str, Tensor] = field(default_factory=dict)

    def bits(self) -> Tensor:
        """R_ind + R_z over all branches, (B,)."""
        return sum(self.rate_ind.values()) + sum(self.rate_z.values())  # type: ignore[return-value]


@dataclass
class HyperVQStreams:
    """One image's HyperVQ sections: [hyper, indices] per branch in call order, one checksum
    per section, and −log₂ of the integer tables each section was coded with (bits), keyed as
    the model's rates: `<branch>` (indices, R_ind) and `hyper_<branch>` (hyper-latents, R_z)."""

    sections: list[bytes]
    checksums: list[int]
    table_bits: dict[str, float]


def branch_mask(masks: Mapping[str, Tensor] | None, name: str, like: Tensor) -> Tensor:
    """(B, 1, H, W) bool; all present when no mask is given."""
    if masks is None or name not in masks:
        return torch.ones(like.shape[0], 1, *like.shape[-2:], dtype=torch.bool, device=like.device)
    m = masks[name]
    return (m[:, None] if m.dim() == 3 else m).to(torch.bool)


def hyper_mask(mask: Tensor) -> Tensor:
    """(B, 1, ⌈H/4⌉, ⌈W/4⌉) bool: the hyper-latents whose 4×4 block of the branch holds a
    present position. Only those are coded and counted in R_z; the decoder knows the masks
    before the hyper-stream, so it knows which ones the stream holds. A hyper-latent over
    absent positions only would spend bits on nothing; without this a sparse branch paid
    for its whole hyper grid (at Control-GIC's lowest rate, 10 % medium tokens cost the
    hyper-latents of a full medium map)."""
    h, w = mask.shape[-2:]
    padded = F.pad(mask.to(torch.float32), (0, (-w) % HYPER_STRIDE, 0, (-h) % HYPER_STRIDE))
    return F.max_pool2d(padded, HYPER_STRIDE) > 0


def codebook_for(codebooks: Tensor | Mapping[str, Tensor], name: str) -> Tensor:
    """The branch's codebook: one tensor shared by all branches, or one per branch."""
    return (codebooks[name] if isinstance(codebooks, Mapping) else codebooks).detach()


def present(t: Tensor, mask: Tensor) -> Tensor:
    """Rows of (B, C, H, W) (or (B, H, W)) at present positions, raster order per image."""
    if t.dim() == 3:
        return t[mask[:, 0]]
    return t.permute(0, 2, 3, 1)[mask[:, 0]]


class HyperVQ(nn.Module):
    """Per-branch hyperpriors with eq. 3 categorical index models.

    branches: name → (d, K) (embedding dimension, codebook size). Every call takes the
    branches it is given, in the order given, so a caller may code a subset (a ProGIC prefix).
    """

    def __init__(
        self, branches: Mapping[str, tuple[int, int]], *, channels: int = HYPER_CHANNELS,
        init_scale: float = HYPER_INIT_SCALE,
    ) -> None:
        """init_scale: the bottlenecks' initial density width (CompressAI's `init_scale`)."""
        super().__init__()
        if not branches:
            raise ValueError("HyperVQ needs at least one branch")
        self.branch_specs = {name: (int(d), int(k)) for name, (d, k) in branches.items()}
        self.blocks = nn.ModuleDict(
            {n: HBlock(d, k, channels, init_scale) for n, (d, k) in self.branch_specs.items()})

    def _block(self, name: str, codebook: Tensor) -> HBlock:
        if name not in self.blocks:
            raise ValueError(f"unknown HyperVQ branch '{name}' (known: {', '.join(self.blocks)})")
        block = self.blocks[name]
        if tuple(codebook.shape) != (block.k, block.d):
            raise ValueError(
                f"branch '{name}' expects a ({block.k}, {block.d}) codebook, got {tuple(codebook.shape)}"
            )
        return block  # type: ignore[return-value]

    def forward(
        self,
        latents: Mapping[str, Tensor],
        indices: Mapping[str, Tensor],
        codebooks: Tensor | Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
    ) -> HyperVQOutput:
        """Rates in bits per image: R_ind (eq. 4 over present positions) and R_z (the
        EntropyBottleneck's −log₂ likelihoods with its tables' floor, `hyper_bits`).
        Differentiable; noise in training mode, rounding in eval mode (what `compress` codes)."""
        out = HyperVQOutput()
        for name, z in latents.items():
            codebook = codebook_for(codebooks, name)
            block = self._block(name, codebook)
            mask = branch_mask(masks, name, z)
            y_hat, likelihoods = block.bottleneck(block.analyse(z, mask))
            keep = hyper_mask(mask)  # only hyper-latents above a present position are coded
            y_hat = torch.where(keep, y_hat, block.fill().to(y_hat.dtype))
            out.rate_z[name] = (hyper_bits(block.bottleneck, y_hat, likelihoods) * keep).flatten(1).sum(1)
            grid = SnapGrid.for_codebook(codebook)
            mu, sigma = block.parameters_for(y_hat, tuple(z.shape[-2:]), grid)
            mu_p, sigma_p = clamp_to_coder_box(present(mu, mask), codebook, grid), present(sigma, mask)
            bits = index_bits(mu_p, sigma_p, codebook, present(indices[name], mask), CODER_FLOOR)
            image = torch.arange(z.shape[0], device=z.device)[:, None, None].expand(-1, *z.shape[-2:])
            out.rate_ind[name] = torch.zeros(z.shape[0], dtype=bits.dtype, device=z.device).index_add(
                0, image[mask[:, 0]], bits
            )
            out.mu[name], out.sigma[name] = mu_p, sigma_p
        return out

    def aux_loss(self) -> Tensor:
        """The EntropyBottlenecks' quantile loss (CompressAI): optimise with its own optimiser."""
        return sum(block.bottleneck.loss() for block in self.blocks.values())  # type: ignore[return-value]

    def update(self, force: bool = False) -> bool:
        """Build the EntropyBottlenecks' integer CDF tables (call before `compress`), over
        tails refitted where the aux loss has not placed them (`FlooredBottleneck.update`)."""
        updated = [block.bottleneck.update(force) for block in self.blocks.values()]
        return any(updated)

    @torch.no_grad()
    def compress(
        self,
        latents: Mapping[str, Tensor],
        indices: Mapping[str, Tensor],
        codebooks: Tensor | Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
    ) -> HyperVQStreams:
        """One image (batch 1): per branch a hyper section and an index section."""
        streams = HyperVQStreams([], [], {})
        for name, z in latents.items():
            if z.shape[0] != 1:
                raise ValueError("HyperVQ.compress codes one image at a time (batch size 1)")
            codebook = codebook_for(codebooks, name)
            block = self._block(name, codebook)
            mask = branch_mask(masks, name, z)
            if not bool(mask.any()):  # nothing to code in this branch: two empty sections
                streams.sections += [b"", b""]
                streams.checksums += [symbols_checksum(NOTHING)] * 2
                streams.table_bits.update({name: 0.0, f"hyper_{name}": 0.0})
                continue
            y = block.analyse(z, mask)
            keep = hyper_mask(mask)[0, 0]
            # the kept hyper-latents as one column (the bottleneck is factorized: the layout
            # does not change their cost; with every position kept the stream is the same)
            column = y[:, :, keep][..., None]
            if _beyond_rans_bound(block.bottleneck, column):
                raise ValueError(f"a hyper-latent exceeds ±{MAX_RANS_SYMBOL}: the model diverged")
            hyper = hyper_stream(block.bottleneck, column)
            # the decoder's path: identical floats on both sides from here on
            y_hat = block.scatter_kept(hyper_column(block.bottleneck, hyper, int(keep.sum())), keep)
            mu_idx, sigma_idx, grid = self._snapped(block, y_hat, tuple(z.shape[-2:]), mask, codebook)
            symbols = present(indices[name], mask)
            coded = encode_indices(symbols, mu_idx, sigma_idx, codebook, grid)
            streams.sections += [hyper, coded.data]
            streams.checksums += [_float_checksum(y_hat), symbols_checksum(symbols)]
            streams.table_bits.update({name: coded.information_bits,
                                       f"hyper_{name}": bottleneck_table_bits(block.bottleneck, column)
                                       if hyper else 0.0})  # an empty stream uses no table
        return streams

    @torch.no_grad()
    def decompress(
        self,
        sections: list[bytes],
        shapes: Mapping[str, tuple[int, int]],
        codebooks: Tensor | Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        checksums: list[int] | None = None,
    ) -> dict[str, Tensor]:
        """Indices (1, H, W) per branch of `shapes` (the branch grids, in section order);
        absent positions are 0. With checksums, a desync raises BitstreamError."""
        if len(sections) != 2 * len(shapes):
            raise BitstreamError(
                f"HyperVQ needs 2 sections per branch ({2 * len(shapes)} for {len(shapes)} branches), "
                f"got {len(sections)}: the file is truncated or of another model"
            )
        out: dict[str, Tensor] = {}
        for i, (name, (h, w)) in enumerate(shapes.items()):
            codebook = codebook_for(codebooks, name)
            block = self._block(name, codebook)
            device = codebook.device
            mask = branch_mask(masks, name, torch.empty(1, 1, h, w, device=device))
            if not bool(mask.any()):
                if sections[2 * i] or sections[2 * i + 1]:
                    raise BitstreamError(f"HyperVQ branch '{name}' has no coded position but its "
                                         "sections hold (trailing) bytes: the file is corrupted")
                for k in (2 * i, 2 * i + 1):
                    if checksums is not None:
                        verify_symbols(NOTHING, checksums[k], k)
                out[name] = torch.zeros(1, h, w, dtype=torch.int64, device=device)
                continue
            keep = hyper_mask(mask)[0, 0]
            kept = int(keep.sum())
            column = hyper_column(block.bottleneck, sections[2 * i], kept)
            if _beyond_rans_bound(block.bottleneck, column):
                raise BitstreamError(f"HyperVQ branch '{name}': the hyper-latent section decodes to "
                                     "values out of range: the file is corrupted")
            if hyper_stream(block.bottleneck, column) != sections[2 * i]:  # rANS stops early too
                raise BitstreamError(f"HyperVQ branch '{name}': the hyper-latent section is not what "
                                     "the encoder writes for its values (trailing or altered "
                                     "bytes): the file is corrupted")
            y_hat = block.scatter_kept(column.to(device), keep)
            if checksums is not None:
                _verify_float(y_hat, checksums[2 * i], 2 * i)
            mu_idx, sigma_idx, grid = self._snapped(block, y_hat, (h, w), mask, codebook)
            symbols = decode_indices(sections[2 * i + 1], mu_idx, sigma_idx, codebook, grid).to(device)
            if checksums is not None:
                verify_symbols(symbols, checksums[2 * i + 1], 2 * i + 1)
            idx = torch.zeros(1, h, w, dtype=torch.int64, device=device)
            idx[mask[:, 0]] = symbols
            out[name] = idx
        return out

    @staticmethod
    def _snapped(
        block: HBlock, y_hat: Tensor, size: tuple[int, int], mask: Tensor, codebook: Tensor
    ) -> tuple[Tensor, Tensor, SnapGrid]:
        """The coder's μ, σ indices: hyper-synthesis in float64, then snapped. Float64 makes
        the discrepancy between machines ~10⁻¹⁵ instead of ~10⁻⁶, so a location lands within
        it of a grid boundary ~10⁹ times less often (docs/hypervq.md, measurements)."""
        grid = SnapGrid.for_codebook(codebook)
        mu, sigma = block.parameters_for(y_hat, size, grid, float64=True)
        mu_idx, sigma_idx = grid.snap(present(mu, mask), present(sigma, mask))
        return mu_idx, sigma_idx, grid


def _beyond_rans_bound(bottleneck: EntropyBottleneck, column: Tensor) -> bool:
    """Whether a hyper-latent column (1, C, N, 1) holds a value beyond `MAX_RANS_SYMBOL`
    from its channel's median (the rANS symbol CompressAI codes)."""
    medians = bottleneck.quantiles[:, 0, 1].reshape(1, -1, 1, 1)
    return column.numel() > 0 and float((column - medians).abs().max()) > MAX_RANS_SYMBOL


def hyper_stream(bottleneck: EntropyBottleneck, column: Tensor) -> bytes:
    """The hyper section of a kept column (1, C, N, 1): the bottleneck's rANS string, or no
    bytes when every hyper-latent rounds to its channel's median. A hyperprior whose
    hyper-latents carry nothing (R_z ≈ 0, as a briefly trained one's do) would otherwise
    pay CompressAI's 64-bit rANS flush per branch and image: at Control-GIC's lowest point
    on Kodak that flush alone was ~2 % of the file."""
    medians = bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)
    if not bool(torch.round(column - medians).any()):  # CompressAI's symbols, all 0
        return b""
    return bottleneck.compress(column)[0]


def hyper_column(bottleneck: EntropyBottleneck, section: bytes, kept: int) -> Tensor:
    """The kept hyper-latents (1, C, kept, 1) a hyper section decodes to, the same floats on
    the encoder (which decodes its own section) and the decoder. An empty section is every
    symbol 0, dequantised as CompressAI does (0 + median, so −0.0 medians come out alike)."""
    if not section:
        medians = bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)
        return medians.new_zeros(1, bottleneck.channels, kept, 1) + medians
    return bottleneck.decompress([rans_padded(section, bottleneck.channels * kept)], (kept, 1))


def rans_padded(data: bytes, symbols: int) -> bytes:
    """`data` followed by zero bytes the rANS decoder may over-read on a damaged or mis-sized
    stream. CompressAI's C++ decoder reads 32-bit words without a bounds check: one per
    symbol, plus 4-bit bypass chunks that repeat while they read all ones, so a stream too
    short for the symbols asked (a wrong image size, a changed byte) reads past its end and
    can crash the process. Zeros end every bypass run at once; a valid stream never reads
    them (its decode is unchanged)."""
    return data + bytes(8 * symbols + len(data) + 16)


def _float_checksum(t: Tensor) -> int:
    """CRC of float32 bit patterns: the hyper-latents must decode to identical floats."""
    return symbols_checksum(t.detach().float().contiguous().view(torch.int32))


def _verify_float(t: Tensor, expected: int, section: int) -> None:
    verify_symbols(t.detach().float().contiguous().view(torch.int32), expected, section)
