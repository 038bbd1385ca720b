"""`gicl eval`: real bitstreams on Kodak, metrics recomputed from the saved PNGs, and every
pretrained backbone loaded through its library's own path from a temporary $TORCH_HOME
holding random weights (numbers computed with them are meaningless and only checked for
plumbing, never reported)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, trust_weights
from PIL import Image
from test_bitstream_progressive import tiny_model

from gicl.cli import main
from gicl.errors import UserError
from gicl.evaluation import codec_io
from gicl.evaluation.evaluate import center_crop
from gicl.evaluation.metrics import check_sizes, check_weights, patches
from gicl.images import from_uint8, read_image, to_uint8

INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture(scope="module")
def metrics_home(random_torch_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """random_torch_home's VGG16 / AlexNet plus random FID Inception weights, in the file
    torch-fidelity downloads (built by its own class, loaded non-strictly from nothing)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return super().load_state_dict(state_dict, strict=False)

    home = tmp_path_factory.mktemp("metrics_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for f in (random_torch_home / "hub" / "checkpoints").iterdir():
        (folder / f.name).symlink_to(f)
    torch.save({}, home / "empty.pth")
    torch.manual_seed(0)
    net = RandomInception("random", ["2048"], feature_extractor_weights_path=home / "empty.pth")
    torch.save(net.state_dict(), folder / INCEPTION)
    trust_weights(folder / INCEPTION)
    return home


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_eval_on_kodak_writes_results_that_match_the_saved_pngs(tmp_path, kodak, metrics_home,
                                                                monkeypatch):
    import lpips
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
        peak_signal_noise_ratio,
    )

    env = {"GICL_CACHE": str(tmp_path / "cache"), "TORCH_HOME": str(metrics_home)}
    tiny_model(tmp_path / "m.pt")
    out = tmp_path / "out"
    proc = run_cli("eval", "--ckpt", str(tmp_path / "m.pt"), "--data", str(kodak), "--limit",
                   "3", "--crop", "256", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "images.csv").open()))
    summary = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in rows] == ["kodim01.png", "kodim02.png", "kodim03.png"]
    with Image.open(out / "rd.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 300
    monkeypatch.setenv("TORCH_HOME", str(metrics_home))
    alex = lpips.LPIPS(net="alex", verbose=False).eval()
    model = codec_io.load_model(tmp_path / "m.pt")
    for row in rows:
        x = center_crop(read_image(kodak / row["image"]), 256)
        ref = to_uint8(x).permute(2, 0, 1)[None].float()
        rec = to_uint8(read_image(out / "recon" / "p0" / row["image"])).permute(2, 0, 1)[None]
        rec = rec.float()
        assert float(row["psnr"]) == pytest.approx(
            float(peak_signal_noise_ratio(rec, ref, data_range=255.0)), abs=1e-4)
        assert float(row["ms-ssim"]) == pytest.approx(float(
            multiscale_structural_similarity_index_measure(rec / 255, ref / 255,
                                                           data_range=1.0)), abs=1e-5)
        with torch.no_grad():
            expected_lpips = float(alex(rec / 255 * 2 - 1, ref / 255 * 2 - 1))
        assert float(row["lpips-alex"]) == pytest.approx(expected_lpips, abs=1e-5)
        data, _ = codec_io.encode(model, x, {})
        assert int(row["bytes"]) == len(data)
        assert float(row["bpp"]) == pytest.approx(len(data) * 8 / 256**2)
        assert float(row["payload_bpp"]) < float(row["bpp"])
        assert all(0 <= float(row[m]) <= 1 for m in ("lpips-vgg", "dists"))
    (point,) = summary["points"]
    assert point["psnr"] == pytest.approx(sum(float(r["psnr"]) for r in rows) / 3)
    assert point["bpp"] == pytest.approx(sum(float(r["bpp"]) for r in rows) / 3)
    assert all(torch.isfinite(torch.tensor(point[m])) for m in ("fid", "kid", "kid_std"))
    assert summary["model"]["fingerprint"] in (tmp_path / "cache" / "models.json").read_text()


@pytest.mark.parametrize("metric,file", [
    ("lpips-vgg", "vgg16-397923af.pth"), ("dists", "vgg16-397923af.pth"),
    ("lpips-alex", "alexnet-owt-7be5be79.pth"), ("fid", INCEPTION), ("kid", INCEPTION),
])
def test_missing_weights_name_the_exact_file_and_folder(empty_torch_home, metric, file):
    with pytest.raises(UserError) as e:
        check_weights(["psnr", metric])
    assert f"place {file} in {empty_torch_home / 'hub' / 'checkpoints'}" in str(e.value)
    assert f"leave {metric} out of --metrics" in str(e.value)


def test_eval_refuses_before_any_work_when_weights_are_missing(tmp_path, kodak, capsys,
                                                               empty_torch_home, monkeypatch):
    monkeypatch.setenv("GICL_CACHE", str(tmp_path / "cache"))
    tiny_model(tmp_path / "m.pt")
    code = main(["eval", "--ckpt", str(tmp_path / "m.pt"), "--data", str(kodak), "--out",
                 str(tmp_path / "out"), "--metrics", "psnr,fid"])
    err = capsys.readouterr().err
    assert code == 2 and INCEPTION in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    code = main(["eval", "--ckpt", str(tmp_path / "m.pt"), "--data", str(kodak), "--out",
                 str(tmp_path / "out"), "--metrics", "psnr,niqe"])
    assert code == 2 and "unknown metric(s) niqe" in capsys.readouterr().err


def test_patches_follow_the_two_shifted_grids():
    pixels = torch.arange(512 * 768 * 3, dtype=torch.int64).reshape(512, 768, 3).to(torch.uint8)
    p = patches(pixels)
    assert p.shape == (3 * 2 + 2 * 1, 3, 256, 256)
    assert torch.equal(p[0], pixels[:256, :256].permute(2, 0, 1))
    assert torch.equal(p[6], pixels[128:384, 128:384].permute(2, 0, 1))
    assert patches(pixels[:255]).shape[0] == 0


def test_png_quantization_round_trips_exactly(kodak):
    x = read_image(kodak / "kodim04.png")
    assert torch.equal(from_uint8(to_uint8(x)), x)


def test_sizes_too_small_for_a_metric_are_refused_up_front():
    with pytest.raises(UserError, match="ms-ssim needs images larger than 160 px a side, got 128x300"):
        check_sizes(["psnr", "ms-ssim"], [(512, 768), (128, 300)])
    with pytest.raises(UserError, match="fid/kid need at least 2 patches of 256x256, the images give 1"):
        check_sizes(["fid", "kid"], [(256, 300), (255, 1000)])
    check_sizes(["psnr", "fid"], [(256, 256), (256, 256)])
