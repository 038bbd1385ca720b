"""Shard writing (`gicl data shards`) and streaming a set back, one pass at a time."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli
from data_helpers import colour, identify, write_colour
from PIL import Image

from gicl.cli import main
from gicl.data import build_train_loader
from gicl.data.shards import check_pattern, select, source_items, tar_items, write_shards
from gicl.errors import UserError


def read_tars(pattern_dir: Path, names: list[str]) -> dict[str, dict]:
    """Samples of the shards read with the stdlib tarfile (independent of gicl's reader)."""
    samples: dict[str, dict] = {}
    for name in names:
        with tarfile.open(pattern_dir / name) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def assert_same_bytes(samples: dict[str, dict], root: Path, expected: set[str]) -> None:
    paths = set()
    for sample in samples.values():
        meta = json.loads(sample["json"])
        image = next(v for k, v in sample.items() if k != "json")
        assert image == (root / meta["path"]).read_bytes(), meta["path"]
        parent = Path(meta["path"]).parent.as_posix()
        assert meta["class"] == (None if parent == "." else parent)
        paths.add(meta["path"])
    assert paths == expected


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """ImageNet-like tree: train/<wnid>/*.JPEG and *.png, 12 images, plus a non-image file."""
    root = tmp_path / "train"
    for i in range(12):
        wnid = f"n0000000{i % 3}"
        if i % 4 == 0:
            path = root / wnid / f"{wnid}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), colour(i)).save(path, "JPEG", quality=100)
        else:
            write_colour(root / wnid / f"{wnid}_{i}.png", i)
    (root / "n00000000" / "readme.txt").write_text("not an image")
    return root


def test_folder_tree_to_shards_and_back(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    proc = run_cli("data", "shards", str(tree), str(out / "imnet-%06d.tar"), "--maxcount", "5")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "imnet-manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 2]
    assert manifest["samples"] == 12 and manifest["pattern"] == "imnet-{000000..000002}.tar"
    assert manifest["bytes"] == sum((out / s["name"]).stat().st_size for s in manifest["shards"])
    assert f"data.train='{out / manifest['pattern']}'" in proc.stdout
    names = [s["name"] for s in manifest["shards"]]
    samples = read_tars(out, names)
    assert {ext for s in samples.values() for ext in s} == {"jpg", "png", "json"}
    assert_same_bytes(samples, tree, {p.relative_to(tree).as_posix()
                                      for p in tree.rglob("*") if p.suffix != ".txt"
                                      and p.is_file()})

    # Streamed back, one pass per epoch: every image exactly once, in a new order each epoch.
    pattern = str(out / manifest["pattern"])
    for workers in (0, 2):
        loader = build_train_loader({"train": pattern, "resampled": False, "crop": 8,
                                     "num_workers": workers}, batch_size=3)
        assert len(loader) == 4
        orders = []
        for epoch in (0, 1):
            loader.dataset.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == 4
            assert all(int(b["skipped"]) == 0 for b in batches)
            orders.append([i for b in batches for i in identify(b["image"])])
            assert sorted(orders[-1]) == list(range(12))
        assert orders[0] != orders[1]


def test_file_list_and_subset(tree: Path, tmp_path: Path) -> None:
    chosen = ["n00000001/n00000001_1.png", "n00000002/n00000002_2.png",
              "n00000001/n00000001_4.JPEG", "n00000002/n00000002_5.png"]
    lines = ["# OpenImages-style list", *chosen, "", "n00000001/n00000001_7"]  # no suffix
    (tree / "n00000001" / "n00000001_7.png").rename(tree / "n00000001" / "n00000001_7.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    items = source_items(str(tree), str(listing))
    manifest = write_shards(select(items, None, 0), str(tmp_path / "oi-%03d.tar"),
                            total=len(items), progress=False)
    assert manifest["pattern"] == "oi-{000..000}.tar" and manifest["samples"] == 5
    assert_same_bytes(read_tars(tmp_path, ["oi-000.tar"]), tree,
                      {*chosen, "n00000001/n00000001_7.jpg"})

    items = source_items(str(tree))
    subset = select(items, 5, seed=1)
    assert len({it.relpath for it in subset}) == 5
    assert [it.relpath for it in select(items, 5, seed=1)] == [it.relpath for it in subset]
    assert [it.relpath for it in select(items, 5, seed=2)] != [it.relpath for it in subset]


def test_imagenet_tar_of_tars(tmp_path: Path) -> None:
    """ILSVRC2012_img_train.tar holds one tar per class; members are read by byte offset."""
    inner_dir = tmp_path / "inner"
    inner_dir.mkdir()
    expected = {}
    for c in range(2):
        wnid = f"n0{c}"
        with tarfile.open(inner_dir / f"{wnid}.tar", "w") as inner:
            for j in range(3):
                buf = io.BytesIO()
                Image.new("RGB", (9, 7), colour(3 * c + j)).save(buf, "JPEG")
                info = tarfile.TarInfo(f"{wnid}_{j}.JPEG")
                info.size = len(buf.getvalue())
                inner.addfile(info, io.BytesIO(buf.getvalue()))
                expected[f"{wnid}/{wnid}_{j}.JPEG"] = buf.getvalue()
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as tar:
        for c in range(2):
            tar.add(inner_dir / f"n0{c}.tar", arcname=f"n0{c}.tar")
    items = tar_items([outer])
    manifest = write_shards(select(items, None, 0), str(tmp_path / "s-%02d.tar"), total=6,
                            progress=False)
    samples = read_tars(tmp_path, [s["name"] for s in manifest["shards"]])
    got = {json.loads(s["json"])["path"]: (s["jpg"], json.loads(s["json"])["class"])
           for s in samples.values()}
    assert got == {path: (data, path.split("/")[0]) for path, data in expected.items()}


def test_bad_src_on_the_command_line_is_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["data", "shards", str(tmp_path / "nope"), str(out / "x-%06d.tar")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gicl: error: SRC ") and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "pattern", "list", "sample", "tar"])
def test_bad_input_is_a_user_error(case: str, tree: Path, tmp_path: Path) -> None:
    src, pattern, listing, sample = str(tree), str(tmp_path / "out" / "x-%06d.tar"), None, None
    if case == "empty":
        (tmp_path / "empty").mkdir()
        src = str(tmp_path / "empty")
    elif case == "pattern":
        pattern = str(tmp_path / "out" / "x.tar")
    elif case == "list":
        (tmp_path / "l.txt").write_text("n00000001/n00000001_1.png\nno/such.png\n")
        listing = str(tmp_path / "l.txt")
    elif case == "sample":
        sample = 13
    else:
        src = str(tmp_path / "a.tar.gz.tar")
        Path(src).write_bytes(b"\x1f\x8b" + bytes(1000))  # gzip data, not a plain tar
    with pytest.raises(UserError):
        check_pattern(pattern)
        items = select(source_items(src, listing), sample, 0)
        write_shards(items, pattern, total=len(items), progress=False)
    assert not (tmp_path / "out").exists()


def test_failure_midway_removes_written_shards(tree: Path, tmp_path: Path) -> None:
    items = source_items(str(tree))
    items[7].file.unlink()  # vanishes between listing and writing
    with pytest.raises(Exception, match="cannot read"):
        write_shards(items, str(tmp_path / "o" / "y-%02d.tar"), total=len(items), maxcount=2,
                     progress=False)
    assert list((tmp_path / "o").iterdir()) == []


def test_counts_in_manifest_match_a_reread(tree: Path, tmp_path: Path) -> None:
    manifest = write_shards(source_items(str(tree)), str(tmp_path / "z-%02d.tar"), total=12,
                            maxcount=100, maxsize=300, progress=False)
    counts = Counter()
    for shard in manifest["shards"]:
        counts[shard["name"]] = len(read_tars(tmp_path, [shard["name"]]))
    assert counts == {s["name"]: s["samples"] for s in manifest["shards"]}
    assert len(manifest["shards"]) > 1  # --maxsize split the 12 images
