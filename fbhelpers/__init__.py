"""fbhelpers: distribution-matching multi-task learning (FaceBehaviorNet; Kollias, Sharmanska, Zafeiriou) as a
Jupyter-first research kit.

One concept per module: ``tasks`` (task specs), ``relatedness`` (priors, estimates, comparison), ``losses``
(masked task losses, co-annotation, distribution matching), ``models`` (backbones, multi-head net), ``metrics``,
``synthetic`` (twins of every case study), ``batching`` (datasets, image store, multi-source sampler,
augmentation), ``train`` (fit / evaluate / predict), ``experiments`` (the papers' ST vs MT vs coupling
comparison), ``zeroshot``, ``plots``, ``widgets``, ``profiles`` and ``runner`` (notebook set-up, ``record``,
the papermill suite), ``manifest`` (the real datasets), ``source`` (a canonical table + its images). See the README for the public API.
"""
from . import (
    batching, experiments, losses, manifest, metrics, models, plots, profiles, relatedness, runner, source,
    synthetic, tasks, train, widgets, zeroshot,
)
from .runner import record

__version__ = "0.1.0"

__all__ = [
    "batching", "experiments", "losses", "manifest", "metrics", "models", "plots", "profiles", "record",
    "relatedness", "runner", "source", "synthetic", "tasks", "train", "widgets", "zeroshot",
]
