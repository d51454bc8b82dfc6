"""`python -m fbhelpers bench`: the registry, the tables and the CSV; each benchmark's code on tiny sizes (the
figures themselves are not tested: these machines are shared and timed tests flake)."""
from __future__ import annotations

import math
import os

import pandas as pd
import pytest
import torch

from fbhelpers import bench
from fbhelpers.__main__ import main


def _check_ratios(table: pd.DataFrame) -> None:
    """ratio = value / the baseline's value in the same (benchmark, case, metric); the baseline has none."""
    checked = 0
    for _, group in table.groupby(["benchmark", "case", "metric"]):
        base = group[group["ratio"].isna()]
        assert len(base) == 1, group
        for _, row in group[group["ratio"].notna()].iterrows():
            assert row["ratio"] == pytest.approx(row["value"] / base["value"].iloc[0], rel=1e-9)
            checked += 1
    assert checked > 0


def test_cli_tiny_runs_pipeline_gpu_step_scale_and_writes_the_csv(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "pipeline", "gpu_step", "scale", "--tiny", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("pipeline", "gpu_step", "scale"):
        assert f"== {name}" in printed
    assert "candidate" in printed and "ratio" in printed and f"wrote {out / 'bench.csv'}" in printed
    table = pd.read_csv(out / "bench.csv")
    assert list(table.columns) == [*bench.MACHINE_KEYS, *bench.ROW_KEYS]
    assert set(table["benchmark"]) == {"pipeline", "gpu_step", "scale"}
    assert (table["cores"] == len(os.sched_getaffinity(0))).all()
    assert (table["torch"] == torch.__version__).all() and (table["device"] == "cpu").all()
    assert (table["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")).all()
    assert table["cpu"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    assert (table["value"] > 0).all() and table["value"].map(math.isfinite).all()
    _check_ratios(table)
    pipe = table[(table["benchmark"] == "pipeline") & table["ratio"].notna()]
    assert len(pipe) >= 1 and pipe["candidate"].str.startswith("cached").all() and (pipe["goal"] == ">= 5x naive").all()
    step = table[table["benchmark"] == "gpu_step"]
    assert {"throughput", "MFU", "end-to-end", "matmul"} <= set(step["metric"])
    scale = table[table["benchmark"] == "scale"]
    assert {"images/s", "fit growth", "peak RSS during fit"} <= set(scale["metric"])
    # a second run of one benchmark replaces its rows and keeps the others'
    bench.write_csv(out / "bench.csv", [{**table.iloc[0].to_dict(), "case": "again"}], replace=["pipeline"])
    again = pd.read_csv(out / "bench.csv")
    assert (again[again["benchmark"] == "pipeline"]["case"] == "again").all()
    assert len(again[again["benchmark"] != "pipeline"]) == len(table[table["benchmark"] != "pipeline"])
    # ... on the same device only: a GPU run of a benchmark keeps its CPU rows
    bench.write_csv(out / "bench.csv", [{**table.iloc[0].to_dict(), "case": "gpu", "device": "cuda"}],
                    replace=["pipeline"])
    both = pd.read_csv(out / "bench.csv")
    assert sorted(both[both["benchmark"] == "pipeline"]["case"]) == ["again", "gpu"]


def test_unknown_name_is_refused_with_the_known_names(capsys):
    assert main(["bench", "pipelne"]) == 2
    err = capsys.readouterr().err
    assert "'pipelne'" in err and all(name in err for name in bench.BENCHMARKS)
    with pytest.raises(ValueError, match="known: pipeline, coupling, syncs, gpu_step, scale"):
        bench.resolve_names(["pipeline", "nope"])


def test_missing_module_fails_alone_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(bench.BENCHMARKS, "ghost", "fbhelpers.bench.ghost")
    rows, failed = bench.run_benchmarks(["ghost"], device="cpu", out=tmp_path)
    assert failed == ["ghost"] and rows == []
    assert "fbhelpers.bench.ghost does not exist" in capsys.readouterr().out
    assert not (tmp_path / "bench.csv").exists()


def test_gpu_step_is_skipped_without_cuda_unless_tiny(tmp_path, capsys):
    rows, failed = bench.run_benchmarks(["gpu_step"], device="cpu", out=tmp_path)
    assert rows == [] and failed == []
    assert "gpu_step: skipped, no CUDA device" in capsys.readouterr().out


def test_interleaved_alternates_and_reverses_the_order_in_blocks():
    from fbhelpers.bench.timing import interleaved

    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4, warmup=1,
                        reverse_every=2)
    assert "".join(calls) == "ab" + "abab" + "baba"   # warm-up, two rounds in order, two reversed
    assert [len(t) for t in times.values()] == [4, 4]
    calls.clear()
    interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=0)
    assert "".join(calls) == "ababab"


def test_rows_for_ratios_goals_and_the_table():
    rows = bench.rows_for("b", "c", "throughput", "images/s", {"slow": 100.0, "fast": 550.0}, baseline="slow", n=3,
                          goal=">= 5x", met=lambda c, v, r: None if r is None else r >= 5)
    assert [r["ratio"] for r in rows] == [None, 5.5] and [r["met"] for r in rows] == [None, True]
    assert [r["goal"] for r in rows] == ["", ">= 5x"] and all(set(r) == set(bench.ROW_KEYS) for r in rows)
    text = bench.format_table(rows)
    assert "5.50x" in text and "550 images/s" in text and text.splitlines()[0].startswith("case")
    with pytest.raises(ValueError, match="without"):
        bench.check_rows("b", [{"benchmark": "b"}])


@pytest.mark.parametrize("shape", [(64, 112, 112), (5, 32, 48), (3, 2, 7), (4, 96, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fast_affine_grid_equals_affine_grid_bit_for_bit(shape, dtype):
    """augment's sampling grid (broadcast, 10x faster on CPU) is F.affine_grid's, so augmented images and every
    result on CPU stay identical."""
    import torch.nn.functional as F

    from fbhelpers.batching import _affine_grid

    b, h, w = shape
    theta = torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(b)).to(dtype)
    assert torch.equal(_affine_grid(theta, h, w), F.affine_grid(theta, [b, 3, h, w], align_corners=False))
