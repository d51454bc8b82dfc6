"""The trainer's real step for benchmarks: generated sources with a class task and an attribute task tied by a
relatedness R of a chosen size, and ``train.train_step`` built by ``train.prepare``, as ``train.fit`` builds it
(set-up, state, recipe), so a benchmark times or instruments exactly what ``fit`` runs every step."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..losses import Coupling, LossConfig
from ..models import MultiHeadNet
from ..relatedness import prior
from ..source import Source
from ..tasks import AU, EXPR, VA, Task, attribute_task, classification_task
from ..train import TrainConfig, TrainState, prepare, train_step

# The coupling sizes benchmarked: faces (7 expressions x 17 AUs, DU's table), 40 identities x 40 attributes
# (CelebA-like), 200 species x 312 attributes (CUB-like).
SIZES: dict[str, tuple[int, int]] = {"7x17": (7, 17), "40x40": (40, 40), "200x312": (200, 312)}


@dataclass
class Case:
    """Training sources, tasks and couplings of one coupling size."""

    name: str
    sources: dict[str, Source]
    tasks: tuple[Task, ...]
    couplings: list[Coupling]


def coupled_case(n_classes: int, n_attrs: int, *, n: int = 96, size: int = 48, seed: int = 0) -> Case:
    """Two sources of ``n`` random ``size`` px images: one labels the class task, the other the attribute task
    (so co-annotation has work in both directions). 7 x 17 is the face case (expr / au / va, DU's table);
    other sizes get a class and an attribute task and a random sparse R (20 % of the entries in (0, 1], a few
    prototypical 1s, the first row empty as a neutral class)."""
    rng = np.random.default_rng(seed)
    if (n_classes, n_attrs) == (7, 17):
        tasks, rel = (EXPR, AU, VA), prior("du2014_basic")
        r = np.asarray(rel.matrix(EXPR.labels, AU.labels), dtype=np.float64)
    else:
        cls = classification_task("cls", [f"c{i}" for i in range(n_classes)])
        att = attribute_task("att", [f"a{j}" for j in range(n_attrs)])
        tasks = (cls, att)
        r = rng.random((n_classes, n_attrs)) * (rng.random((n_classes, n_attrs)) < 0.2)
        r[rng.random((n_classes, n_attrs)) < 0.02] = 1.0
        r[0] = 0.0
        rel = torch.tensor(r, dtype=torch.float32)
    ct, at = tasks[0], tasks[1]

    def source(name: str, labels: str) -> Source:
        y = rng.integers(0, n_classes, n)
        columns: dict[str, Any] = {"split": ["train"] * n}
        if labels == "class":
            columns[ct.name] = pd.array(y, dtype="Int64")
            if len(tasks) > 2:
                columns.update({label: rng.uniform(-1, 1, n) for label in tasks[2].labels})
        else:
            attrs = (rng.random((n, n_attrs)) < r[y]).astype(np.float64)
            columns.update({label: attrs[:, j] for j, label in enumerate(at.labels)})
        table = pd.DataFrame(columns)
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        return Source(name, table, images)

    sources = {"classes": source("classes", "class"), "attributes": source("attributes", "attrs")}
    return Case(f"{n_classes}x{n_attrs}", sources, tasks, [Coupling(ct.name, at.name, rel)])


def bench_model(tasks: tuple[Task, ...], seed: int = 0, backbone: str = "cnn4", **backbone_kw: Any) -> MultiHeadNet:
    """A ``MultiHeadNet`` over ``tasks``; by default the CPU demo's network (``benchmarks/compare_coupling.py``):
    a narrow cnn4 (8-16-32-64) with a 3 x 3 layout before the heads."""
    torch.manual_seed(seed)
    if backbone == "cnn4" and not backbone_kw:
        backbone_kw = {"widths": (8, 16, 32, 64), "pool": 3}
    return MultiHeadNet(tasks, backbone, **backbone_kw)


def trainer_step(model: MultiHeadNet, case: Case, loss: LossConfig, *, device: str = "cpu", quota: int = 24,
                 validate: bool = False, augment: dict[str, Any] | None = None, channels_last: bool = True,
                 amp: bool = False, seed: int = 0) -> tuple[Callable[[], dict[str, torch.Tensor]], TrainState]:
    """``(step, state)``: ``step()`` runs ``train.train_step`` once on a deep copy of ``model`` (its own optimiser,
    schedule and loader, set up as ``fit`` does; constant learning rate) and returns its loss terms.
    ``validate=True`` switches the losses' per-call value checks back on (the public default of the loss
    functions; ``fit`` validates once at set-up and runs without them). ``amp``: bf16 autocast (CUDA only)."""
    config = TrainConfig(steps=10 ** 9, quota=quota, seed=seed, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                         schedule="constant", warmup_steps=0, grad_clip=5.0, augment=augment or False, device=device,
                         amp=amp, channels_last=channels_last, progress=False)
    setup = prepare(copy.deepcopy(model), case.sources, case.tasks, case.couplings, loss, config)
    state, recipe = setup.state, dataclasses.replace(setup.recipe, validate=validate)

    def step() -> dict[str, torch.Tensor]:
        return train_step(state, recipe)[0]

    return step, state
