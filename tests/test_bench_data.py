"""`gicl bench data` beside raw JPEG decoding, and `gicl bench report` rewriting a figure of a
benchmarks document: real CLI subprocesses on a few dozen small JPEGs (seconds)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli
from test_benchmarks_doc import FENCE

DATA = "python -m gicl bench data --count 48 --batch-size 8 --crop 64 --workers 0 1"
RAW = re.compile(r"^raw (decode_jpeg|PIL) +1 core: +(\d+) images/s \((\d+\.\d+) ms/image", re.M)
STREAM = re.compile(r"^workers (\d): +(\d+) images/s steady, (\d+) per (worker|process) = "
                    r"(\d+) % of raw decode_jpeg \((\d+)/s around this pass; \d+\.\d+ ms/image "
                    r"per \w+\); start-up (\d+) ms", re.M)


def test_bench_data_prints_raw_decoding_and_the_stream_as_a_share_of_it() -> None:
    done = run_cli(*DATA.split()[3:], timeout=120)
    assert done.returncode == 0, done.stderr
    raw = {name: int(rate) for name, rate, _ in RAW.findall(done.stdout)}
    assert set(raw) == {"decode_jpeg", "PIL"} and min(raw.values()) > 0, done.stdout
    assert "steady state after every worker's first batch" in done.stdout
    rows = STREAM.findall(done.stdout)
    assert [(w, unit) for w, _, _, unit, _, _, _ in rows] == [("0", "process"), ("1", "worker")]
    for _, _, per, _, percent, around, _ in rows:
        assert int(around) > 0 and abs(int(percent) - 100 * int(per) / int(around)) <= 1
    assert re.search(r"^machine: .+\(\d+ cores, 1 torch threads, load [0-9.]+\)", done.stdout, re.M)


def test_bench_report_rewrites_the_chosen_figures_and_skips_missing_checkouts(tmp_path: Path) -> None:
    glc = "python -m gicl bench codec --recipe glc --against official-glc:/path/to/GLC"
    train = "python -m gicl bench train --recipe progic --processes 1"
    old = "```\nold output 1.0 ms\nmachine: X (2 cores, 2 torch threads, load 9.9)\n```\n"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nProse stays.\n\n"
                   f"**Data stream** (`uptime` load before: 9.00)\n\n```\n{DATA}\n```\n\n{old}\n"
                   f"**GLC** (`uptime` load before: 9.00)\n\n```\n{glc}\n```\n\n{old}\n"
                   f"**Training** (`uptime` load before: 9.00)\n\n```\n{train}\n```\n\n{old}")
    done = run_cli("bench", "report", "--doc", str(doc), "--only", "bench data", timeout=120,
                   env={"GICL_GLC_CHECKOUT": ""})
    assert done.returncode == 0, done.stderr
    text = doc.read_text()
    blocks = FENCE.findall(text)
    assert blocks[0] == DATA + "\n" and blocks[2:] == [glc + "\n", old[4:-4], train + "\n", old[4:-4]]
    assert STREAM.search(blocks[1]) and "machine: " in blocks[1] and "load 9.9" not in blocks[1]
    assert text.startswith("# Benchmarks\n\nProse stays.\n\n**Data stream** (`uptime` load before: ")
    assert text.count("load before: 9.00") == 2  # the figures not chosen are untouched

    done = run_cli("bench", "report", "--doc", str(doc), "--only", "GLC", env={"GICL_GLC_CHECKOUT": ""})
    assert done.returncode == 0 and doc.read_text() == text
    assert "skipped: GLC: needs a checkout: set GICL_GLC_CHECKOUT" in done.stderr

    done = run_cli("bench", "report", "--doc", str(doc), "--only", "no such figure")
    assert done.returncode == 2 and "no figure" in done.stderr and "Traceback" not in done.stderr
