"""GLC stages II (`glc_latent`) and III (`glc_joint`): the code-prediction loss is the
cross-entropy against the frozen codebook's nearest indices, λ follows the quality row of each
image, and a real `gicl fit --recipe glc --profile smoke` runs all three stages: stage II starts
from stage I's VQ-VAE and leaves it bit-identical while the transform coder, entropy model and
code predictor learn."""

from __future__ import annotations

import torch
from conftest import run_cli

from gicl.codecs import build_codec
from gicl.model_file import load_codec_weights, read_codec_weights
from gicl.recipes import resolve
from gicl.training.glc import GLCJointTraining, GLCLatentTraining, code_distortion

SMOKE = resolve("glc", "smoke")


def smoke_codec(seed: int = 0):
    torch.manual_seed(seed)
    return build_codec(SMOKE["codec"])


def unchanged_rows(a: dict, b: dict, key: str) -> torch.Tensor:
    return (a[key] == b[key]).all(1)


def test_code_prediction_loss_equals_a_direct_cross_entropy():
    codec = smoke_codec()
    g = torch.Generator().manual_seed(1)
    latent, latent_hat = torch.randn(2, 64, 4, 4, generator=g), torch.randn(2, 64, 4, 4, generator=g)
    d_code, ce, mse = code_distortion(codec, latent, latent_hat, alpha=0.5)
    # direct: nearest codeword by explicit distances, −log softmax of the predictor's logits
    codebook = codec.vqgan.quantize.embedding.weight
    tokens = latent.flatten(2).transpose(1, 2)  # (B, 16, C), raster order
    target = torch.cdist(tokens, codebook[None].expand(2, -1, -1)).argmin(-1)
    logits = codec.code_pred_loss(latent_hat)
    direct = -torch.log_softmax(logits.double(), -1).gather(-1, target[..., None])[..., 0].mean(1)
    torch.testing.assert_close(ce.double(), direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mse, (latent - latent_hat).pow(2).mean((1, 2, 3)))
    torch.testing.assert_close(d_code, 0.5 * ce + mse)
    assert float(ce.min()) > 0


def test_each_image_trains_its_quality_row_with_its_lambda():
    codec = smoke_codec()
    stage = dict(SMOKE["stages"]["latent"], _name="latent")
    module = GLCLatentTraining(codec, stage)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    total, logs, _ = module.generator_objective(x)
    lambdas = stage["loss"]["lambdas"]
    expected = 0.0
    for i in range(3):  # image i → row i (4 rows), one image at a time
        out = codec(x[i:i + 1], {"quality": i})
        d_code, _, _ = code_distortion(codec, out.extras["latent"], out.extras["latent_hat"], 0.5)
        expected += (out.bits() / 4096 + lambdas[i] * d_code).sum() + out.losses["z_vq"]
    torch.testing.assert_close(total, expected / 3, rtol=1e-4, atol=1e-6)
    assert set(logs) >= {"bpp_q0", "bpp_q1", "bpp_q2", "code_ce", "latent_mse", "hyper_vq"}
    assert not any(p.requires_grad for p in codec.vqgan.parameters())


def test_stage_three_objective_uses_the_pixel_code_predictor_per_row():
    """Without the adversarial term (adv 0) the joint objective is, per quality row,
    bpp + λ_q·(L1 + 0.05·D_code(E(x), E(x̂))) + L_vq, averaged over the images."""
    codec = smoke_codec()
    stage = dict(SMOKE["stages"]["joint"], _name="joint")
    stage["loss"] = {**stage["loss"], "adv": 0.0, "perceptual": 0.0}
    module = GLCJointTraining(codec, stage)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    total, logs, _ = module.generator_objective(x)
    lambdas, expected = stage["loss"]["lambdas"], 0.0
    for i in range(2):
        out = codec(x[i:i + 1], {"quality": i})
        d_code, _, _ = code_distortion(codec, codec.vqgan.encoder(x[i:i + 1] * 2 - 1),
                                       codec.vqgan.encoder(out.x_hat * 2 - 1), 0.5,
                                       codec.code_pred_pix_loss)
        l1 = ((2 * x[i:i + 1] - 1) - (2 * out.x_hat - 1)).abs().mean()  # on the recipe's [-1, 1]
        expected += (out.bits() / 4096 + lambdas[i] * (l1 + 0.05 * d_code)).sum() + out.losses["z_vq"]
    torch.testing.assert_close(total, expected / 2, rtol=1e-4, atol=1e-6)
    total.backward()  # the pixel predictor learns; the latent one is not used here
    assert codec.code_pred_pix_loss.feat_emb.weight.grad.abs().sum() > 0
    assert codec.code_pred_loss.feat_emb.weight.grad is None
    assert "pix_code_ce" in logs

