"""`gicl demo` codes a sample photo held out of training and prints what it wrote."""

import json
import re
import tarfile

from conftest import run_cli

from gicl.data.sample import held_out_split, sample_photo_paths
from gicl.data.shards import expand_urls


def test_held_out_photo_is_in_no_training_shard():
    pattern, photo = held_out_split()
    photos = sample_photo_paths()
    assert photo == photos[-1]
    shards = expand_urls(pattern)
    assert len(shards) == len(photos) - 1
    sources = set()  # each sample's .json names the photo it was made from
    for shard in shards:
        with tarfile.open(shard) as tar:
            sources |= {json.loads(tar.extractfile(m).read())["path"]
                        for m in tar.getmembers() if m.name.endswith(".json")}
    assert sources == {p.name for p in photos[:-1]}


def test_demo_table_matches_its_files_and_names_outputs(tmp_path):
    proc = run_cli("demo", "--recipe", "progic", "--profile", "smoke", "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo"
    assert [p.name for p in (out / "held_out").iterdir()] == [sample_photo_paths()[-1].name]
    rows = re.findall(r"^(\{.*?\})\s+([0-9.]+)\s+([0-9.]+)", proc.stdout, re.M)
    assert len(rows) == 5, proc.stdout
    h = w = 64  # the smoke profile's val_crop
    for i, (_, bpp, psnr) in enumerate(rows):
        size = (out / f"point{i}.gic").stat().st_size
        assert float(bpp) == round(size * 8 / (h * w), 4)
        assert (out / f"point{i}.png").is_file() and float(psnr) > 0
    assert f"tensorboard --logdir {tmp_path}" in proc.stdout
    assert str(out) in proc.stdout and str(tmp_path / "train" / "final.pt") in proc.stdout
