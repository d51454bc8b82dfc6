"""A *study*: the sources of one case study, their tasks, the couplings that tie the tasks, and (for a twin) the truth.

docs/method.md: every case study is a set of sources (databases) that each label some of the tasks. The real-data
study builders (``fbhelpers.datasets``) and the synthetic twins (``fbhelpers.synthetic``) both hand the trainer a
``Study`` with the same contract, so a notebook never asks which kind it holds:

- ``relatedness``: the table the coupling uses (a prior, an estimate or, on a twin, the truth);
- ``true_relatedness``: the table the data were drawn from (a twin only; None for real data);
- ``label_groups``: per task, the labels some training source labels and those none does;
- ``roles``: which source is the class (expression) source, the attribute source and the fully labelled test set.

Only a twin can fill ``truth`` (every sample's true labels, even those its source hides) and twin-only ``info``
(e.g. the Bayes-optimal accuracy). This module sits below ``losses``, ``train`` and ``experiments`` so that
nothing downstream imports a data builder.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pandas as pd

from .relatedness import Relatedness
from .source import Source, annotation_coverage
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


@dataclass(frozen=True)
class LabelGroups:
    """The labels of one task that its training sources label (``labelled``) and those they do not
    (``unlabelled``): where coupling has to teach what the labels do not (docs/method.md). Unlabelled means no
    training label at all, except in the identity twin, where it means labelled only by its small co-annotated
    set (one image per identity) and not by the attribute source (:func:`fbhelpers.synthetic.identity_study`)."""

    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...]

    @classmethod
    def split(cls, labels: Sequence[str], labelled: Sequence[str]) -> LabelGroups:
        """``labels`` in their order, split by membership in ``labelled``."""
        known = set(map(str, labelled))
        return cls(tuple(str(a) for a in labels if str(a) in known),
                   tuple(str(a) for a in labels if str(a) not in known))


@dataclass(frozen=True)
class Roles:
    """Which source (a name of ``Study.sources``) plays which part in the questions the notebooks ask.

    ``class_source``: the source of the class task (the expression database; the identity or species images);
    ``attr_source``: the source of the attribute task (the AU database; the attribute images);
    ``full_source``: a test set labelled for every task (Aff-Wild2; the co-annotated set; CelebA; CUB).
    None where the study has no such source (one database that labels everything fills all three with its name).
    """

    class_source: str | None = None
    attr_source: str | None = None
    full_source: str | None = None


def pick_source(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` that is among ``names`` (a study whose optional databases may be absent)."""
    return next((c for c in candidates if c in names), None)


@dataclass
class Study:
    """Sources (name -> ``Source``), their tasks, the task couplings, the coupling's relatedness and the contract
    above (``label_groups``, ``roles``, ``true_relatedness``); ValueError when a role or a group names a source,
    task or label the study does not have."""

    sources: dict[str, Source]
    tasks: tuple[Task, ...]
    couplings: list[Coupling]
    relatedness: Relatedness | None
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    label_groups: dict[str, LabelGroups] = field(default_factory=dict)
    roles: Roles = field(default_factory=Roles)
    true_relatedness: Relatedness | None = None

    def __post_init__(self) -> None:
        for role in fields(Roles):
            name = getattr(self.roles, role.name)
            if name is not None and name not in self.sources:
                raise ValueError(f"roles.{role.name} = {name!r} is not a source of the study "
                                 f"({list(self.sources)})")
        tasks = {t.name: t for t in self.tasks}
        for name, groups in self.label_groups.items():
            if name not in tasks:
                raise ValueError(f"label_groups names task {name!r}; the study's tasks are {list(tasks)}")
            unknown = [a for a in (*groups.labelled, *groups.unlabelled) if a not in tasks[name].labels]
            if unknown:
                raise ValueError(f"label_groups[{name!r}] names labels {unknown} that task {name!r} does not have")

    def split(self, split: str) -> dict[str, Source]:
        """Every source restricted to one split, keyed by source name."""
        return {name: src.subset(split) for name, src in self.sources.items()}

    def groups(self, task: str) -> LabelGroups:
        """The labelled / unlabelled labels of ``task``; KeyError naming the tasks that have groups."""
        if task not in self.label_groups:
            raise KeyError(f"no label groups for task {task!r}; the study has them for {list(self.label_groups)}")
        return self.label_groups[task]

    def only(self, tasks: Sequence[str]) -> Study:
        """The study restricted to ``tasks`` (names) and to the sources whose training split labels one of them,
        sources in their order, without couplings (a single-task baseline on the same data)."""
        keep = tuple(t for t in self.tasks if t.name in tasks)
        coverage = annotation_coverage(self.split("train"), keep).sum(axis=1) > 0
        sources = {name: self.sources[name] for name in coverage.index[coverage]}
        kept = {role.name: getattr(self.roles, role.name) for role in fields(Roles)}
        roles = Roles(**{role: name if name in sources else None for role, name in kept.items()})
        groups = {name: g for name, g in self.label_groups.items() if name in tasks}
        return replace(self, sources=sources, tasks=keep, couplings=[], label_groups=groups, roles=roles,
                       truth={n: t for n, t in self.truth.items() if n in sources})


def label_groups_of(sources: Mapping[str, Source], tasks: Sequence[Task]) -> dict[str, LabelGroups]:
    """``LabelGroups`` of every multi-label task, read off the training splits: a label is labelled when some
    source's training rows carry it (the real-data builders; a twin knows it from its source specifications)."""
    train = [src.table[src.table["split"] == "train"] for src in sources.values()]
    out = {}
    for task in tasks:
        if task.kind == "multilabel":
            known = [c for c in task.labels if any(c in t.columns and t[c].notna().any() for t in train)]
            out[task.name] = LabelGroups.split(task.labels, known)
    return out
