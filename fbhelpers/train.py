"""The trainer: ``fit`` one multi-head network on several sources at once, ``evaluate`` it, ``predict`` with it.

P0 §4 / P1 §4 train FaceBehaviorNet end to end on mixed batches from all databases, with the combined objective
of ``losses.combined_loss`` (task losses + co-annotation + distribution matching). The papers give no training
schedule for the coupling study, so optimiser, schedule, augmentation and budget are [choice] parameters.

How ``fit`` is built, in reading order:

1. ``TrainConfig``: every setting of a run besides the model, the data and the loss (optimiser and schedule,
   hardware, evaluation and selection, checkpointing, logging), as one value; ``fit``'s keyword settings are
   overrides of it;
2. ``prepare(...)``: the sources checked, the couplings' R aligned to the tasks' label orders, the run's
   ``settings`` (everything that changes results, as plain values), a ``TrainState`` (model, optimiser,
   scheduler, sampler, augmentation RNG, step, history rows: what training changes and a checkpoint saves,
   restored on resume) and the ``Recipe`` of a step, returned together as a ``Setup``; benchmarks and
   ``experiments`` build their steps with it too;
3. ``train_step(state, recipe)``: one optimisation step on the next mixed batch;
4. fixed points after each step (``_Monitor``): read the losses back into the history, evaluate (``eval_sources``
   on ``eval_split``; the training sources on ``val_split``), then the callbacks (``callbacks.Callback``): the
   best-model selection and early stopping (``callbacks.Selection``), the logging callbacks (e.g.
   ``TensorBoardLogger``) and the checkpoint writer (``checkpoints.Checkpointer``).

Device-agnostic: CPU or CUDA (``device="auto"``), bf16 autocast on CUDA, optional ``channels_last`` and
``torch.compile``. Under ``torchrun`` (``WORLD_SIZE > 1``) the same ``fit`` runs DistributedDataParallel (gloo on
CPU, NCCL on CUDA): each rank draws its own disjoint share of every source's quota; only rank 0 evaluates, writes
checkpoints, history and progress and runs the logging callbacks (the selection and the checkpoint writer
run on every rank, so that all stop together). Checkpoints are written atomically and hold everything
needed to resume the exact same run: ``fit(..., resume=True)`` after a crash ends with the same weights as an
uninterrupted run, and refuses a checkpoint written with other settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from . import batching
from .batching import MultiSourceLoader, TaskDataset, image_files, decode_image, to_device, to_float
from .callbacks import Callback, Selection, TensorBoardLogger
from .checkpoints import Checkpointer, history_frame, rng_state, set_rng_state, write_csv
from .display import show_progress
from .files import plain_data
from .losses import Coupling, LossConfig, combined_loss, coupling_tensor, keep_constants
from .metrics import score_task
from .models import output_probabilities
from .source import Source
from .study import Study
from .tasks import Task


# ----------------------------------------------------------------------------------------------- settings
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


# ----------------------------------------------------------------------------------------------- set-up helpers
def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; anything else as given. ValueError
    for a name torch does not know, or a CUDA device where torch sees none."""
    if str(device) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {str(device)!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available here (use 'cpu' or 'auto')")
    return dev


def _resolve_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device (bf16 autocast), got device {device}")
    return bool(amp)


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


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


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _open_group(world: int, device: str | torch.device, local_rank: int) -> bool:
    """Under torchrun, open the process group (NCCL on CUDA, gloo on CPU) unless open; True when ``fit`` owns it."""
    if world == 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if resolve_device(device, local_rank).type == "cuda" else "gloo")
    return True


def _use_device(device: str | torch.device, local_rank: int) -> torch.device:
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


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
    return plain_data({**options, "quota": sampler.quota, "sources": sampler.sizes, "input_size": input_size,
                       "tasks": [t.name for t in tasks], "loss": dataclasses.asdict(loss_config),
                       "couplings": couplings, "model": spec})


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


