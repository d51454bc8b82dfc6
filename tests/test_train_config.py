"""The public training set-up: ``TrainConfig`` (flat overrides, unknown names refused), ``prepare`` (the step
``fit`` runs, buildable by benchmarks and experiments), and the callback fixed points that checkpointing and
best-model selection are built on (``all_ranks``, ``needs_history``, ``on_evaluated``, ``on_step_end``,
``stopped``)."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fbhelpers import experiments
from fbhelpers.callbacks import Callback, Selection
from fbhelpers.checkpoints import Checkpointer
from fbhelpers.losses import Coupling, LossConfig
from fbhelpers.models import MultiHeadNet
from fbhelpers.source import Source
from fbhelpers.tasks import AU, AUS, EXPR
from fbhelpers.train import TrainConfig, fit, prepare, train_step

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = (EXPR, AU)
R = (np.random.default_rng(3).random((7, 17)) < 0.4).astype(np.float32)
COUPLINGS = [Coupling("expr", "au", torch.from_numpy(R))]
ROOT = Path(__file__).parents[1]


def source(name: str, labels: str, seed: int, n: int = 48, n_val: int = 16) -> Source:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n + n_val)
    images = rng.integers(0, 255, (n + n_val, 16, 16, 3), dtype=np.uint8)
    table = pd.DataFrame({"split": ["train"] * n + ["val"] * n_val})
    if labels == "expr":
        table["expr"] = pd.array(y, dtype="Int64")
    else:
        for j, a in enumerate(AUS):
            table[a] = R[y, j].astype(float)
    return Source(name, table, images)


SOURCES = {"affect": source("affect", "expr", 1), "aus": source("aus", "au", 2)}
LOSS = LossConfig(dm="class_to_attr")


def net() -> MultiHeadNet:
    torch.manual_seed(0)
    return MultiHeadNet(TASKS, "cnn4", widths=(4, 8, 8, 8))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- TrainConfig
def test_fit_signature_is_short_and_every_setting_is_a_config_field():
    params = inspect.signature(fit).parameters
    assert list(params) == ["model", "sources", "tasks", "couplings", "loss_config", "config", "callbacks",
                            "overrides"]
    fields = {f for f in TrainConfig.__dataclass_fields__}
    assert {"steps", "quota", "lr", "device", "amp", "channels_last", "compile", "prefetch", "sync_every",
            "select", "patience", "checkpoint_dir", "resume", "tensorboard_dir", "history_csv"} <= fields
    assert len(fields) == 30


def test_overrides_replace_fields_and_unknown_names_are_refused():
    base = TrainConfig(steps=7, lr=2e-3)
    assert base.replace(lr=1e-2) == TrainConfig(steps=7, lr=1e-2)
    assert base.replace() is base
    assert TrainConfig(steps=40).warmup == 2 and TrainConfig(steps=40, warmup_steps=0).warmup == 0
    with pytest.raises(TypeError, match=r"unknown training settings \['stepz'\]; TrainConfig takes \['steps', "):
        base.replace(stepz=3)
    with pytest.raises(TypeError, match=r"unknown training settings \['learning_rate'\]"):
        fit(net(), SOURCES, TASKS, steps=1, learning_rate=1e-3)
    with pytest.raises(ValueError, match="patience=2 needs select"):
        fit(net(), SOURCES, TASKS, config=TrainConfig(patience=2))


def test_config_and_keyword_form_train_the_same_weights():
    kwargs = dict(steps=3, quota=4, lr=3e-3, seed=2, augment={"flip": False}, progress=False, device="cpu")
    by_keyword, by_config, overridden = net(), net(), net()
    h1 = fit(by_keyword, SOURCES, TASKS, COUPLINGS, LOSS, **kwargs)
    h2 = fit(by_config, SOURCES, TASKS, COUPLINGS, LOSS, TrainConfig(**kwargs))
    h3 = fit(overridden, SOURCES, TASKS, COUPLINGS, LOSS, TrainConfig(**{**kwargs, "steps": 9, "seed": 5}),
             steps=3, seed=2)
    assert same(weights(by_keyword), weights(by_config)) and same(weights(by_keyword), weights(overridden))
    cols = ["step", "total", "expr", "au", "dm", "lr"]
    assert h1[cols].to_numpy().tolist() == h2[cols].to_numpy().tolist() == h3[cols].to_numpy().tolist()


# ----------------------------------------------------------------------------------------------- prepare
def test_prepare_and_train_step_are_fits_step():
    """A loop over ``train_step(setup.state, setup.recipe)`` ends with fit's weights, bit for bit."""
    config = TrainConfig(steps=4, quota=4, lr=3e-3, seed=1, progress=False, device="cpu")
    fitted = net()
    fit(fitted, SOURCES, TASKS, COUPLINGS, LOSS, config)
    with prepare(net(), SOURCES, TASKS, COUPLINGS, LOSS, config) as setup:
        assert setup.callbacks == [] and setup.selection is None and not setup.recipe.validate
        assert [c.class_task for c in setup.couplings] == ["expr"]
        assert torch.equal(setup.couplings[0].relatedness, torch.from_numpy(R))
        assert setup.settings["steps"] == 4 and setup.settings["loss"]["dm"] == "class_to_attr"
        totals = [float(train_step(setup.state, setup.recipe)[0]["total"]) for _ in range(4)]
        assert setup.state.step == 4
        assert same(weights(setup.state.model), weights(fitted))
    assert all(np.isfinite(totals))


