"""ProGIC's progressive objective (eq. 6–7) against an independent per-stage computation."""

import pytest
import torch

from gicl.codecs.base import build_codec
from gicl.losses.adversarial import adaptive_weight, generator_loss
from gicl.losses.perceptual import PerceptualLoss
from gicl.recipes import resolve
from gicl.training.progressive import ProgressiveTraining, stage_weights


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_stage_weights_match_eq7_and_sum_to_one(p):
    lam = stage_weights(5, p)
    assert lam == pytest.approx([p / 4] * 4 + [1 - p])
    assert sum(lam) == pytest.approx(1.0)


def test_training_loss_is_the_lambda_weighted_sum_of_stage_terms(torch_home):
    torch.manual_seed(0)
    config = resolve("progic", "smoke", ["stages.train.loss.disc_start=0"])
    codec = build_codec(config["codec"])
    stage = config["stages"]["train"]
    module = ProgressiveTraining(codec, stage, PerceptualLoss())
    module.train()
    x = torch.rand(2, 3, 64, 64)
    total, logs, recons = module.generator_objective(x)

    w, expected = stage["loss"], torch.zeros(())
    for k, lam in enumerate(stage_weights(5, w["p"]), 1):
        out = codec(x, {"stages": k})
        torch.testing.assert_close(out.x_hat, recons[k - 1], rtol=1e-4, atol=1e-5)
        l1 = ((2 * x - 1) - (2 * out.x_hat - 1)).abs().mean()  # on the recipe's [-1, 1]
        rec = w["l1"] * l1 + w["perceptual"] * module.perceptual(x, out.x_hat)
        g = generator_loss(module.discriminator(out.x_hat))
        adv = w["adv"] * adaptive_weight(rec, g, codec.last_decoder_layer()) * g
        codebooks = sum(out.stage_losses[:k])  # L_cb of x̂_k's codebooks
        expected = expected + lam * (rec + adv + w["codebook"] * codebooks)
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=1e-6)
    assert set(logs) >= {f"stage{k}/rec" for k in range(1, 6)}


def test_p_zero_trains_only_the_last_stage():
    torch.manual_seed(0)
    config = resolve("progic", "smoke", ["stages.train.loss.p=0.0", "stages.train.loss.adv=0.0"])
    module = ProgressiveTraining(build_codec(config["codec"]), config["stages"]["train"], None)
    total, logs, _ = module.generator_objective(torch.rand(1, 3, 32, 32))
    assert not any(k.startswith("stage1/") for k in logs) and "stage5/rec" in logs
    total.backward()
    first_codebook = module.codec.quantizer.stages[0].embedding.weight.grad
    assert first_codebook is not None  # stage 5 still uses codebook 1 through its prefix
