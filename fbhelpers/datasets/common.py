"""What every dataset loader shares: the canonical table, format errors that name file / line / value, skip reports,
image-existence checks, seeded and subject-fold splits, and the tiny images of the format-faithful fixtures.

docs/design.md#data-flow: ``official dataset files --loader--> canonical table``. A loader returns a
``pandas.DataFrame`` with ``path`` (relative to the dataset's own folder, POSIX separators), ``split`` in {train, val,
test}, ``source`` (the dataset name) and the canonical label columns of ``fbhelpers.tasks`` (``expr`` as ``Int64`` codes
in ``EXPRESSIONS`` order; ``AU1`` ... ``AU26`` and attributes as float 0/1; ``valence``, ``arousal`` as float;
NaN / ``<NA>`` = missing). Every dataset-specific code and sentinel is mapped inside its loader and nowhere else.

Nothing is silently dropped: every row a loader leaves out is counted by reason in ``table.attrs["skipped"]``
(``{reason: count}``, details such as per-video counts in ``table.attrs["skipped_detail"]``) and logged as one
warning on the ``fbhelpers.datasets`` logger.

Text files are read as UTF-8 (a byte-order mark allowed, :func:`open_text`); any other encoding is a
:class:`DataFormatError` naming the file, the line and the first byte that is not UTF-8. Image paths are checked
against the dataset folder (:func:`keep_images`): a row whose image is not a regular file there, or whose path
leaves the folder (``..``, an absolute path, a link pointing out of it) is counted by reason, never read.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from ..source import SPLITS
from ..tasks import AUS

LOG = logging.getLogger("fbhelpers.datasets")
LABEL_COLUMNS: tuple[str, ...] = ("expr", *AUS, "valence", "arousal")
#: skip reasons of :func:`keep_images`
NO_IMAGE = "no image file"
NOT_REGULAR = "not a regular file"
UNREADABLE = "unreadable entry"
OUTSIDE = "path outside the dataset folder"
SHOWN = 3          # paths named in a warning per reason
HINTS: dict[str, str] = {
    NOT_REGULAR: " (a folder, FIFO or device named like an image)",
    UNREADABLE: " (a link loop, or a folder without read permission)",
    OUTSIDE: " (pass allow_outside_root=True to read images an annotation names through '..' or an absolute path)",
}
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


@contextmanager
def open_text(path: Path) -> Iterator[TextIO]:
    """``path`` opened for reading as UTF-8 text (a byte-order mark skipped, line ends kept as they are). A file in
    another encoding (cp1252 from Excel, UTF-16 "Unicode text") raises a DataFormatError naming the file, the first
    line that is not UTF-8 and its bytes, with the hint to re-save the file as UTF-8."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            yield fh
    except UnicodeDecodeError:
        raise _encoding_error(path) from None


def _encoding_error(path: Path) -> DataFormatError:
    """The DataFormatError of a file that is not UTF-8: its first bad line and bytes."""
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start:err.end]
                break
        else:
            number, bad = None, b""
    kind = ("UTF-16 (\"Unicode text\")" if head in (b"\xff\xfe", b"\xfe\xff") else
            "another encoding (e.g. cp1252 / Latin-1 from Excel)")
    return DataFormatError(path, number, f"not UTF-8 text but {kind}: re-save the file as UTF-8 (Excel: "
                                         "'CSV UTF-8'; a text editor: encoding UTF-8)", bad)


