"""AffectNet, the manually annotated release (Mollahosseini, Hasani, Mahoor. AffectNet: A Database for Facial
Expression, Valence, and Arousal Computing in the Wild. IEEE Trans. Affective Computing 10(1), 2017).

Layout (under the dataset's own folder, e.g. ``DATA/AffectNet``)::

    Manually_Annotated_file_lists/training.csv     -> split "train"
    Manually_Annotated_file_lists/validation.csv   -> split "test" (the usual test set: the test set is not public)
    Manually_Annotated_Images/<subDirectory_filePath>

Each CSV starts with the header
``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal``;
``facial_landmarks`` is one ``;``-separated string (quoted or not; read with the csv module and not kept).

Mappings applied here and nowhere else:

- ``expression`` 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger -> canonical ``expr``
  (``tasks.EXPRESSIONS``: neutral, anger, disgust, fear, happiness, sadness, surprise); 7 Contempt: dropped and
  counted (``classes=7``, default) or kept as ``expr`` code 7 (``classes=8``: codes 0..6 canonical, 7 = contempt,
  i.e. the order of :data:`EXPRESSIONS_8`; an 8-class study needs the task
  ``tasks.classification_task("expr", EXPRESSIONS_8)``, the canonical 7-label EXPR task has no "contempt");
  8 None, 9 Uncertain, 10 No-Face: dropped and counted per code, or kept with ``expr`` <NA>
  (``unlabelled="keep"``); any other code is an error.
- ``valence`` / ``arousal``: -2 = not annotated -> NaN; any other value outside [-1, 1] is an error.
- face box ``face_x, face_y, face_width, face_height`` -> float columns ``box_x, box_y, box_w, box_h`` (pixels of
  the original image; the image cache crops with them); a width or height <= 0 is an error.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ..tasks import EXPRESSIONS
from . import common
from .common import DataFormatError

NAME = "affectnet"
FOLDER = "AffectNet"
LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"
FILES: dict[str, str] = {f"{LISTS}/training.csv": "train", f"{LISTS}/validation.csv": "test"}
HEADER: tuple[str, ...] = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                           "facial_landmarks", "expression", "valence", "arousal")
CODES: dict[int, str] = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust",
                         6: "anger"}
CONTEMPT = 7
UNLABELLED: dict[int, str] = {8: "none (code 8)", 9: "uncertain (code 9)", 10: "no-face (code 10)"}
VA_MISSING = -2.0
EXPRESSIONS_8: tuple[str, ...] = (*EXPRESSIONS, "contempt")


def _read_list(path: Path) -> list[tuple[int, list[str]]]:
    """``(line, fields)`` of one AffectNet CSV after checking its header; rows with another field count are errors."""
    rows = []
    with common.open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(HEADER):
            raise DataFormatError(path, 1, f"header must be {','.join(HEADER)}", ",".join(header or []))
        try:
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(HEADER):
                    raise DataFormatError(path, reader.line_num, f"expected {len(HEADER)} fields, got {len(fields)}",
                                          ",".join(fields))
                rows.append((reader.line_num, fields))
        except csv.Error as err:
            raise DataFormatError(path, reader.line_num, f"not valid CSV: {err}") from None
    return rows


def _va(path: Path, line: int, text: str, what: str) -> float:
    value = common.parse_number(path, line, text, what)
    if value == VA_MISSING:
        return np.nan
    if not -1.0 <= value <= 1.0:
        raise DataFormatError(path, line, f"{what} outside [-1, 1] (and not the -2 sentinel)", text)
    return value


def _parse(path: Path, split: str, classes: int, keep_unlabelled: bool, skipped: dict[str, int]) -> list[dict]:
    """The kept rows of one list file as dicts (dataset codes mapped), skips counted into ``skipped``."""
    out = []
    for line, f in _read_list(path):
        code = common.parse_number(path, line, f[6], "expression", int)
        if code not in CODES and code != CONTEMPT and code not in UNLABELLED:
            raise DataFormatError(path, line, "expression code outside 0..10", f[6])
        if code == CONTEMPT and classes == 7:
            skipped["contempt (code 7, classes=7)"] = skipped.get("contempt (code 7, classes=7)", 0) + 1
            continue
        if code in UNLABELLED and not keep_unlabelled:
            skipped[UNLABELLED[code]] = skipped.get(UNLABELLED[code], 0) + 1
            continue
        box = [common.parse_number(path, line, f[i], HEADER[i]) for i in range(1, 5)]
        if box[2] <= 0 or box[3] <= 0:
            raise DataFormatError(path, line, "face_width and face_height must be > 0", f"{f[3]}x{f[4]}")
        if not f[0].strip():
            raise DataFormatError(path, line, "empty subDirectory_filePath", f[0])
        expr = EXPRESSIONS.index(CODES[code]) if code in CODES else (len(EXPRESSIONS) if code == CONTEMPT else pd.NA)
        out.append({"path": f"{IMAGES}/{f[0].strip()}", "split": split, "expr": expr,
                    "valence": _va(path, line, f[7], "valence"), "arousal": _va(path, line, f[8], "arousal"),
                    **dict(zip(common.BOX_COLUMNS, box))})
    return out


def load(root: str | Path, *, classes: int = 7, unlabelled: str = "drop", check_images: bool = True,
         allow_outside_root: bool = False) -> pd.DataFrame:
    """The canonical table of AffectNet's manually annotated images (mappings in the module docstring; Mollahosseini
    et al., IEEE TAC 2017). ``classes``: 7 (contempt dropped, counted) or 8 (contempt = ``expr`` code 7, see
    :data:`EXPRESSIONS_8`); ``unlabelled``: ``"drop"`` (codes 8-10 counted per code) or ``"keep"`` (``expr`` <NA>,
    VA kept when annotated); ``check_images``: drop and count rows whose image file is absent;
    ``allow_outside_root``: keep rows whose image path leaves the dataset folder (``..`` or an absolute path in the
    annotation; counted and skipped by default)."""
    if classes not in (7, 8):
        raise ValueError(f"classes must be 7 or 8, got {classes!r}")
    if unlabelled not in ("drop", "keep"):
        raise ValueError(f"unlabelled must be 'drop' or 'keep', got {unlabelled!r}")
    base = common.dataset_root(root, NAME, list(FILES), FOLDER)
    skipped: dict[str, int] = {}
    rows = [row for rel, split in FILES.items()
            for row in _parse(base / rel, split, classes, unlabelled == "keep", skipped)]
    frame = pd.DataFrame(rows, columns=["path", "split", "expr", "valence", "arousal", *common.BOX_COLUMNS])
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    table = common.canonical(frame, NAME)
    table.attrs["expr_labels"] = EXPRESSIONS_8 if classes == 8 else EXPRESSIONS
    return common.report_skips(table, NAME, skipped)


def _landmarks(rng: np.random.Generator, box: tuple[int, int, int, int]) -> str:
    x, y, w, h = box
    points = np.stack([rng.uniform(x, x + w, 68), rng.uniform(y, y + h, 68)], 1).ravel()
    return ";".join(f"{v:.2f}" for v in points)


def _fixture_rows(rng: np.random.Generator, codes: list[int]) -> list[tuple[str, tuple, int, str, str]]:
    rows = []
    for i, code in enumerate(codes):
        name = f"{int(rng.integers(1, 1000))}/{rng.bytes(28).hex()}.jpg"
        box = (int(rng.integers(2, 10)), int(rng.integers(2, 10)), int(rng.integers(40, 50)), int(rng.integers(40, 50)))
        if code >= 8 or (code < 7 and i % 9 == 4):          # VA -2 where none was given (and on a few labelled rows)
            va = ("-2", "-2")
        else:
            va = tuple(f"{v:.6f}" for v in rng.uniform(-1, 1, 2))
        rows.append((name, box, code, *va))
    return rows


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny AffectNet in its official layout: training.csv (3 rows of each of codes 0-6, two contempt, one each
    of 8/9/10, one row whose image is absent) and validation.csv (2 of each of codes 0-6, one contempt, one
    code 8); VA -2 on the unlabelled rows and a few labelled ones; landmarks quoted; 64x64 images with the face
    box inside."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for rel, codes in ((f"{LISTS}/training.csv", [c for c in range(7) for _ in range(3)] + [7, 7, 8, 9, 10]),
                       (f"{LISTS}/validation.csv", [c for c in range(7) for _ in range(2)] + [7, 8])):
        rows = _fixture_rows(rng, codes)
        lines = [",".join(HEADER)]
        for i, (name, box, code, val, aro) in enumerate(rows):
            lines.append(f'{name},{",".join(map(str, box))},"{_landmarks(rng, box)}",{code},{val},{aro}')
            if not (rel.endswith("training.csv") and i == 5):   # one labelled row without its image
                common.write_image(folder / IMAGES / name, seed * 1000 + len(lines), (64, 64))
        common.write_text(folder / rel, lines)
