"""BP4D-Spontaneous (Zhang, Yin, Cohn, Canavan, Reale, Horowitz, Liu, Girard. BP4D-Spontaneous: a
high-resolution spontaneous 3D dynamic facial expression database. Image and Vision Computing 32(10), 2014), AU
occurrence as used in FERA 2015 and the AU-detection literature.

Layout (the folder to pass, e.g. ``DATA/BP4D``)::

    AUCoding/AU_OCC/<subject>_<task>.csv     e.g. F001_T1.csv; 41 subjects F001-F023, M001-M018, tasks T1-T8
    img/<subject>/<task>/<frame>.jpg         the user's extracted frames (``images=``, see below)

Each CSV: a header row whose first cell heads the frame column (``0`` in the files ME-GraphAU reads with
``usecols=["0", "1", ...]``; any text is accepted) and whose other cells are AU numbers; then one row per coded
frame: the frame number, then one value per AU. Only the 12 standard AUs 1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23,
24 are kept; the file's other AU columns are ignored (values not checked) [choice]; a file lacking one of the 12
is an error.

Images: ``images`` is a ``str.format`` pattern relative to root with the fields ``subject``, ``task`` and ``frame``
(the CSV's frame number). The default ``img/{subject}/{task}/{frame}.jpg`` is ME-GraphAU's layout
(CVI-SZU/ME-GraphAU ``tool/README.md``: ``data/BP4D/img/F001/T1/2440.jpg``, next to ``data/BP4D/AUCoding``);
zero-padded names need e.g. ``"{subject}/{task}/{frame:04d}.jpg"``.

Mappings applied here and nowhere else:

- AU values 1 -> 1.0, 0 -> 0.0, 9 (not coded) -> NaN; any other value is an error naming the file, line and value;
  a frame with all 12 AUs not coded is not a row ("no AU coded").
- Split: subject-independent 3-fold protocol with ME-GraphAU's subject parts (:data:`PARTS`): ``fold=i`` puts the
  subjects of ``PARTS[i]`` in "test", the others in "train" (ME-GraphAU's fold ``3 - i``); ``folds=`` replaces them.

Extra columns: ``subject``, ``task``, ``frame`` (int).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import common
from .common import DataFormatError

NAME = "bp4d"
FOLDER = "BP4D"
OCC = "AUCoding/AU_OCC"
IMAGES = "img/{subject}/{task}/{frame}.jpg"
AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
NOT_CODED = 9
PARTS: tuple[tuple[str, ...], ...] = (      # CVI-SZU/ME-GraphAU tool/BP4D_image_label_process.py BP4D_Sequence_split
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
)
FILE_NAME = re.compile(r"^(?P<subject>[FM]\d{3})_(?P<task>T\d+)\.csv$")


def _read(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line, fields)`` rows of one AU_OCC CSV; a row with another number of fields is an error."""
    with common.open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader, [])]
            rows = [(reader.line_num, [f.strip() for f in fields]) for fields in reader
                    if any(f.strip() for f in fields)]
        except csv.Error as err:
            raise DataFormatError(path, reader.line_num, f"not valid CSV: {err}") from None
    if len(header) < 2:
        raise DataFormatError(path, 1, "header must be the frame column then AU numbers", ",".join(header))
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataFormatError(path, line, f"expected {len(header)} fields, got {len(fields)}", ",".join(fields))
    return header, rows


def _columns(path: Path, header: list[str]) -> list[int]:
    """Column index of each of the 12 standard AUs in ``header``."""
    numbers = {}
    for i, cell in enumerate(header[1:], start=1):
        numbers.setdefault(int(common.parse_number(path, 1, cell, "AU number in the header", int)), i)
    missing = [au for au in AUS if au not in numbers]
    if missing:
        raise DataFormatError(path, 1, f"header lacks the AU columns {missing}", ",".join(header))
    return [numbers[au] for au in AUS]


def _read_file(path: Path) -> pd.DataFrame:
    """``frame`` + ``AU<k>`` (0/1/NaN) of one ``<subject>_<task>.csv``."""
    header, rows = _read(path)
    columns = _columns(path, header)
    lines = np.array([line for line, _ in rows], dtype=int)
    frames = [common.parse_number(path, line, f[0], "frame", int) for line, f in rows]
    picked = [[f[c] for c in columns] for _, f in rows]
    try:
        values = np.array(picked, dtype=float).reshape(len(rows), len(AUS))
    except ValueError:
        for (line, _), fields in zip(rows, picked):
            for au, text in zip(AUS, fields):
                common.parse_number(path, line, text, f"AU{au}")
        raise
    for j, au in enumerate(AUS):
        common.check_codes(path, lines, values[:, j], (0, 1, NOT_CODED), f"AU{au} value")
    out = pd.DataFrame(np.where(values == NOT_CODED, np.nan, values), columns=[f"AU{au}" for au in AUS])
    out.insert(0, "frame", np.asarray(frames, dtype=np.int64))
    return out