def text_rows(path: Path, *, sep: str | None = None, skip: int = 0, n_fields: int | None = None,
              min_fields: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a text file, 1-based line numbers, ``skip`` header lines skipped, blank lines
    ignored; ``sep=None`` splits on any run of whitespace (CelebA's double spaces). DataFormatError naming the line
    when a row has another number of fields than ``n_fields`` (or fewer than ``min_fields``)."""
    with open_text(path) as fh:
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


def image_problems(root: Path, paths: Sequence[str], *, listing: bool = True,
                   allow_outside_root: bool = False) -> np.ndarray:
    """Per path, ``""`` when ``root / path`` is an image a loader keeps, else why not: :data:`OUTSIDE` (the path as
    written leaves ``root`` through ``..`` or is absolute; unless ``allow_outside_root``; links the user made inside
    ``root`` are followed wherever they point, so a dataset's image folder may live on another disk),
    :data:`NO_IMAGE`, :data:`NOT_REGULAR` (a folder, FIFO or device) or :data:`UNREADABLE` (a link loop, a folder
    without read permission). Each folder is resolved and listed once (``os.scandir``) instead of one ``stat`` per
    path: millions of frames in a few thousand folders are checked in seconds. ``listing=False``: only the
    :data:`OUTSIDE` check of the folders, nothing listed."""
    base = os.path.normpath(os.path.abspath(root))
    folders: dict[str, dict[str, str] | str | None] = {}
    out = np.empty(len(paths), dtype=object)
    for i, path in enumerate(paths):
        folder, _, name = str(path).rpartition("/")
        if folder not in folders:
            folders[folder] = _folder_entries(root, folder, base, listing, allow_outside_root)
        found = folders[folder]
        out[i] = found if isinstance(found, str) else ("" if found is None else found.get(name, NO_IMAGE))
    return out


def _inside(real: str, base: str) -> bool:
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _folder_entries(root: Path, folder: str, base: str, listing: bool, allow_outside: bool
                    ) -> dict[str, str] | str | None:
    """``{entry name: "" or reason}`` of one folder, one reason for all of it, or None (not listed)."""
    where = os.path.join(root, folder)
    if not allow_outside and not _inside(os.path.normpath(os.path.abspath(where)), base):
        return OUTSIDE
    if not listing:
        return None
    try:
        with os.scandir(where) as entries:
            return {e.name: _entry_problem(e) for e in entries}
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError:
        return UNREADABLE


def _entry_problem(entry: os.DirEntry) -> str:
    """``""`` for a regular file (links followed), else the reason (a dangling link: no image)."""
    try:
        if not entry.is_file():
            return NO_IMAGE if entry.is_symlink() and not os.path.exists(entry.path) else NOT_REGULAR
    except OSError:
        return UNREADABLE
    return ""


def files_exist(root: Path, paths: Sequence[str]) -> np.ndarray:
    """Whether each ``root / path`` is a regular file (links followed, wherever they point)."""
    return image_problems(root, paths, allow_outside_root=True) == ""


def image_paths(pattern: str, fields: Mapping[str, Sequence[Any]]) -> list[str]:
    """``pattern.format(**fields of row i)`` for every row: the image paths of a user's frame extraction (e.g.
    ``"img/{subject}/{frame}.jpg"``); ValueError naming the pattern and the fields it may use otherwise."""
    names = list(fields)
    try:
        return [pattern.format(**dict(zip(names, values))) for values in zip(*fields.values())]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"images pattern {pattern!r}: use the fields {', '.join(names)} ({err})") from None


def keep_images(frame: pd.DataFrame, root: Path, skipped: dict[str, int], *, check_images: bool = True,
                allow_outside_root: bool = False, per: str | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``frame`` whose ``root / path`` :func:`image_problems` accepts (without ``check_images`` only the
    check that paths stay inside ``root``). The others are counted by reason in ``skipped`` (``no image file``
    always there when checking, 0 or more) and, but for a missing file, named (first few) in one warning per
    reason; rows without an image file are also counted per value of the column ``per`` (e.g. ``video``),
    returned as the second item."""
    problems = image_problems(root, frame["path"].tolist(), listing=check_images,
                              allow_outside_root=allow_outside_root)
    if check_images:
        skipped[NO_IMAGE] = skipped.get(NO_IMAGE, 0)
    for reason in (NO_IMAGE, *HINTS):
        hit = problems == reason
        n = int(hit.sum())
        if n:
            skipped[reason] = skipped.get(reason, 0) + n
        if n and reason in HINTS:
            shown = ", ".join(repr(p) for p in frame["path"][hit][:SHOWN]) + (", ..." if n > SHOWN else "")
            LOG.warning("%s: %d rows skipped, %s%s: %s", root, n, reason, HINTS[reason], shown)
    missing = problems == NO_IMAGE
    per_value = {}
    if per is not None and missing.any():
        per_value = {str(k): int(v) for k, v in frame.loc[missing, per].value_counts(sort=False).items()}
    return frame[problems == ""], per_value


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
