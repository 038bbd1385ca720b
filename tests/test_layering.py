"""The layers stay apart: checked on the import graph (read with `ast`, nothing imported)
and on what a real CLI process imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# package folder → the dotted name it is imported as (pyproject's package-dir)
PACKAGES = {"gicl": "gicl", "data": "gicl.data", "callbacks": "gicl.callbacks"}

LOW_LEVEL = ["gicl/codecs", "gicl/nn", "gicl/entropy", "data"]
FORBIDDEN_BELOW = ("gicl.evaluation", "gicl.training", "gicl.commands", "lightning",
                   "pytorch_lightning")
def module_name(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = REPO) -> set[str]:
    """Every module `path` imports, relative imports resolved, at any depth of the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.add(module)
            out |= {f"{module}.{alias.name}" for alias in node.names}
    return out


def offending(folders: list[str], forbidden: tuple[str, ...], root: Path = REPO) -> list[tuple[str, str]]:
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for module in imports(path, root):
                if module.startswith(forbidden):
                    found.append((str(path.relative_to(root)), module))
    return sorted(set(found))


def test_codecs_nn_entropy_data_import_no_training_evaluation_cli_or_lightning():
    assert offending(LOW_LEVEL, FORBIDDEN_BELOW) == []


def test_benchmarks_sit_below_the_commands():
    assert offending(["gicl/benchmarks"], ("gicl.commands", "gicl.cli")) == []


def test_the_import_reader_sees_a_violation(tmp_path):
    """The check can fail: relative and absolute imports of a codec module are resolved."""
    probe = tmp_path / "gicl" / "codecs" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..training import gan\nimport lightning as L\n\n"
                     "def f():\n    from gicl.commands import fit\n")
    found = {m for _, m in offending(["gicl/codecs"], FORBIDDEN_BELOW, root=tmp_path)}
    assert {"gicl.training", "lightning", "gicl.commands"} <= found


@pytest.mark.parametrize("args,code", [
    (["fit", "--recipe", "progic", "--set", "stages.train.no_such=1"], 2),
    (["fit", "--recipe", "progic", "--profile", "smoke", "--print-config"], 0),
    (["fit", "--recipe", "controlgic", "--set", "stages.train.callbacks.frequency_table.strat=1"], 2),
    (["fit", "--recipe", "nope"], 2),
    (["recipes"], 0),
])
def test_recipe_resolution_and_cli_errors_import_neither_torch_nor_lightning(args, code):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gicl", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "gicl.recipes" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "lightning")}
    if code == 2:
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
        assert len(errors) == 1 and errors[0].startswith("gicl: error:")
        assert args[-1].split("=")[0].removeprefix("--") in errors[0] or "nope" in errors[0]
