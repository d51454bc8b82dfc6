"""What ``train.fit`` does at its fixed points besides training: the ``Callback`` hooks, the logging callbacks
(``TensorBoardLogger``) and the best-model ``Selection`` with early stopping (the checkpoint writer,
``checkpoints.Checkpointer``, is one too).

``fit(..., callbacks=[...])`` takes ``Callback`` objects; ``fit`` calls their methods at fixed points, on rank 0
only under DDP (unless the callback sets ``all_ranks``), and every method is a no-op unless overridden:

- ``on_start(step, settings)``: before the first step (``step`` > 0 on resume; ``settings``: plain values);
- ``on_log(step, row)``: every history row, in step order (the evaluation columns included on evaluation rows);
- ``on_evaluate(step, split, scores)``: every evaluation, tidy ``scores`` (source, task, metric, value);
- ``on_evaluated(state, scores)``: after a step's evaluations, before its rows are logged (``state``: the
  ``train.TrainState``; ``scores``: history prefix, ``"eval"`` / ``"val"``, -> tidy scores, empty off rank 0);
- ``on_step_end(state)``: after every step's fixed points;
- ``on_stop(state)``: training ended early because a callback set ``stopped`` (after the last read-back);
- ``on_end(history)``: after training (not after an error).

A callback with ``all_ranks = True`` runs on every rank; only such a callback may ask for the history to be read
back from the device before its ``on_step_end`` (``needs_history(step)``) or end training (``stopped``), since
every rank must agree. ``Selection`` and ``checkpoints.Checkpointer`` are such callbacks; ``fit`` calls the
selection first and the checkpoint writer last.

``TensorBoardLogger(log_dir)`` (or ``fit(..., tensorboard_dir=...)``) is one: every history column as a scalar,
with the optional ``tensorboard`` package. An experiment tracker is a few lines::

    class Tracker(Callback):
        def on_start(self, step, settings):
            self.run = tracker.init(config=settings)
        def on_log(self, step, row):
            self.run.log(row, step=step)

``Selection`` is ``fit``'s own (``select``, ``select_mode``, ``patience``): it scores every validation
evaluation, keeps the best weights and says when to stop.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from .batching import TaskDataset
from .source import Source
from .tasks import Task


class Callback:
    """Hooks that ``fit(..., callbacks=[...])`` calls at fixed points (rank 0 only under DDP unless
    ``all_ranks``); each is a no-op here, so a subclass overrides only what it needs (see the module docstring).
    ``stopped``: set by an ``all_ranks`` callback to end training after the current step."""

    all_ranks: bool = False
    stopped: bool = False

    def on_start(self, step: int, settings: Mapping[str, Any]) -> None:
        """Before the first step: ``step`` is where training starts (> 0 on resume), ``settings`` the run's
        plain settings (those a resume must match)."""

    def on_log(self, step: int, row: Mapping[str, float]) -> None:
        """Every history row, in step order; an evaluation row holds its ``eval/...`` and ``val/...`` columns."""

    def on_evaluate(self, step: int, split: str | None, scores: pd.DataFrame) -> None:
        """Every evaluation: tidy ``scores`` (source, task, metric, value) on ``split`` after ``step`` steps."""

    def on_evaluated(self, state: Any, scores: Mapping[str, pd.DataFrame]) -> None:
        """After a step's evaluations, before its rows are logged: ``state`` the ``train.TrainState`` (its last
        row is this step's), ``scores`` history prefix (``"eval"``, ``"val"``) -> tidy scores (empty off rank 0)."""

    def needs_history(self, step: int) -> bool:
        """True when ``on_step_end`` after ``step`` reads the history (read back from the device first; only
        asked of an ``all_ranks`` callback)."""
        return False

    def on_step_end(self, state: Any) -> None:
        """After every step's fixed points, with the ``train.TrainState``."""

    def on_stop(self, state: Any) -> None:
        """Training ended before its last step because a callback set ``stopped``: after the last steps were read
        back, with the ``train.TrainState`` (on the ranks this callback runs on)."""

    def on_end(self, history: pd.DataFrame) -> None:
        """After training (not after an error): the whole history, ``attrs`` ``best_step`` and ``best_score``."""


