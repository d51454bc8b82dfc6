"""Host syncs per training step (docs/performance.md#benchmarks): the trainer's step makes none between its
``sync_every`` read-backs, and the counter does count when a per-step check is switched back on."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import fbhelpers.train as train
from fbhelpers.bench import syncs
from fbhelpers.bench._step import bench_model, coupled_case
from fbhelpers.bench.syncs import SyncCounter, syncs_per_call
from fbhelpers.losses import LossConfig, masked_bce

pytestmark = pytest.mark.usefixtures("one_thread")


def test_counter_counts_python_sync_paths_and_restores_torch():
    x, mask = torch.arange(6.0), torch.tensor([True, False] * 3)
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "__getitem__", "tolist")}
    with SyncCounter() as counter:
        x.sum().item()
        if (x > 2).any():
            pass
        int(x[0])
        x[mask]
        x[1:3]  # plain slicing: no sync
        torch.nonzero(mask)
        x.tolist()
        y = x * 2  # no sync
    assert dict(counter.counts) == {"item": 1, "__bool__": 1, "__int__": 1, "bool-mask indexing": 1,
                                    "nonzero": 1, "tolist": 1}
    assert counter.total == 6 and y.shape == (6,)
    assert all(getattr(torch.Tensor, n) is f for n, f in originals.items())
    logits, target, mask = torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)
    assert syncs_per_call(lambda: masked_bce(logits, target, mask), 2) == [1, 1]  # the public default validates
    assert syncs_per_call(lambda: masked_bce(logits, target, mask, validate=False), 2) == [0, 0]  # the trainer's


def _fit_syncs(monkeypatch, validate: bool) -> list[int]:
    """Host syncs of every step of a tiny fit (a step's train_step and the fixed points after it), sync_every=3."""
    case = coupled_case(7, 17, n=16, size=16)
    starts: list[int] = []
    real_step = train.train_step

    def counted_step(state, recipe):
        starts.append(counter.total)
        return real_step(state, dataclasses.replace(recipe, validate=True) if validate else recipe)

    monkeypatch.setattr(train.loop, "train_step", counted_step)  # the name fit calls, in fbhelpers/train/loop.py
    with SyncCounter() as counter:
        train.fit(bench_model(case.tasks), case.sources, case.tasks, case.couplings,
                  LossConfig(coann="soft", dm="both"), steps=6, quota=4, device="cpu", progress=False,
                  sync_every=3)
        end = counter.total
    bounds = [*starts, end]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def test_the_trainers_step_makes_no_host_sync_between_read_backs(monkeypatch):
    per_step = _fit_syncs(monkeypatch, validate=False)
    assert len(per_step) == 6
    assert [per_step[i] for i in (0, 1, 3, 4)] == [0, 0, 0, 0], per_step
    assert per_step[2] > 0 and per_step[5] > 0  # the losses read back every sync_every = 3 steps: counted


def test_the_counter_sees_the_per_step_checks_when_switched_back_on(monkeypatch):
    per_step = _fit_syncs(monkeypatch, validate=True)
    assert all(n > 0 for n in per_step), per_step


def test_run_tiny_rows():
    rows = syncs.run(tiny=True)
    keys = {"benchmark", "case", "candidate", "metric", "value", "unit", "ratio", "goal", "met", "n"}
    assert all(set(r) == keys for r in rows)
    by = {r["candidate"]: r for r in rows}
    assert by["mt+coann+dm"]["value"] == 0 and by["mt+coann+dm"]["met"] is True
    assert by["mt"]["value"] == 0
    assert by["mt+coann+dm validate"]["value"] > 0 and by["mt+coann+dm validate"]["ratio"] is None
    assert all(r["benchmark"] == "syncs" and r["metric"] == "syncs_per_step" and r["n"] == 2 for r in rows)


def test_fit_validates_the_couplings_once_before_training(monkeypatch):
    """What the steps no longer check is refused at set-up, before the first step, naming the coupling."""
    case = coupled_case(7, 17, n=16, size=16)
    monkeypatch.setattr(train.loop, "train_step", lambda *a: pytest.fail("a step ran"))
    r = torch.tensor(case.couplings[0].relatedness.matrix(case.tasks[0].labels, case.tasks[1].labels),
                     dtype=torch.float32)
    estimated = [dataclasses.replace(case.couplings[0], relatedness=r * 0.9)]
    with pytest.raises(ValueError, match=r"coupling \('expr', 'au'\): hard co-annotation needs binary prototypical"):
        train.fit(bench_model(case.tasks), case.sources, case.tasks, estimated, LossConfig(coann="hard"),
                  steps=2, quota=4, device="cpu", progress=False)
    out_of_range = [dataclasses.replace(case.couplings[0], relatedness=r * 2)]
    with pytest.raises(ValueError, match=r"coupling \('expr', 'au'\): relatedness entries must lie in \[0, 1\].*2"):
        train.fit(bench_model(case.tasks), case.sources, case.tasks, out_of_range, LossConfig(dm="both"),
                  steps=2, quota=4, device="cpu", progress=False)
