"""The settings of a ``fit`` run besides the model, the data and the loss, as one value: ``TrainConfig``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..source import Source
from ..study import Study


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a ``fit`` run besides the model, the data and the loss, in groups (the defaults are
    [choice]s; ``fit``'s docstring gives each one's meaning). Flat: ``fit(model, study, steps=600, lr=1e-3)``
    and papermill ``-p`` parameters override single fields; ``config.replace(**overrides)`` does the same and
    refuses an unknown name, listing the valid ones.

    - budget and data draw: ``steps``, ``quota`` (rows per source and step), ``seed``, ``sample_weights``;
    - optimiser and schedule: ``optimizer``, ``lr``, ``weight_decay``, ``schedule``, ``warmup_steps``,
      ``grad_clip``, ``augment``;
    - hardware: ``device``, ``amp``, ``channels_last``, ``compile``, ``prefetch``, ``sync_every``;
    - evaluation and best-model selection: ``eval_sources``, ``eval_every``, ``eval_split``, ``val_split``,
      ``select``, ``select_mode``, ``patience``;
    - checkpointing: ``checkpoint_dir``, ``checkpoint_every``, ``resume``;
    - logging: ``progress``, ``history_csv``, ``tensorboard_dir``.
    """

    steps: int = 500
    quota: int | Mapping[str, int] = 32
    seed: int = 0
    sample_weights: Mapping[str, np.ndarray] | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int | None = None
    grad_clip: float | None = 5.0
    augment: bool | Mapping[str, Any] = True
    device: str | torch.device = "auto"
    amp: bool | str = "auto"
    channels_last: bool = False
    compile: bool = False
    prefetch: int | None = None
    sync_every: int | None = None
    eval_sources: Study | Mapping[str, Source] | None = None
    eval_every: int | None = None
    eval_split: str | None = "test"
    val_split: str | None = None
    select: str | None = None
    select_mode: str = "max"
    patience: int | None = None
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    progress: bool | None = None
    history_csv: str | Path | None = None
    tensorboard_dir: str | Path | None = None

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with ``overrides``; TypeError naming an unknown setting and listing the valid ones."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown training settings {unknown}; TrainConfig takes {names}")
        return dataclasses.replace(self, **overrides) if overrides else self

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, by default 5 % of ``steps``."""
        return round(0.05 * self.steps) if self.warmup_steps is None else int(self.warmup_steps)

    def check(self) -> None:
        """ValueError for settings that contradict each other (checked before anything is built)."""
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir")
        if self.select is not None and not self.val_split:
            raise ValueError(f"select={self.select!r} needs val_split (the split it is scored on, e.g. 'val')")
        if self.patience is not None and self.select is None:
            raise ValueError(f"patience={self.patience!r} needs select (the validation score it watches)")
