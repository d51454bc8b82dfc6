"""RAF-DB, the Real-world Affective Faces Database, basic and compound subsets (Li, Deng, Du. Reliable
Crowdsourcing and Deep Locality-Preserving Learning for Expression Recognition in the Wild. CVPR 2017).

Layout of each subset (the folder to pass: ``DATA/RAF-DB/basic`` or ``DATA/RAF-DB/compound``)::

    EmoLabel/list_patition_label.txt      ("patition" is the real spelling)
    Image/aligned/<stem>_aligned.jpg      (100x100 aligned faces)

``list_patition_label.txt``: one ``<image name> <label>`` per line, space-separated, e.g. ``train_00001.jpg 5``.

Mappings applied here and nowhere else:

- split from the file-name prefix: ``train_`` -> "train", ``test_`` -> "test"; any other name is an error.
- image path: ``Image/aligned/<name without extension>_aligned.jpg``.
- basic labels (1-based) 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral -> canonical
  ``expr`` codes (``tasks.EXPRESSIONS`` order); any other label (``3.0`` included: digits only) is an error.
- compound labels (1-based, RAF-DB's order) 1 happily surprised, 2 happily disgusted, 3 sadly fearful, 4 sadly
  angry, 5 sadly surprised, 6 sadly disgusted, 7 fearfully angry, 8 fearfully surprised, 9 angrily surprised,
  10 angrily disgusted, 11 disgustedly surprised -> column ``compound``, ``Int64`` codes 0..10 in the order of
  ``fbhelpers.zeroshot.RAFDB_COMPOUND`` (the same order, so code = label - 1); any other label (``3.0`` too) is an
  error.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..tasks import EXPRESSIONS
from ..zeroshot import RAFDB_COMPOUND
from . import common
from .common import DataFormatError

LABELS = "EmoLabel/list_patition_label.txt"
ALIGNED = "Image/aligned"
PREFIXES: dict[str, str] = {"train_": "train", "test_": "test"}
BASIC: dict[int, str] = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger",
                         7: "neutral"}
COMPOUND: dict[int, str] = dict(enumerate((
    "happily_surprised", "happily_disgusted", "sadly_fearful", "sadly_angry", "sadly_surprised", "sadly_disgusted",
    "fearfully_angry", "fearfully_surprised", "angrily_surprised", "angrily_disgusted", "disgustedly_surprised"),
    start=1))
COMPOUND_LABELS: tuple[str, ...] = RAFDB_COMPOUND


def _root(root: str | Path, name: str, subset: str) -> Path:
    """The subset's folder; the usual slip of passing ``RAF-DB`` itself names ``RAF-DB/<subset>`` in the error."""
    inner = Path(root).expanduser() / subset
    if not (Path(root).expanduser() / LABELS).exists() and (inner / LABELS).is_file():
        raise FileNotFoundError(f"{name}: {Path(root).expanduser().resolve()} lacks {[LABELS]}; the files are under "
                                f"{inner.resolve()}: pass that folder as root")
    return common.dataset_root(root, name, [LABELS], f"RAF-DB/{subset}")


def _read(path: Path, mapping: Mapping[int, str]) -> pd.DataFrame:
    """``name, split, label`` rows of a partition file; errors name the file, line and value."""
    rows, seen = [], set()
    for line, (name, label) in common.text_rows(path, n_fields=2):
        split = next((s for p, s in PREFIXES.items() if name.startswith(p)), None)
        if split is None:
            raise DataFormatError(path, line, f"image name must start with one of {list(PREFIXES)}", name)
        if name in seen:
            raise DataFormatError(path, line, "image listed twice", name)
        seen.add(name)
        if not (label.isascii() and label.isdigit()):
            raise DataFormatError(path, line, "label must be an integer (digits only)", label)
        code = int(label)
        if code not in mapping:
            raise DataFormatError(path, line, f"label outside {min(mapping)}..{max(mapping)}", label)
        rows.append((f"{ALIGNED}/{Path(name).stem}_aligned.jpg", split, mapping[code]))
    return pd.DataFrame(rows, columns=["path", "split", "label"])


def _load(root: str | Path, name: str, subset: str, mapping: Mapping[int, str], column: str,
          labels: tuple[str, ...], check_images: bool, allow_outside_root: bool
          ) -> tuple[pd.DataFrame, dict[str, int]]:
    base = _root(root, name, subset)
    frame = _read(base / LABELS, mapping)
    frame[column] = pd.array([labels.index(v) for v in frame.pop("label")], dtype="Int64")
    skipped: dict[str, int] = {}
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    return frame, skipped


def load_basic(root: str | Path, *, check_images: bool = True, allow_outside_root: bool = False) -> pd.DataFrame:
    """RAF-DB basic (Li, Deng, Du, CVPR 2017) as the canonical face table: ``expr`` from labels 1-7 (mapping in
    the module docstring), split from the ``train_`` / ``test_`` prefix; AU and VA columns missing.
    ``check_images``: drop and count rows whose aligned image is absent; ``allow_outside_root``: keep rows whose
    image path leaves the dataset folder (counted and skipped by default)."""
    frame, skipped = _load(root, "rafdb_basic", "basic", BASIC, "expr", EXPRESSIONS, check_images,
                           allow_outside_root)
    return common.report_skips(common.canonical(frame, "rafdb_basic"), "rafdb_basic", skipped)


def load_compound(root: str | Path, *, check_images: bool = True, allow_outside_root: bool = False
                  ) -> pd.DataFrame:
    """RAF-DB compound (Li, Deng, Du, CVPR 2017): column ``compound`` with ``Int64`` codes 0..10 in the order of
    ``zeroshot.RAFDB_COMPOUND`` (from RAF-DB's 1-based labels 1-11), split from the file-name prefix;
    ``table.attrs["compound_labels"]`` names the codes. Options as :func:`load_basic`."""
    frame, skipped = _load(root, "rafdb_compound", "compound", COMPOUND, "compound", COMPOUND_LABELS, check_images,
                           allow_outside_root)
    table = common.canonical(frame, "rafdb_compound", labels=("compound",), classes=("compound",))
    table.attrs["compound_labels"] = COMPOUND_LABELS
    return common.report_skips(table, "rafdb_compound", skipped)



def _write(folder: Path, seed: int, n_labels: int, per_split: dict[str, int], digits: dict[str, int],
           missing: int | None) -> None:
    """Partition file (train rows first, labels cycling 1..n_labels) and the aligned images; the row numbered
    ``missing`` gets no image."""
    rng = np.random.default_rng(seed)
    lines = []
    for prefix, per_label in per_split.items():
        labels = rng.permutation(np.repeat(np.arange(1, n_labels + 1), per_label))
        for i, label in enumerate(labels, start=1):
            name = f"{prefix}{i:0{digits[prefix]}d}.jpg"
            lines.append(f"{name} {label}")
            if len(lines) != missing:
                common.write_image(folder / ALIGNED / f"{Path(name).stem}_aligned.jpg", seed * 10000 + len(lines))
    common.write_text(folder / LABELS, lines)


def write_basic_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny RAF-DB basic: 3 train and 2 test images per label 1-7 (``train_00001.jpg``, ``test_0001.jpg``
    numbering), one train row without its aligned image."""
    _write(Path(folder), seed, 7, {"train_": 3, "test_": 2}, {"train_": 5, "test_": 4}, missing=4)


def write_compound_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny RAF-DB compound: 2 train and 3 test images per label 1-11 (enough for a 1-shot probe)."""
    _write(Path(folder), seed, 11, {"train_": 2, "test_": 3}, {"train_": 4, "test_": 4}, missing=None)
