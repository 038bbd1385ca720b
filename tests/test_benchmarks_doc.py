"""docs/benchmarks.md: every figure carries the command that made it and the machine line."""

import re

from conftest import REPO

FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)


def test_every_figure_block_follows_its_command_and_names_the_machine():
    blocks = FENCE.findall((REPO / "docs" / "benchmarks.md").read_text())
    outputs = [i for i, b in enumerate(blocks) if re.search(r"\d+(\.\d+)? ms", b)]
    assert outputs, "docs/benchmarks.md holds no figures"
    for i in outputs:
        assert i > 0 and blocks[i - 1].startswith("python -m gicl bench "), (
            f"figure block {i} is not preceded by the `python -m gicl bench` command that made it")
        assert re.search(r"^\s*machine: .+\(\d+ cores, \d+ torch threads, load [0-9.]+\)", blocks[i], re.M), (
            f"figure block {i} has no machine line")
