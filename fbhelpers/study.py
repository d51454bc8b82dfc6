"""A *study*: the sources of one case study, their tasks, the couplings that tie the tasks, and (for a twin) the truth.

METHOD.md §1, §5: every case study is a set of sources (databases) that each label some of the tasks. The real-data
study builders (``fbhelpers.datasets``) and the synthetic twins (``fbhelpers.synthetic``) both hand the trainer a
``Study``; only a twin can fill ``truth`` (every sample's true labels, even those its source hides) and twin-only
``info`` (e.g. the Bayes-optimal accuracy). This module sits below ``losses``, ``train`` and ``experiments`` so
that nothing downstream imports a data builder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .relatedness import Relatedness
from .source import Source
from .tasks import Task


@dataclass
class Coupling:
    """A class task and an attribute task tied by a relatedness R (classes x attributes) (P0 §3, P1 §3, P2 §3).

    ``relatedness`` is a ``Relatedness`` (aligned to the tasks' label orders by ``losses.combined_loss``) or a plain
    ``(C, K)`` tensor already in the tasks' orders.
    """

    class_task: str
    attr_task: str
    relatedness: Any


@dataclass
class Study:
    """Sources (name -> ``Source``), their tasks, the task couplings and the relatedness that ties them."""

    sources: dict[str, Source]
    tasks: tuple[Task, ...]
    couplings: list[Coupling]
    relatedness: Relatedness
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str) -> dict[str, Source]:
        """Every source restricted to one split, keyed by source name."""
        return {name: src.subset(split) for name, src in self.sources.items()}