def _network(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """The module a step calls: ``model``, wrapped in DistributedDataParallel under torchrun, compiled on request."""
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net


# ----------------------------------------------------------------------------------------------- training state
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


# ----------------------------------------------------------------------------------------------- fixed points
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
        read-backs)."""
        self.losses.flush()
        self._log(state.rows)

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


# ----------------------------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    """What ``prepare`` returns, everything a run of ``train_step`` needs: the ``state`` (restored on resume),
    the step's ``recipe``, the run's ``config``, ``tasks``, training ``datasets``, the aligned ``couplings``, the
    ``settings`` a resume must match (plain values; the checkpoint's ``config``), the ``evaluations``, the
    best-model ``selection`` (or None), the ``callbacks`` this rank calls (the selection first, then the given
    ones and the logging ones on rank 0, then the checkpoint writer), ``rank`` / ``world`` under torchrun.
    ``close()`` (or a ``with`` block) stops the prefetch thread and the process group ``prepare`` opened."""

    state: TrainState
    recipe: Recipe
    config: TrainConfig
    tasks: tuple[Task, ...]
    datasets: dict[str, TaskDataset]
    couplings: list[Coupling]
    settings: dict[str, Any]
    evaluations: list[_Evaluation]
    selection: Selection | None
    callbacks: list[Callback]
    rank: int = 0
    world: int = 1
    own_group: bool = False

    def close(self) -> None:
        self.state.loader.close()
        if self.own_group:
            dist.destroy_process_group()
            self.own_group = False

    def __enter__(self) -> Setup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _config(config: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    return (config or TrainConfig()).replace(**overrides)


def prepare(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    couplings: Sequence[Coupling] | None = None,
    loss_config: LossConfig | None = None,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> Setup:
    """Everything ``fit`` builds before its first step, as a ``Setup`` (arguments as ``fit``'s): the checked
    sources (ValueError before anything is built, see ``fit``), the evaluations and the best-model selection, the
    callbacks, the process group under torchrun, the device, the aligned couplings (validated once, so that the
    steps need not check them), the ``TrainState`` (restored from ``last.pt`` on resume, after the resume guard)
    and the ``Recipe``. ``train_step(setup.state, setup.recipe)`` is then exactly ``fit``'s step; ``close()``
    the setup when done."""
    config = _config(config, overrides)
    rank, world, local_rank = _dist_env()
    srcs, tasks, couplings = _unpack(sources, tasks, couplings)
    loss_config = loss_config or LossConfig()
    config.check()
    datasets = check_sources(srcs, tasks)
    selection = Selection(config.select, config.select_mode, config.patience) if config.select is not None else None
    evaluations = _evaluations(sources, tasks, selection, config)
    logging = [*callbacks, *([TensorBoardLogger(config.tensorboard_dir)] if config.tensorboard_dir else [])]
    options = _options(config, world)
    own_group = _open_group(world, config.device, local_rank)
    state = None
    try:
        # the training state, restored from the checkpoint on resume
        dev = _use_device(config.device, local_rank)
        use_amp = _resolve_amp(config.amp, dev)
        aligned = _align(couplings, tasks, dev, loss_config) if loss_config.coupling_terms() else []
        state = _initial_state(model, datasets, dev, config, rank, world)
        meta = plain_data({"model_spec": _model_spec(model), "input_size": _input_size(srcs),
                           "couplings": _plain_couplings(aligned, tasks)})
        settings = _settings(state, tasks, loss_config, meta["couplings"], meta["input_size"],
                             {**options, "amp": use_amp})
        checkpointer = None if config.checkpoint_dir is None else Checkpointer(
            config.checkpoint_dir, config.checkpoint_every or max(1, config.steps // 10), config.steps, settings,
            meta, rank, selection)
        if config.resume:
            checkpointer.restore(state)
        recipe = Recipe(_network(model, dev, world, config.compile), tasks, aligned, loss_config, dev, use_amp,
                        options["augment"], config.channels_last, config.grad_clip, config.seed, rank,
                        validate=False)
    except BaseException:
        if state is not None:
            state.loader.close()
        if own_group:
            dist.destroy_process_group()
        raise
    every = [*([selection] if selection else []), *logging, *([checkpointer] if checkpointer else [])]
    return Setup(state, recipe, config, tasks, datasets, aligned, settings, evaluations, selection,
                 [c for c in every if rank == 0 or c.all_ranks], rank, world, own_group)


def _evaluations(sources: Study | Mapping[str, Source], tasks: Sequence[Task], selection: Selection | None,
                 config: TrainConfig) -> list[_Evaluation]:
    """The evaluations of ``eval_sources`` on ``eval_split`` and of the training sources on ``val_split``."""
    c = config
    evaluations = [_Evaluation("eval", c.eval_sources, c.eval_split)] if c.eval_sources is not None else []
    if c.val_split:
        val = _val_sources(sources, c.val_split)
        if selection is not None:
            selection.check(val, tasks)
        evaluations.append(_Evaluation("val", val, c.val_split))
    return evaluations


# ----------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    couplings: Sequence[Coupling] | None = None,
    loss_config: LossConfig | None = None,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> pd.DataFrame:
    """Train ``model`` on mixed multi-source batches with ``combined_loss`` (P0 §4, P1 §4); returns the history.

    Settings: ``config`` (a ``TrainConfig``, default ``TrainConfig()``) with keyword ``overrides`` of its fields
    (``fit(model, study, steps=600, lr=1e-3)``; an unknown name is refused, listing the valid ones).

    ``sources``: name -> ``Source`` (their ``train`` split is used) or a ``Study`` (its train split, tasks and
    couplings unless given). Every step takes ``quota`` rows from each source (int or per-source dict; per rank
    under DDP, so the global batch is ``world_size * sum(quota)``), so every loss term is present in every step.
    Refused before training (ValueError naming them): empty sources, sources without any label, tasks without
    any source, sources with different image sizes. Loss: ``loss_config`` (default ``LossConfig()``) over
    ``couplings``.

    [choice] defaults: AdamW (``optimizer="sgd"``: momentum 0.9, Nesterov), weight decay on all parameters,
    ``schedule="cosine"`` with linear warm-up over ``warmup_steps`` (default 5 % of ``steps``; ``"constant"``
    keeps lr after warm-up; ``"onecycle"`` is torch's OneCycleLR with the warm-up as its rising phase),
    gradient-norm clipping at ``grad_clip``, augmentation ``batching.augment`` (True = its defaults, a dict =
    its keyword arguments, False = off). ``amp="auto"``: bf16 autocast on CUDA only (losses in float32).
    ``channels_last`` (faster convolutions on recent GPUs and often on CPU) and ``compile`` (``torch.compile``)
    change speed, not results beyond floating-point rounding. ``sample_weights``: per-row sampling weights of
    some sources (see ``MultiSourceSampler``). ``prefetch``: batches gathered ahead in a thread (default 2 on
    CUDA, 0 on CPU).

    The sample sequence, the augmentation and dropout randomness are pure functions of (``seed``, step, rank),
    so a run is reproducible on CPU and a resumed run replays it exactly. ``checkpoint_dir``: ``last.pt`` every
    ``checkpoint_every`` steps (default ``steps // 10``) and at the end, plus ``history.csv`` (and ``best.pt``
    when selecting). ``last.pt`` also holds ``model_spec`` (``model.spec()`` or None), ``input_size`` ([H, W]),
    ``couplings`` (the aligned R: class / attribute task and label names, values as lists) and ``best`` (the
    selection state). ``resume=True`` continues from ``last.pt`` when it exists and refuses (ValueError listing
    saved vs now) a checkpoint written with other settings: steps, quota, seed, world size, optimiser, lr, weight
    decay, schedule, warm-up, grad_clip, augmentation, sample weights (a digest), sources and sizes, image size,
    tasks, loss settings, couplings' R, the model spec (or parameter shapes) and the validation settings.

    Evaluation every ``eval_every`` steps and at the end (rank 0): ``eval_sources`` scored with ``evaluate`` on
    ``eval_split`` (columns ``eval/<source>/<task>/<metric>``); with ``val_split`` (e.g. ``"val"``) the training
    sources are scored on that split (columns ``val/<source>/<task>/<metric>``; ValueError when no source has
    rows there). ``select``: ``"<task>/<metric>"`` (mean over the sources whose validation rows label the task;
    metric names of ``metrics.score_task``, e.g. ``expr/accuracy``, ``au/mean_f1``, ``va/mean_ccc``) or
    ``"<source>/<task>/<metric>"``, higher is better unless ``select_mode="min"``; column ``val/select``, and at
    the end the model holds the weights of the best evaluation (``history.attrs["best_step"]`` and
    ``["best_score"]``; both None without ``select``). ``patience``: stop after that many evaluations without
    improvement. An unknown task / source in ``select`` is refused before training, an unknown metric at the
    first evaluation (listing the scores there are).

    ``callbacks``: ``Callback`` objects called at fixed points on rank 0 (``on_start``, ``on_log`` for every
    history row, ``on_evaluate``, ``on_end``; see ``fbhelpers.callbacks``); ``tensorboard_dir`` adds a
    ``TensorBoardLogger`` there (needs ``tensorboard``). A NaN or infinite loss stops training with an error naming
    the step, the term and the sources. ``sync_every``: steps between reading losses back from the device
    (default 1 on CPU, 25 on CUDA). History: one row per step with ``step`` (completed steps), ``total``, each
    unweighted loss term, ``lr`` and ``images_per_s``; also written to ``history_csv``.
    """
    setup = prepare(model, sources, tasks, couplings, loss_config, config, callbacks=callbacks, **overrides)
    monitor = None
    try:
        for callback in setup.callbacks:
            callback.on_start(setup.state.step, setup.settings)
        monitor = _monitor(setup)
        state, steps = setup.state, setup.config.steps
        while state.step < steps and not monitor.stopped:
            monitor.after_step(state, *train_step(state, setup.recipe))
        monitor.finish(state)
    finally:
        if monitor is not None:
            monitor.losses.bar.close()
        setup.close()
    return _finish(setup)


def _monitor(setup: Setup) -> _Monitor:
    """The fixed points of a run, with rank 0's progress bar (off under ``CI`` unless ``progress``)."""
    from tqdm.auto import tqdm

    state, c, dev = setup.state, setup.config, setup.recipe.device
    show = setup.rank == 0 and show_progress(c.progress)
    bar = tqdm(total=c.steps, initial=state.step, desc="fit", disable=not show or state.step >= c.steps)
    names = state.loader.names
    labelled = {t.name: [n for n in names if setup.datasets[n].labelled[t.name]] for t in setup.tasks}
    images_per_step = setup.world * sum(state.loader.sampler.quota.values())
    sync_every = c.sync_every or (25 if dev.type == "cuda" else 1)
    losses = _LossLog(state.rows, sync_every, images_per_step, setup.world, labelled, names, bar)
    return _Monitor(losses, steps=c.steps, eval_every=c.eval_every, evaluations=setup.evaluations,
                    callbacks=setup.callbacks, tasks=setup.tasks, device=dev, amp=setup.recipe.amp, rank=setup.rank)


def _finish(setup: Setup) -> pd.DataFrame:
    """The model takes the best weights when selecting; the history (``attrs``: ``best_step``, ``best_score``)
    goes to ``history_csv`` (rank 0) and the callbacks' ``on_end``."""
    selection, state = setup.selection, setup.state
    if selection is not None and selection.best_model is not None:
        state.model.load_state_dict(selection.best_model)
    history = history_frame(state.rows)
    history.attrs["best_step"] = selection.best_step if selection is not None else None
    history.attrs["best_score"] = selection.best_score if selection is not None else None
    if setup.rank == 0 and setup.config.history_csv is not None:
        write_csv(history, setup.config.history_csv)
    for callback in setup.callbacks:
        callback.on_end(history)
    return history


# ----------------------------------------------------------------------------------------------- inference
def _eval_batches(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
                  amp: bool, forward) -> list:
    """``forward(x)`` on every batch of uint8 ``(N, H, W, C)`` images (as float ``(B, C, H, W)``), in eval mode and
    without gradients; the model's train / eval mode is restored afterwards."""
    was_training = model.training
    model.eval().to(device)
    outputs = []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                part = images[i:i + batch_size]
                part = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
                x = to_float(part.permute(0, 3, 1, 2).to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs.append(forward(x))
    finally:
        model.train(was_training)
    return outputs


def _outputs(model: nn.Module, images: np.ndarray | torch.Tensor, tasks: Sequence[Task], batch_size: int,
             device: torch.device, amp: bool) -> dict[str, np.ndarray]:
    """Probabilities (multiclass softmax, multilabel sigmoid) or values (regression) for uint8 ``(N, H, W, C)``."""
    def forward(x: torch.Tensor) -> dict[str, np.ndarray]:
        out = model(x)
        probs = {}
        for t in tasks:
            probs[t.name] = output_probabilities(t.kind, out[t.name].float()).cpu().numpy()
        return probs

    chunks = _eval_batches(model, images, batch_size, device, amp, forward)
    return {t.name: np.concatenate([c[t.name] for c in chunks]) for t in tasks}


def evaluate(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    split: str | None = "test",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> pd.DataFrame:
    """Every task scored on every source's ``split`` (None = all rows) where that split has labels for it
    (``docs/method.md#measuring-the-claims``: every task on every test set; metrics of ``metrics.score_task``, P1 §4
    criteria).

    Returns a tidy frame with columns ``source, task, metric, value``.
    """
    srcs, tasks, _ = _unpack(sources, tasks, None, split)
    dev = resolve_device(device)
    use_amp = _resolve_amp(amp, dev)
    records = []
    for k, (name, src) in enumerate(srcs.items()):
        if len(src) == 0:
            continue
        ds = TaskDataset(src, tasks, source_id=k)
        labelled = [t for t in tasks if ds.labelled[t.name]]
        if not labelled:
            continue
        preds = _outputs(model, src.images, labelled, batch_size, dev, use_amp)
        for t in labelled:
            for metric, value in score_task(t, ds.targets[t.name], preds[t.name], ds.masks[t.name]).items():
                records.append((name, t.name, metric, float(value)))
    return pd.DataFrame(records, columns=["source", "task", "metric", "value"])


def predict(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source | pd.DataFrame | str | Path,
    tasks: Sequence[Task] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    size: int | tuple[int, int] | None = None,
    amp: bool | str = False,
    root: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of every task (P1 §4 heads): probabilities ``(N, C)`` (multiclass softmax), ``(N, K)``
    (multilabel sigmoid) or values ``(N, K)`` (regression).

    ``inputs``: uint8 images ``(N, H, W, C)`` (array or tensor), a ``Source``, a canonical table with a
    ``path`` column (relative paths resolved against ``root``; rows in table order), or a folder of face crops
    (files in sorted path order, see ``batching.image_files``). Files are decoded with Pillow, RGB or grey to
    match ``model.in_channels``, and resized to ``size`` (default: the ``input_size`` of a model from
    ``models.load``). ``tasks`` default to ``model.tasks``.
    """
    tasks = tuple(tasks or getattr(model, "tasks", ()))
    if not tasks:
        raise ValueError("predict: give tasks (the model has no .tasks attribute)")
    if isinstance(inputs, Source):
        images = inputs.images
    elif isinstance(inputs, (str, Path, pd.DataFrame)):
        size = size or getattr(model, "input_size", None)
        if size is None:
            raise ValueError("predict: size (the model's input size) is needed to resize images from files "
                             "(a model from models.load knows it)")
        if isinstance(inputs, pd.DataFrame):
            if "path" not in inputs.columns:
                raise ValueError(f"predict: the table has no 'path' column (columns: {list(inputs.columns)})")
            files = [Path(root or ".") / p for p in inputs["path"]]
        else:
            files = image_files(inputs)
        mode = "L" if getattr(model, "in_channels", 3) == 1 else "RGB"
        images = np.stack([decode_image(p, size, mode) for p in files])
    else:
        images = inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"predict: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    return _outputs(model, images, tasks, batch_size, dev, _resolve_amp(amp, dev))


def features(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> np.ndarray:
    """Frozen shared features ``(N, feature_dim)`` (float32) of uint8 images ``(N, H, W, C)`` or a ``Source``: the
    output of the shared layers, before the task heads (P1 §4.6 few-shot probes;
    ``docs/method.md#zero-shot-and-few-shot``). The model is put in eval mode for the pass (BatchNorm running
    statistics, no dropout) and restored afterwards; it needs a ``features(x)`` method (``models.MultiHeadNet``)."""
    if not callable(getattr(model, "features", None)):
        raise ValueError(f"features: {type(model).__name__} has no features(x) method (use models.MultiHeadNet)")
    images = inputs.images if isinstance(inputs, Source) else inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"features: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    chunks = _eval_batches(model, images, batch_size, dev, _resolve_amp(amp, dev),
                           lambda x: model.features(x).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, int(getattr(model, "feature_dim", 0))), np.float32)
    return np.concatenate(chunks)
