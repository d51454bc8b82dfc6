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
    assert len(blocks) == 4
    assert "distribution_matching" in blocks[0] and "fit_variant" in blocks[1] and "datasets.load" in blocks[3]
    assert "models.save" in blocks[2] and "predict_table" in blocks[2]


def test_readme_examples_run():
    first, second, _, _ = _blocks()
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
    exec(_blocks()[3].replace('"/data', f'"{root}').replace("112", "16"), ns)
    assert ns["table"].attrs["skipped"]["contempt (code 7, classes=7)"] > 0
    assert list(ns["study"].sources) == list(fb.datasets.FACE_SOURCES)
    assert ns["src"].images.shape[1:] == (16, 16, 3) and len(ns["src"]) == len(ns["table"])


def test_readme_model_example_trains_selects_saves_and_predicts(tmp_path, monkeypatch, capsys):
    """The "Use a trained model" example, 30 steps instead of 300, in a scratch folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "1")
    block = _blocks()[2]
    short = block.replace("steps=300", "steps=30").replace("eval_every=50", "eval_every=10").replace("% 100", "% 10")
    assert short.count("steps=30,") == 1 and "eval_every=10" in short and "% 10 " in short
    ns: dict = {}
    exec(short, ns)
    history = ns["history"]
    evaluated = history.dropna(subset=["val/select"])
    assert list(evaluated["step"]) == [10, 20, 30]
    assert history.attrs["best_score"] == pytest.approx(evaluated["val/select"].max())
    assert (tmp_path / "runs" / "mine" / "best.pt").is_file() and (tmp_path / "runs" / "mine" / "model.pt").is_file()
    assert len(ns["table"]) == 50 and ns["table"].columns[0] == "path" and "compound" not in ns["table"].columns
    scores = ns["scores"].set_index(["task", "metric"])["value"]
    assert 0 <= scores["expr", "accuracy"] <= 1 and {"au", "va"} <= set(ns["scores"]["task"])
    printed = capsys.readouterr().out.splitlines()
    logged = {int(line.split()[0]): float(line.split()[1]) for line in printed[:3]}  # the custom logger's lines
    assert logged == {s: pytest.approx(history.set_index("step").loc[s, "total"], abs=6e-4) for s in (10, 20, 30)}