def load(root: str | Path, *, images: str = IMAGES, fold: int = 0, folds: Sequence[Sequence[str]] = PARTS,
         check_images: bool = True, allow_outside_root: bool = False) -> pd.DataFrame:
    """The canonical table of BP4D-Spontaneous (Zhang et al., IVC 2014): one row per coded frame with the 12
    standard AUs, subject-independent ``fold`` of ``folds`` as "test" (mappings in the module docstring).
    ``images``: path pattern of the extracted frames (fields ``subject``, ``task``, ``frame``); ``check_images``:
    drop and count frames whose image is absent (per subject in ``attrs["skipped_detail"]["no image per
    subject"]``); ``allow_outside_root``: keep rows whose image path leaves the dataset folder (``..`` or an absolute
    path in the annotation; counted and skipped by default)."""
    base = common.dataset_root(root, NAME, [OCC], FOLDER)
    files = [(p, FILE_NAME.match(p.name)) for p in sorted((base / OCC).glob("*.csv"))]
    files = [(p, m) for p, m in files if m]
    if not files:
        raise FileNotFoundError(f"{NAME}: {base / OCC} holds no <subject>_<task>.csv file (e.g. F001_T1.csv)")
    frame = pd.concat([_read_file(p).assign(subject=m["subject"], task=m["task"]) for p, m in files],
                      ignore_index=True)
    aus = [f"AU{au}" for au in AUS]
    coded = frame[aus].notna().any(axis=1).to_numpy()
    skipped = {"no AU coded (all 9)": int((~coded).sum())}
    frame = frame[coded].reset_index(drop=True)
    frame["split"] = common.fold_split(frame["subject"].tolist(), folds, fold)
    frame["path"] = common.image_paths(images, {"subject": frame["subject"], "task": frame["task"],
                                                "frame": frame["frame"]})
    detail = {}
    frame, no_image = common.keep_images(frame, base, skipped, check_images=check_images,
                                         allow_outside_root=allow_outside_root, per="subject")
    if check_images:
        detail["no image per subject"] = no_image
    table = common.canonical(frame[["path", "split", *aus, "subject", "task", "frame"]], NAME)
    return common.report_skips(table, NAME, skipped, detail)


FIXTURE_FILES: tuple[tuple[str, str], ...] = (("F001", "T1"), ("M007", "T2"), ("M011", "T1"), ("F003", "T8"),
                                              ("F007", "T1"), ("M015", "T4"))      # two subjects of each part
FIXTURE_FRAMES = 6
FIXTURE_COLUMNS: tuple[int, ...] = tuple(range(1, 28))          # the file's AU columns: more than the 12 kept
FIXTURE_NO_IMAGE: dict[tuple[str, str], tuple[int, ...]] = {("F001", "T1"): (1001,), ("F003", "T8"): (1003, 1004)}
FIXTURE_UNCODED: tuple[str, str, int] = ("M007", "T2", 1005)    # every AU 9 on this frame


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny BP4D: the subject/task files of :data:`FIXTURE_FILES` (two subjects per fold part) x 6 frames
    numbered from 1001, header ``0,1,2,...,27``, values 0/1 with a few 9, one frame all 9
    (:data:`FIXTURE_UNCODED`), the frames of :data:`FIXTURE_NO_IMAGE` without an image."""
    folder, rng = Path(folder), np.random.default_rng(seed)
    for k, (subject, task) in enumerate(FIXTURE_FILES):
        lines = [",".join(["0", *map(str, FIXTURE_COLUMNS)])]
        for i in range(FIXTURE_FRAMES):
            number = 1001 + i
            values = rng.integers(0, 2, len(FIXTURE_COLUMNS))
            values[rng.random(len(FIXTURE_COLUMNS)) < 0.1] = NOT_CODED
            if (subject, task, number) == FIXTURE_UNCODED:
                values[:] = NOT_CODED
            lines.append(",".join(map(str, [number, *values])))
            if number not in FIXTURE_NO_IMAGE.get((subject, task), ()):
                common.write_image(folder / IMAGES.format(subject=subject, task=task, frame=number),
                                   seed * 1000 + k * 100 + i)
        common.write_text(folder / OCC / f"{subject}_{task}.csv", lines)
