"""gicl's Control-GIC computes what the authors' code computes (fixtures/controlgic_fixture.pt).

The fixture was made by running lianqi1008/Control-GIC @ e1c3afe on a 256² Kodak crop with
deterministic weights (`controlgic_weights.py`). Here those weights go, under the official
names, into a Lightning-style checkpoint; the real `gicl import controlgic` turns it into a
model file, and every stage is compared with the fixture, teacher-forced where a discrete
near-tie could cascade: router masks, encoder latents, VQ indices from the fixture's VQ
input, Huffman payload bytes, decoder internals and reconstruction from the fixture's
decoded latent and masks, then end to end. One module-scoped run of the 130 M model each for
the encoder and the decoder (about 20 s and 50 s on a shared 2-core CPU).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from controlgic_weights import FIXTURES, official_state_dict, state_sha256
from PIL import Image

from gicl.codecs.routing import Masks, patch_entropies
from gicl.model_file import load_model_file

RATIOS = {"ratios": [0.5, 0.4, 0.1]}  # (fine, medium, coarse) = the fixture's (0.1, 0.4, 0.5) reversed
GRAINS = ("coarse", "medium", "fine")


class TrainingConfig:
    """Stands for the OmegaConf/argparse objects Lightning pickles into `hyper_parameters`:
    a class the importing process cannot import."""

    def __init__(self) -> None:
        self.lr = 5e-5
        self.ddconfig = {"ch": 128}


@pytest.fixture(scope="module")
def fx() -> dict:
    return torch.load(FIXTURES / "controlgic_fixture.pt", weights_only=True)


@pytest.fixture(scope="module")
def official() -> dict[str, torch.Tensor]:
    return official_state_dict()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, official) -> Path:
    """The real CLI imports a checkpoint laid out as the authors' Lightning one (of the EMA
    copies only the small ones, to keep the file at half a gigabyte; the EMA path is tested
    in test_controlgic_import.py)."""
    d = tmp_path_factory.mktemp("import")
    g = torch.Generator().manual_seed(0)
    state = collections.OrderedDict(
        (k, v) for k, v in official.items() if not k.startswith(("ema_encoder.", "ema_decoder."))
    )
    state["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(64, 3, 3, 3, generator=g)
    torch.save({
        "epoch": 41, "global_step": 600000, "pytorch-lightning_version": "1.5.6",
        "state_dict": state, "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.1)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5}]}], "lr_schedulers": [],
        "hyper_parameters": TrainingConfig(),
    }, d / "last.ckpt")
    out = d / "controlgic_official.pt"
    r = run_cli("import", "controlgic", str(d / "last.ckpt"), str(out))
    assert r.returncode == 0, r.stderr
    assert "656 tensors (raw weights)" in r.stdout
    assert "ema_quantize 3" in r.stdout and "loss.discriminator 1" in r.stdout, r.stdout
    return out


@pytest.fixture(scope="module")
def codec(model_file):
    return load_model_file(model_file)[0]


@pytest.fixture(scope="module")
def encoded(codec, fx):
    """compress() of the fixture's input, with the encoder's raw latents captured."""
    seen = {}
    hook = codec.encoder.register_forward_hook(lambda m, i, o: seen.update(latents=o, x=i[0]))
    with torch.no_grad():
        enc = codec.compress(fx["input_uint8"].float() / 255, RATIOS)
    hook.remove()
    return enc, seen


def _masks(m: dict) -> Masks:
    return Masks(**{g: m[g].bool() for g in GRAINS})


@pytest.fixture(scope="module")
def decoded(codec, encoded, fx):
    """The decoder's output, inputs and internals. It runs once, inside decompress() of the
    compressed fixture image; that is teacher forcing exactly when the decoded codewords and
    masks equal the fixture's (asserted in test_decompress_feeds_the_fixtures_latent), else
    the decoder runs again on the fixture's own inputs."""
    dec, seen = codec.decoder, {}

    def keep(name, pool=1):
        return lambda m, i, o: seen.__setitem__(name, F.avg_pool2d(o, pool) if pool > 1 else o)

    def keep_input(name):  # a copy: at inference the level's blocks reuse their inputs' memory
        return lambda m, i: seen.__setitem__(name, i[0].clone())

    hooks = [dec.mid.register_forward_hook(keep("dec.h_coarse_reconv", 4)),
             dec.mid_medium.register_forward_hook(keep("dec.h_medium_reconv", 2)),
             dec.mid_fine.register_forward_hook(keep("dec.h_fine")),
             dec.register_forward_hook(lambda m, i, o: seen.update(zq=i[1], masks=i[2], x_rec=o))]
    hooks += [dec.up[i].block[0].register_forward_pre_hook(keep_input(f"dec.up{i}_in")) for i in (3, 2, 1)]
    try:
        with torch.no_grad():
            image = codec.decompress(encoded[0])
            e2e = dict(seen, image=image)
            masks = _masks(fx["grain_mask_decompress"])
            if not (torch.equal(e2e["zq"], fx["quant_decompress"])
                    and all(torch.equal(getattr(e2e["masks"], g), getattr(masks, g)) for g in GRAINS)):
                codec.decode_latent(fx["quant_decompress"], masks)
    finally:
        for h in hooks:
            h.remove()
    return e2e, dict(seen)


