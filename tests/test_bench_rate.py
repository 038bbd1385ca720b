"""`gicl bench rate`: a HyperVQ model file's streams against their integer tables and the
model's float rate, and its files decoded in another process with another thread count —
for every backbone HyperVQ plugs into (Control-GIC, ProGIC's RVQ stages, a VQGAN)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import kodak_crop, run_cli
from test_hvq_cgic import POINTS as CGIC_POINTS
from test_hvq_cgic import TINY as TINY_CGIC
from test_hvq_progic import TINY as TINY_PROGIC
from test_hvq_progic import TINY_VQGAN

from gicl.benchmarks.rate import summarise
from gicl.codecs import build_codec
from gicl.images import to_uint8, write_png
from gicl.model_file import save_model_file

BACKBONES = {"hvq_cgic": TINY_CGIC, "hvq_progic": TINY_PROGIC, "hvq_vqgan": TINY_VQGAN}
BOXES = {"a.png": (0, 0, 96, 64), "b.png": (200, 100, 271, 149)}  # 96×64 and an odd 71×49


def train_hyperprior(codec, images: list[torch.Tensor], points: list[dict]) -> None:
    """Stage B's objective on a frozen backbone, briefly: R_ind + R_z of these images."""
    for p in codec.backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in codec.hyperprior.parameters() if p.requires_grad], lr=3e-3)
    pairs = [(x, point) for x in images for point in points]
    for step in range(80):
        x, point = pairs[step % len(pairs)]
        losses = codec(x, point).losses
        opt.zero_grad()
        (losses["rate_ind"] + losses["rate_z"]).backward()
        opt.step()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_rate_images")
    for name, box in BOXES.items():
        write_png(folder / name, to_uint8(kodak_crop("kodim23.png", box)))
    return folder


def points_of(name: str, codec) -> list[dict]:
    return list(CGIC_POINTS) if name == "hvq_cgic" else codec.operating_points()


def model_file(tmp_path, name: str):
    """A briefly trained model file (saving it rebuilds its integer tables)."""
    torch.manual_seed(0)
    codec = build_codec(BACKBONES[name])
    train_hyperprior(codec, [kodak_crop("kodim23.png", box) for box in BOXES.values()],
                     points_of(name, codec))
    save_model_file(codec.eval(), tmp_path / "model.pt")
    return tmp_path / "model.pt", points_of(name, codec)


def bench_rate(model, images, points):
    proc = run_cli("bench", "rate", "--ckpt", str(model), "--data", str(images),
                   "--points", json.dumps(points), "--threads", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", BACKBONES)
def test_streams_match_tables_and_float_rate_and_decode_elsewhere(tmp_path, images, name):
    """Every backbone: streams within 0.5 % + 64 bits of their tables, tables within 1 % of
    the float rate, symbols reproduced in another process."""
    model, points = model_file(tmp_path, name)
    r = bench_rate(model, images, points)
    assert list(r["points"]) == [json.dumps(p) for p in points]
    for point, s in r["points"].items():
        print(f"\n{name} {point}: {s}")
        assert s["images"] == 2
        assert s["payload_within_bound"] and s["tables_within_bound"], (point, s)
        assert s["table_bpp"] <= s["payload_bpp"] < s["file_bpp"]
    d = r["decode"]
    assert (d["files"], d["desyncs"], d["threads"], r["threads"]) == (2 * len(points), [], 1, 2)
    assert d["max_abs_x_hat_difference"] < 1e-4


def test_the_bounds_fail_beyond_their_slack():
    """`summarise` flags a stream more than 0.5 % + 64 bits over its tables and an image
    whose tables are more than 1 % off its float rate (an untrained model met both until
    eq. 4 took the coder's floor: its float rate charged 40+ bits where the tables pay 24)."""
    def row(payload: float, tables: float, floats: float) -> dict:
        return {"pixels": 100, "file_bits": payload + 100,
                "streams": {"fine": {"payload": payload, "tables": tables, "float": floats}}}

    edge = summarise([row(1000 * 1.005 + 64, 1000, 1010)])
    assert edge["payload_within_bound"] and edge["tables_within_bound"]
    over = summarise([row(1000 * 1.005 + 65, 1000, 1000), row(1000, 1000, 980)])
    assert not over["payload_within_bound"] and not over["tables_within_bound"]
    assert over["max_payload_excess_bits"] == pytest.approx(70)  # 5 + 65 bits over the tables
    assert over["max_tables_vs_float"] == pytest.approx(20 / 980)


def test_a_model_without_hypervq_is_refused_in_one_line(tmp_path, images):
    save_model_file(build_codec({"name": "progic", "channels": 32, "enc_blocks": 1, "dec_blocks": 1,
                                 "latent_channels": 32}), tmp_path / "progic.pt")
    proc = run_cli("bench", "rate", "--ckpt", str(tmp_path / "progic.pt"), "--data", str(images))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no HyperVQ entropy model" in proc.stderr
