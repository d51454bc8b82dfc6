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


def test_learnability_bayes_rule_on_probabilities_is_the_posterior(monkeypatch):
    """The soft-evidence Bayes rule (the AU head's probabilities p_j read as posteriors under the prevalence m_j)
    picks the class of the exact posterior, summed here over the binary patterns of the uncertain AUs, and
    agrees with the binary rule where the AU head is sure."""
    import importlib
    import itertools
    import os

    import numpy as np

    monkeypatch.setattr(os, "environ", os.environ.copy())  # the script sets thread variables on import
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    learnability = importlib.import_module("learnability")
    config = learnability.FaceConfig()
    table = learnability.au_probabilities(None, config.au_miss, config.au_spont).to_numpy()  # (7, 17)
    rng = np.random.default_rng(0)
    prevalence = rng.uniform(0.05, 0.6, 17)
    hard = (rng.random((300, 17)) < 0.3).astype(float)
    loglik = np.sort(hard @ np.log(table).T + (1 - hard) @ np.log1p(-table).T, axis=1)
    clear = loglik[:, -1] - loglik[:, -2] > 1e-2  # the rule clips p to [1e-4, 1 - 1e-4]: near-ties may flip
    assert clear.mean() > 0.9
    assert np.array_equal(learnability.bayes_rule(hard, config, prevalence=prevalence)[clear],
                          learnability.bayes_rule(hard, config)[clear])
    assert len(set(learnability.bayes_rule(hard, config).tolist())) == 7  # every expression is reachable
    probs = hard.copy()
    uncertain = [rng.choice(17, 3, replace=False) for _ in range(len(probs))]
    for row, cols in zip(probs, uncertain):
        row[cols] = rng.uniform(0.05, 0.95, 3)
    expected = []
    for row, cols in zip(probs, uncertain):
        sure = np.setdiff1d(np.arange(17), cols)
        posterior = np.prod(np.where(row[sure] > 0.5, table[:, sure], 1 - table[:, sure]), axis=1)
        mixed = np.zeros(len(table))
        for pattern in itertools.product((0, 1), repeat=3):
            a = np.array(pattern)
            likelihood = np.prod(np.where(a == 1, row[cols] / prevalence[cols],
                                          (1 - row[cols]) / (1 - prevalence[cols])))
            mixed += likelihood * np.prod(np.where(a == 1, table[:, cols], 1 - table[:, cols]), axis=1)
        top = np.sort(posterior * mixed)
        expected.append(int(np.argmax(posterior * mixed)) if top[-1] > 1.05 * top[-2] else -1)
    expected = np.array(expected)
    assert (expected >= 0).mean() > 0.9
    got = learnability.bayes_rule(probs, config, prevalence=prevalence)
    assert np.array_equal(got[expected >= 0], expected[expected >= 0])


def test_bench_cache_builds_and_measures_memory(tmp_path):
    """The cache benchmark runs end to end (``--quick``) and writes its figures: positive build rates for 1 and 2
    workers and one peak-memory row per table size."""
    import csv

    run("bench_cache.py", "--quick", "--out", str(tmp_path / "cache.csv"))
    with open(tmp_path / "cache.csv", newline="") as fh:
        rows = {(r["measure"], r["setting"]): float(r["value"]) for r in csv.DictReader(fh)}
    assert min(rows["build", "workers=1"], rows["build", "workers=2"]) > 0
    peaks = [v for (m, s), v in rows.items() if m == "memory" and s.endswith("peak_fit_mib")]
    assert len(peaks) == 2 and min(peaks) > 0
