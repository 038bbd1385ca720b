"""The project stands alone: no tracked file needs material that lives outside the repository
(a sibling workshop folder, its notes, its copy of the Kodak images)."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO

OUTSIDE = re.compile(r"\.\./shared|shared/(data|reference|papers)|\b(SPEC|DESIGN|BASELINES)(\.md\b|\s*§)")


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    found = []
    for name in files:
        path = REPO / name
        if name == "tests/test_self_contained.py" or path.suffix in {".png", ".pt", ".tar", ".gic"}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        found += [f"{name}:{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
                  if OUTSIDE.search(line)]
    assert not found, "\n".join(found)