def assert_close(ours: torch.Tensor, name: str, fx: dict, key: str | None = None) -> None:
    ref = fx[name] if key is None else fx[name][key]
    tol = fx["tolerance"][name if key is None else f"{name}.{key}"]
    diff = (ours.float() - ref).abs().max().item()
    assert diff <= tol, f"{name} {key or ''}: max |diff| {diff:.3g} > {tol:.3g}"


def test_weights_are_the_fixtures(official, fx):
    assert state_sha256(official) == fx["fill"]["state_dict_sha256"]


def test_imported_model_runs_the_official_behaviour(codec):
    b = codec.behaviour()
    assert b == {"input_range": [0.0, 1.0], "router": "official", "decoder_branches": "official",
                 "attention_window": 0, "vq_distance": "official", "entropy_coder": "huffman-official",
                 "inference_dtype": "float32"}
    assert codec.index_frequencies.dtype == torch.int64 and int(codec.index_frequencies.min()) >= 1


def test_entropies_and_router_masks(codec, fx):
    x = codec.model_input(fx["input_uint8"].float() / 255)
    assert torch.equal(x, fx["input_uint8"].float() / 255)  # [0, 1], not rescaled
    e8, e16 = patch_entropies(x)
    assert (e8 - fx["x_entropy_p8"]).abs().max() <= fx["tolerance"]["x_entropy_p8"]
    assert (e16 - fx["x_entropy_p16"]).abs().max() <= fx["tolerance"]["x_entropy_p16"]
    masks = codec._route(e8, e16, RATIOS["ratios"])
    for g in GRAINS:
        assert torch.equal(getattr(masks, g).to(torch.int32), fx["grain_mask"][g]), g
    assert [int(getattr(masks, g).sum()) for g in GRAINS] == [25, 411, 2052]  # k − 1, not 26 coarse


def test_encoder_latents(codec, encoded, fx):
    fine, medium, coarse = encoded[1]["latents"]
    for name, z in (("h_fine", fine), ("h_medium", medium), ("h_coarse", coarse)):
        assert_close(z, name, fx)
    masks = _masks(fx["grain_mask"])
    h_enc = codec._hybrid({"fine": fine, "medium": medium, "coarse": coarse}, masks)
    assert_close(h_enc, "h_enc", fx)
    with torch.no_grad():
        assert_close(codec.quant_conv(h_enc), "h_quant_conv", fx)


def test_vq_indices_from_the_fixtures_latent(codec, fx):
    idx = codec.quantizer.indices(fx["h_quant_conv"])
    assert torch.equal(idx, fx["ind"])
    assert torch.equal(codec.quantizer.embed(idx), fx["quant_decompress"])


def test_huffman_payloads_are_the_official_bytes(codec, fx):
    """Same payload bits as the authors' .bin files; those add a pad-count byte in front and
    pad with 1–8 zero bits (a whole zero byte when the bits fill the last byte), which gicl's
    length-prefixed sections do not need: official size = ceil(bits/8) + 1 + (bits % 8 == 0)."""
    coder = codec.coder()
    for g in GRAINS:
        ours = coder.encode(fx[f"ind_{g}"].numpy())
        theirs = bytes(fx["bitstreams"][f"indices_{g}"].numpy())
        bits = coder.bits(fx[f"ind_{g}"].numpy())
        assert theirs[0] == 8 - bits % 8 and len(theirs) == len(ours) + 1 + (bits % 8 == 0), g
        assert theirs[1 : 1 + len(ours)] == ours, g


