"""fit's parts: resume refuses changed settings, best-model selection on a validation split, early stopping,
checkpoint contents, logging callbacks and TensorBoard event files."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fbhelpers.callbacks import Callback
from fbhelpers.checkpoints import BEST, CHECKPOINT, load_checkpoint
from fbhelpers.losses import Coupling, LossConfig
from fbhelpers.tasks import AU, AUS, EXPR, EXPRESSIONS
from fbhelpers.train import fit
from helpers import BLOCK_R, block_source, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = (EXPR, AU)
SIZE = 20
WIDTHS = (8, 16, 16, 32)
# Block sources whose validation rows' AU labels are inverted, so the better the model fits the training rows the
# worse its validation score: the best validation step is early.
SPLITS = {"train": 96, "val": 32}
SOURCES = {"affect": block_source("affect", ("expr",), 1, SPLITS, size=SIZE, inverted_aus="val"),
           "aus": block_source("aus", ("au",), 2, SPLITS, size=SIZE, inverted_aus="val")}
COUPLINGS = [Coupling("expr", "au", torch.from_numpy(BLOCK_R))]
BASE = dict(steps=4, quota=8, lr=3e-3, progress=False, augment={"flip": False}, val_split="val",
            select="au/mean_auc", eval_every=2, checkpoint_every=2)


def train(model=None, sources=SOURCES, couplings=COUPLINGS, loss=None, widths=WIDTHS, **kwargs
          ) -> pd.DataFrame:
    """``fit`` with the BASE settings, overridden by ``kwargs``."""
    model = tiny_net(TASKS, widths=widths) if model is None else model
    return fit(model, sources, TASKS, couplings, loss or LossConfig(dm="class_to_attr"), **{**BASE, **kwargs})


class Snapshots(Callback):
    """The model's weights at every evaluation, and every call received."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.weights, self.rows, self.evaluations, self.started, self.ended = model, {}, [], [], [], []

    def on_start(self, step, settings):
        self.started.append((step, dict(settings)))

    def on_log(self, step, row):
        self.rows.append((step, dict(row)))

    def on_evaluate(self, step, split, scores):
        self.evaluations.append((step, split, scores))
        self.weights[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_end(self, history):
        self.ended.append(history)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def numbers(row) -> dict:
    """A row's entries without NaN (history frames fill missing columns with NaN)."""
    return {k: v for k, v in dict(row).items() if not (isinstance(v, float) and math.isnan(v))}


# ----------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    model = tiny_net(TASKS, widths=WIDTHS)
    history = train(model, checkpoint_dir=folder)
    return folder, model, history


def test_checkpoint_holds_spec_input_size_couplings_and_best(base_run):
    folder, model, history = base_run
    last, best = load_checkpoint(folder / CHECKPOINT), load_checkpoint(folder / BEST)
    assert last["model_spec"] == model.spec() and last["input_size"] == [SIZE, SIZE]
    assert last["couplings"] == [{"class_task": "expr", "attr_task": "au", "classes": list(EXPRESSIONS),
                                  "attributes": list(AUS), "values": BLOCK_R.tolist()}]
    assert last["best"]["step"] == best["step"] == history.attrs["best_step"]
    assert best["score"] == history.attrs["best_score"] and best["select"] == "au/mean_auc"
    assert same(best["model"], model.state_dict()) and same(last["best"]["model"], best["model"])
    assert {k: best[k] for k in ("model_spec", "input_size", "couplings", "config")} == {
        k: last[k] for k in ("model_spec", "input_size", "couplings", "config")}
    assert last["step"] == 4


CHANGES = {
    "loss.dm_weight": dict(loss=LossConfig(dm="class_to_attr", dm_weight=2.0)),
    "couplings.0.values": dict(couplings=[Coupling("expr", "au", torch.from_numpy(1 - BLOCK_R))]),
    "model.backbone_options.widths": dict(widths=(8, 16, 16, 16)),
    "augment.rotate": dict(augment={"flip": False, "rotate": 5.0}),
    "optimizer": dict(optimizer="sgd"),
    "lr": dict(lr=1e-3),
    "weight_decay": dict(weight_decay=0.0),
    "schedule": dict(schedule="constant"),
    "warmup": dict(warmup_steps=2),
    "grad_clip": dict(grad_clip=1.0),
    "sources.aus": dict(sources={**SOURCES, "aus": SOURCES["aus"].rows(np.r_[0:90, 96:128])}),
    "quota.affect": dict(quota={"affect": 6, "aus": 8}),
    "seed": dict(seed=1),
    "steps": dict(steps=5),
    "sample_weights": dict(sample_weights={"affect": np.linspace(0.5, 1.0, 96)}),
    "val_split": dict(val_split="train"),
    "select": dict(select="au/mean_f1"),
    "select_mode": dict(select_mode="min"),
    "patience": dict(patience=3),
    "eval_every": dict(eval_every=1),
}


@pytest.mark.parametrize("setting", list(CHANGES))
def test_resume_refuses_a_changed_setting(base_run, setting):
    folder, _, _ = base_run
    with pytest.raises(ValueError, match=rf"other settings \(saved vs now\): (.*; )?{re.escape(setting)}: "):
        train(checkpoint_dir=folder, resume=True, **CHANGES[setting])


def test_plain_module_is_checked_by_parameter_shapes(tmp_path):
    class Plain(nn.Module):  # no spec(): parameter names and shapes stand in for it
        def __init__(self, widths):
            super().__init__()
            self.inner = tiny_net(TASKS, widths=widths)

        def forward(self, x):
            return self.inner(x)

    train(Plain(WIDTHS), steps=2, checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path / CHECKPOINT)["model_spec"] is None
    with pytest.raises(ValueError, match=r"model\.parameters"):
        train(Plain((8, 16, 16, 16)), steps=2, checkpoint_dir=tmp_path, resume=True)


def test_interrupted_run_resumes_to_the_same_best_model(tmp_path):
    class Crash(Callback):
        def on_log(self, step, row):
            if step == 5:
                raise RuntimeError("crash at step 5")

    settings = dict(steps=6, eval_every=1, checkpoint_every=2)
    reference = tiny_net(TASKS, widths=WIDTHS)
    want = train(reference, checkpoint_dir=tmp_path / "ref", **settings)
    with pytest.raises(RuntimeError, match="crash at step 5"):
        train(checkpoint_dir=tmp_path / "run", callbacks=[Crash()], **settings)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == 4
    resumed = tiny_net(TASKS, widths=WIDTHS)
    seen = Snapshots(resumed)
    got = train(resumed, checkpoint_dir=tmp_path / "run", resume=True, callbacks=[seen], **settings)
    assert seen.started[0][0] == 4 and [s for s, _ in seen.rows] == [5, 6]
    assert same(resumed.state_dict(), reference.state_dict())
    assert got.attrs == want.attrs
    pd.testing.assert_frame_equal(got.drop(columns="images_per_s"), want.drop(columns="images_per_s"))
    assert same(load_checkpoint(tmp_path / "run" / BEST)["model"], load_checkpoint(tmp_path / "ref" / BEST)["model"])


# ----------------------------------------------------------------------------------------------- selection
@pytest.fixture(scope="module")
def curve():
    """The same 12-step run with and without selection, evaluated after every step."""
    runs = {}
    for select in ("au/mean_auc", None):
        model = tiny_net(TASKS, widths=WIDTHS)
        seen = Snapshots(model)
        history = train(model, steps=12, eval_every=1, checkpoint_every=None, select=select, callbacks=[seen])
        runs[select] = (model, seen, history)
    return runs


def test_best_validation_step_is_kept(curve):
    model, seen, history = curve["au/mean_auc"]
    scores = history.set_index("step")["val/select"]
    assert list(scores.index) == list(range(1, 13)) and scores.notna().all()
    expected = {step: s.query("task == 'au' and metric == 'mean_auc'")["value"].mean()
                for step, _, s in seen.evaluations}
    assert scores.to_dict() == pytest.approx(expected)
    best = int(scores.idxmax())
    assert best < 12 and scores[best] > scores[12]  # inverted validation labels: an early step is better
    assert history.attrs == {"best_step": best, "best_score": scores[best]}
    assert same(model.state_dict(), seen.weights[best])
    assert not same(model.state_dict(), seen.weights[12])


def test_without_select_the_last_weights_stay(curve):
    model, seen, history = curve[None]
    assert "val/select" not in history and history.attrs == {"best_step": None, "best_score": None}
    assert history["val/aus/au/mean_auc"].notna().sum() == 12
    pd.testing.assert_series_equal(history["val/aus/au/mean_auc"],
                                   curve["au/mean_auc"][2]["val/aus/au/mean_auc"])
    assert same(model.state_dict(), seen.weights[12])
    assert not same(model.state_dict(), seen.weights[curve["au/mean_auc"][2].attrs["best_step"]])


def test_select_mode_min_keeps_the_lowest_score(curve):
    scores = curve["au/mean_auc"][2].set_index("step")["val/select"]
    model = tiny_net(TASKS, widths=WIDTHS)
    seen = Snapshots(model)
    history = train(model, steps=12, eval_every=1, checkpoint_every=None, select="aus/au/mean_auc",
                    select_mode="min", callbacks=[seen])
    worst = int(scores.idxmin())
    assert worst > 1 and history.attrs["best_step"] == worst  # not the first evaluation either
    assert history.attrs["best_score"] == pytest.approx(scores.min())
    assert same(model.state_dict(), seen.weights[worst])


def test_patience_stops_after_evaluations_without_improvement(curve):
    scores = curve["au/mean_auc"][2].set_index("step")["val/select"]
    best, waited, stop = -math.inf, 0, None
    for step, score in scores.items():  # the rule, replayed on the full run's curve
        best, waited = (score, 0) if score > best else (best, waited + 1)
        if waited == 3:
            stop = step
            break
    assert stop is not None and stop < 12
    model = tiny_net(TASKS, widths=WIDTHS)
    history = train(model, steps=12, eval_every=1, checkpoint_every=None, patience=3)
    assert list(history["step"]) == list(range(1, stop + 1))
    assert history["val/select"].to_numpy() == pytest.approx(scores.loc[:stop].to_numpy())
    assert same(model.state_dict(), curve["au/mean_auc"][1].weights[history.attrs["best_step"]])


def test_early_stop_is_final_on_resume(tmp_path):
    """The early stop writes ``last.pt`` though no checkpoint is due then (every 100 steps)."""
    first = train(steps=12, eval_every=1, checkpoint_every=100, patience=2, checkpoint_dir=tmp_path)
    stopped = int(first["step"].iloc[-1])
    assert stopped < 12 and load_checkpoint(tmp_path / CHECKPOINT)["step"] == stopped
    again = train(steps=12, eval_every=1, checkpoint_every=100, patience=2, checkpoint_dir=tmp_path, resume=True)
    assert list(again["step"]) == list(first["step"]) and again.attrs == first.attrs


# the loss settings a checkpoint of the release before the coupling registry holds
PREVIOUS_LOSS_SETTINGS = ("task_weights", "coann", "coann_weight", "coann_direction", "coann_threshold",
                          "coann_attributes", "coann_empty_row", "dm", "dm_weight", "dm_reduction", "dm_detach",
                          "dm_variant", "dm_divergence", "dm_temperature", "dm_empty_row", "dm_bernoulli_kl", "dm_eps",
                          "dm_warmup_steps")


def test_checkpoints_of_the_previous_release_still_resume(tmp_path):
    """A run that names no registered term saves the loss settings the previous release saved, so a checkpoint
    written before the registry resumes (the guard compares every key)."""
    train(steps=2, checkpoint_dir=tmp_path)
    assert tuple(load_checkpoint(tmp_path / CHECKPOINT)["config"]["loss"]) == PREVIOUS_LOSS_SETTINGS
    train(steps=2, checkpoint_dir=tmp_path / "named", loss=LossConfig(couplings={"dm": {}}))
    assert load_checkpoint(tmp_path / "named" / CHECKPOINT)["config"]["loss"]["couplings"] == {"dm": {}}


class StopAt(Callback):
    """Your own stopping rule: on every rank (``all_ranks``), ends training after ``step``."""

    all_ranks = True

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        self.stopped = state.step >= self.step


def test_a_stop_by_your_callback_is_checkpointed(tmp_path):
    first = train(steps=12, checkpoint_every=5, checkpoint_dir=tmp_path, callbacks=[StopAt(7)])
    assert list(first["step"]) == list(range(1, 8))
    assert load_checkpoint(tmp_path / CHECKPOINT)["step"] == 7            # not the step-5 checkpoint
    assert list(pd.read_csv(tmp_path / "history.csv")["step"]) == list(range(1, 8))
    # a resume continues from step 7 (your callback's state is yours: this one stops again after one step)
    again = train(steps=12, checkpoint_every=5, checkpoint_dir=tmp_path, resume=True, callbacks=[StopAt(7)])
    assert list(again["step"]) == list(range(1, 9))
    assert again["total"].iloc[:7].tolist() == first["total"].tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(val_split=None), r"select='au/mean_auc' needs val_split"),
    (dict(select=None, patience=2), "patience=2 needs select"),
    (dict(select="au"), "select must be '<task>/<metric>'"),
    (dict(select="va/mean_ccc"), r"unknown task 'va'; the tasks are \['expr', 'au'\]"),
    (dict(select="affect/au/mean_auc"), r"no validation rows of 'affect' label task 'au'.*\['aus'\]"),
    (dict(select_mode="best"), "select_mode must be 'max' or 'min'"),
    (dict(val_split="test"), r"val_split='test': none of the training sources \['affect', 'aus'\] has rows"),
    (dict(select="au/mean_f2"), r"no such validation score; there are \[.*'au/mean_auc', 'au/mean_f1'"),
])
def test_bad_validation_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(steps=1, **kwargs)


