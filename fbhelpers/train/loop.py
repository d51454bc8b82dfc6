"""The run: ``prepare`` (everything ``fit`` builds before its first step, as a ``Setup``) and ``fit`` (the steps
and the fixed points after each, then the best weights and the history)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch.distributed as dist
from torch import nn

from ..batching import TaskDataset
from ..callbacks import Callback, Selection, TensorBoardLogger
from ..checkpoints import Checkpointer, history_frame, write_csv
from ..display import show_progress
from ..files import plain_data
from ..losses import Coupling, LossConfig
from ..source import Source
from ..study import Study
from ..tasks import Task
from .config import TrainConfig
from .devices import _dist_env, _network, _open_group, _resolve_amp, _use_device
from .monitor import _Evaluation, _LossLog, _Monitor
from .setup import (
    _align, _initial_state, _input_size, _model_spec, _options, _plain_couplings, _settings, _unpack, _val_sources,
    check_sources,
)
from .step import Recipe, TrainState, train_step


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
