"""`gicl bench rate`: a HyperVQ model file's streams against their integer tables and the
model's float rate, and its files decoded in another process with another thread count."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import kodak_crop, run_cli
from test_hvq_cgic import TINY

from gicl.codecs import build_codec
from gicl.images import to_uint8, write_png
from gicl.model_file import save_model_file

POINTS = [{"ratios": [0.5, 0.4, 0.1]}, {"ratios": [1.0, 0.0, 0.0]}]


def trained_hyperprior(codec, images: list[torch.Tensor]) -> None:
    """Stage B's objective on a frozen backbone, briefly: R_ind of these images' tokens (an
    untrained hyperprior gives true indices probabilities far below the tables' floor of
    2⁻²⁴, so its float rate exceeds any integer table's cost)."""
    for p in codec.backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in codec.hyperprior.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        outs = [codec.backbone(x, point) for x in images for point in POINTS]
    for step in range(80):
        out = outs[step % len(outs)]
        lat, idx, masks = (out.extras[k] for k in ("latents", "indices", "masks"))
        rate = codec.hyperprior(lat, idx, codec.codebook(), masks)
        opt.zero_grad()
        sum(rate.rate_ind.values()).sum().backward()
        opt.step()
    codec.update()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_rate")
    (root / "images").mkdir()
    images = []
    for name, box in (("a.png", (0, 0, 96, 64)), ("b.png", (200, 100, 271, 149))):  # 96×64, odd 71×49
        write_png(root / "images" / name, to_uint8(kodak_crop("kodim23.png", box)))
        images.append(kodak_crop("kodim23.png", box))
    torch.manual_seed(0)
    codec = build_codec(TINY)
    codec.update()
    save_model_file(codec, root / "untrained.pt")
    trained_hyperprior(codec, images)
    save_model_file(codec, root / "model.pt")
    return root


def bench_rate(files, model: str):
    proc = run_cli("bench", "rate", "--ckpt", str(files / model), "--data", str(files / "images"),
                   "--points", json.dumps(POINTS), "--threads", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_untrained_tables_are_not_the_float_rate(files):
    """The bound can fail: an untrained model's float rate is not what its tables cost."""
    r = bench_rate(files, "untrained.pt")
    assert not any(s["tables_within_bound"] for s in r["points"].values())
    assert all(s["payload_within_bound"] for s in r["points"].values())


def test_streams_match_tables_and_float_rate_and_decode_elsewhere(files):
    r = bench_rate(files, "model.pt")
    assert list(r["points"]) == [json.dumps(p) for p in POINTS]
    for point, s in r["points"].items():
        print(f"\n{point}: {s}")
        assert s["images"] == 2
        assert s["payload_within_bound"] and s["tables_within_bound"], (point, s)
        assert s["table_bpp"] <= s["payload_bpp"] < s["file_bpp"]
        assert s["max_tables_vs_float"] <= 0.01
    d = r["decode"]
    assert (d["files"], d["desyncs"], d["threads"], r["threads"]) == (4, [], 1, 2)
    assert d["max_abs_x_hat_difference"] < 1e-4


def test_a_model_without_hypervq_is_refused_in_one_line(tmp_path, files):
    save_model_file(build_codec({"name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
                                 "latent_channels": 32}), tmp_path / "progic.pt")
    proc = run_cli("bench", "rate", "--ckpt", str(tmp_path / "progic.pt"), "--data", str(files / "images"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no HyperVQ entropy model" in proc.stderr
