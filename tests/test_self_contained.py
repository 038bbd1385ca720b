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


def test_every_package_folder_is_in_the_distribution():
    """A wheel (non-editable install) holds only the packages pyproject lists: a sub-package
    missing there works in the editable checkout and fails for users."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(REPO / folder).parts
            assert ".".join((package, *parts)) in listed, f"{init.parent} is not in pyproject's packages"
