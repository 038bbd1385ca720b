"""Any image size codes: 1×1, 1×N, N×1 and 17×9 round-trip through real container bytes with
every codec, at the input size (codecs pad to their multiple inside and crop back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_bitstream_progressive import TINY as TINY_VQGAN
from test_controlgic import TINY as TINY_CONTROLGIC
from test_glc_fill import TINY as TINY_GLC
from test_glc_vqvae import TINY as TINY_GLC_VQVAE
from test_hvq_cgic import TINY as TINY_HVQ_CGIC
from test_hvq_progic import TINY as TINY_HVQ_PROGIC
from test_hvq_progic import TINY_VQGAN as TINY_HVQ_VQGAN

from gicl.cli import main
from gicl.codecs.base import build_codec
from gicl.evaluation import codec_io
from gicl.model_file import save_model_file
from gicl.nn.blocks import GroupNorm

CODECS = {
    "vqgan": {"name": "vqgan", **TINY_VQGAN},  # one channel per GroupNorm group, latent H/2
    "progic": {"name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
               "latent_channels": 32, "codebook_size": 64},
    "progic-small": {"name": "progic", "variant": "small"},
    "controlgic": TINY_CONTROLGIC,  # one channel per group, coarse latent at H/16
    "glc": TINY_GLC,  # pads to 64: hyper-latent at H/64
    "glc_vqvae": TINY_GLC_VQVAE,  # GLC's VQ-VAE alone (stage I), latent H/2
    "hvq_cgic": TINY_HVQ_CGIC,  # Control-GIC's padding, hyper-latents at H/16 of each branch
    "hvq_progic": TINY_HVQ_PROGIC,  # ProGIC's padding, hyper-latents at H/64
    "hvq_vqgan": TINY_HVQ_VQGAN,  # VQGAN's padding (latent H/2), hyper-latents at H/8
}
SIZES = [(1, 1), (1, 23), (23, 1), (17, 9)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tensors here are a few hundred pixels: thread start-up would dominate (100× on a
    loaded 2-core machine)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name, config in CODECS.items():
        torch.manual_seed(0)
        save_model_file(build_codec(config), folder / f"{name}.pt")
        out[name] = folder / f"{name}.pt"
    return out


@pytest.mark.parametrize("name", list(CODECS))
def test_every_size_round_trips_at_the_input_size(name: str, models: dict[str, Path],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GICL_CACHE", str(tmp_path))
    model = codec_io.load_model(models[name])
    for h, w in SIZES:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
        for point in model.codec.operating_points()[-1:] + model.codec.operating_points()[:1]:
            data, _ = codec_io.encode(model, x, point)
            decoded = codec_io.decode(model, data)
            assert decoded.x_hat.shape == (1, 3, h, w), (name, h, w)
            assert decoded.header.size == (h, w)
            with torch.no_grad():
                forward = model.codec(x, point).x_hat
            assert torch.isfinite(decoded.x_hat).all()
            torch.testing.assert_close(decoded.x_hat, forward, rtol=0, atol=1e-5)


def test_one_pixel_image_through_compress_and_decompress(models: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (1, 1), (200, 30, 90)).save(tmp_path / "one.png")
    assert main(["compress", str(tmp_path / "one.png"), str(tmp_path / "one.gic"),
                 "--ckpt", str(models["controlgic"])]) == 0
    assert main(["decompress", str(tmp_path / "one.gic"), str(tmp_path / "back.png")]) == 0
    assert Image.open(tmp_path / "back.png").size == (1, 1)


def test_group_norm_of_one_value_per_group_is_its_bias() -> None:
    """x − mean is exactly 0 when a group holds one value; nn.GroupNorm refuses that input."""
    norm = GroupNorm(32, 32, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    one = torch.randn(1, 32, 1, 1)
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        torch.nn.GroupNorm.forward(norm, one)
    assert torch.equal(norm(one), norm.bias.detach().view(1, 32, 1, 1))
    wide = torch.randn(2, 32, 3, 5)
    assert torch.equal(norm(wide), torch.nn.GroupNorm.forward(norm, wide))
    two = torch.randn(1, 64, 1, 1)  # two channels per group: the ordinary kernel
    norm64 = GroupNorm(32, 64, eps=1e-6)
    assert torch.equal(norm64(two), torch.nn.GroupNorm.forward(norm64, two))
    assert not np.allclose(norm64(two).detach().numpy(), norm64.bias.detach().view(1, 64, 1, 1))
