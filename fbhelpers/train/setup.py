"""What ``prepare`` builds a run from: the training sources checked, optimiser and schedule, the augmentation
settings, the couplings' R aligned to the tasks' label orders, the run's ``settings`` (what a resume must match)
and the initial ``TrainState``."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import batching
from ..batching import MultiSourceLoader, TaskDataset
from ..files import plain_data
from ..losses import Coupling, LossConfig, coupling_tensor, keep_constants
from ..source import Source
from ..study import Study
from ..tasks import Task
from .config import TrainConfig
from .step import TrainState


def _unpack(
    sources: Study | Mapping[str, Source], tasks: Sequence[Task] | None, couplings: Sequence[Coupling] | None,
    split: str | None = "train",
) -> tuple[dict[str, Source], tuple[Task, ...], list[Coupling]]:
    if isinstance(sources, Study):
        srcs = sources.split(split) if split else dict(sources.sources)
        return srcs, tuple(tasks or sources.tasks), list(sources.couplings if couplings is None else couplings)
    if tasks is None:
        raise ValueError("tasks must be given when sources is a dict (a Study carries its own)")
    srcs = dict(sources)
    if split:
        srcs = {n: s.subset(split) if "split" in s.table else s for n, s in srcs.items()}
    return srcs, tuple(tasks), list(couplings or ())


def check_sources(sources: Mapping[str, Source], tasks: Sequence[Task]) -> dict[str, TaskDataset]:
    """Datasets of the training sources, refusing (ValueError naming them) empty sources, sources without any
    label of ``tasks`` and tasks no source labels: each would silently train nothing."""
    if not sources:
        raise ValueError("no training sources given")
    empty = [n for n, s in sources.items() if len(s) == 0]
    if empty:
        raise ValueError(f"training sources without rows (in this split): {empty}")
    datasets = {n: TaskDataset(s, tasks, source_id=k) for k, (n, s) in enumerate(sources.items())}
    unlabelled = [n for n, d in datasets.items() if not any(d.labelled.values())]
    if unlabelled:
        raise ValueError(f"sources {unlabelled} carry no label of any task {[t.name for t in tasks]}")
    orphans = [t.name for t in tasks if not any(d.labelled[t.name] for d in datasets.values())]
    if orphans:
        raise ValueError(f"tasks {orphans} are labelled by none of the sources {list(sources)}")
    return datasets


def _optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")


def _scheduler(opt: torch.optim.Optimizer, name: str, steps: int, warmup: int, lr: float):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=min(max(warmup, 1) / steps, 0.99)
        )
    if name not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'constant' or 'onecycle', got {name!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def augment_options(augment: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """``TrainConfig.augment`` as all keyword arguments of ``batching.augment`` (its defaults completed), None
    when off; unknown names refused."""
    if not augment:
        return None
    defaults = {k: p.default for k, p in inspect.signature(batching.augment).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    given = {} if augment is True else dict(augment)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"augment: unknown settings {unknown}; batching.augment takes {sorted(defaults)}")
    return {**defaults, **given}


def _val_sources(sources: Study | Mapping[str, Source], split: str) -> dict[str, Source]:
    """The training sources' ``split`` rows (a source without a ``split`` column has none), empty ones left out;
    ValueError when no source has any."""
    every = sources.sources if isinstance(sources, Study) else sources
    subsets = {n: s.subset(split) for n, s in every.items() if "split" in s.table}
    subsets = {n: s for n, s in subsets.items() if len(s)}
    if not subsets:
        raise ValueError(f"val_split={split!r}: none of the training sources {list(every)} has rows in it")
    return subsets


def _align(couplings: Sequence[Coupling], tasks: Sequence[Task], device: torch.device,
           loss_config: LossConfig) -> list[Coupling]:
    """Every coupling with R as a tensor aligned to its tasks' label orders, on ``device``, validated once per run
    (entries in [0, 1]; the set-up check of each coupling term ``loss_config`` selects), so that the steps need
    not check it again; a private copy, whose derived tensors the losses keep (``losses.keep_constants``)."""
    aligned = []
    for c in couplings:
        ct, at, r = coupling_tensor(c, tasks, torch.zeros((), device=device))
        r = keep_constants(r.clone())
        try:
            loss_config.check_relatedness(r)
        except ValueError as err:
            raise ValueError(f"coupling ({ct.name!r}, {at.name!r}): {err}") from err
        aligned.append(Coupling(ct.name, at.name, r))
    return aligned


def _plain_couplings(aligned: Sequence[Coupling], tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """The checkpoint's ``couplings``: task names, label names and the aligned R as plain lists."""
    labels = {t.name: list(t.labels) for t in tasks}
    return [{"class_task": c.class_task, "attr_task": c.attr_task, "classes": labels[c.class_task],
             "attributes": labels[c.attr_task], "values": c.relatedness.cpu().tolist()} for c in aligned]


