"""What every dataset loader shares: the canonical table, format errors that name file / line / value, skip reports,
image-existence checks, seeded and subject-fold splits, and the tiny images of the format-faithful fixtures.

DESIGN.md data flow: ``official dataset files --loader--> canonical table``. A loader returns a ``pandas.DataFrame``
with ``path`` (relative to the dataset's own folder, POSIX separators), ``split`` in {train, val, test}, ``source``
(the dataset name) and the canonical label columns of ``fbhelpers.tasks`` (``expr`` as ``Int64`` codes in
``EXPRESSIONS`` order; ``AU1`` ... ``AU26`` and attributes as float 0/1; ``valence``, ``arousal`` as float;
NaN / ``<NA>`` = missing). Every dataset-specific code and sentinel is mapped inside its loader and nowhere else.

Nothing is silently dropped: every row a loader leaves out is counted by reason in ``table.attrs["skipped"]``
(``{reason: count}``, details such as per-video counts in ``table.attrs["skipped_detail"]``) and logged as one
warning on the ``fbhelpers.datasets`` logger.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..source import SPLITS
from ..tasks import AUS

LOG = logging.getLogger("fbhelpers.datasets")
LABEL_COLUMNS: tuple[str, ...] = ("expr", *AUS, "valence", "arousal")
#: a face box in pixels of the original image (AffectNet's), which the image cache crops to; NaN = whole image
BOX_COLUMNS: tuple[str, ...] = ("box_x", "box_y", "box_w", "box_h")


def has_boxes(table: pd.DataFrame) -> bool:
    """Whether ``table`` carries face boxes (every one of :data:`BOX_COLUMNS`)."""
    return set(BOX_COLUMNS) <= set(table.columns)


class DataFormatError(ValueError):
    """A dataset file that does not follow its official format: the message names the file, the line and the value."""

    def __init__(self, path: str | Path, line: int | None, problem: str, value: Any = None) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        shown = "" if value is None else f" (value {value!r})"
        super().__init__(f"{where}: {problem}{shown}")
        self.path, self.line, self.value = str(path), line, value


def dataset_root(root: str | Path, name: str, expected: Sequence[str], folder: str | None = None) -> Path:
    """``root`` as a resolved folder that holds every path of ``expected`` (relative), or FileNotFoundError naming
    the missing ones. When the files sit one level further down (the parent folder was given, e.g. ``DATA`` instead
    of ``DATA/AffectNet``), the error says which folder to pass instead. ``folder``: the dataset's usual folder name
    (``data_manifest.yaml`` ``root``), used in that hint."""
    base = Path(root).expanduser().resolve()
    if not base.is_dir():
        raise FileNotFoundError(f"{name}: root {base} is not a folder")
    missing = [rel for rel in expected if not (base / rel).exists()]
    if not missing:
        return base
    below = [d for d in _folders(base, depth=2) if all((d / rel).exists() for rel in expected)]
    hint = f"; the files are under {below[0]}: pass that folder as root" if below else (
        f" (the dataset's own folder, usually named {folder!r})" if folder else "")
    raise FileNotFoundError(f"{name}: {base} lacks {missing}{hint}")


def _folders(base: Path, depth: int) -> list[Path]:
    """The sub-folders of ``base`` down to ``depth`` levels, sorted (without walking a frame folder's files)."""
    level, found = [base], []
    for _ in range(depth):
        level = sorted(d for parent in level for d in parent.iterdir() if d.is_dir())
        found += level
    return found


def text_rows(path: Path, *, sep: str | None = None, skip: int = 0, n_fields: int | None = None,
              min_fields: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a text file, 1-based line numbers, ``skip`` header lines skipped, blank lines
    ignored; ``sep=None`` splits on any run of whitespace (CelebA's double spaces). DataFormatError naming the line
    when a row has another number of fields than ``n_fields`` (or fewer than ``min_fields``)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            if number <= skip or not line.strip():
                continue
            fields = [f.strip() for f in line.rstrip("\r\n").split(sep)] if sep else line.split()
            if n_fields is not None and len(fields) != n_fields:
                raise DataFormatError(path, number, f"expected {n_fields} fields, got {len(fields)}", line.strip())
            if min_fields is not None and len(fields) < min_fields:
                raise DataFormatError(path, number, f"expected at least {min_fields} fields, got {len(fields)}",
                                      line.strip())
            yield number, fields


def parse_number(path: Path, line: int | None, text: str, what: str, kind: type = float) -> float | int:
    """``text`` as ``kind`` (int or float); DataFormatError naming the file, line, field and value otherwise."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise DataFormatError(path, line, f"{what} is not a number", text) from None
    if kind is int:
        if value != round(value):
            raise DataFormatError(path, line, f"{what} is not an integer", text)
        return int(value)
    return value


def check_codes(path: Path, lines: Sequence[int] | np.ndarray, values: np.ndarray, allowed: Sequence[float],
                what: str) -> None:
    """DataFormatError naming the first line whose value is not in ``allowed`` (NaN never allowed)."""
    values = np.asarray(values, dtype=float)
    bad = ~np.isin(values, np.asarray(allowed, dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, int(lines[i]), f"{what} outside {sorted(set(allowed))}", values[i].item())


def canonical(frame: pd.DataFrame, source: str, labels: Sequence[str] = LABEL_COLUMNS,
              classes: Sequence[str] = ("expr",)) -> pd.DataFrame:
    """The canonical table: ``path, split, source``, then ``labels`` in that order (absent ones added as missing),
    then any other columns the loader kept (``video``, ``subject``, face box ...). The class-code columns
    ``classes`` (``expr``, ``identity``, ``species`` ...) become ``Int64``, the other label columns float64;
    ``split`` is checked against ``SPLITS``."""
    out = frame.reset_index(drop=True).copy()
    out["source"] = source
    out["path"] = out["path"].astype(str)
    bad = sorted(set(out["split"].dropna()) - set(SPLITS))
    if bad or out["split"].isna().any():
        raise ValueError(f"{source}: split values {bad or ['<missing>']} outside {SPLITS}")
    for col in labels:
        if col not in out:
            out[col] = pd.array([pd.NA] * len(out), dtype="Int64") if col in classes else np.nan
        else:
            out[col] = out[col].astype("Int64" if col in classes else "float64")
    front = ["path", "split", "source", *labels]
    return out[front + [c for c in out.columns if c not in front]]


def report_skips(table: pd.DataFrame, source: str, skipped: Mapping[str, int],
                 detail: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Attach ``skipped`` ({reason: count}, zero counts dropped) and ``detail`` to ``table.attrs`` and log one
    warning listing them; returns ``table``."""
    counts = {reason: int(n) for reason, n in skipped.items() if n}
    table.attrs["dataset"] = source
    table.attrs["skipped"] = counts
    table.attrs["skipped_detail"] = dict(detail or {})
    if counts:
        LOG.warning("%s: %d rows kept; skipped %s", source, len(table),
                    ", ".join(f"{n} ({reason})" for reason, n in counts.items()))
    return table


def files_exist(root: Path, paths: Sequence[str]) -> np.ndarray:
    """Whether each ``root / path`` is a file, listing each folder once (``os.scandir``) instead of one ``stat`` per
    path: millions of frames in a few thousand folders are checked in seconds."""
    listed: dict[str, set[str]] = {}

    def files_in(folder: str) -> set[str]:
        if folder not in listed:
            try:
                with os.scandir(root / folder) as entries:
                    listed[folder] = {e.name for e in entries if e.is_file()}
            except (FileNotFoundError, NotADirectoryError):
                listed[folder] = set()
        return listed[folder]

    split = (str(p).rpartition("/") for p in paths)
    return np.fromiter((name in files_in(folder) for folder, _, name in split), dtype=bool, count=len(paths))


def image_paths(pattern: str, fields: Mapping[str, Sequence[Any]]) -> list[str]:
    """``pattern.format(**fields of row i)`` for every row: the image paths of a user's frame extraction (e.g.
    ``"img/{subject}/{frame}.jpg"``); ValueError naming the pattern and the fields it may use otherwise."""
    names = list(fields)
    try:
        return [pattern.format(**dict(zip(names, values))) for values in zip(*fields.values())]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"images pattern {pattern!r}: use the fields {', '.join(names)} ({err})") from None


def keep_existing(frame: pd.DataFrame, root: Path, skipped: dict[str, int], reason: str = "no image file",
                  per: str | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``frame`` whose ``root / path`` is a file; the others are counted in ``skipped[reason]`` and,
    when ``per`` names a column (e.g. ``video``), per value of that column (returned as the second item)."""
    exists = files_exist(root, frame["path"])
    skipped[reason] = skipped.get(reason, 0) + int((~exists).sum())
    per_value = {}
    if per is not None and (~exists).any():
        per_value = {str(k): int(v) for k, v in frame.loc[~exists, per].value_counts(sort=False).items()}
    return frame[exists], per_value


def key_hash(keys: Sequence[str], seed: int = 0) -> np.ndarray:
    """A number in [0, 1) per key: a hash of ``seed`` and the key (stable under row order and across runs)."""
    return np.array([zlib.crc32(f"{seed}/{k}".encode()) / 2**32 for k in keys])


def seeded_split(keys: Sequence[str], fractions: Mapping[str, float], seed: int = 0) -> np.ndarray:
    """A split name per key, stable per key (a hash of ``seed`` and the key, not of the row order), with the
    given ``fractions`` (e.g. ``{"train": 0.8, "test": 0.2}``, summing to 1) [choice]."""
    names = list(fractions)
    bounds = np.cumsum([float(fractions[n]) for n in names])
    if not np.isclose(bounds[-1], 1.0) or min(fractions.values()) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    u = key_hash(keys, seed)
    return np.asarray(names, dtype=object)[np.minimum(np.searchsorted(bounds, u, side="right"), len(names) - 1)]


def fold_split(subjects: Sequence[str], folds: Sequence[Sequence[str]], fold: int) -> np.ndarray:
    """Subject-independent k-fold protocol: ``"test"`` for the subjects of ``folds[fold]`` and ``"train"`` for the
    rest. ValueError for a fold number out of range or a subject in no fold (a subject list that does not match)."""
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be in 0..{len(folds) - 1}, got {fold}")
    known = {s for part in folds for s in part}
    unknown = sorted(set(subjects) - known)
    if unknown:
        raise ValueError(f"subjects {unknown} are in none of the {len(folds)} folds; pass folds= to name them")
    test = set(folds[fold])
    return np.array(["test" if s in test else "train" for s in subjects], dtype=object)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> None:
    """A small JPEG (or PNG, by suffix) made with Pillow for the fixtures: a smooth random colour field, different
    per ``seed``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0, 255, (3, 3))
    img = np.stack([base[c, 0] + base[c, 1] * xx + base[c, 2] * yy for c in range(3)], -1) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)


def write_text(path: Path, lines: Sequence[str]) -> None:
    """``lines`` joined with newlines (and a final one) into ``path``, folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
