"""Task specs: what each head predicts and which table columns hold its labels.

A *task* is one output head of the multi-task network (docs/method.md#tasks, P1 §3):

- ``multiclass``: one softmax over ``labels``; the table holds one integer column named ``task.name``
  (pandas ``Int64``, ``<NA>`` = missing) with codes ``0..len(labels)-1``.
- ``multilabel``: one sigmoid per label; the table holds one float column per label (0/1, NaN = missing).
- ``regression``: one real value per label; one float column per label (NaN = missing).

The canonical face tasks use the orders of docs/method.md#tasks; every dataset loader maps its own codes onto them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["multiclass", "multilabel", "regression"]
KINDS: tuple[str, ...] = ("multiclass", "multilabel", "regression")

EXPRESSIONS: tuple[str, ...] = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
AUS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26",
)
VA_LABELS: tuple[str, ...] = ("valence", "arousal")


@dataclass(frozen=True)
class Task:
    """One prediction task: ``name`` (also the output key of the model), ``kind`` and ordered ``labels``."""

    name: str
    kind: Kind
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.labels:
            raise ValueError(f"Task {self.name!r}: needs at least one label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Task {self.name!r}: duplicate label names in {self.labels}")
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))  # numpy str -> str

    @property
    def n_outputs(self) -> int:
        """Width of the head: number of classes, attributes or regression targets."""
        return len(self.labels)

    @property
    def columns(self) -> tuple[str, ...]:
        """Table columns holding this task's labels (one code column for multiclass, one per label otherwise)."""
        return (self.name,) if self.kind == "multiclass" else self.labels


EXPR = Task("expr", "multiclass", EXPRESSIONS)
AU = Task("au", "multilabel", AUS)
VA = Task("va", "regression", VA_LABELS)
FACE_TASKS: tuple[Task, ...] = (EXPR, AU, VA)


def classification_task(name: str, labels: list[str] | tuple[str, ...]) -> Task:
    """A multiclass task, e.g. ``classification_task("species", names)``."""
    return Task(name, "multiclass", tuple(labels))


def attribute_task(name: str, labels: list[str] | tuple[str, ...]) -> Task:
    """A multilabel task, e.g. ``attribute_task("attr", celeba_attribute_names)``."""
    return Task(name, "multilabel", tuple(labels))


def find_task(tasks: list[Task] | tuple[Task, ...], name: str) -> Task:
    """The task called ``name``; a clear error listing the known names otherwise."""
    for task in tasks:
        if task.name == name:
            return task
    raise KeyError(f"no task named {name!r}; tasks are {[t.name for t in tasks]}")
