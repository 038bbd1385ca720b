"""Every command of the README's usage block runs here, from the README's own text.

The fenced `bash` blocks under "## Using it" are parsed; each line must have an entry in
`WAYS`, which says how it runs: as written, with overrides stated there (a smoke-sized
input, fewer iterations), or, for a line the README marks `# needs network` or
`# cluster only`, through a check that needs neither (`--help`, `bash -n`, the resolved
config). A new README line without an entry, an entry without a line, or a marker that
disagrees with its entry fails `test_every_usage_line_has_a_way_and_markers_agree`.

Each command runs in a real shell in one scratch folder for the module, after the README's
first line (`. .venv/bin/activate`, with `.venv` a link to the venv running the tests), so
`python` and `tensorboard` are what a user pasting the block gets. Commands that read
another command's output (export reads a fit's checkpoint, compress the exported model,
...) run it first, once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import KODAK, REPO
from PIL import Image

ACTIVATE = ". .venv/bin/activate"
MARKERS = ("needs network", "cluster only")


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment) of a shell line: the comment starts at a `#` outside quotes that
    begins a word."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1:].strip()
    return line.strip(), ""


def usage_lines() -> list[tuple[str, str]]:
    """(command, comment) of every line of the bash blocks in the README's "Using it"."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Using it", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        lines += [split_comment(line) for line in block.splitlines() if line.strip()]
    return lines


def marker(comment: str) -> str | None:
    return next((m for m in MARKERS if comment.startswith(m)), None)


# ---------------------------------------------------------------------------- checks

def check_activate(ws: Path, proc: subprocess.CompletedProcess) -> None:
    # the activated `python` imports the package and its data pipeline (not the system one)
    assert Path(proc.stdout.split()[0]) == Path(sys.prefix).resolve() / "bin" / "python", proc.stdout
    assert proc.stdout.split()[1] == "gicl.data"


def check_recipes(ws: Path, proc: subprocess.CompletedProcess) -> None:
    names = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line and not line[0].isspace()]
    assert sorted(listed) == names, proc.stdout
    assert proc.stdout.count("stages:") == len(names)


def check_vqgan_smoke(ws: Path, proc: subprocess.CompletedProcess) -> None:
    stage = ws / "runs" / "vqgan" / "smoke" / "pretrain"
    for name in ("done", "final.pt", "config.yaml", "checkpoints/last.ckpt"):
        assert (stage / name).exists(), name
    assert list((stage / "tb").glob("events.out.tfevents.*"))
    assert "run dir runs/vqgan/smoke" in proc.stdout + proc.stderr


def check_s3_config(ws: Path, proc: subprocess.CompletedProcess) -> None:
    config = yaml.safe_load(proc.stdout)
    assert config["data"]["train"] == "pipe:aws s3 cp s3://b/imagenet-{000000..001281}.tar -"


def check_print_config(ws: Path, proc: subprocess.CompletedProcess) -> None:
    config = yaml.safe_load(proc.stdout)
    assert config["name"] == "vqgan" and config["profile"] == "paper"
    assert list(config["stages"]) == ["pretrain"] and config["stages"]["pretrain"]["max_steps"] > 0


def check_info(ws: Path, proc: subprocess.CompletedProcess) -> None:
    info = json.loads(proc.stdout)
    assert info["codec"] == "vqgan" and info["flops"]["size"] == "768x512"
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total")
    assert info["flops"]["total"] > 1e12 and info["flops"]["method"] == "meta device"