def test_end_to_end_indices_and_bytes(codec, encoded, fx):
    enc, seen = encoded
    with torch.no_grad():
        fine, medium, coarse = (codec.quant_conv(z) for z in seen["latents"])
        z = codec._hybrid({"fine": fine, "medium": medium, "coarse": coarse}, _masks(fx["grain_mask"]))
    idx = codec.quantizer.indices(z)
    near_tie = fx["margins"]["vq_gap"] < 1e-4
    assert torch.equal(idx[~near_tie], fx["ind"][~near_tie])
    if torch.equal(idx, fx["ind"]):  # then the index sections are the authors' payloads
        for section, g in enumerate(GRAINS, start=1):
            assert enc.sections[section] == bytes(fx["bitstreams"][f"indices_{g}"].numpy())[1:][
                : len(enc.sections[section])]
    payload = sum(len(s) for s in enc.sections[1:])
    official = sum(len(fx["bitstreams"][f"indices_{g}"]) for g in GRAINS)
    assert payload == official - 3 - sum(codec.coder().bits(fx[f"ind_{g}"].numpy()) % 8 == 0 for g in GRAINS)


def test_decoder_internals_and_reconstruction(codec, decoded, fx):
    teacher = decoded[1]
    assert torch.equal(teacher["zq"], fx["quant_decompress"])
    with torch.no_grad():
        assert_close(codec.post_quant_conv(fx["quant_decompress"]), "quant2", fx)
    for name, ref in fx["dec_probes"].items():
        ours = teacher[name]
        assert_close(ours[:, : ref.shape[1]], "dec_probes", fx, name)
        assert_close(ours.mean((0, 2, 3)), "dec_probe_channel_mean", fx, name)
    assert_close(teacher["x_rec"], "x_rec", fx)
    # the authors' uint8 rule (truncation after clamp) on our output, within one level
    ours_u8 = (255 * teacher["x_rec"].clamp(0, 1)).to(torch.uint8)
    assert (ours_u8.int() - fx["x_rec_uint8"].int()).abs().max() <= fx["tolerance"]["x_rec_uint8"]


def test_decompress_feeds_the_fixtures_latent(decoded, fx):
    """End to end: the entropy-decoded masks and codewords equal the fixture's (all indices
    agree on this image), and decompress returns the decoder output ([0, 1] input range: not
    remapped), within tolerance of the authors' x_rec."""
    e2e = decoded[0]
    assert torch.equal(e2e["zq"], fx["quant_decompress"])
    for g in GRAINS:
        assert torch.equal(getattr(e2e["masks"], g).long(), fx["grain_mask_decompress"][g]), g
    assert torch.equal(e2e["image"], e2e["x_rec"])
    assert_close(e2e["image"], "x_rec", fx)


def test_cli_round_trip_and_info(model_file, tmp_path, kodak):
    """compress / decompress / info of the imported model file (a 64² crop keeps it fast)."""
    crop = Image.open(kodak / "kodim23.png").convert("RGB").crop((256, 128, 320, 192))
    crop.save(tmp_path / "in.png")
    env = {"GICL_CACHE": str(tmp_path / "cache")}
    r = run_cli("compress", str(tmp_path / "in.png"), str(tmp_path / "a.gic"), "--ckpt", str(model_file),
                "--point", '{"ratios": [0.5, 0.4, 0.1]}', env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("decompress", str(tmp_path / "a.gic"), str(tmp_path / "out.png"), "--ckpt", str(model_file),
                env=env)
    assert r.returncode == 0, r.stderr
    codec = load_model_file(model_file)[0]
    x = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = codec(x, RATIOS).x_hat
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "out.png")).copy()).permute(2, 0, 1)[None]
    assert (got.float() - (expected.clamp(0, 1) * 255).round()).abs().max() <= 1
    r = run_cli("info", "--recipe", str(model_file), "--size", "64x64", env=env)
    assert r.returncode == 0, r.stderr
    for line in ('router               "official"', 'decoder_branches     "official"',
                 "input_range          [0.0, 1.0]", "attention_window     0",
                 'vq_distance          "official"', 'entropy_coder        "huffman-official"'):
        assert f"behaviour {line}" in r.stdout, r.stdout


def test_recipe_init_takes_the_imported_file(model_file, codec):
    """A recipe stage's `init:` loads the imported weights into the recipe's codec, which
    keeps the recipe's own behaviour settings (gicl's defaults here)."""
    from gicl.codecs import build_codec
    from gicl.recipes import resolve
    from gicl.runner import load_codec_weights

    target = build_codec(resolve("controlgic", "paper", [])["codec"])
    load_codec_weights(target, model_file)
    assert target.behaviour()["decoder_branches"] == "own"
    theirs = codec.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in target.state_dict().items())
