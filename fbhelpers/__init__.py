"""fbhelpers: distribution-matching multi-task learning (FaceBehaviorNet; Kollias, Sharmanska, Zafeiriou) as a
Jupyter-first research kit.

One concept per module: ``files`` (atomic writes, plain data for ``weights_only`` files), ``tasks`` (task specs),
``relatedness`` (priors, estimates, comparison), ``source`` (a canonical table + its images), ``study`` (the sources
of a case study and their couplings), ``datasets`` (loaders of the real databases, the packed image cache, the
real-data study builders), ``synthetic`` (twins of every case study), ``losses`` (masked task losses, co-annotation,
distribution matching), ``models`` (backbones, multi-head net, model files that rebuild themselves), ``metrics``,
``batching`` (task datasets, multi-source sampler, augmentation), ``train`` (fit / evaluate / predict),
``callbacks`` (fit's logging hooks, TensorBoard, best-model selection with patience), ``checkpoints`` (a run's
files: atomic checkpoints, RNG state, resume), ``inference`` (a saved model's predictions on a user's face crops, as
a table), ``experiments`` (the papers' ST vs MT vs coupling comparison), ``zeroshot``, ``plots``, ``widgets``,
``profiles`` and ``runner`` (notebook set-up, ``record``, the papermill suite), ``manifest`` (checking a data root
against ``data_manifest.yaml``). See the README for the public API.
"""
from . import (
    batching, callbacks, checkpoints, datasets, experiments, files, inference, losses, manifest, metrics, models,
    plots, profiles, relatedness, runner, source, study, synthetic, tasks, train, widgets, zeroshot,
)
from .runner import record

__version__ = "0.1.0"

__all__ = [
    "batching", "callbacks", "checkpoints", "datasets", "experiments", "files", "inference", "losses", "manifest",
    "metrics", "models", "plots", "profiles", "record", "relatedness", "runner", "source", "study", "synthetic",
    "tasks", "train", "widgets", "zeroshot",
]
