"""Training as the papers train: loss scale, LPIPS input, both VQ-loss forms, clipping by value,
precision per stage, the protocol in --print-config, and tensor-set initialisation."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from conftest import KODAK, run_cli
from torch.utils.data import DataLoader

from gicl.codecs.base import build_codec
from gicl.codecs.controlgic import AREA, GRANULARITIES
from gicl.images import read_image
from gicl.losses.perceptual import PerceptualLoss
from gicl.model_file import load_codec_weights, save_model_file
from gicl.protocol import ASPECTS
from gicl.recipes import recipe_names, resolve
from gicl.runner import threads_per_process
from gicl.training.gan import GANTraining

REL = 1e-5


def photo_crops(n: int, size: int) -> torch.Tensor:
    """n crops of the sample photos in [0, 1] (dark and bright pixels: the range matters)."""
    files = sorted(KODAK.glob("*.png"))[:n]
    return torch.cat([read_image(f)[..., 100:100 + size, 200:200 + size] for f in files])


def module_for(recipe: str, stage: str, **loss: object) -> GANTraining:
    config = resolve(recipe, "smoke")
    spec = dict(config["stages"][stage])
    spec["loss"] = {**spec["loss"], **loss}
    torch.manual_seed(0)
    codec = build_codec(spec["codec"] or config["codec"])
    lpips = spec["loss"]["lpips"]
    return GANTraining(codec, spec, PerceptualLoss(lpips["net"], lpips["input"]))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=REL, atol=0))


@pytest.mark.parametrize(("recipe", "stage", "sees"), [
    ("controlgic", "train", (4.0, -3.0)),  # official Control-GIC: normalize=True on [-1, 1] data
    ("vqgan", "pretrain", (2.0, -1.0)),  # LPIPS's own [-1, 1]
])
def test_generator_objective_equals_a_hand_computation_on_the_recipes_scale(torch_home, recipe, stage, sees):
    module = module_for(recipe, stage, l1=0.5, mse=2.0, adaptive=True, adv=0.3, disc_start=0)
    x = photo_crops(2, 64)
    seen: list[torch.Tensor] = []
    module.perceptual.lpips.register_forward_pre_hook(lambda m, args: seen.extend(args[:2]))

    total, logs, _ = module.generator_objective(x)

    x_hat = module.last_output.x_hat
    xs, xs_hat = 2 * x - 1, 2 * x_hat - 1  # the recipes' pixel_range [-1, 1]
    l1 = (xs - xs_hat).abs().mean()
    mse = ((xs - xs_hat) ** 2).mean()
    scale, offset = sees
    lpips = module.perceptual.lpips(x_hat * scale + offset, x * scale + offset).mean()
    rec = 0.5 * l1 + 2.0 * mse + lpips
    g = -module.discriminator(x_hat).mean()
    last = module.codec.last_decoder_layer()
    grad_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    grad_g = torch.autograd.grad(g, last, retain_graph=True)[0]
    adaptive = (grad_rec.norm() / (grad_g.norm() + 1e-4)).clamp(0, 1e4)
    vq = vq_by_hand(module.codec, x, module.last_output)

    assert close(logs["l1"], l1) and close(logs["mse"], mse)
    assert close(logs["l1"], 2 * (x - x_hat).abs().mean())  # 2× the [0, 1] value
    assert close(logs["mse"], 4 * ((x - x_hat) ** 2).mean())  # 4× the [0, 1] value
    assert close(logs["vq"], vq) and close(logs["lpips_loss"], lpips) and close(logs["rec"], rec)
    assert close(logs["adaptive_weight"], adaptive)
    assert close(total, rec + 0.3 * adaptive * g + vq)
    # what reached LPIPS: x̂ and x (the photo; its range is known), mapped by the recipe's choice
    reached_hat, reached_x = (t.detach() for t in seen[:2])
    assert torch.equal(reached_hat, x_hat.detach() * scale + offset)
    assert float(reached_x.min()) == pytest.approx(float(x.min()) * scale + offset, abs=1e-6)
    assert float(reached_x.max()) == pytest.approx(float(x.max()) * scale + offset, abs=1e-6)
    assert offset <= float(reached_x.min()) < offset + 0.1 * scale  # the photos reach near black
    assert offset + 0.9 * scale < float(reached_x.max()) <= offset + scale  # and near white


def vq_by_hand(codec, x: torch.Tensor, out) -> torch.Tensor:
    """(1 + β)·mean ‖z − z_q‖²: both terms have this value (they differ in their gradients).
    Control-GIC: over the hybrid latent at H/4, where a token of area A counts A times."""
    beta = codec.quantizer.beta
    codebook = codec.quantizer.embedding.weight.detach()
    if codec.codec_id == "vqgan":
        z = codec.quant_conv(codec.encoder(x * 2 - 1)).detach()
        return (1 + beta) * ((z - codebook[out.extras["indices"]].permute(0, 3, 1, 2)) ** 2).mean()
    latents, idx, masks = (out.extras[k] for k in ("latents", "indices", "masks"))
    total, n = torch.zeros(()), 0
    for g in GRANULARITIES:
        coded = masks[g][:, 0]
        z = latents[g].detach().permute(0, 2, 3, 1)[coded]
        total += AREA[g] * ((z - codebook[idx[g][coded]]) ** 2).sum()
        n += int(coded.sum()) * AREA[g]
    return (1 + beta) * total / (n * codebook.shape[1])


@pytest.mark.parametrize(("beta", "legacy", "w_codebook", "w_commit"), [
    (0.25, True, 0.25, 1.0),  # official code (taming legacy): β on the codebook term
    (1.0, False, 1.0, 1.0),  # the paper's eq. 6: both terms weigh 1
])
def test_controlgic_vq_loss_forms_equal_hand_computations(beta, legacy, w_codebook, w_commit):
    config = resolve("controlgic", "smoke")
    torch.manual_seed(0)
    codec = build_codec({**config["codec"], "beta": beta, "legacy_vq": legacy})
    out = codec(photo_crops(2, 64), {"ratios": [0.5, 0.3, 0.2]})
    latents, idx, masks = out.extras["latents"], out.extras["indices"], out.extras["masks"]
    for z in latents.values():
        z.retain_grad()
    out.losses["vq"].backward()

    # the official loss on the hybrid latent at H/4: a token of area A counts A times
    codebook = codec.quantizer.embedding.weight.detach()
    d = codebook.shape[1]
    n = sum(int(masks[g].sum()) * AREA[g] for g in GRANULARITIES)
    grad_codebook = torch.zeros_like(codebook)
    for g in GRANULARITIES:
        coded = masks[g][:, 0]
        z = latents[g].detach().permute(0, 2, 3, 1)[coded]  # (tokens, d)
        e = codebook[idx[g][coded]]
        grad_codebook.index_add_(0, idx[g][coded], w_codebook * AREA[g] * 2 * (e - z) / (n * d))
        grad_z = torch.zeros_like(latents[g]).permute(0, 2, 3, 1)
        grad_z[coded] = w_commit * AREA[g] * 2 * (z - e) / (n * d)
        assert torch.allclose(latents[g].grad.permute(0, 2, 3, 1), grad_z, rtol=1e-4, atol=1e-9)
    assert close(out.losses["vq"].detach(), vq_by_hand(codec, None, out))
    assert torch.allclose(codec.quantizer.embedding.weight.grad, grad_codebook, rtol=1e-4, atol=1e-9)


class _Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x = photo_crops(4, 32)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i]}


class _GradientBound(L.Callback):
    """Largest gradient element of the codec and the discriminator after each iteration."""

    def __init__(self) -> None:
        self.largest: list[float] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        grads = [p.grad.abs().max() for m in (module.codec, module.discriminator)
                 for p in m.parameters() if p.grad is not None]
        self.largest.append(float(torch.stack(grads).max()))


def _largest_gradients(clip: dict) -> list[float]:
    config = resolve("vqgan", "smoke")
    stage = dict(config["stages"]["pretrain"], gradient_clip=clip)
    stage["loss"] = {**stage["loss"], "disc_start": 0}
    torch.manual_seed(0)
    module = GANTraining(build_codec(config["codec"]), stage, None)
    bound = _GradientBound()
    trainer = L.Trainer(accelerator="cpu", max_steps=-1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[bound])
    trainer.fit(module, DataLoader(_Images(), batch_size=2))
    return bound.largest


def test_clipping_by_value_bounds_every_gradient_element():
    bound = 2.0**-10  # exact in float32
    unclipped = _largest_gradients({"algorithm": "value", "max": None})
    assert max(unclipped) > 10 * bound  # so the bound below is the clipping's doing
    clipped = _largest_gradients({"algorithm": "value", "max": bound})
    assert len(clipped) == 2 and max(clipped) <= bound


def test_precision_per_stage_is_recorded_in_the_config_and_the_model_file(tmp_path):
    proc = run_cli("fit", "--recipe", "vqgan", "--profile", "smoke", "--run-dir", str(tmp_path),
                   "--set", "stages.pretrain.precision=bf16-mixed", "--set", "stages.pretrain.max_steps=1",
                   "--set", "trainer.val_every_n_steps=100", "--set", "stages.pretrain.perceptual=off")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import yaml

    saved = yaml.safe_load((tmp_path / "pretrain" / "config.yaml").read_text())
    assert saved["stages"]["pretrain"]["precision"] == "bf16-mixed"
    assert saved["runtime"]["precision"] == "bf16-mixed"
    meta = torch.load(tmp_path / "pretrain" / "final.pt", weights_only=True)["meta"]
    assert meta["training_precision"] == "bf16-mixed"
    assert "precision  bf16-mixed" in proc.stderr  # the stage's protocol, logged at its start
    cores = len(os.sched_getaffinity(0))  # smoke: no data workers, one process
    assert f"{cores} intra-op thread(s) per process (trainer.threads: auto)" in proc.stderr


@pytest.mark.parametrize(("devices", "nodes", "workers"),
                         [(1, 1, 0), (1, 1, 1), (2, 1, 0), (2, 1, 1), (1, 2, 0)])
def test_auto_threads_leave_a_core_per_data_worker_and_split_the_rest(devices, nodes, workers):
    cores = len(os.sched_getaffinity(0))
    config = {"trainer": {"threads": "auto", "devices": devices, "num_nodes": nodes,
                          "accelerator": "cpu"}, "data": {"num_workers": workers}}
    per_node = devices
    assert threads_per_process(config) == max(1, (cores - per_node * workers) // per_node)
    assert threads_per_process({**config, "trainer": {**config["trainer"], "threads": 3}}) == 3


@pytest.mark.parametrize("recipe", recipe_names())
def test_print_config_states_every_aspect_of_the_protocol_with_a_reason(recipe):
    proc = run_cli("fit", "--recipe", recipe, "--print-config")
    assert proc.returncode == 0, proc.stderr
    config = resolve(recipe)
    protocol = proc.stdout.split("# training protocol", 1)[1].splitlines()
    for name in config["stages"]:
        start = protocol.index(f"# stage {name} ({config['stages'][name]['module']}):")
        block = protocol[start + 1:start + 1 + 2 * len(ASPECTS)]
        for i, label in enumerate(ASPECTS.values()):
            assert block[2 * i].startswith(f"#   {label}:"), block
            reason = block[2 * i + 1].split("why:", 1)[1].strip()
            assert reason and "gives no reason" not in reason, (recipe, name, label)


def test_controlgic_print_config_names_the_official_vq_form_and_why():
    out = run_cli("fit", "--recipe", "controlgic", "--print-config").stdout
    vq = out[out.index("#   VQ loss:"):].splitlines()[:2]
    assert "0.25·‖sg[z] − z_q‖² + ‖z − sg[z_q]‖²" in vq[0] and "legacy" in vq[0]
    assert "official quantizer" in vq[1] and "eq. 6" in vq[1]
    paper = run_cli("fit", "--recipe", "controlgic", "--print-config", "--set", "codec.beta=1.0").stdout
    assert "β = 1 on both terms" in paper


def test_bad_protocol_values_are_one_line_errors():
    for override, key in [("stages.train.gradient_clip.algorithm=max", "gradient_clip.algorithm"),
                          ("stages.train.precision=fp8", "precision"),
                          ("stages.train.loss.pixel_range=[1,0]", "pixel_range"),
                          ("stages.train.loss.lpips.net=squeeze", "lpips.net")]:
        proc = run_cli("fit", "--recipe", "controlgic", "--print-config", "--set", override)
        assert proc.returncode == 2 and key in proc.stderr and "Traceback" not in proc.stderr


def test_codebook_initialised_from_another_model_file(tmp_path):
    """The paper starts Control-GIC's codebook from MoVQ's: `init.map` loads one tensor set of
    another codec's model file and leaves everything else as it was."""
    torch.manual_seed(1)
    donor = build_codec({"name": "vqgan", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                         "attn_resolutions": [], "resolution": 64, "z_channels": 4, "embed_dim": 4,
                         "n_embed": 64, "movq": True})
    save_model_file(donor, tmp_path / "movq.pt")
    config = resolve("controlgic", "smoke")
    torch.manual_seed(0)
    codec = build_codec(config["codec"])
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    load_codec_weights(codec, tmp_path / "movq.pt", {"quantizer.embedding.": "quantizer.embedding."})
    after = codec.state_dict()
    assert torch.equal(after["quantizer.embedding.weight"], donor.quantizer.embedding.weight)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "quantizer.embedding.weight")
