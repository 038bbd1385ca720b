"""`gicl bench codec --against NAME`: peers measured in the same run, on the same input.

Real subprocesses of the CLI at 64×48 (seconds): CompressAI's real rANS strings, Pillow's real
codecs (bytes and PSNR recomputed here independently), ratios = gicl time / peer time, bad
names and paths as one line with exit 2. The authors' code cannot be fetched here, so the
official adapters run against tiny stand-in checkouts written by the tests with the authors'
module paths and names; they log the calls, so the tests check that the GLC adapter times the
call sequence of the authors' `GLC_Image.test` split into sender and receiver, and that the
Control-GIC adapter splits `CGIC.compress` where it starts reading its files back.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.zoo import bmshj2018_hyperprior
from conftest import run_cli
from PIL import Image

BASE = ("bench", "codec", "--recipe", "progic", "--profile", "smoke", "--size", "64x48",
        "--repeats", "1", "--warmup", "0", "--no-flops")
PIXELS = 64 * 48


def bench_input() -> np.ndarray:
    """The bench's default input (seeded noise), as the 8-bit image Pillow peers encode."""
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    return (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def assert_ratios(r: dict, peer: dict) -> None:
    assert peer["compress_ms"] > 0 and peer["decompress_ms"] > 0
    assert peer["ratio_compress"] == pytest.approx(r["compress_ms"] / peer["compress_ms"])
    assert peer["ratio_decompress"] == pytest.approx(r["decompress_ms"] / peer["decompress_ms"])
    assert peer["ratio"] == pytest.approx((r["compress_ms"] + r["decompress_ms"])
                                          / (peer["compress_ms"] + peer["decompress_ms"]))


def test_compressai_and_pillow_peers_beside_gicl() -> None:
    proc = run_cli(*BASE, "--against", "compressai:bmshj2018-hyperprior:1",
                   "--against", "pillow:jpeg:75", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    cai, jpeg = r["peers"]
    assert [cai["peer"], jpeg["peer"]] == ["compressai:bmshj2018-hyperprior:1", "pillow:jpeg:75"]
    for peer in (cai, jpeg):
        assert_ratios(r, peer)
        assert peer["bpp"] == 8 * peer["bytes"] / PIXELS
    assert cai["bytes"] > 0 and "pretrained=False" in cai["note"]
    zoo = bmshj2018_hyperprior(quality=1, pretrained=False)  # the architecture the name names
    assert cai["params_m"] == sum(p.numel() for p in zoo.parameters()) / 1e6

    arr = bench_input()  # Pillow's bytes and PSNR, recomputed here
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=75)
    assert jpeg["bytes"] == len(buf.getvalue())
    assert jpeg["bpp"] == 8 * len(buf.getvalue()) / PIXELS
    decoded = np.asarray(Image.open(buf).convert("RGB")).astype(np.float64)
    mse = np.mean((decoded - arr) ** 2)
    assert jpeg["psnr_db"] == pytest.approx(10 * math.log10(255**2 / mse))


def test_human_output_names_each_peer_and_the_machine_once() -> None:
    proc = run_cli(*BASE, "--threads", "1", "--against", "pillow:webp:80")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    peer = [line for line in lines if line.startswith("  vs pillow:webp:80: ")]
    assert len(peer) == 1 and "bpp, PSNR" in peer[0] and "gicl/peer = " in peer[0]
    machine = [line for line in lines if line.startswith("  machine: ")]
    assert len(machine) == 1 and "1 torch threads, load " in machine[0]


@pytest.mark.parametrize("spec,says", [
    ("nope", "unknown peer; the forms are compressai:ARCH:QUALITY"),
    ("compressai:bmshj2018-hyperprio:8", "CompressAI's zoo has no 'bmshj2018-hyperprio'"),
    ("compressai:cheng2020-attn:8", "cheng2020-attn has qualities 1–6"),
    ("pillow:gif:50", "Pillow codecs are jpeg, webp, avif"),
    ("official-glc:{tmp}", "no src/models/image_model.py there; give a checkout of "
                           "https://github.com/jzyustc/GLC"),
    ("official-controlgic:{tmp}", "no configs/config_inference.yaml there; give a checkout of "
                                  "https://github.com/lianqi1008/Control-GIC"),
])
def test_bad_peer_is_one_line_and_exit_2(spec: str, says: str, tmp_path: Path) -> None:
    proc = run_cli(*BASE, "--against", spec.format(tmp=tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gicl: error: --against ")
    assert says in lines[0]


STAND_IN = '''
"""Stand-in for jzyustc/GLC's src/models/image_model.py: the method names the adapter calls,
tiny layers, and a log of each call (name, shape) in calls.jsonl beside this file."""
import json
from pathlib import Path

import torch
from torch import nn

LOG = Path(__file__).parent / "calls.jsonl"


def log(name, t=None):
    with LOG.open("a") as f:
        f.write(json.dumps({"call": name, "threads": torch.get_num_threads(),
                            "shape": None if t is None else list(t.shape),
                            "min": None if t is None else float(t.min())}) + "\\n")


class Logged(nn.Module):
    def __init__(self, name, module):
        super().__init__()
        self.name, self.module = name, module

    def forward(self, x, *rest):
        log(self.name, x)
        return self.module(x)


class ZVQ(nn.Module):
    def get_indices(self, z):
        log("z_vq.get_indices", z)
        return torch.zeros(z.shape[0], z.shape[2] * z.shape[3], dtype=torch.long)

    def get_quan_feat(self, index, shape):
        log("z_vq.get_quan_feat")
        return torch.zeros(shape[0], shape[3], shape[1], shape[2])


class VQGAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Logged("vqgan.encoder", nn.Conv2d(3, 4, 16, stride=16))
        self.generator = Logged("vqgan.generator", nn.ConvTranspose2d(4, 3, 16, stride=16))


class GLC_Image(nn.Module):
    def __init__(self, N=256, patch=32, inplace=False):
        super().__init__()
        self.vqgan = VQGAN()
        self.enc = Logged("enc", nn.Identity())
        self.dec = Logged("dec", nn.Identity())
        self.hyper_enc = Logged("hyper_enc", nn.Conv2d(4, 4, 4, stride=4))
        self.hyper_dec = Logged("hyper_dec", nn.Upsample(scale_factor=4))
        self.y_prior_fusion = Logged("y_prior_fusion", nn.Identity())
        self.z_vq = ZVQ()
        self.y_spatial_prior_reduction = nn.Identity()
        self.y_spatial_prior_adaptor_1 = self.y_spatial_prior_adaptor_2 = nn.Identity()
        self.y_spatial_prior_adaptor_3 = self.y_spatial_prior = nn.Identity()
        self.q_enc = nn.Parameter(torch.ones(4, 4, 1, 1))
        self.q_dec = nn.Parameter(torch.ones(4, 4, 1, 1))

    @staticmethod
    def get_padding_size(height, width, p=64):
        new_h, new_w = (height + p - 1) // p * p, (width + p - 1) // p * p
        return 0, new_w - width, 0, new_h - height

    def forward_four_part_prior(self, y, params, a1, a2, a3, prior, y_spatial_prior_reduction):
        log("forward_four_part_prior", y)
        return y, y.round(), y.round(), params.abs() + 1

    def get_y_gaussian_bits(self, y, sigma):
        log("get_y_gaussian_bits", y)
        return torch.log2(sigma)
'''


def test_official_glc_adapter_times_the_authors_call_sequence(tmp_path: Path) -> None:
    checkout = tmp_path / "GLC"
    (checkout / "src" / "models").mkdir(parents=True)
    (checkout / "src" / "__init__.py").write_text("")
    (checkout / "src" / "models" / "__init__.py").write_text("")
    (checkout / "src" / "models" / "image_model.py").write_text(textwrap.dedent(STAND_IN))
    proc = run_cli(*BASE, "--threads", "1", "--repeats", "2", "--json",
                   "--against", f"official-glc:{checkout}", fresh=True)  # compares peak memory
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    (peer,) = r["peers"]
    assert_ratios(r, peer)
    assert "bytes" not in peer  # no entropy coder: no file size
    # the child's own peak (a bare torch process here), not the one Linux hands down from the
    # parent across fork + exec (`ru_maxrss` would report at least gicl's)
    assert 0 < peer["peak_rss_mb"] < r["peak_rss_mb"]
    calls = [json.loads(line) for line in (checkout / "src/models/calls.jsonl").read_text().splitlines()]
    sender = ["vqgan.encoder", "enc", "hyper_enc", "z_vq.get_indices", "z_vq.get_quan_feat",
              "hyper_dec", "y_prior_fusion", "forward_four_part_prior", "get_y_gaussian_bits"]
    receiver = ["z_vq.get_quan_feat", "hyper_dec", "y_prior_fusion", "forward_four_part_prior",
                "dec", "vqgan.generator"]
    assert [c["call"] for c in calls] == (sender + receiver) * 2  # two timed runs, no warm-up
    first = calls[0]  # the same input, in [-1, 1], padded to 64 × 64 as the authors' script
    assert first["shape"] == [1, 3, 64, 64] and first["min"] < 0
    assert {c["threads"] for c in calls} == {1}  # the same thread count as gicl's side


CGIC_STAND_IN = {
    "configs/config_inference.yaml": """
model:
  params: {n_embed: 8, ckpt_path: ./ckpt/model.ckpt, lossconfig: {target: needs.vgg.weights}}
""",
    "CGIC/__init__.py": "", "CGIC/models/__init__.py": "", "CGIC/tools/__init__.py": "",
    "CGIC/models/model.py": '''
"""Stand-in for lianqi1008/Control-GIC's CGIC: its constructor's `.cuda()`, its usage
counters, and a compress that encodes (0.3 s), codes to files, reads back and decodes (0.1 s)."""
import json
import time
from pathlib import Path

import torch
from torch import nn


class Quantize(nn.Module):
    def __init__(self, n_embed):
        super().__init__()
        self.embedding_counter = nn.ParameterDict(
            {str(i): nn.Parameter(torch.zeros(1)) for i in range(n_embed)}).cuda()


class CGIC(nn.Module):
    def __init__(self, n_embed, lossconfig=None, ckpt_path=None):
        super().__init__()
        assert lossconfig is None and ckpt_path is None
        self.quantize = Quantize(n_embed)

    def compress(self, x, path, h_indices, h_mask, save_img):
        time.sleep(0.3)
        ind = h_indices.compress([0, 1, 2], str(Path(path) / "indices_fine.bin"))
        h_mask.compress([1, 0], str(Path(path) / "mask_coarse.bin"))
        assert h_indices.decompress_string(ind) == [0, 1, 2]
        time.sleep(0.1)
        with (Path(__file__).parent / "calls.jsonl").open("a") as f:
            f.write(json.dumps({"shape": list(x.shape), "threads": torch.get_num_threads(),
                                "files": sorted(p.name for p in Path(path).iterdir())}) + "\\n")
        return x, 0.0, None
''',
    "CGIC/tools/indices_coding.py": '''
import json


class HuffmanCoding:
    def __init__(self, frequency):
        assert {int(v.item()) for v in frequency.values()} == {1}

    def compress(self, symbols, path):
        with open(path, "w") as f:
            json.dump(symbols, f)
        return path

    def decompress_string(self, path):
        with open(path) as f:
            return json.load(f)
''',
    "CGIC/tools/mask_coding.py": "from CGIC.tools.indices_coding import HuffmanCoding\n\n\n"
                                 "class BinaryCoding(HuffmanCoding):\n"
                                 "    def __init__(self):\n        pass\n",
}


def test_official_controlgic_adapter_splits_compress_at_the_read_back(tmp_path: Path) -> None:
    """Compress is timed up to the first read-back of the coded files, decompress after it;
    the stand-in spends 0.3 s before it and 0.1 s after; the input is center-cropped to
    multiples of 16 (64×48 stays), each run starts from an empty directory."""
    checkout = tmp_path / "Control-GIC"
    for name, text in CGIC_STAND_IN.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(textwrap.dedent(text))
    proc = run_cli(*BASE, "--threads", "1", "--repeats", "2", "--json",
                   "--against", f"official-controlgic:{checkout}")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    (peer,) = r["peers"]
    assert_ratios(r, peer)
    assert 300 <= peer["compress_ms"] < 1300 and 100 <= peer["decompress_ms"] < 1100
    calls = [json.loads(line) for line in
             (checkout / "CGIC/models/calls.jsonl").read_text().splitlines()]
    assert calls == [{"shape": [1, 3, 48, 64], "threads": 1,
                      "files": ["indices_fine.bin", "mask_coarse.bin"]}] * 2
