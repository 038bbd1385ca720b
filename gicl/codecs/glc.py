"""GLC: transform coding in the latent space of a generative VQ-VAE.

"Generative Latent Coding for Ultra-Low Bitrate Image Compression", Jia, Li, Li, Li, Lu,
CVPR 2024 (CVF open access; the authors' README links arXiv 2512.20194). Module structure and
tensor names are those of the authors' `GLC_Image(N=256)` (jzyustc/GLC @ 126db25), so their
checkpoint loads by name (`import_official_state_dict`: strip a `module.` prefix, nothing else).

Pipeline (paper eq. 1–2, Fig. 4a), for x ∈ [0, 1] padded (replicate) to a multiple of 64:

    l  = vqgan.encoder(2x − 1)                 256 ch at H/16 (CodeFormer VQGAN, nf 128)
    y  = enc(l, q_enc[q])                      2 gated depth-conv blocks · q_enc[q] · 2 blocks
    z  = hyper_enc(y)                          H/64; ẑ = z_vq (16384 × 256 codebook), 14 bit each
    params = y_prior_fusion(hyper_dec(ẑ))     768 ch at H/16: (quant step, scales, means)
    ŷ  = four-part prior (DCVC-DC)             y·(1/max(step, ½)) coded in 4 steps, × max(step, ½)
    l̂  = dec(ŷ, q_dec[q]);  x̂ = (vqgan.generator(l̂) + 1) / 2

The four-part prior splits the channels in 4 groups of C/4 and the plane in a 2×2 pattern;
step k codes, in every group, one of the 4 pixel phases (rotated over groups), so every
position of every channel is coded exactly once. Step 0 uses (scales, means) from `params`;
step k > 0 uses `y_spatial_prior(y_spatial_prior_adaptor_k(cat(ŷ so far, reduction(params))))`.
Quantisation is rounding of (y·q − μ) with a straight-through gradient (the official `quant`).

Parameters (official build, tests/test_glc.py): 163.99 M in all. Training-only: the two code
predictors (27.58 M each; Sec. 4.2–4.3 use them as losses only, `GLC_Image.test` never calls
them) and the VQ-VAE's own codebook `vqgan.quantize` (4.19 M; stage I's bottleneck, E_VQ in
stage III and the initialisation of `z_vq`, never on the inference path). Without the code
predictors the model has 108.83 M, the paper's "109 M" (Table 3); the inference codec also
leaves out `vqgan.quantize`: 104.64 M. `training_parts=False` builds the codec without them
(what an exported model file holds).

Bitstream: five sections, each with a CRC-32 of its decoded symbols.
  0. z: the ⌈H/64⌉·⌈W/64⌉ hyper indices, 14 bits each, raster order (fixed length: the
     paper's categorical hyper module has no entropy model for z).
  1–4. ŷ step k: the integer symbols round(y·q − μ) of the positions step k codes (channel,
     row, column order), rANS-coded by CompressAI's entropy coder with CompressAI's Gaussian
     CDF tables (16-bit, 64 scales log-spaced in [0.11, 256], symbols beyond a table's
     range escaped with Exp-Golomb-like bypass bits). The decoder rebuilds step k's scales
     from steps < k, as the model does.
Table choice must be identical in the decoder, which recomputes the scales in another
process, maybe with another thread count (float32 convolutions then differ by ~1e-6, enough
to move a scale across a table boundary now and then). So when not training, the whole
entropy-parameter path (hyper_dec, y_prior_fusion, the spatial prior) runs in float64 and a
scale selects its table by exact comparison of that float64 value with the table (CompressAI's
rule: the first table scale ≥ the scale): thread-count differences are then ~1e-15 relative
against table steps of 12 %, and the means shifting ŷ come from the same path. The symbol
checksum of each section turns a desync into an error instead of a wrong image. Training runs
the path in the model's dtype (bf16/fp32); the forward pass in eval mode is exactly what
`decompress` returns.

Inference speed: the VQ-VAE's res blocks reuse their intermediate tensors in place when no
autograd graph is recorded; `inference_dtype="bfloat16"` (opt-in) runs the networks around
the entropy model under bf16 autocast. On a CPU the VQ-VAE runs channels-last at inference
(`gicl.nn.glc_blocks._run`: oneDNN convolves NHWC without reordering, and a res block adds
its second convolution into its input inside the convolution): its floats never select a
symbol, and x̂ of the authors' fixture stays within 3.3e-7 of its checksum (tolerance 1e-5).
The transform coder and the entropy-parameter path stay NCHW.

Rate in `forward`: rate["y"] is the official estimate Σ −log₂(Φ((ŷ+½)/σ) − Φ((ŷ−½)/σ) + 1e-5)
with σ = clamp(scale, 1e-5) (differentiable; what stages II/III train), rate["z"] the
fixed 14 bits per hyper position. `coded_bits` gives −log₂ of the integer tables actually used.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from gicl.codecs.base import (
    Codec,
    CodecOutput,
    EncodedImage,
    pad_to_multiple,
    register_codec,
    symbols_checksum,
    verify_symbols,
)
from gicl.entropy import MAX_RANS_SYMBOL, fixed
from gicl.entropy.rans_bits import rans_table_bits
from gicl.errors import BitstreamError, RecipeError, UserError
from gicl.nn.blocks import INFERENCE_DTYPES, network_precision
from gicl.nn.glc_blocks import (
    CodePredictor,
    DepthConvBlock,
    DepthConvBlock2,
    ResidualBlockUpsample,
    VQAutoEncoder,
)
from gicl.nn.heap import release_free_heap
from gicl.nn.vq import VectorQuantizer

QUALITIES = 4
PARTS = 4
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64  # CompressAI's default scale table
TRAINING_ONLY = ("vqgan_codebook", "code_predictors")


def quality_gains(qualities: int, channels: int) -> Tensor:
    """Initial q_enc rows: 2^((q − (Q−1)/2) / 2) per channel, i.e. 0.59, 0.84, 1.19, 1.68 for
    Q = 4 (q_dec starts at the reciprocals, so every row's untrained transform is the same).

    q_enc scales y before rounding, so a larger gain is a finer step and more bits. The paper
    and the authors' inference code do not say how the rows start (the code ships trained
    values); starting them equal (all ones) leaves the rate order of the rows to chance until
    training separates them — a short run (the demo profile) then orders neighbouring rows
    arbitrarily. Starting them a half-bit step apart orders the rates from iteration 0, and
    each row's λ refines its gain from there.
    """
    exponents = (torch.arange(qualities, dtype=torch.float32) - (qualities - 1) / 2) / 2
    return torch.exp2(exponents).view(qualities, 1, 1, 1).expand(qualities, channels, 1, 1).clone()


class ScaledTransform(nn.Module):
    """g_a / g_s (official `GLC_Encoder` / `GLC_Decoder`): two gated depth-conv blocks, a
    per-channel scale (the quality's q_enc / q_dec row), two more blocks. `prefix` names the
    halves as the official modules do (`enc_1`/`enc_2`, `dec_1`/`dec_2`)."""

    def __init__(self, n: int, prefix: str) -> None:
        super().__init__()
        self.halves = (f"{prefix}_1", f"{prefix}_2")
        for name in self.halves:
            self.add_module(name, nn.Sequential(DepthConvBlock2(n, n), DepthConvBlock2(n, n)))

    def forward(self, x: Tensor, quant_step: Tensor) -> Tensor:
        first, second = (getattr(self, name) for name in self.halves)
        return second(first(x) * quant_step)


def four_part_masks(c: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """The 4 complementary (1, C, h, w) masks of DCVC-DC's four-part prior.

    Phases m0..m3 = the (0,0), (0,1), (1,0), (1,1) pixel of every 2×2 cell; channel group g
    of step k uses phase ORDER[k][g] (the official `get_mask_four_parts`).
    """
    order = ((0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 0, 3, 2))
    rows = torch.arange(h, device=device)[:, None] % 2
    cols = torch.arange(w, device=device)[None, :] % 2
    phases = [((rows == r) & (cols == s)).to(dtype) for r in (0, 1) for s in (0, 1)]
    g = c // PARTS
    return [torch.cat([phases[p].expand(g, h, w) for p in o])[None] for o in order]


@functools.lru_cache(maxsize=1)
def _compressai() -> tuple[Any, Any]:
    """CompressAI's `ans` and `entropy_models` modules, imported on first use: importing
    compressai also imports torch_geometric and torch._dynamo (seconds on a CPU), which
    commands that never code a GLC file (`gicl info` of another codec) should not pay."""
    with warnings.catch_warnings():  # torch_geometric calls the deprecated torch.jit.script:
        warnings.simplefilter("ignore", FutureWarning)  # keep stderr to the CLI's one error line
        from compressai import ans, entropy_models
    return ans, entropy_models


@functools.lru_cache(maxsize=1)
def gaussian_tables() -> tuple[Tensor, list[list[int]], list[int], list[int]]:
    """(scale table float64, quantised CDFs, CDF lengths, offsets): CompressAI's Gaussian
    tables, built once on the CPU from constants, hence identical in every process."""
    table = torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))
    gc = _compressai()[1].GaussianConditional(None)
    gc.update_scale_table(table)
    return (
        gc.scale_table.double(), gc.quantized_cdf.tolist(), gc.cdf_length.reshape(-1).int().tolist(),
        gc.offset.reshape(-1).int().tolist(),
    )


def table_indexes(scales: Tensor) -> Tensor:
    """Table per scale: the first table scale ≥ the scale, clamped to the table (CompressAI's
    `build_indexes`), compared in float64."""
    table = gaussian_tables()[0].to(scales.device)
    return torch.searchsorted(table, scales.double().contiguous()).clamp_max(len(table) - 1)


def table_bits(symbols: np.ndarray, indexes: np.ndarray) -> float:
    """−log₂ of CompressAI's Gaussian tables for these symbols, escape bits included: the
    ideal length of what `RansEncoder.encode_with_indexes` writes."""
    _, cdfs, lengths, offsets = gaussian_tables()
    return rans_table_bits(symbols, indexes, cdfs, lengths, offsets)


def gaussian_bits(y_q: Tensor, scales: Tensor) -> Tensor:
    """The official per-element bit estimate (`get_y_gaussian_bits`): zero-mean Gaussian on
    the integer residual, σ = clamp(scale, 1e-5, 1e10), −log₂(p + 1e-5) clamped at 0."""
    gaussian = torch.distributions.Normal(torch.zeros_like(scales), scales.clamp(1e-5, 1e10))
    p = gaussian.cdf(y_q + 0.5) - gaussian.cdf(y_q - 0.5)
    return (-torch.log(p + 1e-5) / math.log(2.0)).clamp_min(0)


StepCoder = Callable[[int, Tensor, Tensor, Tensor], Tensor]
"""(step k, scales of step k, means of step k, mask of step k) → integer symbols of step k
as a (B, C, h, w) tensor, zero outside the mask."""


@register_codec
class GLC(Codec):
    codec_id = "glc"
    multiple = 64  # official build; set per instance from ch_mult

    def __init__(
        self, *, channels: int = 256, nf: int = 128, ch_mult: list[int] = (1, 1, 2, 2, 4),
        res_blocks: int = 2, attn_resolutions: list[int] = (16,), resolution: int = 256,
        codebook_size: int = 16384, qualities: int = QUALITIES, attention_window: int = 32,
        code_pred_dim: int = 512, code_pred_heads: int = 8, code_pred_layers: int = 9,
        code_pred_tokens: int = 256, beta: float = 0.25, legacy_vq: bool = True,
        training_parts: bool = True, inference_dtype: str = "float32",
    ) -> None:
        """channels: N, the VQ-VAE latent width and the transform coder's (256). codebook_size:
        both the VQ-VAE's and the hyper codebook's (16384 → 14 bits per z). qualities: rows
        of q_enc/q_dec (4). attention_window: VQ-VAE attention window in eval mode (32; 0 =
        global). legacy_vq: β on the codebook term, as the official quantizer.
        training_parts: build the code predictors and `vqgan.quantize` (training only).
        inference_dtype: "float32" or "bfloat16" (opt-in): the VQ-VAE, `enc`, `hyper_enc` and
        `dec` at inference under bf16 autocast (AMX CPUs, GPUs). The entropy-parameter path
        stays float64 and the hyper latent is rounded to float32 before its codeword search,
        so the decoder on any machine rebuilds the encoder's tables and symbols; only x̂ and
        the encoder's choice of symbols change."""
        super().__init__()
        if inference_dtype not in INFERENCE_DTYPES:
            raise RecipeError(
                f"codec.inference_dtype must be one of {', '.join(INFERENCE_DTYPES)}; got {inference_dtype!r}"
            )
        self.inference_dtype = inference_dtype
        if len(ch_mult) < 3 or channels % PARTS:
            raise RecipeError(
                f"codec.ch_mult needs ≥ 3 levels and codec.channels a multiple of {PARTS}, got "
                f"{list(ch_mult)}, {channels}"
            )
        n = channels
        self.enc = ScaledTransform(n, "enc")
        self.hyper_enc = nn.Sequential(
            DepthConvBlock(n, n), nn.Conv2d(n, n, 3, stride=2, padding=1), nn.LeakyReLU(0.01),
            nn.Conv2d(n, n, 3, stride=2, padding=1),
        )
        self.hyper_dec = nn.Sequential(
            ResidualBlockUpsample(n, n), ResidualBlockUpsample(n, n), DepthConvBlock(n, n)
        )
        self.y_prior_fusion = nn.Sequential(DepthConvBlock(n, 2 * n), DepthConvBlock(2 * n, 3 * n))
        self.y_spatial_prior_reduction = nn.Conv2d(3 * n, n, 1)
        self.y_spatial_prior_adaptor_1 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_2 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_3 = DepthConvBlock(2 * n, 2 * n)
        self.y_spatial_prior = nn.Sequential(*[DepthConvBlock(2 * n, 2 * n) for _ in range(3)])
        self.dec = ScaledTransform(n, "dec")
        self.q_enc = nn.Parameter(quality_gains(qualities, n))
        self.q_dec = nn.Parameter(quality_gains(qualities, n).reciprocal())
        self.vqgan = VQAutoEncoder(
            nf=nf, emb_dim=n, ch_mult=list(ch_mult), res_blocks=res_blocks, resolution=resolution,
            attn_resolutions=list(attn_resolutions), codebook_size=codebook_size,
            patch=attention_window, beta=beta, legacy_vq=legacy_vq, codebook=training_parts,
        )
        predictor = dict(latent_dim=n, dim=code_pred_dim, heads=code_pred_heads,
                         layers=code_pred_layers, codebook_size=codebook_size, tokens=code_pred_tokens)
        self.code_pred_loss = CodePredictor(**predictor) if training_parts else None
        self.code_pred_pix_loss = CodePredictor(**predictor) if training_parts else None
        self.z_vq = VectorQuantizer(codebook_size, n, beta=beta, legacy=legacy_vq)
        self.qualities = qualities
        self.z_bits = max(1, math.ceil(math.log2(codebook_size)))
        self.training_parts = training_parts
        # the hyper latent is 4× below the VQ-VAE latent: pad to a multiple of both
        self.multiple = 4 * 2 ** (len(ch_mult) - 1)

    # ---------------------------------------------------------------- groups
    def parameter_groups(self) -> dict[str, nn.Module]:
        """Inference codec: vqgan_encoder, vqgan_generator, transform (enc, dec, q_enc,
        q_dec), entropy_model (hyper module, z_vq, four-part prior). Training only
        (`TRAINING_ONLY`): vqgan_codebook, code_predictors."""
        groups = {
            "vqgan_encoder": self.vqgan.encoder, "vqgan_generator": self.vqgan.generator,
            "transform": _Group(enc=self.enc, dec=self.dec, q_enc=self.q_enc, q_dec=self.q_dec),
            "entropy_model": _Group(
                hyper_enc=self.hyper_enc, hyper_dec=self.hyper_dec, z_vq=self.z_vq,
                y_prior_fusion=self.y_prior_fusion, reduction=self.y_spatial_prior_reduction,
                adaptor_1=self.y_spatial_prior_adaptor_1, adaptor_2=self.y_spatial_prior_adaptor_2,
                adaptor_3=self.y_spatial_prior_adaptor_3, spatial=self.y_spatial_prior,
            ),
        }
        if self.training_parts:
            groups["vqgan_codebook"] = self.vqgan.quantize
            groups["code_predictors"] = _Group(latent=self.code_pred_loss, pixel=self.code_pred_pix_loss)
        return groups

    def parameter_split(self) -> dict[str, int]:
        """Parameters of the inference codec, of each training-only group, and in all."""
        count = {k: sum(p.numel() for p in g.parameters()) for k, g in self.parameter_groups().items()}
        out = {"inference": sum(v for k, v in count.items() if k not in TRAINING_ONLY)}
        out.update({k: count[k] for k in TRAINING_ONLY if k in count})
        out["total"] = sum(p.numel() for p in self.parameters())
        return out

    def for_inference(self) -> GLC:
        """This codec without its training-only parts (`training_parts=False`, same weights
        otherwise): what an exported model file holds. Needs the recipe config that
        `build_codec` records."""
        from gicl.codecs.base import build_codec

        if not self.training_parts:
            return self
        if not self.config:
            raise ValueError("build the codec with gicl.codecs.build_codec to export it")
        codec = build_codec(self.inference_config(self.config))
        codec.load_state_dict(import_official_state_dict(self.state_dict(), training_parts=False))
        return codec.to(self.device_of()).train(self.training)

    @classmethod
    def inference_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "training_parts": False}

    # ---------------------------------------------------------------- quality
    def quality_of(self, point: dict[str, Any] | None) -> float:
        """The point's quality index in 0..qualities−1 (fractional: interpolated rows); no
        point means the highest quality."""
        q = (point or {}).get("quality", self.qualities - 1)
        unknown = sorted(set(point or {}) - {"quality"})
        if unknown:
            raise UserError(f"unknown key '{unknown[0]}' in a GLC point (known: quality)")
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= self.qualities - 1:
            raise UserError(f"GLC quality must be a number in 0..{self.qualities - 1} (0 = lowest "
                            f"rate), got {q!r}")
        return q

    def quality_scales(self, q: float) -> tuple[Tensor, Tensor]:
        """(q_enc, q_dec) rows for quality q: row q for an integer, else linear interpolation
        between the two neighbouring rows (beyond the paper: a continuous rate knob, as the
        authors' `interpolate_q` does on a 64-row grid)."""
        lo = min(int(math.floor(q)), self.qualities - 1)
        t = float(q) - lo
        if t == 0:  # index, not slice: a view of a parameter made under no_grad breaks
            return self.q_enc[[lo]], self.q_dec[[lo]]  # FlopCounterMode's module hooks (`info`)
        return tuple(  # type: ignore[return-value]
            torch.lerp(w[lo:lo + 1], w[lo + 1:lo + 2], t) for w in (self.q_enc, self.q_dec)
        )

    def operating_points(self) -> list[dict[str, Any]]:
        return [{"quality": q} for q in range(self.qualities)]

    # ---------------------------------------------------------------- model
    def _prior_net(self, module: nn.Module, x: Tensor) -> Tensor:
        """Run an entropy-parameter module in x's dtype (float64 when coding: see module doc)."""
        if x.dtype != torch.float64:
            return module(x)
        params = {k: v.double() for k, v in module.named_parameters()}
        return functional_call(module, params, (x,))

    def hyper_prior(self, z_hat: Tensor) -> Tensor:
        """params (B, 3N, h, w) = y_prior_fusion(hyper_dec(ẑ)), float64 unless training."""
        dtype = z_hat.dtype if self.training else torch.float64
        return self._prior_net(self.y_prior_fusion, self._prior_net(self.hyper_dec, z_hat.to(dtype)))

    def four_part_prior(
        self, params: Tensor, code_step: StepCoder
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """DCVC-DC's four-step spatial prior (official `forward_four_part_prior`).

        `code_step` quantizes (encoder, forward) or entropy-decodes (decoder) each step.
        Returns (ŷ·step = the input of `dec`, integer ŷ residuals, scales, means, q_enc map),
        scales/means assembled over the steps as the official code does.
        """
        quant_step, scales, means = params.chunk(3, 1)
        quant_step = quant_step.clamp_min(0.5)
        common = self._prior_net(self.y_spatial_prior_reduction, params)
        b, c, h, w = scales.shape
        masks = four_part_masks(c, h, w, params.device, params.dtype)
        adaptors = (self.y_spatial_prior_adaptor_1, self.y_spatial_prior_adaptor_2,
                    self.y_spatial_prior_adaptor_3)
        y_hat = y_q = s_hat = m_hat = None
        for k, mask in enumerate(masks):
            if k:
                ctx = self._prior_net(adaptors[k - 1], torch.cat((y_hat, common), 1))
                scales, means = self._prior_net(self.y_spatial_prior, ctx).chunk(2, 1)
            s_k, m_k = scales * mask, means * mask
            q_k = code_step(k, s_k, m_k, mask)
            y_hat = q_k + m_k if k == 0 else y_hat + (q_k + m_k)
            y_q = q_k if k == 0 else y_q + q_k
            s_hat = s_k if k == 0 else s_hat + s_k
            m_hat = m_k if k == 0 else m_hat + m_k
        return y_hat * quant_step, y_q, s_hat, m_hat, 1.0 / quant_step

    @staticmethod
    def quantizer(y_scaled: Tensor, forced: Tensor | None = None) -> StepCoder:
        """The encoder's step coder: round((y·q − μ)·mask) with a straight-through gradient;
        `forced` (teacher forcing, tests) substitutes given integer residuals."""

        def code(k: int, s_k: Tensor, m_k: Tensor, mask: Tensor) -> Tensor:
            if forced is not None:
                return forced.to(m_k) * mask
            res = (y_scaled - m_k) * mask
            return res + (torch.round(res) - res).detach()

        return code

    def analyse(self, x: Tensor, q: float) -> tuple[Tensor, Tensor, Tensor]:
        """(l, y, z) of x ∈ [0, 1] padded to 64: VQ-VAE latent, transformed latent, hyper latent."""
        q_enc, _ = self.quality_scales(q)
        with network_precision(x, self.inference_dtype, self.training):
            latent = self.vqgan.encoder(pad_to_multiple(x, self.multiple) * 2 - 1)
            y = self.enc(latent, q_enc)
            z = self.hyper_enc(y)
        if not self.training:  # the coding path reads float32 (bf16 autocast leaves bf16)
            latent, y, z = latent.float(), y.float(), z.float()
        return latent, y, z

    def synthesise(self, y_hat: Tensor, q: float, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(l̂, x̂ ∈ ≈[0, 1] cropped to size) from ŷ·step."""
        _, q_dec = self.quality_scales(q)
        with network_precision(y_hat, self.inference_dtype, self.training):
            latent_hat = self.dec(y_hat.to(q_dec.dtype), q_dec)
            x_hat = (self.vqgan.generator(latent_hat) + 1) / 2
        if not self.training:
            latent_hat, x_hat = latent_hat.float(), x_hat.float()
        return latent_hat, x_hat[..., : size[0], : size[1]].contiguous()

    def forward(
        self, x: Tensor, point: dict[str, Any] | None = None, *, forced_y_q: Tensor | None = None
    ) -> CodecOutput:
        """x ∈ [0, 1] (B, 3, H, W), point {"quality": q}. In eval mode x_hat equals
        `decompress(compress(x))`. extras: latent l, latent_hat l̂, y, z, z_indices, y_q,
        scales, means, params and y_hat (ŷ·step, the input of `dec`), float64 unless
        training. forced_y_q: teacher forcing (integer ŷ residuals used instead of rounding)."""
        q = self.quality_of(point)
        size = (x.shape[-2], x.shape[-1])
        latent, y, z = self.analyse(x, q)
        z_hat, z_idx, z_loss = self.z_vq(z)
        params = self.hyper_prior(z_hat)
        q_map = 1.0 / params[:, : params.shape[1] // 3].clamp_min(0.5)
        y_hat, y_q, scales, means, _ = self.four_part_prior(
            params, self.quantizer(y.to(params.dtype) * q_map, forced_y_q)
        )
        latent_hat, x_hat = self.synthesise(y_hat, q, size)
        b = x.shape[0]
        # float32 as the official estimate (also under bf16 autocast: −log of tiny p needs it)
        rate_y = gaussian_bits(y_q.float(), scales.float()).flatten(1).sum(1)
        return CodecOutput(
            x_hat=x_hat,
            rate={"y": rate_y, "z": torch.full((b,), float(z_idx[0].numel() * self.z_bits), device=x.device)},
            losses={"z_vq": z_loss},
            extras={
                "latent": latent, "latent_hat": latent_hat, "y": y, "z": z, "z_indices": z_idx,
                "y_q": y_q, "scales": scales, "means": means, "params": params, "y_hat": y_hat,
                "quality": q,
            },
        )

    def latent_indices(self, latent: Tensor) -> Tensor:
        """(B, h·w) VQ-VAE codebook indices of a latent (the code-prediction target M_l)."""
        if self.vqgan.quantize is None:
            raise UserError("this GLC was built without training parts (vqgan.quantize)")
        return self.vqgan.quantize.indices(latent).flatten(1)

    # ---------------------------------------------------------------- bitstream
    @torch.no_grad()
    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        if x.shape[0] != 1:
            raise ValueError("compress takes one image (1, 3, H, W)")
        if self.training:
            raise ValueError("compress needs eval mode (float64 entropy parameters)")
        q = self.quality_of(point)
        release_free_heap()  # what earlier images left in the heap, before full-size maps
        _, y, z = self.analyse(x, q)
        z_idx = self.z_vq.indices(z)
        params = self.hyper_prior(self.z_vq.embed(z_idx).to(z.dtype))
        q_map = 1.0 / params[:, : params.shape[1] // 3].clamp_min(0.5)
        quantize = self.quantizer(y.to(params.dtype) * q_map)
        sections, checksums = [fixed.pack(z_idx, self.z_bits)], [symbols_checksum(z_idx)]

        def encode(k: int, s_k: Tensor, m_k: Tensor, mask: Tensor) -> Tensor:
            q_k = quantize(k, s_k, m_k, mask)
            sel = mask.bool().expand_as(q_k)
            symbols = q_k[sel].to(torch.int32)
            sections.append(_rans_encode(symbols, table_indexes(s_k[sel])))
            checksums.append(symbols_checksum(symbols))
            return q_k

        self.four_part_prior(params, encode)
        return EncodedImage(sections=sections, checksums=checksums, point={"quality": q},
                            size=(int(x.shape[-2]), int(x.shape[-1])))

    @torch.no_grad()
    def decompress(self, encoded: EncodedImage) -> Tensor:
        if len(encoded.sections) != 1 + PARTS or len(encoded.checksums) != 1 + PARTS:
            raise BitstreamError(f"a GLC image has {1 + PARTS} sections (z, then ŷ in {PARTS} steps)")
        if self.training:
            raise ValueError("decompress needs eval mode (float64 entropy parameters)")
        q = self.quality_of(encoded.point)
        h, w = encoded.size
        zh, zw = -(-h // self.multiple), -(-w // self.multiple)
        z_idx = fixed.unpack(encoded.sections[0], self.z_bits, zh * zw)
        verify_symbols(z_idx, encoded.checksums[0], 0)
        if int(z_idx.max()) >= self.z_vq.n_embed:
            raise BitstreamError("section 0 holds hyper indices beyond the codebook")
        z_hat = self.z_vq.embed(z_idx.view(1, zh, zw).to(self.device_of()))
        params = self.hyper_prior(z_hat)

        def decode(k: int, s_k: Tensor, m_k: Tensor, mask: Tensor) -> Tensor:
            sel = mask.bool().expand_as(s_k)
            symbols = _rans_decode(encoded.sections[1 + k], table_indexes(s_k[sel]))
            verify_symbols(symbols, encoded.checksums[1 + k], 1 + k)
            q_k = torch.zeros_like(s_k)
            q_k[sel] = symbols.to(q_k)
            return q_k

        y_hat = self.four_part_prior(params, decode)[0]
        del params
        release_free_heap()  # the float64 prior's freed blocks, before full-resolution maps
        return self.synthesise(y_hat, q, (h, w))[1]

    def coded_bits(self, out: CodecOutput) -> float:
        """−log₂ of the integer CDF tables `compress` uses for ŷ (all steps), plus z's fixed
        bits, for the first image of a forward output in eval mode."""
        y_q, scales = out.extras["y_q"][0], out.extras["scales"][0]
        return table_bits(y_q.round().long().flatten().cpu().numpy(),
                          table_indexes(scales).flatten().cpu().numpy()) + float(out.rate["z"][0])

    def last_decoder_layer(self) -> Tensor:
        return self.vqgan.generator.last_layer()


class _Group(nn.Module):
    """A parameter group made of existing modules/parameters (no copy, not in the state dict)."""

    def __init__(self, **parts: nn.Module | nn.Parameter | None) -> None:
        super().__init__()
        for name, part in parts.items():
            if isinstance(part, nn.Parameter):
                self.register_parameter(name, part)
            elif part is not None:
                self.add_module(name, part)


def _rans_encode(symbols: Tensor, indexes: Tensor) -> bytes:
    if symbols.numel() and int(symbols.abs().max()) > MAX_RANS_SYMBOL:
        raise ValueError(f"a ŷ residual exceeds ±{MAX_RANS_SYMBOL}: the model's latent diverged")
    _, cdfs, lengths, offsets = gaussian_tables()
    return _compressai()[0].RansEncoder().encode_with_indexes(
        symbols.cpu().tolist(), indexes.cpu().int().tolist(), cdfs, lengths, offsets
    )


def _rans_decode(data: bytes, indexes: Tensor) -> Tensor:
    """Decode one ŷ step; the symbols must re-encode to exactly `data`, because the rANS
    decoder stops once it has its symbols and would let appended bytes pass unseen."""
    _, cdfs, lengths, offsets = gaussian_tables()
    try:
        values = _compressai()[0].RansDecoder().decode_with_indexes(
            data, indexes.cpu().int().tolist(), cdfs, lengths, offsets
        )
    except Exception as e:  # the C++ decoder raises RuntimeError/ValueError on garbage
        raise BitstreamError(f"a ŷ section cannot be entropy-decoded ({type(e).__name__}): "
                             "the file is corrupted") from None
    symbols = torch.tensor(values, dtype=torch.int64)
    if symbols.numel() and int(symbols.abs().max()) > MAX_RANS_SYMBOL:
        raise BitstreamError("a ŷ section decodes to residuals out of range: the file is corrupted")
    symbols = symbols.to(torch.int32)
    again = _rans_encode(symbols, indexes)
    if again != data:
        what = "has trailing bytes" if data.startswith(again) else "does not re-encode to itself"
        raise BitstreamError(f"a ŷ section {what}: the file is corrupted")
    return symbols


def import_official_state_dict(state: dict[str, Tensor], *, training_parts: bool = True) -> dict[str, Tensor]:
    """The authors' checkpoint (`state_dict`/`net`/`net_g` unwrapped) → this codec's names:
    strip a DDP `module.` prefix; names are otherwise identical. Without training parts the
    code predictors and `vqgan.quantize` are dropped."""
    out = {k.removeprefix("module."): v for k, v in state.items()}
    if not training_parts:
        drop = ("code_pred_loss.", "code_pred_pix_loss.", "vqgan.quantize.")
        out = {k: v for k, v in out.items() if not k.startswith(drop)}
    return out
