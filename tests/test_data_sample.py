"""The embedded sample shards: built once, safely under concurrent callers, logged once."""

from __future__ import annotations

import json
import logging
import multiprocessing
import tarfile
from pathlib import Path

import pytest

from gicl.data import build_train_loader, sample_shards
from gicl.data.sample import sample_photo_paths


def _build(cache: str, out: str) -> None:
    Path(out).write_text(sample_shards(cache))


def test_concurrent_builders_share_one_valid_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "sample"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build, args=(str(cache), str(tmp_path / f"r{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    patterns = {(tmp_path / f"r{i}").read_text() for i in range(2)}
    assert patterns == {str(cache / "sample-{000000..000008}.tar")}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["sample"]  # no temp left over

    manifest = json.loads((cache / "sample-manifest.json").read_text())
    photos = {p.name: p.read_bytes() for p in sample_photo_paths()}
    assert manifest["samples"] == len(photos) == 9
    stored = {}
    for shard in manifest["shards"]:
        assert shard["samples"] == 1
        with tarfile.open(cache / shard["name"]) as tar:
            members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
        path = json.loads(members.pop("json"))["path"]
        stored[path] = next(iter(members.values()))
    assert stored == photos  # original encoded bytes


def test_default_cache_and_one_log_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GICL_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="gicl.data"):
        loader = build_train_loader({"num_workers": 0, "crop": 64}, batch_size=4)
    assert (tmp_path / "sample" / "sample-manifest.json").is_file()
    lines = [r.getMessage() for r in caplog.records if r.name == "gicl.data"]
    assert len(lines) == 1 and "embedded sample data" in lines[0]
    assert len(loader) == 3  # ceil(9 photos / 4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 64, 64) and int(batch["skipped"]) == 0
