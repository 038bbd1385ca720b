"""The stage options each training module declares: typed, with defaults, Lightning-free.

A recipe stage is the generic keys of `gicl.recipes.STAGE_DEFAULTS` (module, codec, init,
frozen, max_steps, ...) plus the keys of its module's options dataclass, registered with the
module (`MODULES.register(name, target, options=<dataclass>)`). The recipe validator reads
these dataclasses without importing the module's training code (no torch, no Lightning),
so a mistyped key is reported in a blink.

Conventions a module's dataclass follows:
- `loss`: the module's loss weights (a nested dataclass).
- `optimizers`: the module's named optimizer set, one `OptimizerOptions` per name; the
  module decides which of them it builds (e.g. `disc` only with a discriminator, `aux` only
  when the codec has an auxiliary loss).
- class attribute `callbacks`: callbacks every stage of this module gets by default.
- a field with `metadata={"whole": True}` is replaced whole by an overlay, never merged
  key by key (an operating point is one value).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gicl.errors import RecipeError


@dataclass
class OptimizerOptions:
    """One optimizer: a registered name (gicl.registry.OPTIMIZERS) and its arguments."""

    name: str = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    eps: float = 1e-8


def _adam(lr: float, betas: tuple[float, float]) -> Any:
    return field(default_factory=lambda: OptimizerOptions(lr=lr, betas=list(betas)))


@dataclass
class GANOptimizers:
    """codec: the generator (codec parameters); disc: the PatchGAN discriminator; aux: the
    codec's auxiliary parameters (e.g. CompressAI EntropyBottleneck quantiles), stepped on
    `codec.aux_loss()`; lr 1e-3 as in CompressAI's training example."""

    codec: OptimizerOptions = _adam(1e-4, (0.5, 0.9))
    disc: OptimizerOptions = _adam(1e-4, (0.5, 0.9))
    aux: OptimizerOptions = _adam(1e-3, (0.9, 0.999))


@dataclass
class DiscriminatorOptions:
    """PatchGAN (pix2pix NLayerDiscriminator): base width and number of stride-2 layers."""

    ndf: int = 64
    n_layers: int = 3


@dataclass
class LPIPSOptions:
    """Which LPIPS the `perceptual` term uses (gicl.losses.perceptual): `net` vgg | alex;
    `input` standard (LPIPS sees images in [−1, 1], its convention) | official_cgic (the
    official Control-GIC loss: `normalize=True` applied to data already in [−1, 1], so
    LPIPS sees [−3, 1])."""

    net: str = "vgg"
    input: str = "standard"


@dataclass
class GANLoss:
    l1: float = 1.0  # ‖x − x̂‖₁ weight (GLC eq. 3, ProGIC eq. 6)
    mse: float = 0.0  # MSE weight (Control-GIC eq. 6)
    perceptual: float = 1.0  # LPIPS weight
    # the range x and x̂ are mapped to before L1/MSE (gicl.losses.reconstruction): [−1, 1],
    # where the taming-lineage weights (VQGAN, Control-GIC, ProGIC) were tuned
    pixel_range: list[float] = field(default_factory=lambda: [-1.0, 1.0], metadata={"whole": True})
    lpips: LPIPSOptions = field(default_factory=LPIPSOptions)
    adv: float = 0.8  # discriminator weight on the generator loss (GLC: 0.8)
    adaptive: bool = True  # taming's adaptive weight times `adv`; False → fixed `adv`
    disc_start: int = 0  # iteration from which GAN terms are on
    codebook: float = 1.0  # weight of the codec's vq loss


@dataclass
class AdversarialOptions:
    """What every adversarial stage has: the discriminator, loss weights, optimizers."""

    discriminator: DiscriminatorOptions = field(default_factory=DiscriminatorOptions)
    loss: GANLoss = field(default_factory=GANLoss)
    optimizers: GANOptimizers = field(default_factory=GANOptimizers)

    callbacks: ClassVar[tuple[str, ...]] = ("codebook_usage", "rd_curves")


@dataclass
class GANOptions(AdversarialOptions):
    """The GAN base (VQGAN pretraining, Control-GIC): one operating point per batch."""

    # operating point for codec.forward in training; {sample: true} draws one per batch
    train_point: dict[str, Any] | None = field(default=None, metadata={"whole": True})


@dataclass
class ProgressiveLoss(GANLoss):
    p: float = 0.5  # ProGIC eq. 7: weight share of the intermediate stages


@dataclass
class ProgressiveOptions(AdversarialOptions):
    """ProGIC's progressive objective: every RVQ prefix in one backward (eq. 6–7), so no
    training operating point."""

    loss: ProgressiveLoss = field(default_factory=ProgressiveLoss)



