"""A *study*: the sources of one case study plus the truth a synthetic twin knows (METHOD.md §1, §5).

Real-data loaders and synthetic twins both hand the trainer a ``Study``; only a twin can fill ``truth``
(every sample's true labels, even those its source hides) and ``info`` (e.g. the Bayes-optimal accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..relatedness import Relatedness
from ..source import Source
from ..tasks import Task


@dataclass
class Study:
    """Sources (name -> ``Source``), their tasks, the task couplings and the relatedness that ties them."""

    sources: dict[str, Source]
    tasks: tuple[Task, ...]
    couplings: list  # list[fbhelpers.losses.Coupling]
    relatedness: Relatedness
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, split: str) -> dict[str, Source]:
        """Every source restricted to one split, keyed by source name."""
        return {name: src.subset(split) for name, src in self.sources.items()}
