"""Notebook regression tests (docs/testing.md#smoke-references): run the whole suite once in the ``smoke``
profile, then per notebook: it executed without error, and its recorded numbers match
``tests/references/smoke.json`` within each metric's tolerances (``{"value", "rel", "abs"}``, defaults rel 0.1 /
abs 0.05).

After an intended change of results: ``python -m fbhelpers refresh-references`` (prints old -> new per metric).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fbhelpers import runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob(runner.NOTEBOOK_GLOB))
REFERENCES = ROOT / "tests" / "references" / "smoke.json"
REFRESH = "run `python -m fbhelpers refresh-references` (then review the printed diff)"


def _params():
    if not NOTEBOOKS:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))]
    return [pytest.param(p.stem, id=p.stem) for p in NOTEBOOKS]


def _numeric(value) -> bool:
    """A number or a flat list of numbers (what pytest.approx compares)."""
    if isinstance(value, list):
        return bool(value) and all(_numeric(v) and not isinstance(v, list) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.fixture(scope="module")
def smoke(smoke_suite):
    return {nb.name: nb for nb in smoke_suite.notebooks}


@pytest.fixture(scope="module")
def references():
    if not REFERENCES.exists():
        pytest.fail(f"{REFERENCES.relative_to(ROOT)} does not exist: {REFRESH}")
    return runner.load_references(REFERENCES)


@pytest.mark.parametrize("name", _params())
def test_notebook_executes(smoke, name):
    nb = smoke[name]
    assert nb.error is None, f"{name} failed {nb.error}; executed copy: {nb.executed}"


@pytest.mark.parametrize("name", _params())
def test_notebook_metrics_match_references(smoke, references, name):
    recorded = runner.flatten_metrics(smoke[name].metrics)
    refs = references.get(name, {})
    problems = [f"{m}: in {REFERENCES.name} but not recorded" for m in sorted(refs.keys() - recorded.keys())]
    problems += [f"{m}: recorded ({recorded[m]!r}) but missing from {REFERENCES.name}; {REFRESH}"
                 for m in sorted(recorded.keys() - refs.keys())]
    for metric in sorted(refs.keys() & recorded.keys()):
        expected, rel, abs_ = runner.reference_entry(refs[metric])
        value = recorded[metric]
        if _numeric(expected) and _numeric(value):
            ok = value == pytest.approx(expected, rel=rel, abs=abs_)
        else:  # strings, null (NaN), nested lists: pytest.approx does not take them
            ok = runner.values_match(value, expected, rel, abs_)
        if not ok:
            problems.append(f"{metric}: recorded {value!r}, reference {expected!r} (rel={rel}, abs={abs_}); "
                            f"if intended, {REFRESH}")
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/ yet")
def test_references_name_existing_notebooks(references):
    stale = sorted(set(references) - {p.stem for p in NOTEBOOKS})
    assert not stale, f"{REFERENCES.name} has entries for notebooks that do not exist: {stale}; {REFRESH}"


TRAINING = ("00_quickstart", "02_affect_case_study", "03_identity_attributes", "04_beyond_faces", "05_zero_few_shot")


@pytest.mark.parametrize("name", TRAINING)
def test_training_notebooks_leave_a_model_that_rebuilds_itself(smoke, name):
    """``python -m fbhelpers run`` leaves a usable model: model.pt loads without the notebook and carries where it
    came from, its input size, its couplings and (05) the compound table of zero-shot prediction."""
    from fbhelpers import models

    config = runner.load_metrics(smoke[name].output_dir / "config.json")
    model = models.load(smoke[name].output_dir / runner.MODEL_FILE)
    assert model.metadata["notebook"] == name and model.metadata["profile"] == "smoke"
    assert model.metadata["variant"] == "mt_dm" and model.input_size == (config["image_size"],) * 2
    assert [(c.class_task, c.attr_task) for c in model.couplings] == [(model.tasks[0].name, model.tasks[1].name)]
    assert ("compound" in model.tables) == (name == "05_zero_few_shot")
