"""A plugin that lives outside the package: two toy codecs with a learned entropy model
(CompressAI's EntropyBottleneck, whose quantiles an aux optimizer trains and whose CDF
tables `update()` builds), a rate–distortion training module with its own stage option and
optimizer set, and a callback. Recipes reach it through `plugins: [gicl_toy]`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck
from compressai.models.utils import update_registered_buffers
from torch import Tensor, nn

from gicl.codecs.base import Codec, CodecOutput, pad_to_multiple, register_codec
from gicl.registry import CALLBACKS, MODULES
from gicl.training.base import CodecTraining
from gicl.training.options import OptimizerOptions

CDF_BUFFERS = ["_quantized_cdf", "_offset", "_cdf_length"]


class EntropyBottleneckCodec(Codec):
    """analysis → EntropyBottleneck → synthesis; subclasses name the three parts."""

    multiple = 4

    def bottleneck(self) -> EntropyBottleneck:
        raise NotImplementedError

    def transforms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor, point: dict[str, Any] | None = None) -> CodecOutput:
        h, w = x.shape[-2:]
        y_hat, x_hat, likelihoods = self.code(pad_to_multiple(x, self.multiple))
        bits = -torch.log2(likelihoods).flatten(1).sum(1)
        return CodecOutput(x_hat=x_hat[..., :h, :w], rate={"y": bits})

    def operating_points(self) -> list[dict[str, Any]]:
        return [{}]

    def aux_parameters(self) -> list[nn.Parameter]:
        return [self.bottleneck().quantiles]

    def aux_loss(self) -> Tensor:
        return self.bottleneck().loss()

    def update(self) -> None:
        self.bottleneck().update(force=True)

    def load_state_dict(self, state: dict[str, Tensor], strict: bool = True, assign: bool = False):
        """The CDF buffers change size when built: size them like the stored ones first."""
        for name, module in self.named_modules():
            if isinstance(module, EntropyBottleneck) and f"{name}._quantized_cdf" in state:
                update_registered_buffers(module, name, CDF_BUFFERS, state)
        return super().load_state_dict(state, strict=strict, assign=assign)


@register_codec
class Toy(EntropyBottleneckCodec):
    codec_id = "toy"

    def __init__(self, *, channels: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, channels, 4, stride=4)
        self.entropy_bottleneck = EntropyBottleneck(channels)
        self.decoder = nn.ConvTranspose2d(channels, 3, 4, stride=4)

    def bottleneck(self) -> EntropyBottleneck:
        return self.entropy_bottleneck

    def code(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y_hat, likelihoods = self.entropy_bottleneck(self.encoder(x))
        return y_hat, self.decoder(y_hat), likelihoods

    def last_decoder_layer(self) -> Tensor:
        return self.decoder.weight


@register_codec
class ToyRefined(EntropyBottleneckCodec):
    """Toy's parts under other names, plus a residual refinement that starts fresh."""

    codec_id = "toy_refined"

    def __init__(self, *, channels: int = 8) -> None:
        super().__init__()
        self.analysis = nn.Conv2d(3, channels, 4, stride=4)
        self.bottleneck_ = EntropyBottleneck(channels)
        self.synthesis = nn.ConvTranspose2d(channels, 3, 4, stride=4)
        self.refine = nn.Conv2d(3, 3, 3, padding=1)

    def bottleneck(self) -> EntropyBottleneck:
        return self.bottleneck_

    def code(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y_hat, likelihoods = self.bottleneck_(self.analysis(x))
        coarse = self.synthesis(y_hat)
        return y_hat, coarse + self.refine(coarse), likelihoods

    def last_decoder_layer(self) -> Tensor:
        return self.refine.weight


@dataclass
class ToyOptimizers:
    codec: OptimizerOptions = field(default_factory=lambda: OptimizerOptions(lr=1e-3, betas=[0.9, 0.999]))
    aux: OptimizerOptions = field(default_factory=lambda: OptimizerOptions(lr=1e-2, betas=[0.9, 0.999]))


@dataclass
class ToyOptions:
    lmbda: float = 100.0  # L = R + λ·MSE (bits per pixel + λ × mean squared error)
    optimizers: ToyOptimizers = field(default_factory=ToyOptimizers)

    callbacks: ClassVar[tuple[str, ...]] = ("toy_record",)


class ToyRateDistortion(CodecTraining):
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["image"]
        optimizers = self.named_optimizers()
        out = self.last_output = self.codec(x)
        bpp = out.bits().mean() / x[0, 0].numel()
        loss = bpp + self.stage["lmbda"] * F.mse_loss(out.x_hat, x)
        opt = optimizers["codec"]
        self.toggle_optimizer(opt)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        self.untoggle_optimizer(opt)
        aux = self.aux_step(optimizers)
        self.log_dict({"train/loss": loss.detach(), "train/aux_loss": aux})
        self.end_iteration(batch)


MODULES.register("toy_rd", ToyRateDistortion, options=ToyOptions)


class ToyRecord(L.Callback):
    """Writes <stage dir>/toy_record.json: iterations seen every `every_n`, with the stage's
    λ as the module read it and the aux loss of the codec at each of them."""

    def __init__(self, every_n: int = 1) -> None:
        self.every_n = every_n
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if pl_module.iteration % self.every_n == 0:
            self.rows.append({"iteration": pl_module.iteration, "lmbda": pl_module.stage["lmbda"],
                              "bits": float(pl_module.last_output.bits().detach().mean()),
                              "aux_loss": float(pl_module.codec.aux_loss().detach())})

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        path = pl_module.context.stage_dir / "toy_record.json"
        path.write_text(json.dumps(self.rows))


CALLBACKS.register("toy_record", ToyRecord)
