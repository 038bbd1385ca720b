"""What every HyperVQ codec shares (Niu et al., arXiv:2512.07192): a backbone held whole as
`backbone`, a `HyperVQ` as `hyperprior`, and the plumbing stage B/C training needs.

HVQ-CGIC (`hvq_cgic.py`) and HVQ-ProGIC (`hvq_progic.py`) differ only in which latents,
indices and codebooks feed the hyperprior and how sections are ordered; parameter groups,
the auxiliary (EntropyBottleneck quantile) optimiser, `update`, the rate losses and the
backbone's operating points, rate control and static baseline are the same, and live here.
"""

from __future__ import annotations

from typing import Any

from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from gicl.codecs.base import Codec, EncodedImage
from gicl.entropy.hypervq import HyperVQOutput
from gicl.errors import RecipeError
from gicl.registry import signature_keywords


def check_backbone_keys(backbone_cls: type, keys: dict[str, Any]) -> None:
    """RecipeError naming the first key neither the backbone nor the hyperprior
    (`hyper_channels`, `hyper_init_scale`) takes."""
    known = signature_keywords(backbone_cls) or set()
    unknown = sorted(set(keys) - known)
    if unknown:
        raise RecipeError(f"unknown key 'codec.{unknown[0]}' (known: "
                          f"{', '.join(sorted(known | {'hyper_channels', 'hyper_init_scale'}))})")


def rate_losses(hv: HyperVQOutput, pixels: int) -> dict[str, Tensor]:
    """R_ind and R_z in bits per pixel (batch mean): the terms stage B/C weight."""
    return {
        "rate_ind": sum(hv.rate_ind.values()).mean() / pixels,  # type: ignore[union-attr]
        "rate_z": sum(hv.rate_z.values()).mean() / pixels,  # type: ignore[union-attr]
    }


class HyperpriorCodec(Codec):
    """Base of a backbone + HyperVQ codec; subclasses set `backbone` and `hyperprior`."""

    backbone: Codec
    hyperprior: nn.Module

    def parameter_groups(self) -> dict[str, nn.Module]:
        """`backbone` and `hyperprior`: stage B freezes the backbone."""
        return {"backbone": self.backbone, "hyperprior": self.hyperprior}

    def aux_parameters(self) -> list[nn.Parameter]:
        return [m.quantiles for m in self.hyperprior.modules() if isinstance(m, EntropyBottleneck)]

    def aux_loss(self) -> Tensor:
        return self.hyperprior.aux_loss()

    def update(self) -> None:
        """Rebuild the hyper-latent CDF tables from the current quantiles (forced: they
        move during training after a first update), their tails refitted first where the
        aux loss has not placed them (`gicl.entropy.bottleneck.FlooredBottleneck.update`)."""
        self.hyperprior.update(force=True)

    def compress_with_report(
        self, x: Tensor, point: dict[str, Any] | None = None
    ) -> tuple[EncodedImage, dict[str, float]]:
        raise NotImplementedError

    def compress(self, x: Tensor, point: dict[str, Any] | None = None) -> EncodedImage:
        return self.compress_with_report(x, point)[0]

    def stream_bits(self, encoded: EncodedImage) -> dict[str, int]:
        """Payload bits of each entropy-coded stream of an encoded image, keyed as
        `forward().rate` (`<branch>`, `hyper_<branch>`; framing and masks left out)."""
        raise NotImplementedError

    def static_baseline(self) -> Codec:
        """The coding HyperVQ replaces: the backbone with its static code (the
        `static_baseline` callback compares file rates with it at every validation)."""
        return self.backbone

    def operating_points(self) -> list[dict[str, Any]]:
        return self.backbone.operating_points()

    def check_point(self, point: dict[str, Any]) -> None:
        self.backbone.check_point(point)

    def point_for_bpp(self, bpp: float, h: int, w: int, **kwargs: Any) -> dict[str, Any]:
        """The backbone's rate control (its static-code curve; the hyperprior then codes
        the chosen point in fewer bits)."""
        return self.backbone.point_for_bpp(bpp, h, w, **kwargs)

    def last_decoder_layer(self) -> Tensor:
        return self.backbone.last_decoder_layer()
