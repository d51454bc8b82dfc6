"""Coupling overhead benchmark (docs/performance.md#benchmarks) on a tiny size: rows of the benchmark contract,
finite positive times, ratio = value / plain MT's value in the same case and metric, the goal judged on the coupled
step only."""
from __future__ import annotations

import math

import pytest

from fbhelpers.bench import coupling

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_tiny_rows():
    rows = coupling.run(tiny=True)
    keys = {"benchmark", "case", "candidate", "metric", "value", "unit", "ratio", "goal", "met", "n"}
    assert all(set(r) == keys for r in rows)
    assert {(r["case"], r["metric"], r["candidate"]) for r in rows} == {
        (case, metric, cand) for case in ("7x17", "40x40", "200x312") for metric in ("step_ms", "step_cpu_ms")
        for cand in ("mt", "mt+coann+dm", "mt again")}
    base = {(r["case"], r["metric"]): r["value"] for r in rows if r["candidate"] == "mt"}
    for r in rows:
        assert r["benchmark"] == "coupling" and r["unit"] == "ms" and r["n"] == 3
        assert math.isfinite(r["value"]) and r["value"] > 0
        if r["candidate"] == "mt":
            assert r["ratio"] is None and r["met"] is None and r["goal"] == ""
            continue
        assert r["ratio"] == pytest.approx(r["value"] / base[r["case"], r["metric"]])
        if r["candidate"] == "mt+coann+dm":
            assert r["goal"] == "<= 1.03" and r["met"] == (r["ratio"] <= 1.03)
        else:  # the A/A control: no goal
            assert r["goal"] == "" and r["met"] is None
