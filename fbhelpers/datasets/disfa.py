"""DISFA, the Denver Intensity of Spontaneous Facial Action database (Mavadati, Mahoor, Bartlett, Trinh, Cohn.
DISFA: A Spontaneous Facial Action Intensity Database. IEEE Trans. Affective Computing 4(2), 2013).

Layout (the folder to pass, e.g. ``DATA/DISFA``)::

    ActionUnit_Labels/<SN>/<SN>_au<k>.txt    one file per subject and AU; lines ``frame,intensity``
    img/<SN>/<frame - 1>.png                 the user's extracted frames (``images=``, see below)

Label files: no header; one ``frame,intensity`` line per video frame, frames numbered from 1, intensity 0-5 (FACS
A-E). The AUs are read from the file names (DISFA: 1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26); the AU files of a
subject are joined on the frame number (a frame one file lacks has that AU missing).

Images are not distributed as frames (DISFA ships videos): ``images`` is a ``str.format`` pattern relative to root
with the fields ``subject``, ``frame`` (the label file's number, 1-based) and ``index`` (``frame - 1``). The default
``img/{subject}/{index}.png`` is ME-GraphAU's layout (CVI-SZU/ME-GraphAU ``tool/README.md``, ``data/DISFA/img/
SN001/0.png``; ``tool/DISFA_image_label_process.py`` names line t of the label file ``<SN>/<t>.png``, t from 0)
[choice]; e.g. ``"{subject}/frame{frame:05d}.jpg"`` fits other extractions.

Mappings applied here and nowhere else:

- intensity -> ``AU<k>`` 1.0 when ``>= threshold`` (default 2, the usual occurrence rule), else 0.0; an intensity
  outside 0..5 (or not an integer) is an error naming the file, line and value.
- Split: subject-independent 3-fold protocol with ME-GraphAU's three subject parts (:data:`PARTS`): ``fold=i``
  puts the subjects of ``PARTS[i]`` in "test" and the others in "train" (ME-GraphAU calls this fold ``3 - i``:
  its fold 1 tests part 3); ``folds=`` replaces the parts.

Extra columns: ``subject`` (``SN001`` ...), ``frame`` (int, as in the label files).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import common
from .common import DataFormatError

NAME = "disfa"
FOLDER = "DISFA"
LABELS = "ActionUnit_Labels"
IMAGES = "img/{subject}/{index}.png"
AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
PARTS: tuple[tuple[str, ...], ...] = (      # CVI-SZU/ME-GraphAU tool/DISFA_image_label_process.py part1..part3
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
INTENSITIES = tuple(range(6))
FILE_NAME = re.compile(r"^(?P<subject>.+)_au(?P<au>\d+)\.txt$", re.IGNORECASE)


def _read_au(path: Path) -> pd.Series:
    """Intensity per frame of one ``<SN>_au<k>.txt``; errors name the file, line and value."""
    rows = list(common.text_rows(path, sep=",", n_fields=2))
    lines = np.array([line for line, _ in rows], dtype=int)
    try:
        values = np.array([f for _, f in rows], dtype=float).reshape(len(rows), 2)
    except ValueError:
        for line, (frame, intensity) in rows:
            common.parse_number(path, line, frame, "frame", int)
            common.parse_number(path, line, intensity, "intensity", int)
        raise
    common.check_codes(path, lines, values[:, 1], INTENSITIES, "intensity")
    frames = values[:, 0]
    bad = (frames < 1) | (frames != np.round(frames))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, int(lines[i]), "frame must be an integer >= 1", rows[i][1][0])
    seen, first = np.unique(frames, return_index=True)
    if len(seen) != len(frames):
        i = int(np.setdiff1d(np.arange(len(frames)), first)[0])
        raise DataFormatError(path, int(lines[i]), "frame listed twice", rows[i][1][0])
    return pd.Series(values[:, 1], index=pd.Index(frames.astype(np.int64), name="frame"))


def _read_subject(folder: Path, threshold: int) -> pd.DataFrame:
    """``frame`` + one occurrence column per AU file of a subject folder."""
    columns = {}
    for path in sorted(folder.glob("*.txt")):
        match = FILE_NAME.match(path.name)
        if not match:
            continue
        if match["subject"] != folder.name:
            raise DataFormatError(path, None, f"file name must start with the folder's subject {folder.name}",
                                  path.name)
        columns[int(match["au"])] = (_read_au(path) >= threshold).astype(float)
    if not columns:
        raise FileNotFoundError(f"{NAME}: {folder} holds no <SN>_au<k>.txt label file")
    table = pd.concat({f"AU{au}": columns[au] for au in sorted(columns)}, axis=1).sort_index()
    return table.reset_index()


def load(root: str | Path, *, threshold: int = 2, images: str = IMAGES, fold: int = 0,
         folds: Sequence[Sequence[str]] = PARTS, check_images: bool = True,
         allow_outside_root: bool = False) -> pd.DataFrame:
    """The canonical table of DISFA (Mavadati et al., IEEE TAC 2013): one row per labelled frame, ``AU<k>`` =
    intensity ``>= threshold``, subject-independent ``fold`` of ``folds`` as "test" (mappings in the module
    docstring). ``images``: path pattern of the extracted frames (fields ``subject``, ``frame``, ``index``);
    ``check_images``: drop and count frames whose image is absent (per subject in
    ``attrs["skipped_detail"]["no image per subject"]``); ``allow_outside_root``: keep rows whose image path leaves the
    dataset folder (``..`` or an absolute path in the annotation; counted and skipped by default)."""
    if threshold not in range(1, 6):
        raise ValueError(f"threshold must be an intensity 1..5, got {threshold!r}")
    base = common.dataset_root(root, NAME, [LABELS], FOLDER)
    subjects = sorted(d for d in (base / LABELS).iterdir() if d.is_dir())
    if not subjects:
        raise FileNotFoundError(f"{NAME}: {base / LABELS} holds no subject folder (<SN>/<SN>_au<k>.txt)")
    frame = pd.concat([_read_subject(d, threshold).assign(subject=d.name) for d in subjects], ignore_index=True)
    frame["split"] = common.fold_split(frame["subject"].tolist(), folds, fold)
    frame["path"] = common.image_paths(images, {"subject": frame["subject"], "frame": frame["frame"],
                                                "index": frame["frame"] - 1})
    skipped: dict[str, int] = {}
    detail = {}
    frame, no_image = common.keep_images(frame, base, skipped, check_images=check_images,
                                         allow_outside_root=allow_outside_root, per="subject")
    if check_images:
        detail["no image per subject"] = no_image
    aus = [c for c in frame.columns if c.startswith("AU")]
    table = common.canonical(frame[["path", "split", *aus, "subject", "frame"]], NAME)
    table.attrs["aus"] = aus
    return common.report_skips(table, NAME, skipped, detail)


FIXTURE_SUBJECTS: tuple[str, ...] = ("SN001", "SN002", "SN013", "SN003", "SN004")   # parts 1, 1, 2, 3, 3
FIXTURE_FRAMES = 8
FIXTURE_NO_IMAGE: dict[str, tuple[int, ...]] = {"SN002": (4,), "SN003": (1, 8)}      # label frame numbers


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny DISFA: five subjects of :data:`FIXTURE_SUBJECTS` (every part of the 3 folds) x 8 frames, the 12 AU
    files each, intensities 0-5 (every AU active somewhere), the frames of :data:`FIXTURE_NO_IMAGE` without an
    image, images in the default ``img/{subject}/{index}.png`` layout."""
    folder, rng = Path(folder), np.random.default_rng(seed)
    for s, subject in enumerate(FIXTURE_SUBJECTS):
        for a, au in enumerate(AUS):
            values = rng.integers(0, 6, FIXTURE_FRAMES)
            values[(s + a) % FIXTURE_FRAMES] = 4
            common.write_text(folder / LABELS / subject / f"{subject}_au{au}.txt",
                              [f"{i},{v}" for i, v in enumerate(values, start=1)])
        for i in range(1, FIXTURE_FRAMES + 1):
            if i not in FIXTURE_NO_IMAGE.get(subject, ()):
                common.write_image(folder / IMAGES.format(subject=subject, index=i - 1), seed * 1000 + s * 100 + i)