def check_help(*words: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(ws: Path, proc: subprocess.CompletedProcess) -> None:
        for word in words:
            assert word in proc.stdout, (word, proc.stdout[:2000])
    return check


def check_export(ws: Path, proc: subprocess.CompletedProcess) -> None:
    from gicl.model_file import read_model_file

    assert read_model_file(ws / "progic.pt")["codec"]["name"] == "progic"
    assert proc.stdout.startswith("progic.pt: codec progic")


def check_compress(ws: Path, proc: subprocess.CompletedProcess) -> None:
    size = (ws / "photo.gic").stat().st_size
    bpp = float(re.search(r", ([0-9.]+) bpp", proc.stdout).group(1))
    assert proc.stdout.startswith(f"photo.gic: {size} bytes, 96x64,")
    assert bpp == pytest.approx(size * 8 / (96 * 64), abs=1e-6)


def check_decompress(ws: Path, proc: subprocess.CompletedProcess) -> None:
    with Image.open(ws / "out.png") as im:
        assert im.size == (96, 64)
    assert "from 2 of" in proc.stdout, proc.stdout


def check_eval(ws: Path, proc: subprocess.CompletedProcess) -> None:
    summary = json.loads((ws / "results" / "summary.json").read_text())
    assert len(summary["points"]) == 5  # a ProGIC: one point per stage
    assert [p["point"]["stages"] for p in summary["points"]] == [1, 2, 3, 4, 5], summary["points"]
    for key in ("bpp", "psnr", "ms-ssim"):
        assert all(np.isfinite(p[key]) for p in summary["points"]), key
    bpp = [p["bpp"] for p in summary["points"]]
    assert bpp == sorted(bpp) and len(set(bpp)) == 5  # each stage adds bits
    for name in ("images.csv", "rd.png", "report.html"):
        assert (ws / "results" / name).stat().st_size > 0, name
    assert "2 image(s), 5 point(s)" in proc.stdout


def check_bdrate(ws: Path, proc: subprocess.CompletedProcess) -> None:
    # the test curve needs 90 % of the anchor's bits for every LPIPS value: −10 %
    value = float(re.search(r"BD-rate \(lpips-vgg, PCHIP, bpp\): ([-+0-9.]+) %", proc.stdout).group(1))
    assert value == pytest.approx(-10.0, abs=1e-4), proc.stdout


def check_shards(ws: Path, proc: subprocess.CompletedProcess) -> None:
    with tarfile.open(ws / "shards" / "imagenet-000000.tar") as tar:
        names = tar.getnames()
    assert len([n for n in names if n.endswith((".jpg", ".jpeg", ".JPEG"))]) == 4, names
    assert (ws / "shards" / "imagenet-manifest.json").exists()
    assert "4 images" in proc.stdout


def check_bench_codec(ws: Path, proc: subprocess.CompletedProcess) -> None:
    assert "128×128" in proc.stdout and "GFLOPs per forward" in proc.stdout, proc.stdout
    for step in ("compress", "decompress"):
        assert re.search(rf"^  {step} +[0-9.]+ ms", proc.stdout, re.M), proc.stdout


def check_bench_train(ws: Path, proc: subprocess.CompletedProcess) -> None:
    rows = re.findall(r"^ +([12]) +(\d+) +(\d+) +2 +([0-9.]+) +([0-9.]+) +-$", proc.stdout, re.M)
    assert [r[0] for r in rows] == ["2"] and float(rows[0][3]) > 0, proc.stdout
    assert rows[0][1:3] == ("1", "0")  # the bench's 1 thread per process; the smoke data workers
    assert float(rows[0][4]) == pytest.approx(2 * float(rows[0][3]), rel=0.01)  # images = 2 × it


def check_bench_data(ws: Path, proc: subprocess.CompletedProcess) -> None:
    assert re.search(r"^workers 2: +[0-9]+ images/s steady, [0-9]+ per worker = [0-9]+ % of raw "
                     r"decode_jpeg", proc.stdout, re.M), proc.stdout


# ---------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Way:
    """How one README line runs here. `how`: the overrides in words ("" = as written);
    `rewrite`: README text → command line run; `needs`: commands run once before (README
    lines, run their own way, or stated set-up commands); `marked`: the README's marker."""

    check: Callable[[Path, subprocess.CompletedProcess], None] | None  # None: a server
    how: str = ""
    rewrite: Callable[[str], str] = lambda c: c
    needs: tuple[str, ...] = ()
    marked: str | None = None
    cwd: str = "."


VQGAN_SMOKE = "python -m gicl fit --recipe vqgan --profile smoke"
EXPORT = "python -m gicl export runs/progic/paper/train/checkpoints/last.ckpt progic.pt"
COMPRESS = "python -m gicl compress photo.png photo.gic --ckpt progic.pt --bpp 0.1"
S3_FIT = ("python -m gicl fit --recipe vqgan "
          "--set data.train='pipe:aws s3 cp s3://b/imagenet-{000000..001281}.tar -'")
# Stated set-up (not a README line): a ProGIC smoke run, 2 iterations, for export to read.
PROGIC_SMOKE = "python -m gicl fit --recipe progic --profile smoke --set stages.train.max_steps=2"

WAYS: dict[str, Way] = {
    ACTIVATE: Way(check_activate, "followed by a probe of the activated python", lambda c: (
        f"{c} && python -c 'import sys, gicl.data; print(sys.executable, gicl.data.__name__)'")),
    "python -m gicl recipes": Way(check_recipes),
    VQGAN_SMOKE: Way(check_vqgan_smoke),
    S3_FIT: Way(check_s3_config, "--print-config appended: the override resolves, nothing streams",
            lambda c: f"{c} --print-config", marked="needs network"),
    "python -m gicl fit --recipe vqgan --print-config": Way(check_print_config),
    "python -m gicl info --recipe vqgan --size 768x512 --json": Way(check_info),
    "tensorboard --logdir runs/": Way(
        None, "--port 0 (a free port); the test reads its run list over HTTP",
        lambda c: f"exec {c} --port 0", needs=(VQGAN_SMOKE,)),
    EXPORT: Way(check_export, "the progic smoke run's checkpoint instead of the paper run's",
                lambda c: c.replace("runs/progic/paper/", "runs/progic/smoke/"), needs=(PROGIC_SMOKE,)),
    "python -m gicl import controlgic authors.ckpt controlgic.pt": Way(
        check_help("controlgic", "the authors' checkpoint"), "--help (the authors' file is a download)",
        lambda c: "python -m gicl import --help", marked="needs network"),
    COMPRESS: Way(check_compress, "photo.png: a 96x64 crop of a committed Kodak image", needs=(EXPORT,)),
    "python -m gicl decompress photo.gic out.png --stages 2": Way(check_decompress, needs=(COMPRESS,)),
    "python -m gicl data kodak kodak/": Way(
        check_help("SHA-256", "DIR"), "--help (tests/test_data_download.py serves it on loopback)",
        lambda c: "python -m gicl data kodak --help", marked="needs network"),
    "python -m gicl eval --ckpt progic.pt --data kodak/ --out results/": Way(
        check_eval, "kodak/: two 192x192 crops of committed Kodak images; --metrics psnr,ms-ssim "
                    "(the backbone metrics: tests/test_eval.py)",
        lambda c: f"{c} --metrics psnr,ms-ssim", needs=(EXPORT,)),
    "python -m gicl bdrate results/anchor/summary.json results/summary.json --metric lpips": Way(
        check_bdrate, "in bdrate/, whose two summaries the test writes: the test curve at 90 % "
                      "of the anchor's bits", cwd="bdrate"),
    "python -m gicl data shards /data/imagenet/train 'shards/imagenet-%06d.tar'": Way(
        check_shards, "imagenet/train: two class folders of two JPEGs",
        lambda c: c.replace("/data/imagenet/train", "imagenet/train")),
    "python -m gicl bench codec --recipe progic --set codec.variant=small --size 768x512": Way(
        check_bench_codec, "--size 128x128 --repeats 1 --warmup 0",
        lambda c: c.replace("768x512", "128x128") + " --repeats 1 --warmup 0"),
    "python -m gicl bench train --recipe progic --set codec.variant=small --processes 1,2": Way(
        check_bench_train, "--processes 2 (the DDP run) --profile smoke --steps 3",
        lambda c: c.replace("--processes 1,2", "--processes 2") + " --profile smoke --steps 3"),
    "python -m gicl bench data --workers 2": Way(
        check_bench_data, "--count 16 --crop 64 --batch-size 4",
        lambda c: f"{c} --count 16 --crop 64 --batch-size 4"),
    "sbatch --nodes 2 --ntasks-per-node 8 --gres gpu:8 slurm/launch.sh --recipe progic ...": Way(
        check_help("sbatch", "SLURM"), "bash -n on the script, then its --help",
        lambda c: "bash -n slurm/launch.sh && bash slurm/launch.sh --help", marked="cluster only"),
}


# ---------------------------------------------------------------------------- the scratch folder

class Workspace:
    """The scratch folder the block runs in, and the commands already run there."""

    def __init__(self, root: Path) -> None:
        self.root, self.done = root, {}

    def env(self) -> dict[str, str]:
        """No pretrained weights ($TORCH_HOME empty): runs do not depend on the user's cache."""
        return {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_HOME": str(self.root.parent / "torch_home"),
                "GICL_CACHE": str(self.root.parent / "cache")}

    def argv(self, command: str) -> list[str]:
        return ["bash", "-c", command if command.startswith(ACTIVATE) else f"{ACTIVATE} && {command}"]

    def run(self, line: str) -> subprocess.CompletedProcess:
        """Run a README line (its way) or a set-up command, once, after what it needs."""
        if line not in self.done:
            way = WAYS.get(line, Way(None))
            for need in way.needs:
                self.run(need)
            command = way.rewrite(line)
            proc = subprocess.run(self.argv(command), cwd=self.root / way.cwd, env=self.env(),
                                  capture_output=True, text=True, timeout=400)
            assert proc.returncode == 0, (f"{command}\n(README: {line}; {way.how or 'as written'})\n"
                                          f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            self.done[line] = proc
        return self.done[line]


def crop(name: str, box: tuple[int, int, int, int], dest: Path) -> None:
    with Image.open(KODAK / name) as im:
        im.crop(box).save(dest)


def summary(path: Path, rates: list[float], lpips: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    points = [{"bpp": r, "lpips-vgg": q} for r, q in zip(rates, lpips, strict=True)]
    path.write_text(json.dumps({"format": "gicl-eval", "model": {"codec": "progic"}, "points": points}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("readme") / "ws"
    (root / "kodak").mkdir(parents=True)
    venv = Path(sys.prefix)
    assert (venv / "bin" / "activate").exists(), f"the tests run from a venv ({sys.prefix} is not one)"
    (root / ".venv").symlink_to(venv)
    (root / "slurm").symlink_to(REPO / "slurm")
    crop("kodim03.png", (0, 0, 96, 64), root / "photo.png")
    for name in ("kodim01.png", "kodim02.png"):
        crop(name, (0, 0, 192, 192), root / "kodak" / name)
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (root / "imagenet" / "train" / wnid).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "imagenet" / "train" / wnid / f"{wnid}_{i}.JPEG")
    rates, lpips = [0.05, 0.1, 0.2, 0.4], [0.31, 0.20, 0.12, 0.07]
    summary(root / "bdrate" / "results" / "anchor" / "summary.json", rates, lpips)
    summary(root / "bdrate" / "results" / "summary.json", [0.9 * r for r in rates], lpips)
    (root / "bdrate" / ".venv").symlink_to(venv)
    (root.parent / "torch_home").mkdir()
    return Workspace(root)


# ---------------------------------------------------------------------------- tests

def test_every_usage_line_has_a_way_and_markers_agree():
    lines = usage_lines()
    commands = [c for c, _ in lines]
    assert commands[0] == ACTIVATE
    assert [c for c in commands if c not in WAYS] == [], "README lines without a way to run them here"
    assert [c for c in WAYS if c not in commands] == [], "ways for lines the README no longer has"
    assert {c: marker(m) for c, m in lines} == {c: WAYS[c].marked for c in commands}
    assert [c for c in commands if WAYS[c].check is None] == ["tensorboard --logdir runs/"]
    assert [c for c in commands if WAYS[c].rewrite(c) != c and not WAYS[c].how] == [], "unstated overrides"
    text = (REPO / "README.md").read_text()
    for m in MARKERS:  # the README says what its markers mean
        assert f"`# {m}`" in text


@pytest.mark.parametrize("line", [c for c, _ in usage_lines() if c not in WAYS or WAYS[c].check],
                         ids=lambda c: re.sub(r"[^\w./-]+", "_", c)[:80])
def test_usage_line_runs(workspace: Workspace, line: str):
    assert line in WAYS, f"the README line '{line}' has no way to run it in WAYS"
    proc = workspace.run(line)
    WAYS[line].check(workspace.root, proc)


def test_tensorboard_serves_the_smoke_run(workspace: Workspace):
    line = "tensorboard --logdir runs/"
    way = WAYS[line]
    for need in way.needs:
        workspace.run(need)
    command = way.rewrite(line)
    server = subprocess.Popen(workspace.argv(command), cwd=workspace.root, env=workspace.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = None, time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            text = server.stderr.readline()
            assert text or server.poll() is None, "tensorboard exited"
            found = re.search(r"(http://\S+:\d+/)", text)
            url = found and found.group(1)
        assert url, "tensorboard printed no address"
        runs: list[str] = []
        while "vqgan/smoke/pretrain/tb" not in runs and time.monotonic() < deadline:
            with urllib.request.urlopen(url + "data/runs", timeout=10) as reply:
                runs = json.loads(reply.read())
            time.sleep(0.5)
        assert "vqgan/smoke/pretrain/tb" in runs, runs
    finally:
        server.terminate()
        server.wait(timeout=30)

