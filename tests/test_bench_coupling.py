"""Coupling overhead benchmark (issue 14 item 2) on a tiny size: rows of the benchmark contract, finite positive
times, ratio = value / plain MT's value in the same case."""
from __future__ import annotations

import math

import pytest

from fbhelpers.bench import coupling

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_tiny_rows():
    rows = coupling.run(tiny=True)
    keys = {"benchmark", "case", "candidate", "metric", "value", "unit", "ratio", "goal", "met", "n"}
    assert all(set(r) == keys for r in rows)
    assert [(r["case"], r["candidate"]) for r in rows] == [
        (case, cand) for case in ("7x17", "40x40", "200x312") for cand in ("mt", "mt+coann+dm")]
    for r in rows:
        assert r["benchmark"] == "coupling" and r["metric"] == "step_ms" and r["unit"] == "ms" and r["n"] == 3
        assert math.isfinite(r["value"]) and r["value"] > 0
    for base, cand in zip(rows[::2], rows[1::2]):
        assert base["ratio"] is None and base["met"] is None
        assert cand["ratio"] == pytest.approx(cand["value"] / base["value"])
        assert cand["goal"] == "<= 1.03" and cand["met"] == (cand["ratio"] <= 1.03)