@dataclass
class GLCLatentLoss:
    """GLC stage II (Jia et al., CVPR 2024, eq. 4–5): R(ŷ) + R(ẑ) + λ·D_code(l, l̂) + the hyper
    codebook's VQ loss, with D_code = α·CE(M_l, CP(l̂)) + ‖l − l̂‖²."""

    # λ of each quality row q (image i of a batch trains row i mod len): 4 rows, doubling
    lambdas: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.04, 0.08],
                                 metadata={"whole": True})
    alpha: float = 0.5  # weight of the code-prediction cross-entropy in D_code (paper: 0.5)
    hyper_codebook: float = 1.0  # weight of the z_vq codebook + commitment loss


@dataclass
class GLCLatentOptimizers:
    """codec: every trainable codec parameter (the VQ-VAE is frozen by the module)."""

    codec: OptimizerOptions = _adam(1e-4, (0.9, 0.999))


@dataclass
class GLCLatentOptions:
    """GLC stage II: transform coder, entropy model and latent code predictor on a frozen
    VQ-VAE; no pixel loss, no discriminator."""

    loss: GLCLatentLoss = field(default_factory=GLCLatentLoss)
    optimizers: GLCLatentOptimizers = field(default_factory=GLCLatentOptimizers)

    callbacks: ClassVar[tuple[str, ...]] = ("rd_curves",)


@dataclass
class HyperpriorOptimizers:
    """codec: the trainable codec parameters (the hyperprior, the backbone being frozen);
    aux: the EntropyBottleneck quantiles on `codec.aux_loss()`. CompressAI's defaults."""

    codec: OptimizerOptions = _adam(1e-4, (0.9, 0.999))
    aux: OptimizerOptions = _adam(1e-3, (0.9, 0.999))


@dataclass
class HyperpriorOptions:
    """HyperVQ stage B: only the hyperprior trains, on R_ind + R_z (no discriminator)."""

    train_point: dict[str, Any] | None = field(default=None, metadata={"whole": True})
    optimizers: HyperpriorOptimizers = field(default_factory=HyperpriorOptimizers)

    callbacks: ClassVar[tuple[str, ...]] = ("rd_curves",)


@dataclass
class GLCJointLoss(GANLoss):
    """GLC stage III (Sec. 4.3): R + λ_q·(L1 + LPIPS + λ_adv·L_adv + λ_code·D_code(E(x), E(x̂)))
    with the pixel code predictor; `codebook` weighs the hyper codebook's VQ loss."""

    lambdas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
                                 metadata={"whole": True})
    alpha: float = 0.5  # CE weight inside D_code, as in stage II
    code: float = 0.05  # λ_code (paper: 0.05)


@dataclass
class GLCJointOptions(AdversarialOptions):
    """GLC stage III: joint fine-tune of generator, transform coder, entropy model and pixel
    code predictor against the PatchGAN."""

    loss: GLCJointLoss = field(default_factory=GLCJointLoss)


@dataclass
class JointRDLoss(GANLoss):
    rate_ind: float = 0.01  # λ_ind on R_ind (bits per pixel)
    rate_z: float = 0.01  # λ_z on R_z (bits per pixel)


@dataclass
class JointRDOptions(GANOptions):
    """HyperVQ stage C: the GAN base's objective plus λ_ind R_ind + λ_z R_z."""

    loss: JointRDLoss = field(default_factory=JointRDLoss)


# -- reading a declaration --------------------------------------------------------------------

def defaults(options: type) -> dict[str, Any]:
    """The declared defaults as the plain dict a resolved recipe holds."""
    return dataclasses.asdict(options())


def whole_keys(options: type, prefix: str = "") -> set[str]:
    """Dotted paths (below the stage) of fields an overlay replaces whole."""
    out: set[str] = set()
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        if f.metadata.get("whole"):
            out.add(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            out |= whole_keys(hints[f.name], f"{prefix}{f.name}.")
    return out


_SCALARS = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}


def check_types(options: type, values: dict[str, Any], where: str) -> None:
    """Scalar fields must hold their declared type (an int is a valid float; a bool is
    never a number); nested dataclasses are checked recursively."""
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        kind, value, path = hints[f.name], values.get(f.name), f"{where}.{f.name}"
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise RecipeError(f"{path} must be a mapping, got {value!r}")
            check_types(kind, value, path)
        elif kind in _SCALARS:
            ok = isinstance(value, _SCALARS[kind]) and (kind is bool or not isinstance(value, bool))
            if not ok:
                raise RecipeError(f"{path} must be {kind.__name__}, got {value!r}")
