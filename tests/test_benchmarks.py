"""The benchmark scripts stay runnable: each runs end to end on a tiny problem and reports sane figures."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_synthetic_prints_rates():
    out = run("bench_synthetic.py", "--n", "64", "--repeats", "1", "--size", "32")
    rates = [float(x.replace(",", "")) for x in re.findall(r"([\d,]+) images/s", out)]
    assert len(rates) == 2 and min(rates) > 0


def test_learnability_runs_and_scores(tmp_path):
    run("learnability.py", "--n-train", "96", "--n-test", "64", "--size", "32", "--steps", "4", "--eval-every", "0",
        "--batch", "16", "--linear-iter", "5", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bayes_ceiling"] == pytest.approx(0.869, abs=0.005)
    for model in ("cnn4", "linear"):
        assert 0.0 <= summary[model]["test"]["au/mean_f1"] <= 1.0
        assert 0.0 <= summary[model]["test"]["expr/accuracy"] <= 1.0
    assert set(summary["verdict"]) >= {"au_mean_f1>=0.85", "expr_within_5_points_of_ceiling"}


def test_learnability_bayes_rule_reads_sure_probabilities_as_binary_aus(monkeypatch):
    """The soft-evidence Bayes rule (probabilities of the AU head) agrees with the binary rule at 0 / 1."""
    import importlib
    import os

    import numpy as np

    monkeypatch.setattr(os, "environ", os.environ.copy())  # the script sets thread variables on import
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    learnability = importlib.import_module("learnability")
    config = learnability.FaceConfig()
    aus = (np.random.default_rng(0).random((500, 17)) < 0.3).astype(float)
    prevalence = np.full(17, 0.3)
    hard = learnability.bayes_rule(aus, config)
    assert np.array_equal(learnability.bayes_rule(aus, config, prevalence=prevalence), hard)
    assert len(set(hard.tolist())) == 7  # every expression is reachable
    # a face that shows happiness's prototype (AU6, AU12, AU25) with little doubt is happy under both rules
    happy = np.full((1, 17), 0.02)
    happy[0, [learnability.AUS.index(a) for a in ("AU6", "AU12", "AU25")]] = 0.9
    code = learnability.EXPR.labels.index("happiness")
    assert learnability.bayes_rule(happy, config, prevalence=prevalence)[0] == code
    assert learnability.bayes_rule((happy > 0.5).astype(float), config)[0] == code
