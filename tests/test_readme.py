"""The Python examples of the README and of docs/*.md run as printed (the public API they show exists and works),
with the training budgets cut to a few steps so the check costs seconds. Three examples have their own test with
assertions on what they compute; any other Python block in the docs is run as it is (budgets cut the same way)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _all_blocks() -> list[tuple[str, str]]:
    """(``file:index``, source) of every Python block of the README and the docs."""
    return [(f"{path.relative_to(ROOT)}:{i}", block) for path in [README, *DOCS] for i, block in enumerate(_blocks(path))]


def _only(marker: str) -> str:
    """The one block that contains ``marker`` (an error when there are none or several)."""
    found = [block for _, block in _all_blocks() if marker in block]
    assert len(found) == 1, f"{len(found)} Python blocks contain {marker!r}"
    return found[0]


API, REAL_DATA, MODEL = "fit_variant(", "datasets.load(", "predict_table("


def _short(block: str) -> str:
    """Training budgets cut to 2 steps."""
    return re.sub(r"steps=\d+", "steps=2", block)


def test_readme_is_short_and_links_into_docs():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for name in ("method", "design", "datasets", "results", "performance", "testing"):
        assert f"](docs/{name}.md" in text
    assert len(_blocks(README)) == 1 and API in _blocks(README)[0]


def test_readme_api_example_runs():
    block = _only(API)
    ns: dict = {}
    short = _short(block).replace('"mt_dm", seed=0)', '"mt_dm", seed=0, steps=2, device="cpu")')
    assert short.count("steps=2") == 2
    exec(short, ns)
    assert ns["R"].table.loc["happiness", "AU6"] == pytest.approx(0.51)
    assert float(ns["loss"]) > 0
    assert list(ns["scores"].columns) == ["source", "task", "metric", "value"]
    assert {"mean_f1_unlabelled", "mean_auc_unlabelled"} <= set(ns["run"].scores["metric"])


def test_real_data_example_runs_on_the_fixture_root(tmp_path, monkeypatch):
    """The real-data example of docs/datasets.md, its data root ``/data`` swapped for the format-faithful
    fixture root."""
    import fbhelpers as fb

    monkeypatch.setenv("FBHELPERS_CACHE", str(tmp_path / "cache"))
    root = fb.datasets.make_fixture_root(tmp_path / "data", names=fb.datasets.FACE_SOURCES)
    ns: dict = {}
    exec(_only(REAL_DATA).replace('"/data', f'"{root}').replace("112", "16"), ns)
    assert ns["table"].attrs["skipped"]["contempt (code 7, classes=7)"] > 0
    assert list(ns["study"].sources) == list(fb.datasets.FACE_SOURCES)
    assert ns["src"].images.shape[1:] == (16, 16, 3) and len(ns["src"]) == len(ns["table"])


def test_model_example_trains_selects_saves_and_predicts(tmp_path, monkeypatch, capsys):
    """The model-file example of docs/design.md, 30 steps instead of 300, in a scratch folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "1")
    block = _only(MODEL)
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


OTHER_BLOCKS = [(where, block) for where, block in _all_blocks() if not any(m in block for m in (API, REAL_DATA, MODEL))]


@pytest.mark.parametrize("block", [b for _, b in OTHER_BLOCKS], ids=[w for w, _ in OTHER_BLOCKS])
def test_every_other_docs_example_runs(block, tmp_path, monkeypatch):
    """Any other Python block of the docs runs as printed (in a scratch folder, budgets cut to 2 steps); a coupling
    term an example registers is removed afterwards, so the registry is the same for the other tests."""
    from fbhelpers.losses import COUPLINGS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "1")
    registered = set(COUPLINGS)
    try:
        exec(_short(block), {})
    finally:
        for name in set(COUPLINGS) - registered:
            del COUPLINGS[name]