class TensorBoardLogger(Callback):
    """Every history column as a TensorBoard scalar (tag = column name: ``total``, ``lr``, ``val/select``, ...) in
    event files under ``log_dir``. Needs the optional ``tensorboard`` package (``pip install tensorboard``, or the
    ``fbhelpers[tensorboard]`` extra). On resume, the killed run's events from the resumed step on are purged."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(f"TensorBoardLogger needs the tensorboard package (pip install tensorboard): {err}"
                              ) from err
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self.writer = None

    def on_start(self, step: int, settings: Mapping[str, Any]) -> None:
        self.writer = self._writer_class(str(self.log_dir), purge_step=step or None)

    def on_log(self, step: int, row: Mapping[str, float]) -> None:
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar(key, value, step)

    def on_end(self, history: pd.DataFrame) -> None:
        self.writer.close()


class Selection(Callback):
    """Best-model selection on one validation score, ``select``: ``"<task>/<metric>"`` (mean over the sources
    whose validation rows label the task) or ``"<source>/<task>/<metric>"``; ``mode`` "max" (higher is better) or
    "min". Early stopping after ``patience`` evaluations without improvement (None = never). A NaN score never
    improves. The best weights are kept on the CPU. A callback on every rank: rank 0 scores the ``"val"``
    evaluation (history column ``val/select``) and every rank updates with rank 0's score."""

    all_ranks = True

    def __init__(self, select: str, mode: str = "max", patience: int | None = None) -> None:
        parts = select.split("/") if isinstance(select, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"select must be '<task>/<metric>' or '<source>/<task>/<metric>', got {select!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"select_mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and (int(patience) != patience or patience < 1):
            raise ValueError(f"patience must be a whole number of evaluations >= 1 (or None), got {patience!r}")
        self.select, self.mode, self.patience = select, mode, patience
        self.source, self.task, self.metric = parts if len(parts) == 3 else (None, *parts)
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.best_model: dict[str, torch.Tensor] | None = None
        self.waited, self.stopped = 0, False

    def check(self, val_sources: Mapping[str, Source], tasks: Sequence[Task]) -> None:
        """ValueError unless the task exists and the validation rows of some source (the named one) label it."""
        names = [t.name for t in tasks]
        if self.task not in names:
            raise ValueError(f"select {self.select!r}: unknown task {self.task!r}; the tasks are {names}")
        labelling = [n for n, s in val_sources.items() if TaskDataset(s, tasks).labelled[self.task]]
        if not labelling or self.source not in (None, *labelling):
            raise ValueError(f"select {self.select!r}: no validation rows of {self.source or 'any source'!r} label "
                             f"task {self.task!r}; sources whose validation rows do: {labelling}")

    def score(self, scores: pd.DataFrame) -> float:
        """The selection score from ``evaluate``'s tidy scores; ValueError listing the scores there are."""
        keep = (scores["task"] == self.task) & (scores["metric"] == self.metric)
        if self.source is not None:
            keep &= scores["source"] == self.source
        if not keep.any():
            have = (scores["source"] + "/" if self.source else "") + scores["task"] + "/" + scores["metric"]
            raise ValueError(f"select {self.select!r}: no such validation score; there are {sorted(set(have))}")
        return float(scores.loc[keep, "value"].mean())

    def on_evaluated(self, state: Any, scores: Mapping[str, pd.DataFrame]) -> None:
        score = None
        if "val" in scores:
            score = state.rows[-1]["val/select"] = self.score(scores["val"])
        self.update(state.step, _from_rank0(score), state.model)

    def update(self, step: int, score: float, model: nn.Module) -> None:
        """Keep ``model``'s weights when ``score`` beats the best so far; count evaluations without improvement."""
        best = self.best_score
        better = best is None or (score > best if self.mode == "max" else score < best)
        if better and not math.isnan(score):
            self.best_step, self.best_score, self.waited = step, score, 0
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.waited += 1
        self.stopped = self.patience is not None and self.waited >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"select": self.select, "step": self.best_step, "score": self.best_score, "model": self.best_model,
                "waited": self.waited, "stopped": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_step, self.best_score, self.best_model = state["step"], state["score"], state["model"]
        self.waited, self.stopped = int(state["waited"]), bool(state["stopped"])


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank of the open process group (``value`` itself outside DDP)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
