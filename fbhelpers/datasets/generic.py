"""Any class + attribute database given as one CSV file: CAD (Clothing Attributes Dataset, Chen, Gallagher, Girod,
ECCV 2012), S-ADD and the like, as used for the "beyond faces" studies of P2 (arXiv 2401.01219).

CSV format (``labels.csv`` in the dataset's own folder, UTF-8, comma-separated, one header row)::

    image,class,split,collar,floral,long_sleeves
    images/0001.jpg,shirt,train,1,0,1
    images/0002.jpg,dress,test,0,1,
    images/0003.jpg,coat,,1,0,1

- ``image`` (``image_column``): the image path relative to the dataset folder, POSIX separators; required. Each
  image once: a path listed twice (after normalising ``./`` and ``a/../``) is an error naming both lines, whatever
  the splits (the same image in train and test would leak). A path leaving the folder (``..``, absolute, a link
  pointing out) is counted and skipped unless ``allow_outside_root=True``.
- ``class`` (``class_column``): the class name, any text (surrounding blanks stripped, like every cell); empty =
  class unknown (``<NA>``). Names become ``Int64`` codes over the sorted unique names of the rows kept
  (``table.attrs["class_labels"]``), in the column named ``class_name`` (default ``category``). Names are compared
  exactly: ``Coat`` and ``coat`` are two classes, with one warning naming every such group of names that differ
  only in case or inner spacing (also in ``table.attrs["near_duplicate_classes"]``).
- ``split`` (``split_column``), optional: ``train``, ``val`` or ``test`` on every row. Without the column the split is
  seeded per image path (``common.seeded_split``, ``fractions`` default 80 % train / 20 % test [choice]).
- every other column (or those named by ``attributes``) is a binary attribute: ``1`` present, ``0`` absent, empty =
  not annotated (NaN); any other value is an error naming the file, line and value. Columns the ``attributes`` list
  does not name are ignored. ``table.attrs["attributes"]`` lists the attribute columns in file order.
"""
from __future__ import annotations

import csv
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..source import SPLITS
from . import common
from .common import DataFormatError

NAME = "generic"
RESERVED = ("path", "split", "source")


