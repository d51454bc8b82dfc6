"""The README's Python examples run as printed (the public API they show exists and works), with the training
budgets cut to a few steps so the check costs seconds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_the_public_api_examples():
    blocks = _blocks()
    assert len(blocks) == 3
    assert "distribution_matching" in blocks[0] and "fit_variant" in blocks[1] and "datasets.load" in blocks[2]


def test_readme_examples_run():
    first, second, _ = _blocks()
    ns: dict = {}
    exec(first, ns)
    assert ns["R"].table.loc["happiness", "AU6"] == pytest.approx(0.51)
    assert float(ns["loss"]) > 0
    short = re.sub(r"steps=\d+", "steps=2", second).replace('"mt_dm", seed=0)', '"mt_dm", seed=0, steps=2, device="cpu")')
    assert short != second
    exec(short, ns)
    assert list(ns["scores"].columns) == ["source", "task", "metric", "value"]
    assert {"mean_f1_unlabelled", "mean_auc_unlabelled"} <= set(ns["run"].scores["metric"])


def test_readme_real_data_example_runs_on_the_fixture_root(tmp_path, monkeypatch):
    """The real-data example, with its data root ``/data`` swapped for the format-faithful fixture root."""
    import fbhelpers as fb

    monkeypatch.setenv("FBHELPERS_CACHE", str(tmp_path / "cache"))
    root = fb.datasets.make_fixture_root(tmp_path / "data", names=fb.datasets.FACE_SOURCES)
    ns: dict = {}
    exec(_blocks()[2].replace('"/data', f'"{root}').replace("112", "16"), ns)
    assert ns["table"].attrs["skipped"]["contempt (code 7, classes=7)"] > 0
    assert list(ns["study"].sources) == list(fb.datasets.FACE_SOURCES)
    assert ns["src"].images.shape[1:] == (16, 16, 3) and len(ns["src"]) == len(ns["table"])