# ----------------------------------------------------------------------------------------------- logging
def test_a_callback_receives_every_row_and_evaluation():
    model = tiny_net(TASKS, widths=WIDTHS)
    seen = Snapshots(model)
    history = train(model, callbacks=[seen], eval_sources=SOURCES, eval_split="train")
    assert [s for s, _ in seen.rows] == list(history["step"]) == [1, 2, 3, 4]
    for (step, row), (_, want) in zip(seen.rows, history.iterrows()):
        assert row["step"] == step and numbers(row) == pytest.approx(numbers(want))
    assert "val/select" in seen.rows[1][1] and "val/select" not in seen.rows[0][1]
    assert [(s, split) for s, split, _ in seen.evaluations] == [(2, "train"), (2, "val"), (4, "train"), (4, "val")]
    assert seen.started == [(0, seen.started[0][1])] and seen.started[0][1]["lr"] == 3e-3
    assert seen.ended[0] is not None and seen.ended[0].attrs["best_step"] in (2, 4)


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = train(tensorboard_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"total", "au", "expr", "dm", "lr", "val/select", "val/aus/au/mean_auc"} <= set(events.Tags()["scalars"])
    total = events.Scalars("total")
    assert [e.step for e in total] == [1, 2, 3, 4]
    assert [e.value for e in total] == pytest.approx(history["total"].tolist(), rel=1e-6)
    selected = history.dropna(subset="val/select")
    assert [e.step for e in events.Scalars("val/select")] == selected["step"].tolist() == [2, 4]
    assert [e.value for e in events.Scalars("val/select")] == pytest.approx(selected["val/select"].tolist(), rel=1e-6)
