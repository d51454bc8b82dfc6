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

One module per concern, each importing only those above it: ``config`` (``TrainConfig``); ``devices`` (device,
autocast, torchrun process group); ``step`` (``TrainState``, ``Recipe``, ``train_step``); ``setup`` (the
sources checked, optimiser and schedule, couplings aligned, the resume settings, the initial state);
``evaluation`` (``evaluate``, ``predict``, ``features``); ``monitor`` (the fixed points); ``loop`` (``Setup``,
``prepare``, ``fit``). Every public name is importable from ``fbhelpers.train``.

Device-agnostic: CPU or CUDA (``device="auto"``), bf16 autocast on CUDA, optional ``channels_last`` and
``torch.compile``. Under ``torchrun`` (``WORLD_SIZE > 1``) the same ``fit`` runs DistributedDataParallel (gloo on
CPU, NCCL on CUDA): each rank draws its own disjoint share of every source's quota; only rank 0 evaluates, writes
checkpoints, history and progress and runs the logging callbacks (the selection and the checkpoint writer
run on every rank, so that all stop together). Checkpoints are written atomically and hold everything
needed to resume the exact same run: ``fit(..., resume=True)`` after a crash ends with the same weights as an
uninterrupted run, and refuses a checkpoint written with other settings.
"""
from __future__ import annotations

from .config import TrainConfig
from .devices import resolve_device
from .evaluation import evaluate, features, predict
from .loop import Setup, fit, prepare
from .setup import augment_options, check_sources
from .step import Recipe, TrainState, train_step

__all__ = [
    "Recipe", "Setup", "TrainConfig", "TrainState", "augment_options", "check_sources", "evaluate", "features",
    "fit", "predict", "prepare", "resolve_device", "train_step",
]
