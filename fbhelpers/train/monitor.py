"""The fixed points after every step of ``fit``: the losses read back into the history (``_LossLog``), the
evaluations, and the callbacks called in order (``_Monitor``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter
from typing import Mapping

import torch
import torch.distributed as dist

from ..callbacks import Callback
from ..source import Source
from ..study import Study
from ..tasks import Task
from .evaluation import evaluate
from .step import TrainState


class _LossLog:
    """Per-step loss terms kept on the device and read back into history ``rows`` (``step``, ``total``, each
    term, ``lr``, ``images_per_s``; averaged over ranks) every ``sync_every`` steps or on demand. A non-finite
    loss stops training with an error naming the step, the term and the sources feeding it."""

    def __init__(self, rows: list[dict[str, float]], sync_every: int, images_per_step: int, world: int,
                 labelled: Mapping[str, list[str]], names: list[str], bar) -> None:
        self.rows, self.sync_every, self.images_per_step, self.world = rows, sync_every, images_per_step, world
        self.labelled, self.names, self.bar = labelled, names, bar
        self.pending: list[tuple[int, torch.Tensor, float]] = []
        self.keys: list[str] = []
        self.clock = perf_counter()

    def add(self, step: int, terms: Mapping[str, torch.Tensor], lr: float) -> None:
        self.keys = self.keys or list(terms)
        self.pending.append((step, torch.stack([terms[k] for k in self.keys]), lr))

    def due(self) -> bool:
        return len(self.pending) >= self.sync_every

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack([v for _, v, _ in self.pending])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        now = perf_counter()
        speed = self.images_per_step * len(self.pending) / max(now - self.clock, 1e-9)
        self.clock = now
        for (step, _, lr), vals in zip(self.pending, values.cpu().tolist()):
            terms = dict(zip(self.keys, vals))
            if not all(map(math.isfinite, vals)):
                bad = [k for k in self.keys[1:] if not math.isfinite(terms[k])] or ["total"]
                raise FloatingPointError(
                    f"non-finite loss at step {step}: term {bad[0]!r} = {terms[bad[0]]} (all terms {terms}); "
                    f"sources in the batch feeding it: {self.labelled.get(bad[0], self.names)}"
                )
            self.rows.append({"step": step, **terms, "lr": lr, "images_per_s": speed})
        self.pending.clear()
        self.bar.set_postfix(loss=f"{self.rows[-1]['total']:.4f}", refresh=False)


@dataclass(frozen=True)
class _Evaluation:
    """``evaluate`` of ``sources`` on ``split``, as history columns ``<prefix>/<source>/<task>/<metric>``."""

    prefix: str
    sources: Study | Mapping[str, Source]
    split: str | None


class _Monitor:
    """The fixed points after every step, in order: read the losses back (every ``sync_every`` steps, and before
    anything that reads the history: an evaluation, the last step, a callback's ``needs_history``), evaluate every
    ``eval_every`` steps and at the end (rank 0; the callbacks' ``on_evaluate``, then ``on_evaluated``: the
    best-model selection), pass the new rows to the callbacks' ``on_log``, then their ``on_step_end`` (the
    checkpoint writer)."""

    def __init__(self, losses: _LossLog, *, steps: int, eval_every: int | None, evaluations: list[_Evaluation],
                 callbacks: list[Callback], tasks: tuple[Task, ...], device: torch.device, amp: bool,
                 rank: int) -> None:
        self.losses, self.steps, self.eval_every, self.evaluations = losses, steps, eval_every, evaluations
        self.callbacks, self.shared = callbacks, [c for c in callbacks if c.all_ranks]
        self.tasks, self.device, self.amp, self.rank = tasks, device, amp, rank
        self.logged = len(losses.rows)

    @property
    def stopped(self) -> bool:
        """A callback run on every rank (so that all ranks agree) asked to stop."""
        return any(c.stopped for c in self.shared)

    def after_step(self, state: TrainState, terms: Mapping[str, torch.Tensor], lr: float) -> None:
        done = state.step
        self.losses.add(done, terms, lr)
        evaluating = bool(self.evaluations) and (done == self.steps or bool(self.eval_every)
                                                 and done % self.eval_every == 0)
        wanted = any(c.needs_history(done) for c in self.shared)
        if self.losses.due() or evaluating or wanted or done == self.steps:
            self.losses.flush()
        if evaluating:
            self._evaluate(state)
        self._log(state.rows)
        for callback in self.callbacks:
            callback.on_step_end(state)
        self.losses.bar.update(1)

    def finish(self, state: TrainState) -> None:
        """Read back and log the steps still on the device (after a callback stopped training between two
        read-backs); tell the callbacks when a callback stopped training early."""
        self.losses.flush()
        self._log(state.rows)
        if self.stopped:
            for callback in self.callbacks:
                callback.on_stop(state)

    def _evaluate(self, state: TrainState) -> None:
        step, results = state.step, {}
        if self.rank == 0:
            for ev in self.evaluations:
                scores = evaluate(state.model, ev.sources, self.tasks, split=ev.split, device=self.device,
                                  amp=self.amp)
                state.rows[-1].update({f"{ev.prefix}/{r.source}/{r.task}/{r.metric}": r.value
                                       for r in scores.itertuples()})
                results[ev.prefix] = scores
                for callback in self.callbacks:
                    callback.on_evaluate(step, ev.split, scores)
        for callback in self.callbacks:
            callback.on_evaluated(state, results)

    def _log(self, rows: list[dict[str, float]]) -> None:
        for row in rows[self.logged:]:
            for callback in self.callbacks:
                callback.on_log(row["step"], row)
        self.logged = len(rows)
