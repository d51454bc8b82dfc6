"""One training step: ``TrainState`` (what training changes and a checkpoint saves), ``Recipe`` (what every step
does, fixed for a run) and ``train_step`` (one optimisation step on the next mixed batch, P0 §4 / P1 §4)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .. import batching
from ..batching import MultiSourceLoader, to_device, to_float
from ..checkpoints import history_frame, rng_state, set_rng_state
from ..losses import Coupling, LossConfig, combined_loss
from ..tasks import Task


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


@dataclass
class TrainState:
    """What training changes and a checkpoint saves: the model, optimiser, learning-rate ``scheduler``, the
    multi-source ``loader`` (its sampler's position), the augmentation RNG ``generator``, the number of completed
    ``step``s and the history ``rows``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: MultiSourceLoader
    generator: torch.Generator = field(default_factory=torch.Generator)
    step: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only (``weights_only`` loading); the global RNGs are saved too."""
        history = history_frame(self.rows)
        return {
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "sampler": self.loader.state_dict(),
            "rng": rng_state(self.generator),
            "history": {"columns": list(history.columns), "rows": history.to_numpy(float).tolist()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` (from ``state_dict``) left off."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["sampler"])
        set_rng_state(state["rng"], self.generator)
        self.rows = [dict(zip(state["history"]["columns"], r)) for r in state["history"]["rows"]]
        for row in self.rows:
            row["step"] = int(row["step"])
        self.step = int(state["step"])


@dataclass(frozen=True)
class Recipe:
    """What every step does, fixed for a run: call ``net`` (the model, DDP-wrapped and/or compiled) and apply
    ``combined_loss`` over ``tasks`` and the aligned ``couplings`` with ``loss``; on ``device`` (bf16 autocast when
    ``amp``), with ``batching.augment(**augment)`` (None = off), ``channels_last`` inputs, gradient-norm clipping
    at ``grad_clip`` (None / 0 = off) and step seeds drawn from (``seed``, step, ``rank``). ``validate``: the losses'
    per-call value checks (on by default, for a hand-built recipe; they are host syncs: ``fit`` validates the
    data, ``batching.task_arrays``, and the couplings, ``_align``, once at set-up and turns them off, so its steps
    make no host sync)."""

    net: nn.Module
    tasks: tuple[Task, ...]
    couplings: list[Coupling]
    loss: LossConfig
    device: torch.device
    amp: bool = False
    augment: Mapping[str, Any] | None = None
    channels_last: bool = False
    grad_clip: float | None = None
    seed: int = 0
    rank: int = 0
    validate: bool = True


def train_step(state: TrainState, recipe: Recipe) -> tuple[dict[str, torch.Tensor], float]:
    """One optimisation step on ``state``'s next mixed batch. Returns the detached loss terms (``total`` first,
    still on the device) and the learning rate used. Dropout and augmentation draw from the step's own seed, so
    a step is a pure function of the state and (seed, step, rank)."""
    dev = recipe.device
    batch = to_device(state.loader.next_batch(), dev, non_blocking=dev.type == "cuda")
    step_seed = _step_seed(recipe.seed, state.step, recipe.rank)
    torch.manual_seed(step_seed)
    state.generator.manual_seed(step_seed)
    x = to_float(batch["image"])
    if recipe.augment is not None:
        x = batching.augment(x, state.generator, **recipe.augment)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=recipe.amp):
        out = recipe.net(x)
    out = {k: v.float() for k, v in out.items()}
    total, terms = combined_loss(out, batch, recipe.tasks, recipe.couplings, recipe.loss, step=state.step,
                                 validate=recipe.validate)
    lr = state.optimizer.param_groups[0]["lr"]
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if recipe.grad_clip:
        nn.utils.clip_grad_norm_(state.model.parameters(), recipe.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    return {"total": total.detach(), **{k: v.detach() for k, v in terms.items()}}, lr