def _input_size(sources: Mapping[str, Source]) -> list[int]:
    """``[H, W]`` of the training images; ValueError naming the sizes when sources differ."""
    sizes = {n: tuple(int(v) for v in s.images.shape[1:3]) for n, s in sources.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"training sources have images of different sizes (H, W): {sizes}")
    return list(next(iter(sizes.values())))


def _model_spec(model: nn.Module) -> dict[str, Any] | None:
    """``model.spec()`` (``models.MultiHeadNet``) or None."""
    return model.spec() if callable(getattr(model, "spec", None)) else None


def _digest(weights: Mapping[str, np.ndarray] | None) -> dict[str, str] | None:
    """A short SHA-256 of each source's sample weights (float64), None without weights."""
    if not weights:
        return None
    return {n: hashlib.sha256(np.ascontiguousarray(w, dtype=np.float64).tobytes()).hexdigest()[:16]
            for n, w in sorted(weights.items())}


def _settings(state: TrainState, tasks: Sequence[Task], loss_config: LossConfig,
              couplings: list[dict[str, Any]], input_size: list[int], options: Mapping[str, Any]) -> dict[str, Any]:
    """Everything that changes a run's results, as plain values: ``options`` (fit's scalar settings) plus quota,
    source sizes, image size, tasks, loss settings, aligned couplings and the model spec (or its parameter names
    and shapes). Saved as the checkpoint's ``config``; a resume must match it."""
    model = state.model
    spec = _model_spec(model) or {"parameters": [[n, list(p.shape)] for n, p in model.named_parameters()]}
    sampler = state.loader.sampler
    loss = dataclasses.asdict(loss_config)
    if not loss["couplings"]:  # the settings of runs that select no registered term by name stay as they were
        del loss["couplings"]
    return plain_data({**options, "quota": sampler.quota, "sources": sampler.sizes, "input_size": input_size,
                       "tasks": [t.name for t in tasks], "loss": loss, "couplings": couplings, "model": spec})


def _options(config: TrainConfig, world: int) -> dict[str, Any]:
    """The scalar settings of ``config`` that change results (part of the run's ``settings``)."""
    c = config
    return {"steps": c.steps, "seed": c.seed, "world_size": world, "optimizer": c.optimizer, "lr": c.lr,
            "weight_decay": c.weight_decay, "schedule": c.schedule, "grad_clip": c.grad_clip, "warmup": c.warmup,
            "augment": augment_options(c.augment), "sample_weights": _digest(c.sample_weights),
            "val_split": c.val_split, "select": c.select, "select_mode": c.select_mode, "patience": c.patience,
            "eval_every": c.eval_every if c.val_split else None}


def _initial_state(model: nn.Module, datasets: Mapping[str, TaskDataset], device: torch.device,
                   config: TrainConfig, rank: int, world: int) -> TrainState:
    """The model on ``device`` in train mode, a fresh optimiser and schedule, the multi-source loader at step 0
    (``prefetch`` default: 2 on CUDA, 0 on CPU)."""
    c = config
    model.to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = _optimizer(model.parameters(), c.optimizer, c.lr, c.weight_decay)
    sched = _scheduler(opt, c.schedule, c.steps, c.warmup, c.lr)
    prefetch = (2 if device.type == "cuda" else 0) if c.prefetch is None else c.prefetch
    loader = MultiSourceLoader(datasets, c.quota, seed=c.seed, rank=rank, world_size=world,
                               weights=c.sample_weights, prefetch=prefetch, pin_memory=device.type == "cuda")
    return TrainState(model, opt, sched, loader)
