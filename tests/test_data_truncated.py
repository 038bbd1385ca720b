"""Damaged shards: a tar cut at a member boundary or inside a member is never a silent loss
(data.on_truncated_shard: skip → warning + count, stop → one line), and the shard writer
reports (and with --drop-undecodable leaves out) files the training reader cannot decode."""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import pytest
from data_helpers import colour_shards, identify, write_colour

from gicl.cli import main
from gicl.data import build_train_loader
from gicl.data.shards import ShardReader, TruncatedShard
from gicl.errors import UserError

SAMPLES = 8


@pytest.fixture
def shard(tmp_path: Path) -> tuple[Path, dict[str, tarfile.TarInfo]]:
    """One shard of 8 solid-colour samples (key i has colour i) and its members by name."""
    colour_shards(tmp_path, SAMPLES, maxcount=SAMPLES)
    path = tmp_path / "c-0000.tar"
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar}
    return path, members


def cut(path: Path, at: int) -> Path:
    out = path.with_name(f"cut-{at}.tar")
    out.write_bytes(path.read_bytes()[:at])
    return out


def cuts(shard) -> dict[str, tuple[Path, str]]:
    """name → (truncated copy, what the warning says); every cut is inside sample 4."""
    path, m = shard
    return {
        "member boundary": (cut(path, m["000000004.json"].offset), "cut at a member boundary"),
        "inside member data": (cut(path, m["000000004.json"].offset_data + 10), "unexpected end"),
        "inside a header": (cut(path, m["000000004.json"].offset + 100), "damaged or cut"),
    }


def test_an_intact_shard_is_read_whole_without_a_warning(shard, caplog) -> None:
    reader = ShardReader("stop")
    with caplog.at_level(logging.WARNING, logger="gicl.data"):
        keys = [s["__key__"] for s in reader.samples(str(shard[0]))]
    assert keys == [f"{i:09d}" for i in range(SAMPLES)]
    assert reader.truncated == 0 and not caplog.records


@pytest.mark.parametrize("kind", ["member boundary", "inside member data", "inside a header"])
def test_truncated_shard_skip_warns_and_counts(kind: str, shard, caplog) -> None:
    path, why = cuts(shard)[kind]
    reader = ShardReader("skip")
    with caplog.at_level(logging.WARNING, logger="gicl.data"):
        first = list(reader.samples(str(path)))
        again = list(reader.samples(str(path)))
    intact = [f"{i:09d}" for i in range(4)]
    assert [s["__key__"] for s in first] == intact == [s["__key__"] for s in again]
    assert all(set(s) >= {"png", "json"} for s in first)
    assert reader.truncated == 2  # every read counted ...
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # ... one warning per shard
    assert str(path) in warnings[0] and why in warnings[0] and "skipping the rest" in warnings[0]


@pytest.mark.parametrize("kind", ["member boundary", "inside member data", "inside a header"])
def test_truncated_shard_stop_is_one_line(kind: str, shard) -> None:
    path, why = cuts(shard)[kind]
    with pytest.raises(TruncatedShard) as error:
        list(ShardReader("stop").samples(str(path)))
    message = str(error.value)
    assert "\n" not in message and str(path) in message and why in message
    assert "on_truncated_shard: skip" in message


def loader(pattern: str, **cfg):
    return build_train_loader({"train": pattern, "crop": 8, "shuffle_buffer": 0,
                               "num_workers": 0, **cfg}, batch_size=2)


def test_the_stream_skips_the_rest_of_a_truncated_shard(shard, caplog) -> None:
    path, _ = cuts(shard)["member boundary"]
    path.replace(shard[0])  # the manifest still says 8 samples
    pattern = str(shard[0].with_name("c-{0000..0000}.tar"))
    for resampled in (True, False):  # one pass: the manifest count no longer stops training
        with caplog.at_level(logging.WARNING, logger="gicl.data"):
            batches = list(loader(pattern, resampled=resampled))
        assert len(batches) == SAMPLES // 2
        seen = {i for b in batches for i in identify(b["image"])}
        assert seen <= {0, 1, 2, 3} and seen, seen
        assert any("truncated" in r.getMessage() for r in caplog.records)
        caplog.clear()


def test_stop_reaches_the_command_line_as_one_line_from_a_worker(shard) -> None:
    path, _ = cuts(shard)["inside member data"]
    path.replace(shard[0])
    pattern = str(shard[0].with_name("c-{0000..0000}.tar"))
    with pytest.raises(UserError) as error:
        list(loader(pattern, on_truncated_shard="stop", num_workers=1))
    assert "\n" not in str(error.value) and "is truncated" in str(error.value), str(error.value)


def test_on_truncated_shard_is_checked() -> None:
    with pytest.raises(UserError, match="on_truncated_shard must be one of skip, stop"):
        loader("x.tar", on_truncated_shard="ignore")


def test_shard_writer_reports_and_drops_undecodable_files(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    for i in range(3):
        write_colour(src / f"good{i}.png", i)
    (src / "text.png").write_text("not an image")
    good = (src / "good0.png").read_bytes()
    (src / "cut.png").write_bytes(good[: len(good) // 2])
    assert main(["data", "shards", str(src), str(tmp_path / "all" / "s-%02d.tar")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "gicl:" in line]
    assert len(warnings) == 1 and "gicl: warning: 2 file(s) cannot be decoded" in warnings[0]
    assert "no image format PIL knows" in warnings[0] or "corrupt PNG" in warnings[0]
    manifest = json.loads((tmp_path / "all" / "s-manifest.json").read_text())
    assert manifest["samples"] == 5
    assert sorted(b["path"] for b in manifest["undecodable"]) == ["cut.png", "text.png"]
    assert main(["data", "shards", str(src), str(tmp_path / "ok" / "s-%02d.tar"),
                 "--drop-undecodable"]) == 0
    assert "left out" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "ok" / "s-manifest.json").read_text())
    assert manifest["samples"] == 3 and manifest["undecodable_dropped"] is True
    with tarfile.open(tmp_path / "ok" / "s-00.tar") as tar:
        stored = sorted(json.loads(tar.extractfile(m).read())["path"]
                        for m in tar if m.name.endswith(".json"))
    assert stored == ["good0.png", "good1.png", "good2.png"]
