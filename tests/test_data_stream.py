"""The training stream: bad samples, rank splits under torch.distributed, determinism, resume."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import (
    colour,
    colour_shards,
    identify,
    noise_png,
    png_header_bomb,
    write_colour,
)
from PIL import Image

from gicl.data import build_train_loader
from gicl.data.shards import folder_items, write_shards
from gicl.data.transforms import train_crop
from gicl.errors import RecipeError, UserError


@pytest.fixture
def odd_shards(tmp_path: Path) -> tuple[str, dict[str, tuple[int, int, int]]]:
    """Shards of good, convertible and bad samples; returns (pattern, expected colours)."""
    src = tmp_path / "odd"
    write_colour(src / "a_good.png", 0)
    write_colour(src / "b_good.png", 1)
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), colour(2)).save(buf, "JPEG")
    (src / "c_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "d_text.jpg").write_text("this is not a JPEG\n" * 20)
    Image.new("RGB", (12, 10), colour(3)).convert("CMYK").save(src / "e_cmyk.jpg", quality=95)
    Image.fromarray(np.full((10, 12), 0x8000, dtype=np.uint16)).save(src / "f_grey16.png")
    Image.new("RGBA", (12, 10), (255, 0, 0, 128)).save(src / "g_rgba.png")
    Image.new("RGB", (1, 1), (0, 0, 255)).save(src / "h_tiny.png")
    (src / "i_bomb.png").write_bytes(png_header_bomb(40000, 40000))
    assert Image.open(src / "f_grey16.png").mode.startswith("I")
    assert Image.open(src / "e_cmyk.jpg").mode == "CMYK"
    items = folder_items(src)
    manifest = write_shards(items, str(tmp_path / "odd-%02d.tar"), total=len(items), maxcount=3,
                            progress=False)
    cmyk = Image.open(src / "e_cmyk.jpg").convert("RGB").getpixel((5, 5))
    expected = {"good0": colour(0), "good1": colour(1), "cmyk": cmyk, "grey16": (128, 128, 128),
                "rgba_over_white": (255, 127, 127), "tiny": (0, 0, 255)}
    return str(tmp_path / manifest["pattern"]), expected


def stream_colours(pattern: str, **cfg) -> tuple[list[tuple[int, ...]], int]:
    """One pass, batch 1: the solid colour of every crop, and the total skipped count."""
    loader = build_train_loader({"train": pattern, "resampled": False, "crop": 8,
                                 "num_workers": 0, **cfg}, batch_size=1)
    colours, skipped = [], 0
    for batch in loader:
        image = batch["image"][0]
        assert batch["image"].shape == (1, 3, 8, 8) and batch["image"].dtype == torch.uint8
        image = image.float()
        assert float(image.std(dim=(1, 2)).max()) < 2  # a solid crop: one sample
        colours.append(tuple(round(float(v)) for v in image.mean(dim=(1, 2))))
        skipped += int(batch["skipped"])
    assert len(colours) == len(loader)
    return colours, skipped


def matches(got: tuple[int, ...], want: tuple[int, ...], tol: int = 2) -> bool:
    return max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tol


def test_bad_samples_are_skipped_and_counted(odd_shards) -> None:
    pattern, expected = odd_shards
    colours, skipped = stream_colours(pattern)
    assert skipped == 3  # truncated JPEG, text named .jpg, 40000×40000 header
    assert len(colours) == 9  # one batch per sample: bad ones replaced by the next usable
    for name, want in expected.items():
        assert any(matches(c, want) for c in colours), (name, want, colours)
    assert all(any(matches(c, w) for w in expected.values()) for c in colours), colours


def test_small_image_and_pixel_limit_policies(odd_shards) -> None:
    pattern, expected = odd_shards
    colours, skipped = stream_colours(pattern, small_images="skip")
    assert skipped == 4 and not any(matches(c, expected["tiny"]) for c in colours)
    colours, skipped = stream_colours(pattern, small_images="pad")
    assert skipped == 3 and any(matches(c, expected["tiny"]) for c in colours)
    # 12×10 = 120 pixels: a limit of 119 leaves only the 1×1 image usable.
    colours, skipped = stream_colours(pattern, max_image_pixels=119)
    assert skipped == 8 and set(colours) == {expected["tiny"]}


def test_pad_and_upscale_on_a_small_image() -> None:
    image = torch.arange(48, dtype=torch.uint8).reshape(3, 4, 4) * 5
    rng = np.random.default_rng(0)
    padded = train_crop(image, crop=6, transform="random_crop", small_images="pad", rng=rng)
    assert padded.shape == (3, 6, 6)
    assert torch.equal(padded[:, :4, :4], image)
    assert torch.equal(padded[:, 4:, :4], image[:, 3:4, :].expand(3, 2, 4))  # edge rows
    assert torch.equal(padded[:, :, 5], padded[:, :, 4])  # edge column
    up = train_crop(image, crop=8, transform="random_crop_flip", small_images="upscale", rng=rng)
    assert up.shape == (3, 8, 8) and int(up.min()) >= 0 and int(up.max()) <= int(image.max())
    center = train_crop(torch.zeros(3, 30, 60, dtype=torch.uint8), crop=10,
                        transform="center_crop_resize", small_images="skip", rng=rng)
    assert center.shape == (3, 10, 10)


# -- two ranks under torch.distributed (gloo) -------------------------------------------------

def _rank_main(rank: int, init: str, pattern: str, result: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    report = {}
    for mode, cfg in {"one_pass": {"resampled": False},
                      "resampled": {"resampled": True, "epoch_samples": 12}}.items():
        loader = build_train_loader({"train": pattern, "crop": 8, "num_workers": 2, **cfg},
                                    batch_size=2, rank=rank, world_size=2, seed=5)
        ids = [identify(b["image"]) for b in loader]
        gathered = [None, None]
        dist.all_gather_object(gathered, {"len": len(loader), "ids": ids})
        report[mode] = gathered
    if rank == 0:
        Path(result).write_text(json.dumps(report))
    dist.destroy_process_group()


def test_two_ranks_get_disjoint_samples_and_equal_batch_counts(tmp_path: Path) -> None:
    pattern = colour_shards(tmp_path, 13, maxcount=3)  # 5 shards (3+3+3+3+1): 5 % 2 != 0
    ctx = multiprocessing.get_context("fork")
    result = tmp_path / "result.json"
    procs = [ctx.Process(target=_rank_main, args=(r, f"file://{tmp_path / 'rdv'}", pattern,
                                                  str(result))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    report = json.loads(result.read_text())
    for mode, expected_len in (("one_pass", 13 // 4), ("resampled", 3)):
        ranks = report[mode]
        assert [r["len"] for r in ranks] == [expected_len, expected_len], mode
        assert [len(r["ids"]) for r in ranks] == [expected_len, expected_len], mode
        seen = [{i for batch in r["ids"] for i in batch} for r in ranks]
        assert not seen[0] & seen[1], (mode, seen)
    one_pass = [i for r in report["one_pass"] for batch in r["ids"] for i in batch]
    assert len(one_pass) == len(set(one_pass)) == 12  # 13 mod (2 ranks · 2) = 1 dropped


# -- determinism and mid-epoch resume --------------------------------------------------------

@pytest.fixture
def noise_shards(tmp_path: Path) -> str:
    src = tmp_path / "noise"
    for i in range(12):
        noise_png(src / f"{i:02d}.png", seed=i)
    (src / "05_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # exercises replacements
    items = folder_items(src)
    manifest = write_shards(items, str(tmp_path / "n-%02d.tar"), total=len(items), maxcount=4,
                            progress=False)
    return str(tmp_path / manifest["pattern"])


def batches_of(loader) -> list[tuple[torch.Tensor, int]]:
    return [(b["image"], int(b["skipped"])) for b in loader]


def same(a: list[tuple[torch.Tensor, int]], b: list[tuple[torch.Tensor, int]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and s == t for (x, s), (y, t) in zip(a, b, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("resampled", [True, False])
def test_restart_is_deterministic_and_skip_batches_resumes_exactly(
        noise_shards: str, workers: int, resampled: bool) -> None:
    cfg = {"train": noise_shards, "crop": 8, "num_workers": workers, "resampled": resampled,
           "shuffle_buffer": 6, **({"epoch_samples": 24} if resampled else {})}

    def loader():
        made = build_train_loader(cfg, batch_size=3, rank=0, world_size=1, seed=7)
        made.sampler.set_epoch(2)  # what Lightning calls, forwarded to the dataset
        assert made.dataset.epoch == 2
        return made

    full = batches_of(loader())
    assert len(full) == (8 if resampled else 4)
    assert sum(s for _, s in full) >= 1  # the corrupt sample was met and replaced
    assert same(batches_of(loader()), full)  # a restart yields the same order

    other = loader()
    other.dataset.set_epoch(3)
    assert not same(batches_of(other), full)

    resumed = loader()
    resumed.dataset.skip_batches(3)
    assert same(batches_of(resumed), full[3:])
    assert same(batches_of(resumed), full)  # the skip applied to one iteration only


def test_pipe_urls_and_config_errors(tmp_path: Path) -> None:
    pattern = colour_shards(tmp_path, 6, maxcount=2)
    piped = f"pipe:cat {pattern}"  # a real subprocess per shard, like `aws s3 cp ... -`
    with pytest.raises(RecipeError, match="dataset_size"):
        build_train_loader({"train": piped}, batch_size=2)
    with pytest.raises(RecipeError, match="manifest"):
        build_train_loader({"train": piped, "resampled": False, "dataset_size": 6}, batch_size=2)
    loader = build_train_loader({"train": piped, "dataset_size": 6, "epoch_fraction": 0.5,
                                 "crop": 8, "num_workers": 0}, batch_size=2)
    ids = [i for b in loader for i in identify(b["image"])]
    assert len(loader) == 2 and len(ids) == 4 and set(ids) <= set(range(6))
    with pytest.raises(UserError, match="shard not found"):
        build_train_loader({"train": pattern.replace("c-", "missing-")}, batch_size=2)
    with pytest.raises(RecipeError, match="do not fill one batch"):
        build_train_loader({"train": pattern, "resampled": False}, batch_size=4, world_size=2)
    with pytest.raises(RecipeError, match="transform"):
        build_train_loader({"train": pattern, "transform": "random_resized_crop"}, batch_size=2)


def test_lightning_sets_the_epoch_through_the_loader_sampler(tmp_path: Path) -> None:
    """Lightning 2 calls set_epoch on `loader.sampler` only; it must reach the dataset."""
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen: list[tuple[int, int]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, self.trainer.train_dataloader.dataset.epoch))
            return (self.w - batch["image"].float().mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = build_train_loader({"train": colour_shards(tmp_path, 4, maxcount=2), "crop": 8,
                                 "num_workers": 0}, batch_size=2)
    probe = Probe()
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(probe, loader)
    assert probe.seen == [(e, e) for e in range(3) for _ in range(2)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_at_an_iteration_continues_the_uninterrupted_order(noise_shards: str, workers: int) -> None:
    cfg = {"train": noise_shards, "crop": 8, "num_workers": workers, "shuffle_buffer": 6,
           "epoch_samples": 12}

    def loader():
        return build_train_loader(cfg, batch_size=3, rank=0, world_size=1, seed=7)

    straight, run = loader(), []
    for epoch in range(3):
        straight.sampler.set_epoch(epoch)
        run += batches_of(straight)
    assert len(run) == 12
    resumed = loader()
    resumed.resume_at(6)  # epoch 1, after its batch 1: set before the first iterator exists
    rng = torch.get_rng_state()
    rest = batches_of(resumed)
    assert torch.equal(torch.get_rng_state(), rng)  # loader start-up draws nothing globally
    resumed.sampler.set_epoch(2)
    assert same(rest + batches_of(resumed), run[6:])


def test_loader_state_warns_when_the_order_changed(noise_shards: str, caplog) -> None:
    cfg = {"train": noise_shards, "crop": 8, "num_workers": 0, "epoch_samples": 12}
    state = build_train_loader(cfg, batch_size=3, seed=7).state_dict()
    with caplog.at_level("WARNING", logger="gicl.data"):
        build_train_loader(cfg, batch_size=3, seed=7).load_state_dict(state)
        assert not caplog.records
        build_train_loader(cfg, batch_size=2, seed=7).load_state_dict(state)
    assert "batch_size 3 → 2" in caplog.text and "batches_per_epoch 4 → 6" in caplog.text
