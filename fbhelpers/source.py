"""A *source*: one labelled image collection (a dataset or a synthetic twin's part) in the canonical layout.

docs/design.md#data-flow: every loader and every synthetic generator produces a canonical table (one row per image,
``split``, ``source`` and one column per label, NaN / ``<NA>`` = missing) plus uint8 images; everything
downstream (batching, training, evaluation) works on ``Source`` objects and never on dataset-specific files.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Source:
    """``table`` row ``i`` (positional) describes ``images[i]``; images are uint8 ``(N, H, W, C)``: a numpy array or
    a lazy array-like with a ``take(index)`` method (``fbhelpers.datasets.cache.CachedImages``)."""

    name: str
    table: pd.DataFrame
    images: np.ndarray

    def __post_init__(self) -> None:
        self.table = self.table.reset_index(drop=True)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"source {self.name!r}: images must be uint8 of shape (N, H, W, C), "
                f"got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.table):
            raise ValueError(
                f"source {self.name!r}: {len(self.table)} table rows but {len(self.images)} images"
            )
        if "split" in self.table:
            bad = sorted(set(self.table["split"].dropna()) - set(SPLITS))
            if bad:
                raise ValueError(f"source {self.name!r}: unknown split values {bad}; expected {SPLITS}")

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, split: str) -> "Source":
        """The rows of one split (``train``, ``val`` or ``test``) as a new ``Source``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        keep = (self.table["split"] == split).to_numpy()
        return Source(self.name, self.table[keep], self._images_at(keep))

    def rows(self, index: np.ndarray) -> "Source":
        """The rows at positional ``index`` as a new ``Source`` (used for subsampling)."""
        return Source(self.name, self.table.iloc[index], self._images_at(index))

    def _images_at(self, index: np.ndarray) -> np.ndarray:
        """``images[index]`` (positions or a bool mask); a lazy view's ``take`` keeps it lazy (nothing is read)."""
        if isinstance(self.images, np.ndarray) or not hasattr(self.images, "take"):
            return self.images[index]
        index = np.asarray(index)
        return self.images.take(np.flatnonzero(index) if index.dtype == bool else index)


def split_sizes(sources: Mapping[str, Source]) -> dict[str, dict[str, int]]:
    """Rows per split (``SPLITS`` order) of every source: ``{name: {"train": n, "val": n, "test": n}}``."""
    return {name: {split: int((src.table["split"] == split).sum()) for split in SPLITS}
            for name, src in sources.items()}


def annotation_coverage(sources: Mapping[str, Source], tasks: Sequence) -> pd.DataFrame:
    """Fraction of each source's rows that carry each label: sources x label columns, values in [0, 1].

    The annotation map of a multi-source study (P0 §4, P1 §4: every database labels its own tasks and AU subset;
    docs/method.md#tasks). ``tasks``: ``fbhelpers.tasks.Task`` objects; columns are their ``columns`` in task order (the
    class column ``expr``, ``AU1`` ... ``AU26``, ``valence``, ``arousal``). A column that is 0 for every source is a
    label no source annotates (in that split). KeyError naming the source and the columns its table lacks.
    """
    columns = [c for t in tasks for c in t.columns]
    rows = {}
    for name, src in sources.items():
        missing = [c for c in columns if c not in src.table.columns]
        if missing:
            raise KeyError(f"source {name!r}: table lacks the label columns {missing}")
        rows[name] = src.table[columns].notna().mean().astype("float64") if len(src) else pd.Series(0.0, columns)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    frame.index.name, frame.columns.name = "source", "label"
    return frame
