"""The notebook runner, record(), profiles and the CLI, on throwaway notebooks written into tmp_path."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re

import nbformat
import numpy as np
import pytest
import torch
import yaml

from fbhelpers import profiles, recording, runner
from fbhelpers.__main__ import main, parse_value

PARAMS = 'PROFILE = "smoke"\nSEED = 0\nDEVICE = "auto"\nDATA_ROOT = None\nOUTPUT_DIR = None\nSCALE = 1\nOVERRIDES = {}'
GOOD = """from fbhelpers.runner import configure, record
import matplotlib.pyplot as plt
configure(OUTPUT_DIR)
record("twice", SCALE * 2)
record("steps", OVERRIDES.get("steps"))
record("profile", PROFILE)
fig = plt.figure(figsize=(1, 1))
plt.plot([0, 1])  # an inline PNG output in the executed notebook, too
fig.savefig(OUTPUT_DIR + "/curve.png")
import os
os.makedirs(OUTPUT_DIR + "/faces")   # data the notebook writes (e.g. rendered images), not a figure
fig.savefig(OUTPUT_DIR + "/faces/0001.png")"""


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    nbformat.write(nb, path)


def _make_suite(directory):
    v4 = nbformat.v4
    directory.mkdir()
    params = v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    _write(directory / "01_good.ipynb", [v4.new_markdown_cell("# good"), params, v4.new_code_cell(GOOD)])
    params = v4.new_code_cell('PROFILE = "smoke"\nOUTPUT_DIR = None')
    params.metadata["tags"] = ["parameters"]
    failing = "from fbhelpers.runner import record  # FB_OUTPUT_DIR fallback\nrecord('before', 1)\n" \
              "raise ValueError('boom')"
    _write(directory / "02_bad.ipynb",
           [v4.new_markdown_cell("# bad"), params, v4.new_code_cell(failing), v4.new_code_cell("record('after', 2)")])
    (directory / "notes.ipynb").write_text("not part of the suite")
    return directory


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    base = tmp_path_factory.mktemp("suite")
    notebooks = _make_suite(base / "notebooks")
    result = runner.run_suite("smoke", out=base / "out", params={"SCALE": 3, "STEPS": 50},
                              notebooks_dir=notebooks, progress=False)
    return result, notebooks


def test_suite_runs_notebooks_in_parallel_workers(tmp_path):
    """jobs=2: two worker processes, one thread each (OMP_NUM_THREADS in the kernel), results in suite order."""
    notebooks = _make_suite(tmp_path / "notebooks")
    probe = "import os\nfrom fbhelpers.runner import record\nrecord('threads', os.environ.get('OMP_NUM_THREADS'))"
    for name in ("01_good", "02_bad"):
        nb = nbformat.read(notebooks / f"{name}.ipynb", as_version=4)
        nb.cells.insert(2, nbformat.v4.new_code_cell(probe))
        nbformat.write(nb, notebooks / f"{name}.ipynb")
    result = runner.run_suite("smoke", out=tmp_path / "out", notebooks_dir=notebooks, progress=False, jobs=2)
    assert [nb.name for nb in result.notebooks] == ["01_good", "02_bad"]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert result.notebooks[0].metrics == {"threads": threads, "twice": 2, "steps": None, "profile": "smoke"}
    assert result.notebooks[1].metrics == {"threads": threads, "before": 1}
    assert [nb.ok for nb in result.notebooks] == [True, False] and result.exit_code == 1
    assert "ValueError: boom" in str(result.notebooks[1].error)


def test_a_kernel_that_never_started_is_retried_once_and_a_dead_worker_is_a_failure(tmp_path, monkeypatch):
    notebooks = _make_suite(tmp_path / "notebooks")
    calls = []
    real = runner.run_notebook

    def flaky(notebook, out, profile, params=None, progress=True, threads=None):
        calls.append(notebook.stem)
        if calls.count(notebook.stem) == 1:   # the first start of every notebook fails before any cell
            return runner.NotebookResult(notebook.stem, out / "x.ipynb", out, 0.0, {}, [],
                                         runner.NotebookError(None, "", "ZMQError", "Address already in use"))
        return real(notebook, out, profile, params, progress, threads)

    monkeypatch.setattr(runner, "run_notebook", flaky)
    result = runner.run_suite("smoke", out=tmp_path / "out", notebooks_dir=notebooks, progress=False)
    assert calls == ["01_good", "01_good", "02_bad", "02_bad"]       # retried once each, not after a cell failed
    assert result.notebooks[0].ok and "ValueError: boom" in str(result.notebooks[1].error)
    blocker = tmp_path / "blocker"          # a file where the output folder should go: the worker itself raises
    blocker.write_text("")
    crashed = list(runner._executed([notebooks / "01_good.ipynb"], blocker, "smoke", {}, False, 2, 1))
    assert [(r.name, r.ok, r.error.ename) for r in crashed] == [("01_good", False, "NotADirectoryError")]


@pytest.fixture
def fresh_output(monkeypatch, tmp_path):
    """record() state isolated per test."""
    monkeypatch.setattr(recording, "_output_dir", None)
    monkeypatch.delenv(runner.ENV_OUTPUT_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_suite_writes_metrics_and_summaries(suite):
    result, _ = suite
    assert [nb.name for nb in result.notebooks] == ["01_good", "02_bad"]
    good = result.notebooks[0]
    assert good.ok and good.executed.is_file()
    assert json.loads((result.out / "01_good" / "metrics.json").read_text()) == {
        "twice": 6, "steps": 50, "profile": "smoke"}
    with result.summary_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["notebook"], r["metric"], r["value"]) for r in rows} == {
        ("01_good", "twice", "6"), ("01_good", "steps", "50"), ("01_good", "profile", "smoke"),
        ("02_bad", "before", "1")}
    md = result.summary_md.read_text()
    assert "| twice | 6 |" in md
    assert "[curve.png](01_good/curve.png)" in md and "0001.png" not in md
    assert [f.name for f in result.notebooks[0].figures] == ["curve.png"]
    assert "## 02_bad" in md and "**FAILED**" in md


def test_suite_writes_the_html_report_and_exports_every_notebook(suite):
    """Each executed notebook gets an HTML export beside it with its inline figure embedded, and summary.html the
    claims table (its notebooks are not the suite's: n/a) and the key figure (here the first one) as base64."""
    result, _ = suite
    for nb in result.notebooks:
        assert nb.html == nb.executed.with_suffix(".html") and nb.html.is_file() and nb.html_error is None
    assert re.search(r'<img [^>]*src="data:image/png;base64,', result.notebooks[0].html.read_text())
    md = result.summary_md.read_text()
    assert md.index("## Claims") < md.index("## 01_good")
    assert "![curve](01_good/curve.png)" in md and "[01_good.html](01_good.html)" in md
    page = result.summary_html.read_text()
    assert "<th>holds?</th>" in page and "n/a" in page
    assert page.count('<img src="data:image/png;base64,') == 1


def test_failure_names_notebook_cell_and_error_and_keeps_successes(suite):
    result, _ = suite
    bad = result.notebooks[1]
    assert result.exit_code == 1 and not result.ok
    assert bad.error.cell_index == 2
    assert bad.error.first_line.startswith("from fbhelpers.runner import record")
    assert (bad.error.ename, bad.error.evalue) == ("ValueError", "boom")
    assert bad.metrics == {"before": 1}  # recorded before the failure, through the FB_OUTPUT_DIR fallback
    report = result.failure_report()
    assert "02_bad" in report and "cell 2" in report and "ValueError: boom" in report
    assert (result.out / "01_good.ipynb").is_file() and (result.out / "01_good" / "curve.png").is_file()


def test_cli_injects_parameters_and_reports_failures(suite, tmp_path, capsys):
    _, notebooks = suite
    out = tmp_path / "cli"
    code = main(["run", "--profile", "smoke", "--notebooks-dir", str(notebooks), "--out", str(out),
                 "--only", "01", "-p", "SCALE", "5", "-p", "steps", "7", "--no-progress"])
    assert code == 0
    assert runner.load_metrics(out / "01_good") == {"twice": 10, "steps": 7, "profile": "smoke"}
    code = main(["run", "--notebooks-dir", str(notebooks), "--out", str(out), "--only", "02", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "02_bad failed at cell 2" in err and "ValueError: boom" in err
    assert (out / "01_good" / "metrics.json").is_file()  # an earlier run's outputs are left alone


def test_run_suite_rejects_bad_selection(tmp_path):
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    _write(notebooks / "01_x.ipynb", [])
    with pytest.raises(ValueError, match="'09'"):
        runner.run_suite(only=["09"], notebooks_dir=notebooks, out=tmp_path / "o")
    with pytest.raises(ValueError, match="OUTPUT_DIR"):
        runner.run_suite(params={"OUTPUT_DIR": "x"}, notebooks_dir=notebooks, out=tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        runner.run_suite(notebooks_dir=tmp_path / "empty", out=tmp_path / "o")
    assert main(["run", "--notebooks-dir", str(notebooks), "--only", "09"]) == 2


def test_record_round_trip_numpy_nan_and_fallbacks(fresh_output, monkeypatch):
    runner.record("default_dir", 1)
    assert runner.load_metrics(fresh_output / "runs" / "interactive") == {"default_dir": 1}
    monkeypatch.setenv(runner.ENV_OUTPUT_DIR, str(fresh_output / "env"))
    runner.record("env_dir", 2)
    assert runner.load_metrics(fresh_output / "env") == {"env_dir": 2}
    out = runner.configure(fresh_output / "conf", seed=3)
    assert out == (fresh_output / "conf").resolve()
    runner.record("f32", np.float32(0.5))
    runner.record("i64", np.int64(7))
    runner.record("arr", np.array([[1.0, np.nan], [np.inf, 2.0]]))
    runner.record("nan", float("nan"))
    runner.record("tensor", torch.tensor([0.25, 0.75]))
    runner.record("nested", {"AU1": np.float64(0.4), 2: (True, "x")})
    runner.record("f32", 0.75)  # recording again replaces
    assert runner.load_metrics(out) == {
        "f32": 0.75, "i64": 7, "arr": [[1.0, None], [None, 2.0]], "nan": None, "tensor": [0.25, 0.75],
        "nested": {"AU1": 0.4, "2": [True, "x"]}}
    assert isinstance(runner.load_metrics(out)["i64"], int)
    assert list(out.glob(".*tmp")) == []


def test_record_rejects_bad_input(fresh_output):
    with pytest.raises(TypeError, match="'obj'.*object"):
        runner.record("obj", object())
    with pytest.raises(ValueError, match="non-empty"):
        runner.record("", 1)
    bad = fresh_output / "runs" / "interactive" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="metrics.json"):
        runner.record("x", 1)


def test_compare_with_references():
    refs = {"nb": {"acc": {"value": 0.8, "rel": 0.0, "abs": 0.01}, "f1": {"value": 0.5}, "gone": 1.0,
                   "per": {"value": [0.1, None]}, "name": {"value": "cnn4"}}}
    metrics = {"nb": {"acc": 0.805, "f1": 0.54, "per": [0.12, None], "name": "cnn4", "extra": {"a": 1}},
               "other": {}}
    found = {(m.metric, m.kind) for m in runner.compare_with_references(metrics, refs)}
    assert found == {("gone", "missing"), ("extra.a", "unexpected")}  # f1 within default abs 0.05 + rel 0.1
    worse = runner.compare_with_references({"nb": {**metrics["nb"], "acc": 0.82}}, refs)
    assert [(m.metric, m.kind, m.actual) for m in worse if m.kind == "value"] == [("acc", "value", 0.82)]
    strict = runner.compare_with_references(metrics, refs, tolerances={"rel": 0.0, "abs": 0.0})
    assert {m.metric for m in strict if m.kind == "value"} == {"f1", "per"}
    assert "refresh-references" in str(next(m for m in strict if m.kind == "unexpected"))


def test_update_references_keeps_tolerances_and_lists_changes(tmp_path):
    old = {"nb": {"acc": {"value": 0.8, "rel": 0.0, "abs": 0.01}, "gone": {"value": 1}}, "failed": {"x": 1},
           "deleted": {"y": 2}}
    metrics = {"nb": {"acc": 0.8123456789, "f1": {"AU1": 0.5}, "name": "cnn4"}}
    new, changes = runner.update_references(old, metrics, notebooks=["nb", "failed"])
    assert new == {"nb": {"acc": {"value": 0.812346, "rel": 0.0, "abs": 0.01},
                          "f1.AU1": {"value": 0.5, "rel": 0.1, "abs": 0.05},
                          "name": {"value": "cnn4", "rel": 0.1, "abs": 0.05}},
                   "failed": {"x": 1}}
    assert sorted(changes) == ["deleted: (notebook no longer in the suite) -> (removed)", "nb: acc: 0.8 -> 0.812346",
                               'nb: f1.AU1: (new) -> 0.5', "nb: gone: 1 -> (removed)", 'nb: name: (new) -> "cnn4"']
    path = tmp_path / "refs" / "smoke.json"
    runner.write_references(path, new)
    assert runner.load_references(path) == new
    assert '\n    "acc": {"value": 0.812346, "rel": 0.0, "abs": 0.01},\n' in path.read_text()  # a metric per line


def test_profiles_resolve_and_errors():
    cfg = profiles.resolve("02", "smoke", steps=5, n_scale=1)
    assert cfg["steps"] == 5 and cfg["n_scale"] == 1.0 and cfg["data"] == "synthetic"
    assert profiles.resolve("02_affect_case_study.ipynb", "paper")["data"] == "real"
    assert set(profiles.PROFILES) == {"smoke", "demo", "paper"}
    assert all(len(nbs) == 6 for nbs in profiles.PROFILES.values())
    with pytest.raises(KeyError, match="'fast'.*demo.*paper.*smoke"):
        profiles.resolve("02", "fast")
    with pytest.raises(KeyError, match="'stepz'.*'steps'"):
        profiles.resolve("02", "demo", stepz=3)
    with pytest.raises(KeyError, match="'07'"):
        profiles.resolve("07", "demo")
    with pytest.raises(ValueError, match="'steps'.*int"):
        profiles.resolve("02", "demo", steps="many")


def test_setup_seeds_configures_and_resolves_device(fresh_output):
    cfg = profiles.setup("smoke", 4, "auto", str(fresh_output / "o"), notebook="01", steps=3)
    assert (cfg["profile"], cfg["notebook"], cfg["device"], cfg["steps"]) == ("smoke", "01_relatedness_study", "cpu", 3)
    assert cfg["seeds"] == [4]
    first = torch.rand(1).item()
    profiles.setup("smoke", 4, "cpu", str(fresh_output / "o"), notebook="01")
    assert torch.rand(1).item() == first
    runner.record("x", 1)
    assert runner.load_metrics(fresh_output / "o") == {"x": 1}
    assert json.loads((fresh_output / "o" / "config.json").read_text())["seed"] == 4
    with pytest.raises(ValueError, match="'gpu0'"):
        profiles.setup("smoke", 0, "gpu0", str(fresh_output / "o"), notebook="01")


def test_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv(profiles.ENV_DATA_ROOT, raising=False)
    with pytest.raises(ValueError, match="FB_DATA_ROOT"):
        profiles.data_root(None)
    assert profiles.data_root(str(tmp_path)) == tmp_path.resolve()
    monkeypatch.setenv(profiles.ENV_DATA_ROOT, str(tmp_path))
    assert profiles.data_root(None) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        profiles.data_root(tmp_path / "nowhere")


def test_unknown_profile_is_refused_by_the_parser(capsys):
    """``--profile`` is checked when given (profiles is imported then, not for every command)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--profile", "fast"])
    assert exit_info.value.code == 2
    assert "argument --profile: invalid choice: 'fast' (choose from demo, paper, smoke)" in capsys.readouterr().err


def test_parse_value():
    assert parse_value("50") == 50 and isinstance(parse_value("50"), int)
    assert parse_value("0.1") == 0.1 and parse_value("1e-3") == 0.001
    assert parse_value("true") is True and parse_value("null") is None
    assert parse_value("[0, 1]") == [0, 1] and parse_value("resnet18") == "resnet18"


def test_check_data_reports_found_missing_and_checksums(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "A").mkdir(parents=True)
    (root / "A" / "labels.csv").write_text("x\n")
    (root / "C").mkdir()
    (root / "C" / "list.txt").write_text("changed\n")
    digest = hashlib.sha256(b"x\n").hexdigest()
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(yaml.safe_dump({"datasets": [
        {"name": "alpha", "root": "A", "files": ["labels.csv"], "sha256": {"labels.csv": digest}},
        {"name": "beta", "root": "B/sub", "files": ["ann/train.txt", "ann/test.txt"]},
        {"name": "gamma", "root": "C", "files": [{"path": "list.txt", "sha256": digest}]},
    ]}))
    args = ["check-data", "--manifest", str(manifest), "--data-root", str(root)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^alpha\s+found", out, re.M)
    assert re.search(r"^beta\s+missing", out, re.M) and str(root / "B" / "sub") in out
    assert re.search(r"^gamma\s+mismatch", out, re.M) and "1/3 datasets found" in out
    assert main(args + ["--strict"]) == 1
    manifest.write_text("datasets:\n  - name: delta\n    root: D\n")
    assert main(args) == 2
    assert "delta" in capsys.readouterr().err


def test_to_jsonable_numpy_bool_and_nested_nan():
    assert runner.to_jsonable({"a": [np.float32("nan"), np.bool_(True)]}) == {"a": [None, True]}


def test_require_names_dataset_paths_and_command(tmp_path, monkeypatch):
    from fbhelpers.manifest import require

    monkeypatch.delenv("FB_DATA_ROOT", raising=False)
    root = tmp_path / "data"
    (root / "A").mkdir(parents=True)
    (root / "A" / "labels.csv").write_text("x\n")
    manifest = tmp_path / "data_manifest.yaml"
    (root / "C").mkdir()
    manifest.write_text(yaml.safe_dump({"datasets": [
        {"name": "alpha", "root": "A", "files": ["labels.csv"]},
        {"name": "beta", "root": "B", "files": ["ann.txt"]},
        {"name": "gamma", "root": "C", "files": ["ann.txt"]},
    ]}))
    assert require("alpha", str(root), manifest) == root / "A"
    with pytest.raises(FileNotFoundError, match=r"'gamma' incomplete .*C/ann.txt.*check-data"):
        require("gamma", str(root), manifest)
    with pytest.raises(FileNotFoundError, match=r"'beta' missing .*/B'.*check-data"):
        require("beta", str(root), manifest)
    with pytest.raises(FileNotFoundError, match=r"'alpha' needs a data root.*FB_DATA_ROOT"):
        require("alpha", None, manifest)
    with pytest.raises(KeyError, match="known: \\['alpha', 'beta', 'gamma'\\]"):
        require("delta", str(root), manifest)
