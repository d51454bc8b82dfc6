"""Tiny sources and networks shared by the tests (docs/testing.md#shared-fixtures).

Plain functions rather than fixtures: tests call them with their own sizes and seeds, at module level and inside
module-scoped fixtures, and the subprocess scripts of the trainer and DDP tests import them (``tests/`` on their
``PYTHONPATH``). Each draws from its own seeded generator, so a test's values do not depend on what ran before.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from fbhelpers.losses import Coupling, LossConfig
from fbhelpers.models import MultiHeadNet
from fbhelpers.source import Source
from fbhelpers.tasks import AUS, FACE_TASKS, Task

# The block sources' expression -> AU table: AU j is on for class c where BLOCK_R[c, j] == 1.
BLOCK_R = (np.random.default_rng(42).random((7, 17)) < 0.5).astype(np.float32)


def tiny_net(tasks: Sequence[Task] = FACE_TASKS, seed: int = 0, widths: tuple[int, ...] = (4, 4, 4, 4),
             **options) -> MultiHeadNet:
    """A ``cnn4`` MultiHeadNet drawn after ``torch.manual_seed(seed)``; ``options`` go to MultiHeadNet."""
    torch.manual_seed(seed)
    return MultiHeadNet(tuple(tasks), "cnn4", widths=widths, **options)


def blank_source(name: str, table: pd.DataFrame, size: int = 4, channels: int = 1) -> Source:
    """``table`` as a source whose images are all black (for tests of labels, not pixels)."""
    return Source(name, table, np.zeros((len(table), size, size, channels), np.uint8))


def gappy_source(name: str, n: int, *, expr: bool = True, au: bool = True, va: bool = False, seed: int = 0,
                 size: int = 8) -> Source:
    """Random face labels with gaps, all training rows: every third expression missing, AU1-AU10 (the first five
    AUs) missing on rows 1, 5, 9, ...; random RGB noise images."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"split": ["train"] * n, "source": [name] * n})
    if expr:
        codes = rng.integers(0, 7, n).astype(object)
        codes[::3] = None
        table["expr"] = pd.array(codes, dtype="Int64")
    if au:
        vals = rng.integers(0, 2, (n, len(AUS))).astype(float)
        vals[1::4, :5] = np.nan
        for j, a in enumerate(AUS):
            table[a] = vals[:, j]
    if va:
        table["valence"] = rng.uniform(-1, 1, n)
        table["arousal"] = rng.uniform(-1, 1, n)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Source(name, table, images)


def block_source(name: str, labels: Sequence[str], seed: int, splits: dict[str, int], size: int = 24,
                 inverted_aus: str | None = None) -> Source:
    """A learnable face-like source: class c is a bright block at one of 7 places (so no flip augmentation); its
    AUs are ``BLOCK_R[c]`` (inverted on the rows of split ``inverted_aus``), VA a noisy function of c.
    ``labels``: which of "expr", "au", "va" the source carries; ``splits``: rows per split, in order."""
    n = sum(splits.values())
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    for i, c in enumerate(y):
        r0, c0 = 2 + 3 * (c % 4), 2 + 8 * (c // 4)
        images[i, r0:r0 + 6, c0:c0 + 8, c % 3] = 230
    split = np.repeat(list(splits), list(splits.values()))
    table = pd.DataFrame({"split": split})
    if "expr" in labels:
        table["expr"] = pd.array(y, dtype="Int64")
    if "va" in labels:
        table["valence"] = np.clip((y - 3) / 3.5 + rng.normal(0, 0.05, n), -1, 1)
        table["arousal"] = np.clip(np.cos(y) + rng.normal(0, 0.05, n), -1, 1)
    if "au" in labels:
        au = BLOCK_R[y].astype(float)
        if inverted_aus is not None:
            au[split == inverted_aus] = 1 - au[split == inverted_aus]
        for j, a in enumerate(AUS):
            table[a] = au[:, j]
    return Source(name, table, images)


def block_study(n: int = 160) -> tuple[MultiHeadNet, dict[str, Source], list[Coupling], LossConfig]:
    """Two block sources (affect: expression + VA; aus: AUs), 75 % train / 25 % test, a cnn4 8-16-16-32 net drawn
    after seed 0, the BLOCK_R coupling and DM class -> attribute: ``fit(model, sources, FACE_TASKS, couplings,
    config, ...)`` learns every task in a few dozen steps."""
    splits = {"train": int(0.75 * n), "test": n - int(0.75 * n)}
    sources = {"affect": block_source("affect", ("expr", "va"), 1, splits),
               "aus": block_source("aus", ("au",), 2, splits)}
    model = tiny_net(widths=(8, 16, 16, 32))
    return model, sources, [Coupling("expr", "au", torch.from_numpy(BLOCK_R))], LossConfig(dm="class_to_attr")
