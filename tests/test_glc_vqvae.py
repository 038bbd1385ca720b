"""GLC's VQ-VAE codec (`glc_vqvae`, stage I of recipes/glc.yaml): its tensors are the `glc`
codec's `vqgan.*` tensors under the official names, and its bitstream (fixed-length indices)
decodes a Kodak photo to exactly the forward pass's reconstruction; a truncated file is one
line on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import run_cli

from gicl.codecs import build_codec
from gicl.evaluation import codec_io
from gicl.images import read_image
from gicl.model_file import save_model_file
from gicl.recipes import resolve

SMOKE = resolve("glc", "smoke")
STAGE_ONE = SMOKE["stages"]["vqvae"]["codec"]
# one channel width per GroupNorm group (32), a latent at H/2: milliseconds per decode
TINY = {"name": "glc_vqvae", "channels": 8, "nf": 32, "ch_mult": [1, 2], "res_blocks": 1,
        "attn_resolutions": [], "resolution": 64, "codebook_size": 64}
OFFICIAL = Path(__file__).parent / "fixtures" / "glc_official_state_dict.json"


def test_the_recipes_stage_one_and_glc_codecs_share_the_vqvae_keys() -> None:
    """One recipe anchor feeds both codecs: stage I's codec is the glc codec's VQ-VAE part."""
    glc = SMOKE["codec"]
    assert STAGE_ONE["name"] == "glc_vqvae" and glc["name"] == "glc"
    assert {k: v for k, v in glc.items() if k in STAGE_ONE and k != "name"} == \
        {k: v for k, v in STAGE_ONE.items() if k != "name"}
    paper = resolve("glc")
    assert {k: v for k, v in paper["codec"].items() if k != "name"} == \
        {k: v for k, v in paper["stages"]["vqvae"]["codec"].items() if k != "name"}


def test_state_dict_is_the_official_vqgan_part_name_for_name() -> None:
    """The official build's tensors are the authors' `vqgan.*` names and shapes (the
    reference list of their checkpoint), and the smoke build's equal the smoke glc codec's."""
    with torch.device("meta"):
        official = build_codec({"name": "glc_vqvae"})
    reference = json.loads(OFFICIAL.read_text())["tensors"]
    expected = {k: shape for k, shape in reference.items() if k.startswith("vqgan.")}
    assert {k: list(v.shape) for k, v in official.state_dict().items()} == expected
    assert len(expected) > 300
    small, glc = build_codec(STAGE_ONE), build_codec(SMOKE["codec"])
    ours = {k: v.shape for k, v in small.state_dict().items()}
    assert ours == {k: v.shape for k, v in glc.state_dict().items() if k.startswith("vqgan.")}
    assert set(small.parameter_groups()) == {"vqgan_encoder", "vqgan_generator", "vqgan_codebook"}
    assert small.last_decoder_layer() is small.vqgan.generator.blocks[-1].weight


def test_kodak_photo_round_trips_through_a_file_to_the_forward_reconstruction(
        kodak: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_model_file(build_codec(STAGE_ONE), tmp_path / "vqvae.pt")
    model = codec_io.load_model(tmp_path / "vqvae.pt")
    x = read_image(kodak / "kodim23.png")[..., 100:221, 200:370]  # 121 × 170: padded to 16
    data, encoded = codec_io.encode(model, x, {})
    decoded = codec_io.decode(model, data)
    with torch.no_grad():
        out = model.codec(x)
    assert decoded.x_hat.shape == x.shape
    assert torch.equal(decoded.x_hat, out.x_hat)
    tokens = 8 * 11  # ⌈121/16⌉ · ⌈170/16⌉ positions, 8 bits each (K = 256)
    assert out.rate["indices"].tolist() == [tokens * 8]
    assert len(encoded.sections) == 1 and len(encoded.sections[0]) == tokens
    assert torch.equal(out.extras["indices"].flatten(),
                       torch.tensor(list(encoded.sections[0]), dtype=torch.long))


def test_truncated_file_is_one_line_exit_2(kodak: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model_file(build_codec(TINY), tmp_path / "tiny.pt")
    model = codec_io.load_model(tmp_path / "tiny.pt")
    data, _ = codec_io.encode(model, read_image(kodak / "kodim23.png")[..., :24, :40], {})
    (tmp_path / "cut.gic").write_bytes(data[:-3])
    r = run_cli("decompress", str(tmp_path / "cut.gic"), str(tmp_path / "out.png"),
                "--ckpt", str(tmp_path / "tiny.pt"), "--device", "cpu")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "truncated" in lines[0] or "corrupt" in lines[0], lines[0]
    assert not (tmp_path / "out.png").exists()