def _read(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` rows of the CSV; a row with another number of fields is an error."""
    rows = []
    with common.open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise DataFormatError(path, 1, "missing header row")
        try:
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise DataFormatError(path, reader.line_num,
                                          f"expected {len(header)} fields, got {len(fields)}", ",".join(fields))
                rows.append((reader.line_num, [f.strip() for f in fields]))
        except csv.Error as err:
            raise DataFormatError(path, reader.line_num, f"not valid CSV: {err}") from None
    return header, rows


def _attribute(path: Path, line: int, text: str, column: str) -> float:
    if text == "":
        return np.nan
    value = common.parse_number(path, line, text, f"attribute {column!r}")
    if value not in (0.0, 1.0):
        raise DataFormatError(path, line, f"attribute {column!r} must be 0, 1 or empty", text)
    return value


def _columns(path: Path, header: list[str], image: str, klass: str, split: str,
             attributes: Sequence[str] | None, class_name: str) -> list[str]:
    """The attribute columns, after checking that every named column is in the header once."""
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataFormatError(path, 1, "duplicate column names", dupes)
    named = [image, klass, *(attributes or [])]
    missing = [c for c in named if c not in header]
    if missing:
        raise DataFormatError(path, 1, f"columns {missing} not in the header", ",".join(header))
    chosen = list(attributes) if attributes is not None else [h for h in header if h not in (image, klass, split)]
    clash = [c for c in chosen if c in (*RESERVED, class_name)]
    if clash:
        raise DataFormatError(path, 1, f"attribute columns may not be named {list(RESERVED) + [class_name]}", clash)
    return chosen


def _check_unique(path: Path, lines: Sequence[int], images: Sequence[str], splits: Sequence[str | None]) -> None:
    """DataFormatError naming both lines when an image (path normalised) is listed twice."""
    first: dict[str, tuple[int, str | None]] = {}
    for line, image, split in zip(lines, images, splits):
        key = posixpath.normpath(image)
        if key in first:
            where, before = first[key]
            leak = f" (split {before!r} there, {split!r} here)" if before != split else ""
            raise DataFormatError(path, line, f"image already listed on line {where}{leak}: list each image once",
                                  image)
        first[key] = (line, split)


def near_duplicates(names: Sequence[str]) -> list[list[str]]:
    """Groups of distinct ``names`` that differ only in case or inner spacing (``Coat`` / ``coat``, ``long coat`` /
    ``Long  coat``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(" ".join(name.casefold().split()), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def load(root: str | Path, *, csv: str = "labels.csv", image_column: str = "image", class_column: str = "class",
         attributes: Sequence[str] | None = None, split_column: str = "split",
         fractions: Mapping[str, float] | None = None, seed: int = 0, class_name: str = "category",
         source: str | None = None, check_images: bool = True, allow_outside_root: bool = False) -> pd.DataFrame:
    """A class + attribute CSV (format in the module docstring) as a canonical table: ``class_name`` (``Int64``
    codes over the sorted class names, ``attrs["class_labels"]``), then the attribute columns (float 0/1/NaN,
    ``attrs["attributes"]``). ``split_column`` when the CSV has it, else a split seeded by ``seed`` with
    ``fractions`` (default ``{"train": 0.8, "test": 0.2}``). ``source``: the ``source`` value (default: the
    folder's name, e.g. ``CAD``). ``check_images``: drop and count rows whose image is absent;
    ``allow_outside_root``: keep rows whose image path leaves the dataset folder."""
    base = common.dataset_root(root, NAME, [csv], None)
    path = base / csv
    header, rows = _read(path)
    chosen = _columns(path, header, image_column, class_column, split_column, attributes, class_name)
    col = {h: i for i, h in enumerate(header)}
    records = []
    for line, f in rows:
        if not f[col[image_column]]:
            raise DataFormatError(path, line, f"empty {image_column!r}", f[col[image_column]])
        split = f[col[split_column]] if split_column in col else None
        if split is not None and split not in SPLITS:
            raise DataFormatError(path, line, f"{split_column!r} must be one of {list(SPLITS)}", split)
        records.append([f[col[image_column]], split, f[col[class_column]] or None,
                        *(_attribute(path, line, f[col[a]], a) for a in chosen)])
    _check_unique(path, [line for line, _ in rows], [r[0] for r in records], [r[1] for r in records])
    frame = pd.DataFrame(records, columns=["path", "split", "class_text", *chosen])
    if split_column not in col:
        frame["split"] = common.seeded_split(list(frame["path"]), fractions or {"train": 0.8, "test": 0.2}, seed)
    skipped: dict[str, int] = {}
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    labels = sorted(set(frame["class_text"].dropna()))
    similar = near_duplicates(labels)
    if similar:
        common.LOG.warning("%s: class names that differ only in case or spacing are separate classes: %s (write each "
                           "class one way if they are one)", path, "; ".join(" / ".join(map(repr, g)) for g in similar))
    frame[class_name] = pd.array([pd.NA if pd.isna(c) else labels.index(c) for c in frame.pop("class_text")],
                                 dtype="Int64")
    name = source or base.name
    table = common.canonical(frame, name, labels=(class_name, *chosen), classes=(class_name,))
    table.attrs["class_labels"] = labels
    table.attrs["attributes"] = list(chosen)
    table.attrs["near_duplicate_classes"] = similar
    return common.report_skips(table, name, skipped)


FIXTURE_CLASSES = ("coat", "dress", "shirt")
FIXTURE_ATTRIBUTES = ("collar", "placket", "floral", "striped", "long_sleeves", "black")


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny class + attribute CSV database: ``labels.csv`` (header ``image,class,split,<6 attributes>``) and
    ``images/``; 3 classes x (4 train + 3 test) rows, attributes drawn from per-class rates, a few empty (missing)
    attribute cells and one row with an empty class."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.1, 0.9, (len(FIXTURE_CLASSES), len(FIXTURE_ATTRIBUTES)))
    lines = [",".join(["image", "class", "split", *FIXTURE_ATTRIBUTES])]
    for number in range(1, 7 * len(FIXTURE_CLASSES) + 1):
        c = (number - 1) % len(FIXTURE_CLASSES)
        split = "train" if (number - 1) // len(FIXTURE_CLASSES) < 4 else "test"
        values = ["" if rng.random() < 0.08 else str(int(rng.random() < p)) for p in rates[c]]
        klass = "" if number == 5 else FIXTURE_CLASSES[c]
        name = f"images/{number:04d}.jpg"
        lines.append(",".join([name, klass, split, *values]))
        common.write_image(folder / name, seed * 10000 + number)
    common.write_text(folder / "labels.csv", lines)
