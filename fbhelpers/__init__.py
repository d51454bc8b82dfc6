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
``paths`` (the repository, the notebooks' names, the data root), ``profiles`` (notebook set-up), ``recording``
(``record``, a notebook's model file), ``references`` (recorded numbers against the tests' references), ``report``
(summary.md / summary.html of a run), ``runner`` (the papermill suite), ``manifest`` (checking a data root against
``data_manifest.yaml``). ``fb.record`` and ``fb.study_for`` are shortcuts to ``recording.record`` and
``studies.study_for``. See the README for the public API.

Submodules are imported on first use (``fb.train`` imports :mod:`fbhelpers.train`), so ``import fbhelpers`` does not
import torch; the import rules between modules (which layer may import which) are checked by
``tests/test_layering.py``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__version__ = "0.1.0"

#: The submodules ``fb.<name>`` reaches (every public module of the package); each is imported on first use (PEP 562),
#: so ``import fbhelpers`` is light and the data check (``python -m fbhelpers check-data``) never imports torch.
SUBMODULES: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                                            if not m.name.startswith("_")))

#: Functions ``fb.<name>`` reaches directly, by the module that holds them (imported on first use too).
SHORTCUTS: dict[str, str] = {"record": "recording", "study_for": "studies"}

__all__ = [*SUBMODULES, *SHORTCUTS]


def __getattr__(name: str) -> Any:
    """``fb.<submodule>`` imports that submodule on first use; ``fb.record`` is :func:`fbhelpers.recording.record`,
    ``fb.study_for`` is :func:`fbhelpers.studies.study_for`."""
    if name in SHORTCUTS:
        return getattr(importlib.import_module(f".{SHORTCUTS[name]}", __name__), name)
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's own names, every submodule (imported or not) and the shortcuts."""
    return sorted({*globals(), *__all__})
