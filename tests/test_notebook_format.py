"""Committed notebooks are clean, parameterisable and self-describing (docs/design.md#notebooks,
docs/design.md#conventions).

Each notebooks/*.ipynb: valid nbformat v4; no outputs, no execution counts; exactly one code cell tagged
``parameters`` assigning literals to PROFILE, SEED, DEVICE, DATA_ROOT and OUTPUT_DIR (papermill does not
recompute values derived there); kernelspec ``python3``; a first markdown cell starting with a '# ' header that
cites a paper by arXiv id.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED_PARAMETERS = ("PROFILE", "SEED", "DEVICE", "DATA_ROOT", "OUTPUT_DIR")
ARXIV = re.compile(r"arxiv(?:\.org/abs/|:|\s)\s*\d{4}\.\d{4,5}", re.IGNORECASE)


def format_problems(path: Path) -> list[str]:
    """Every way the notebook at ``path`` breaks the conventions (empty when it is fine)."""
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if nb.nbformat != 4:
            return [f"nbformat {nb.nbformat}, expected 4"]
        nbformat.validate(nb)
    except (nbformat.ValidationError, ValueError) as err:  # NotJSONError is a ValueError
        return [f"invalid nbformat v4: {getattr(err, 'message', err)}"]
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.outputs:
            problems.append(f"cell {i} has outputs (strip them before committing)")
        if cell.cell_type == "code" and cell.execution_count is not None:
            problems.append(f"cell {i} has execution count {cell.execution_count}")
        if "injected-parameters" in cell.metadata.get("tags", []):
            problems.append(f"cell {i} is a papermill injected-parameters cell (commit the source notebook)")
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells tagged 'parameters' ({tagged}), expected exactly 1")
    else:
        cell = nb.cells[tagged[0]]
        if cell.cell_type != "code":
            problems.append(f"parameters cell {tagged[0]} is {cell.cell_type}, expected code")
        else:
            assigned = set()
            for node in ast.parse(cell.source).body:
                if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                    problems.append(f"parameters cell line {node.lineno}: only assignments belong there")
                    continue
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assigned |= {t.id for t in targets if isinstance(t, ast.Name)}
                try:
                    ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    problems.append(f"parameters cell line {node.lineno}: not a literal (derive it in a later cell)")
            missing = [p for p in REQUIRED_PARAMETERS if p not in assigned]
            if missing:
                problems.append(f"parameters cell does not assign {missing}")
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec name {kernel!r}, expected 'python3'")
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        problems.append("first cell must be markdown starting with a '# ' header")
    elif not ARXIV.search(first.source):
        problems.append("the header cell cites no paper by arXiv id (e.g. 'arXiv 2105.03790')")
    return problems


def _params():
    if not NOTEBOOKS:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))]
    return [pytest.param(p, id=p.name) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", _params())
def test_committed_notebook_format(path):
    problems = format_problems(path)
    assert problems == [], f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def _notebook(tmp_path, cells, kernel="python3"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_checker_accepts_a_clean_notebook(tmp_path):
    v4 = nbformat.v4
    params = v4.new_code_cell('PROFILE = "demo"  # or smoke, paper\nSEED = 0\nDEVICE = "auto"\nDATA_ROOT = None\n'
                              "OUTPUT_DIR = None\nOVERRIDES: dict = {}")
    params.metadata["tags"] = ["parameters"]
    header = v4.new_markdown_cell("# Affect case study\n\nP1 (arXiv 2105.03790), §4.")
    assert format_problems(_notebook(tmp_path, [header, params, v4.new_code_cell("x = 1")])) == []


def test_checker_finds_each_problem(tmp_path):
    v4 = nbformat.v4
    params = v4.new_code_cell("PROFILE = 'demo'\nSEED = 0\nSTEPS = SEED * 2")
    params.metadata["tags"] = ["parameters"]
    ran = v4.new_code_cell("1", execution_count=3, outputs=[v4.new_output("execute_result", {"text/plain": "1"},
                                                                          execution_count=3)])
    header = v4.new_markdown_cell("# Title without a citation")
    problems = format_problems(_notebook(tmp_path, [header, params, ran], kernel="myenv"))
    assert problems == [
        "cell 2 has outputs (strip them before committing)",
        "cell 2 has execution count 3",
        "parameters cell line 3: not a literal (derive it in a later cell)",
        "parameters cell does not assign ['DEVICE', 'DATA_ROOT', 'OUTPUT_DIR']",
        "kernelspec name 'myenv', expected 'python3'",
        "the header cell cites no paper by arXiv id (e.g. 'arXiv 2105.03790')",
    ]
    assert format_problems(_notebook(tmp_path, [v4.new_code_cell("x = 1")])) == [
        "0 cells tagged 'parameters' ([]), expected exactly 1",
        "first cell must be markdown starting with a '# ' header",
    ]


def test_checker_rejects_invalid_nbformat(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code"}]}')
    problems = format_problems(path)
    assert len(problems) == 1 and problems[0].startswith("invalid nbformat v4")


@pytest.mark.parametrize("path", _params())
def test_papermill_reads_every_parameter(path):
    """``papermill --help-notebook`` / ``inspect_notebook`` parses each parameter line (a quote inside a comment
    makes papermill skip the line with 'Unable to parse line' and then warn 'Passed unknown parameter')."""
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body for t in getattr(node, "targets", [])]
    assert sorted(pm.inspect_notebook(str(path))) == sorted(assigned)


DATASETS_LINE = re.compile(r"\*\*Datasets \(paper profile\)\.\*\* Required: ([^.]*)\."
                           r"(?: Used when present: ([^.]*)\.)?")


@pytest.mark.parametrize("path", _params())
def test_header_names_the_paper_datasets(path):
    """The header's "Datasets (paper profile)" line names exactly the databases ``profiles.DATASETS`` gives the
    notebook (what ``check-data`` reports and ``manifest.require_notebook`` checks)."""
    from fbhelpers import profiles

    header = nbformat.read(path, as_version=4).cells[0].source
    found = DATASETS_LINE.search(header)
    assert found, f"{path.name}: no '**Datasets (paper profile).** Required: ...' line in the header"
    names = [[n.strip() for n in part.split(",") if n.strip()] if part else [] for part in found.groups()]
    need = profiles.DATASETS[path.stem]
    assert names == [need["required"], need["optional"]]


def explorers(nb) -> list[str]:
    """The functions (``fb.widgets.*`` explorers) that the notebook's code cells call with
    ``interactive=INTERACTIVE``, in order."""
    names = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(k.arg == "interactive" and isinstance(k.value, ast.Name)
                                                  and k.value.id == "INTERACTIVE" for k in node.keywords):
                func = node.func
                names.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "?"))
    return names


def _says_what_interactive_does(text: str, where: str, names: list[str]) -> list[str]:
    """``text`` names each explorer and says that False / headless runs show static output instead."""
    problems = [f"{where} does not name the explorer {name!r}" for name in names if name not in text]
    if "static" not in text.lower():
        problems.append(f"{where} does not say that a static figure or table is shown otherwise")
    if "False" not in text or "headless" not in text.lower():
        problems.append(f"{where} does not say what INTERACTIVE = False and headless runs show")
    return problems


def interactive_problems(path: Path) -> list[str]:
    """Every way the notebook at ``path`` leaves ``INTERACTIVE`` undescribed: it must pass it to an explorer
    (``interactive=INTERACTIVE``), and both the comment on the parameters cell's INTERACTIVE line and a paragraph of
    the header that mentions `INTERACTIVE` must name that explorer and say that with False or headless a static
    figure / table is shown instead."""
    nb = nbformat.read(path, as_version=4)
    names = list(dict.fromkeys(explorers(nb)))
    problems = [] if names else ["no code cell passes interactive=INTERACTIVE to an explorer"]
    params = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    line = next((ln for ln in (params.source.splitlines() if params else []) if ln.startswith("INTERACTIVE")), None)
    if line is None:
        problems.append("the parameters cell does not assign INTERACTIVE")
    elif "#" not in line:
        problems.append("the parameters cell's INTERACTIVE line has no comment")
    else:
        problems += _says_what_interactive_does(line.split("#", 1)[1], "the INTERACTIVE comment", names)
    header = nb.cells[0].source if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    paragraphs = [p for p in header.split("\n\n") if "`INTERACTIVE" in p]
    if not paragraphs:
        problems.append("no header paragraph mentions `INTERACTIVE`")
    else:
        problems += _says_what_interactive_does("\n".join(paragraphs), "the header", names)
    return problems


@pytest.mark.parametrize("path", _params())
def test_notebook_describes_interactive(path):
    problems = interactive_problems(path)
    assert problems == [], f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


def test_interactive_checker(tmp_path):
    v4 = nbformat.v4
    call = v4.new_code_cell("fb.widgets.dm_explorer(TABLES, interactive=INTERACTIVE)")
    params = v4.new_code_cell("PROFILE = 'demo'\nINTERACTIVE = False  # explorers")
    params.metadata["tags"] = ["parameters"]
    header = v4.new_markdown_cell("# T\n\nSet `INTERACTIVE = True` for a browser.")
    assert interactive_problems(_notebook(tmp_path, [header, params, call])) == [
        "the INTERACTIVE comment does not name the explorer 'dm_explorer'",
        "the INTERACTIVE comment does not say that a static figure or table is shown otherwise",
        "the INTERACTIVE comment does not say what INTERACTIVE = False and headless runs show",
        "the header does not name the explorer 'dm_explorer'",
        "the header does not say that a static figure or table is shown otherwise",
        "the header does not say what INTERACTIVE = False and headless runs show",
    ]
    params.source = "PROFILE = 'demo'\nINTERACTIVE = False  # True: dm_explorer; False or headless: static figure"
    header.source = ("# T\n\n**Explorer.** `INTERACTIVE = True`: `fb.widgets.dm_explorer`, sliders. With `False` "
                     "(headless runs too) a static figure.")
    assert interactive_problems(_notebook(tmp_path, [header, params, call])) == []
    assert interactive_problems(_notebook(tmp_path, [header, params])) == [
        "no code cell passes interactive=INTERACTIVE to an explorer"]