def test_prepare_orders_the_callbacks_and_restores_on_resume(tmp_path):
    class Logger(Callback):
        pass

    config = TrainConfig(steps=4, quota=4, progress=False, device="cpu", val_split="val", select="expr/accuracy",
                         eval_every=2, checkpoint_dir=tmp_path, checkpoint_every=2)
    logger = Logger()
    fit(net(), SOURCES, TASKS, COUPLINGS, LOSS, config.replace(steps=2))  # a shorter run: settings differ
    with pytest.raises(ValueError, match=r"other settings \(saved vs now\): steps: 2 vs 4"):
        prepare(net(), SOURCES, TASKS, COUPLINGS, LOSS, config, resume=True)
    fit(net(), SOURCES, TASKS, COUPLINGS, LOSS, config)
    with prepare(net(), SOURCES, TASKS, COUPLINGS, LOSS, config, callbacks=[logger], resume=True) as setup:
        kinds = [type(c) for c in setup.callbacks]
        assert kinds == [Selection, Logger, Checkpointer] and setup.callbacks[0] is setup.selection
        assert setup.state.step == 4 and len(setup.state.rows) == 4
        assert setup.selection.best_step in (2, 4)


def test_no_module_outside_train_imports_a_private_trainer_name():
    """Benchmarks and experiments build their steps from the public set-up (``prepare``, ``augment_options``)."""
    offenders = []
    for path in [*(ROOT / "fbhelpers").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        if path.parent == ROOT / "fbhelpers" / "train":  # the package's own modules share its private names
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and "train" in (node.module or "").split("."):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and "train" in ast.unparse(node.value).split(".")):
                offenders.append(f"{path.name}: {ast.unparse(node)}")
    assert offenders == []


# ----------------------------------------------------------------------------------------------- callback points
class StopAt(Callback):
    """Ends training after ``step``; records the rows each ``on_step_end`` sees."""

    def __init__(self, step: int, all_ranks: bool = True, history: int | None = None) -> None:
        self.step, self.all_ranks, self.history, self.seen = step, all_ranks, history, []

    def needs_history(self, step: int) -> bool:
        return step == self.history

    def on_step_end(self, state) -> None:
        self.seen.append((state.step, len(state.rows)))
        self.stopped = state.step >= self.step


def test_an_all_ranks_callback_stops_training_and_gets_the_history_read_back():
    stop = StopAt(3, history=2)
    history = fit(net(), SOURCES, TASKS, COUPLINGS, LOSS, steps=6, quota=4, progress=False, device="cpu",
                  sync_every=10, callbacks=[stop])
    assert list(history["step"]) == [1, 2, 3]
    # rows are read back every 10 steps, so only at step 2 (needs_history) and at the end of the loop
    assert stop.seen == [(1, 0), (2, 2), (3, 2)]


def test_a_rank0_callback_can_neither_stop_nor_force_a_read_back():
    """Only a callback run on every rank may stop training or ask for the history (every rank must agree)."""
    stop = StopAt(1, all_ranks=False, history=1)
    history = fit(net(), SOURCES, TASKS, COUPLINGS, LOSS, steps=3, quota=4, progress=False, device="cpu",
                  sync_every=10, callbacks=[stop])
    assert list(history["step"]) == [1, 2, 3]
    assert stop.seen == [(1, 0), (2, 0), (3, 3)]


def test_selection_scores_the_val_evaluation_through_on_evaluated():
    class Seen(Callback):
        def __init__(self):
            self.scored = []

        def on_evaluated(self, state, scores):
            self.scored.append((state.step, sorted(scores), "val/select" in state.rows[-1]))

    seen = Seen()
    history = fit(net(), SOURCES, TASKS, COUPLINGS, LOSS, steps=4, quota=4, progress=False, device="cpu",
                  val_split="val", select="au/mean_auc", eval_every=2, eval_sources=SOURCES, eval_split="val",
                  callbacks=[seen])
    # the selection (called first) has written val/select before the other callbacks' on_evaluated
    assert seen.scored == [(2, ["eval", "val"], True), (4, ["eval", "val"], True)]
    best = history["val/select"].dropna()
    assert history.attrs["best_score"] == pytest.approx(best.max(), rel=1e-12)
    assert history.attrs["best_step"] == int(history.loc[best.idxmax(), "step"])


# ----------------------------------------------------------------------------------------------- experiments
def test_comparison_training_defaults():
    """The comparison's budget stays what compare_coupling / fit_variant declared before (800 steps, lr 5e-3)."""
    assert experiments.TRAINING == TrainConfig(steps=800, lr=5e-3)