def test_fit_smoke_runs_three_stages_and_stage_two_keeps_stage_ones_vqvae_bit_identical(tmp_path):
    """Stage I trains the VQ-VAE (glc_vqvae); stage II loads exactly its tensors through
    init.map (`vqgan.` → `vqgan.`), everything else fresh, and leaves them bit-identical
    while the transform coder, entropy model and code predictor learn; stage III starts from II."""
    run = tmp_path / "run"
    r = run_cli("fit", "--recipe", "glc", "--profile", "smoke", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    config, stage_one, _ = read_codec_weights(run / "vqvae" / "final.pt")
    assert config["name"] == "glc_vqvae"
    # stage I trained from its build (runner seed 0 + stage 0): the codewords no token chose
    # kept their initial values under Adam, the encoder moved
    torch.manual_seed(SMOKE["trainer"]["seed"])
    built = build_codec(SMOKE["stages"]["vqvae"]["codec"]).state_dict()
    kept = unchanged_rows(stage_one, built, "vqgan.quantize.embedding.weight")
    assert 0 < kept.sum() < len(kept)
    assert not torch.equal(stage_one["vqgan.encoder.blocks.0.weight"], built["vqgan.encoder.blocks.0.weight"])
    # stage II's start: its own fresh build (runner seed 0 + stage 1) plus stage I's VQ-VAE
    start = smoke_codec(seed=SMOKE["trainer"]["seed"] + 1)
    load_codec_weights(start, run / "vqvae" / "final.pt", SMOKE["stages"]["latent"]["init"]["map"])
    before = start.state_dict()
    # the hyper codebook starts as stage I's codebook
    assert torch.equal(before["z_vq.embedding.weight"], stage_one["vqgan.quantize.embedding.weight"])
    _, trained, _ = read_codec_weights(run / "latent" / "checkpoints" / "last.ckpt")
    _, final, _ = read_codec_weights(run / "latent" / "final.pt")
    assert set(trained) == set(before) == set(final)
    vqvae = [k for k in before if k.startswith("vqgan.")]
    assert sorted(vqvae) == sorted(stage_one)  # every frozen-group tensor, from stage I
    assert all(torch.equal(trained[k], stage_one[k]) and torch.equal(final[k], stage_one[k])
               for k in vqvae)
    for prefix in ("enc.", "q_enc", "y_spatial_prior.", "z_vq.", "code_pred_loss."):
        assert any(not torch.equal(trained[k], before[k]) for k in before if k.startswith(prefix)), prefix
    kept = unchanged_rows(trained, before, "z_vq.embedding.weight")  # the start is reproduced
    assert 0 < kept.sum() < len(kept)
    # stage III starts from stage II: generator and pixel code predictor learn, E and its
    # codebook (the code target) stay fixed
    _, joint, _ = read_codec_weights(run / "joint" / "checkpoints" / "last.ckpt")
    for prefix, changed in (("vqgan.encoder.", False), ("vqgan.quantize.", False),
                            ("vqgan.generator.", True), ("code_pred_pix_loss.", True), ("dec.", True)):
        keys = [k for k in trained if k.startswith(prefix)]
        assert keys and any(not torch.equal(joint[k], trained[k]) for k in keys) is changed, prefix
    # `gicl export` ships the inference codec: no code predictor, no VQ-VAE codebook
    r = run_cli("export", str(run / "joint" / "checkpoints" / "last.ckpt"), str(tmp_path / "glc.pt"))
    assert r.returncode == 0, r.stderr[-3000:]
    config, shipped, _ = read_codec_weights(tmp_path / "glc.pt")
    assert config["training_parts"] is False
    assert sorted(shipped) == sorted(k for k in joint if not k.startswith(
        ("code_pred_loss.", "code_pred_pix_loss.", "vqgan.quantize.")))
    assert all(torch.equal(shipped[k], joint[k]) for k in shipped)
