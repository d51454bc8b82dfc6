"""Losses of FaceBehaviorNet: masked task losses, the coupling terms registered by name, the total
(docs/method.md#task-losses, docs/method.md#coupling-terms, docs/method.md#the-total-loss).

Sources: P0 = Kollias et al., arXiv 1910.11111 §3; P1 = arXiv 2105.03790 §3; P2 = arXiv 2401.01219 §3.

- ``task``: one masked loss per task kind (cross-entropy, BCE, 1 − CCC);
- ``relatedness``: R as a validated tensor aligned to the tasks, its derived constants kept;
- ``registry``: ``COUPLINGS`` (name -> ``CouplingTerm``) and the ``register`` decorator;
- one module per coupling family, one function per term and direction: ``coannotation`` (``"coann"``),
  ``distribution_matching`` (``"dm"``), ``jensen_shannon`` (``"dm_js"``);
- ``config``: ``LossConfig`` (task weights, terms selected by name with their options) and ``combined_loss``.

Every module of this package is imported with it, so a new coupling term is one module that registers its
functions, plus its test (docs/method.md#adding-a-coupling-term). Value checks read tensors back to the host (a
device sync on CUDA); every public loss runs them unless ``validate=False``: the trainer validates its data and
couplings once at set-up and calls the losses without them.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..study import Coupling
from ..tasks import Task, find_task  # noqa: F401  (importable from here, as from the former module)
from .coannotation import (
    ATTRIBUTE_SETS, COANN_MODES, EMPTY_ROWS, CoannMode, check_prototypical, co_annotation, coann_attr_to_class,
    coann_class_to_attr,
)
from .config import LossConfig, Selected, combined_loss
from .distribution_matching import (
    DIVERGENCES, REDUCTIONS, VARIANTS, distribution_matching, dm_attr_to_class, dm_class_to_attr,
)
from .registry import COUPLINGS, DIRECTIONS, CouplingBatch, CouplingTerm, Direction, coupling_term, register
from .relatedness import coupling_tensor, keep_constants, relatedness_tensor
from .task import ccc, ccc_loss, masked_bce, masked_cross_entropy

for _module in pkgutil.iter_modules(__path__):  # every coupling module registers its terms on import
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ATTRIBUTE_SETS", "COANN_MODES", "COUPLINGS", "DIRECTIONS", "DIVERGENCES", "EMPTY_ROWS", "REDUCTIONS", "VARIANTS",
    "CoannMode", "Coupling", "CouplingBatch", "CouplingTerm", "Direction", "LossConfig", "Selected", "ccc",
    "ccc_loss", "check_prototypical", "co_annotation", "coann_attr_to_class", "coann_class_to_attr",
    "combined_loss", "coupling_tensor", "coupling_term", "distribution_matching", "dm_attr_to_class",
    "dm_class_to_attr", "keep_constants", "masked_bce", "masked_cross_entropy", "register", "relatedness_tensor",
]
