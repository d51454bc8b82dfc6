"""The import rules of the package: data flows one way, and the data check runs without torch.

``LAYERS`` is the documented order of fbhelpers' modules (docs/design.md shows the same table), lowest first. A
module may import the modules of lower layers and, within its own layer, those listed before it; never a module
listed after it. Every import counts, also one inside a function (it is a dependency all the same; it only defers
the cost). A package (``datasets``, ``synthetic``, ``losses``, ``models``, ``train``, ``bench``) is one entry: its own
modules import each other freely. The bare package ``fbhelpers`` (``__version__``) may be imported from anywhere:
its ``__init__`` imports no submodule until one is asked for.

The layers up to ``data`` import no torch, so that ``import fbhelpers``, the data check (``python -m fbhelpers
check-data``), the loaders and the twins stay light; that is checked in a fresh interpreter.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fbhelpers as fb

PACKAGE = Path(fb.__file__).resolve().parent
ROOT = PACKAGE.parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # standard library, numpy, Pillow: where things are, atomic files, the task specs, a source's table
    ("foundations", ("paths", "files", "display", "tasks", "source", "images", "claims")),
    # the relatedness tables, the study contract, what is measured on labels (numpy, pandas, scipy, sklearn)
    ("tables", ("relatedness", "study", "metrics", "zeroshot")),
    # the real databases, the twins and the data check: still no torch
    ("data", ("datasets", "synthetic", "manifest")),
    # torch: the batches, the losses, the network
    ("network", ("batching", "losses", "models")),
    # fit and what it writes
    ("training", ("callbacks", "checkpoints", "train")),
    # what is built on a trained network: recorded numbers, comparisons, predictions, figures, benchmarks
    ("results", ("recording", "experiments", "inference", "plots", "widgets", "bench")),
    # the notebooks' set-up and the papermill suite with its references and report
    ("notebooks", ("profiles", "studies", "references", "report", "runner")),
    # the command line
    ("entry points", ("__main__",)),
]
TORCH_FREE_LAYERS = ("foundations", "tables", "data")
ORDER = [name for _, names in LAYERS for name in names]
RANK = {name: i for i, name in enumerate(ORDER)}


def _unit(path: Path) -> str:
    """The entry of ``LAYERS`` a source file belongs to: a top-level module, or the package it is part of
    ("" for ``fbhelpers/__init__.py``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "" if parts == ("__init__",) else parts[0]


def _dotted(path: Path) -> str:
    parts = ("fbhelpers", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The fbhelpers units ``node`` imports ("" = the bare package)."""
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    else:
        if node.level:
            package = _dotted(path).split(".")
            if path.name != "__init__.py":
                package = package[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        modules = [f"{base}.{alias.name}" if base == "fbhelpers" else base for alias in node.names]
    units = []
    for module in modules:
        parts = module.split(".")
        if parts[0] == "fbhelpers":
            name = parts[1] if len(parts) > 1 else ""
            units.append(name if name in RANK or (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()
                         else "")
    return units


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, unit) of every fbhelpers import in ``path`` (or in ``text`` as if it were that file), at any depth."""
    tree = ast.parse(path.read_text() if text is None else text, filename=str(path))
    return [(node.lineno, unit) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for unit in _targets(node, path)]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layering_violations(edited: dict[Path, str] | None = None) -> list[str]:
    """Every import of a module that is not lower in ``LAYERS`` than the importing one, as "file:line: ...";
    ``edited``: source files read as the given text instead."""
    found = []
    for path in _sources():
        unit = _unit(path)
        for line, target in _imports(path, (edited or {}).get(path)):
            if target in ("", unit) or unit == "":
                continue
            if RANK[target] > RANK[unit]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {unit} imports {target}, a module above it")
    return found


def test_every_module_has_a_layer():
    units = {_unit(path) for path in _sources()} - {""}
    assert sorted(units - set(RANK)) == [], "place these modules in tests/test_layering.py LAYERS (and docs/design.md)"
    assert sorted(set(RANK) - units) == [], "LAYERS names modules that are not in the package"
    assert len(ORDER) == len(RANK)


def test_no_module_imports_one_above_it():
    assert layering_violations() == []


def test_the_package_imports_no_submodule_until_asked():
    """``fbhelpers/__init__`` holds no fbhelpers import (PEP 562 ``__getattr__`` imports on first use)."""
    assert _imports(PACKAGE / "__init__.py") == []


def test_a_broken_rule_is_reported():
    """The checker itself: an upward import written into a low module, even inside a function, is found with its
    file and line; so is one between two modules of a layer in the wrong order."""
    paths, study = PACKAGE / "paths.py", PACKAGE / "study.py"
    text = paths.read_text()
    late = text + "\n\ndef _late():\n    from . import train\n"
    line = len(text.splitlines()) + 4
    assert layering_violations({paths: late}) == [f"fbhelpers/paths.py:{line}: paths imports train, a module above it"]
    sideways = "from fbhelpers.metrics import ccc\n" + study.read_text()
    assert layering_violations({study: sideways}) == ["fbhelpers/study.py:1: study imports metrics, a module above it"]


def test_the_low_layers_import_no_torch_at_the_top():
    """No module of the torch-free layers imports torch outside a function (a lazy import where a tensor is
    asked for is fine; ``if TYPE_CHECKING:`` is for annotations only)."""
    torch_free = {name for layer, names in LAYERS if layer in TORCH_FREE_LAYERS for name in names}
    found = []
    for path in _sources():
        if _unit(path) not in torch_free:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "torch"]
    assert found == []


def _fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter from the repository root."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_package_data_check_and_low_layers_import_without_torch():
    torch_free = [name for layer, names in LAYERS if layer in TORCH_FREE_LAYERS for name in names]
    run = _fresh(f"""
        import sys
        import fbhelpers
        assert "torch" not in sys.modules, "import fbhelpers"
        for name in {torch_free + ["recording", "references", "report", "runner", "__main__"]!r}:
            __import__("fbhelpers." + name)
            assert "torch" not in sys.modules, "fbhelpers." + name
        print("ok")
    """)
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stderr[-2000:]


def test_check_data_command_runs_without_torch(tmp_path):
    """``python -m fbhelpers check-data`` on the fixture root (every loader reads its tables) imports no torch:
    the interpreter's own list of what it imported (``-X importtime``) has no torch module."""
    from fbhelpers import datasets

    root = datasets.make_fixture_root(tmp_path / "data")
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "fbhelpers", "check-data", "--data-root", str(root),
                          "--strict"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"^(\d+)/\1 datasets found$", run.stdout, re.M), run.stdout[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert "fbhelpers.datasets.cub" in imported and "pandas" in imported
    assert [name for name in imported if name.split(".")[0] == "torch"] == []


def test_submodules_are_reached_lazily_and_listed():
    assert set(fb.SUBMODULES) == set(ORDER) - {"__main__"}
    assert set(fb.SUBMODULES) <= set(dir(fb)) and "record" in dir(fb)
    from fbhelpers import record, recording

    assert record is recording.record is fb.record
    assert "study_for" in dir(fb) and fb.study_for is fb.studies.study_for
    assert fb.runner.record is record
    for name in fb.SUBMODULES:
        assert getattr(fb, name).__name__ == f"fbhelpers.{name}"
    with pytest.raises(AttributeError, match="'fbhelpers' has no attribute 'nothing'"):
        fb.nothing  # noqa: B018
