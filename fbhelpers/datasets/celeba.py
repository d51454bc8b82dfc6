"""CelebA, aligned and cropped images with identities and 40 attributes (Liu, Luo, Wang, Tang. Deep Learning Face
Attributes in the Wild. ICCV 2015).

Layout (the folder to pass, e.g. ``DATA/CelebA``)::

    list_attr_celeba.txt        line 1: image count; line 2: the 40 attribute names; then
                                "000001.jpg -1  1  1 -1 ..." (whitespace-separated, one or two spaces)
    identity_CelebA.txt         "000001.jpg 2880"
    list_eval_partition.txt     "000001.jpg 0"
    img_align_celeba/000001.jpg

Mappings applied here and nowhere else:

- attributes -1 / 1 -> float 0 / 1 in columns named as in the file (:data:`ATTRIBUTES`, the official order); any
  other value is an error; the count on line 1 must equal the number of rows.
- partition 0 -> "train", 1 -> "val", 2 -> "test"; any other value is an error.
- identity numbers -> ``identity``, ``Int64`` codes 0..K-1 over the identities kept, sorted by number; the number
  itself in ``identity_id``; ``table.attrs["identity_labels"]`` = the numbers as strings, in code order.
  ``top_identities=N`` keeps the N identities with the most images kept (ties: smaller number first), others
  dropped and counted.
- rows are the images of ``list_attr_celeba.txt``; one absent from the identity or partition file is dropped and
  counted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import common
from .common import DataFormatError

NAME = "celeba"
FOLDER = "CelebA"
ATTR_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGES = "img_align_celeba"
FILES = (ATTR_FILE, IDENTITY_FILE, PARTITION_FILE)
PARTITIONS: dict[int, str] = {0: "train", 1: "val", 2: "test"}
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def _header(path: Path) -> int:
    """The image count of line 1, after checking line 2 names :data:`ATTRIBUTES` in order."""
    with common.open_text(path) as fh:
        first, second = fh.readline(), fh.readline()
    count = common.parse_number(path, 1, first.strip(), "image count", int)
    names = tuple(second.split())
    if names != ATTRIBUTES:
        bad = next((i for i, (a, b) in enumerate(zip(names, ATTRIBUTES)) if a != b), min(len(names), 40))
        raise DataFormatError(path, 2, f"attribute names must be the 40 official ones in order; name {bad + 1} "
                                       f"should be {ATTRIBUTES[bad] if bad < 40 else '(none)'}",
                              names[bad] if bad < len(names) else "(missing)")
    return count


def _attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """Image names and the (N, 40) 0/1 float matrix of the attribute file."""
    count = _header(path)
    names, lines, values = [], [], []
    for line, fields in common.text_rows(path, skip=2, n_fields=1 + len(ATTRIBUTES)):
        names.append(fields[0])
        lines.append(line)
        values.append(fields[1:])
    if count != len(names):
        raise DataFormatError(path, 1, f"the count line says {count} images but the file lists {len(names)}", count)
    try:
        matrix = np.array(values, dtype=float).reshape(len(names), len(ATTRIBUTES))
    except ValueError:
        for line, row in zip(lines, values):
            for name, text in zip(ATTRIBUTES, row):
                common.parse_number(path, line, text, name)
        raise
    bad = ~np.isin(matrix, (-1.0, 1.0))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataFormatError(path, lines[i], f"attribute {ATTRIBUTES[j]} must be -1 or 1", values[i][j])
    _unique(path, names, lines)
    return names, (matrix + 1) / 2


def _unique(path: Path, names: list[str], lines: list[int]) -> None:
    seen: set[str] = set()
    for name, line in zip(names, lines):
        if name in seen:
            raise DataFormatError(path, line, "image listed twice", name)
        seen.add(name)


def _pairs(path: Path, what: str, allowed: tuple[int, ...] | None = None) -> dict[str, int]:
    """``image name -> integer`` of a two-column file (identity or partition)."""
    names, lines, values = [], [], []
    for line, (name, text) in common.text_rows(path, n_fields=2):
        names.append(name)
        lines.append(line)
        values.append(common.parse_number(path, line, text, what, int))
    if allowed is not None:
        common.check_codes(path, lines, np.array(values), allowed, what)
    elif values and min(values) < 1:
        i = int(np.argmin(values))
        raise DataFormatError(path, lines[i], f"{what} must be >= 1", values[i])
    _unique(path, names, lines)
    return dict(zip(names, values))


def _top(frame: pd.DataFrame, n: int, skipped: dict[str, int]) -> pd.DataFrame:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"top_identities must be a positive integer or None, got {n!r}")
    counts = frame["identity_id"].value_counts()
    order = sorted(counts.index, key=lambda k: (-counts[k], k))
    keep = frame["identity_id"].isin(order[:n])
    skipped[f"identity outside the top {n}"] = int((~keep).sum())
    return frame[keep]


def _coded(frame: pd.DataFrame, skipped: dict[str, int], detail: dict | None = None) -> pd.DataFrame:
    """The canonical table: ``identity`` codes 0..K-1 over the identities present, in number order."""
    ids = sorted(int(i) for i in frame["identity_id"].unique())
    frame = frame.assign(identity=frame["identity_id"].map({k: c for c, k in enumerate(ids)}))
    table = common.canonical(frame, NAME, labels=("identity", *ATTRIBUTES), classes=("identity",))
    table.attrs["identity_labels"] = [str(i) for i in ids]
    return common.report_skips(table, NAME, skipped, detail)


def top_identities(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """A loaded CelebA ``table`` restricted to its ``n`` identities with the most rows (ties: the smaller number
    first), ``identity`` re-coded 0..n-1 and the rows left out counted in ``attrs["skipped"]``: the same table as
    ``load(root, top_identities=n)`` without reading the files again."""
    skipped = dict(table.attrs.get("skipped", {}))
    return _coded(_top(table, n, skipped), skipped, table.attrs.get("skipped_detail"))


def load(root: str | Path, *, top_identities: int | None = None, check_images: bool = True,
         allow_outside_root: bool = False) -> pd.DataFrame:
    """CelebA (Liu et al., ICCV 2015) as a canonical table: ``identity`` (``Int64`` codes, sorted by identity
    number, the number in ``identity_id``) and the 40 attributes (float 0/1) of :data:`ATTRIBUTES`, split from
    ``list_eval_partition.txt`` (0 train, 1 val, 2 test). ``top_identities``: keep the N identities with the most
    images (None = all; applied after ``check_images``, so codes stay 0..K-1 over identities present).
    ``allow_outside_root``: keep rows whose image path leaves the dataset folder (``..`` or an absolute path in the
    annotation; counted and skipped by default)."""
    base = common.dataset_root(root, NAME, FILES, FOLDER)
    names, matrix = _attributes(base / ATTR_FILE)
    identity = _pairs(base / IDENTITY_FILE, "identity")
    partition = _pairs(base / PARTITION_FILE, "partition", tuple(PARTITIONS))
    frame = pd.DataFrame(matrix, columns=list(ATTRIBUTES))
    frame.insert(0, "path", [f"{IMAGES}/{n}" for n in names])
    frame.insert(1, "split", [PARTITIONS.get(partition.get(n, -1)) for n in names])
    frame.insert(2, "identity_id", pd.array([identity.get(n) for n in names], dtype="Int64"))
    skipped = {f"not in {IDENTITY_FILE}": int(frame["identity_id"].isna().sum()),
               f"not in {PARTITION_FILE}": int((frame["split"].isna() & frame["identity_id"].notna()).sum())}
    frame = frame[frame["identity_id"].notna() & frame["split"].notna()]
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    if top_identities is not None:
        frame = _top(frame, top_identities, skipped)
    return _coded(frame, skipped)


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny CelebA: 6 identities whose images sit in one partition each, as in the real release (identities
    are disjoint across train / val / test), images numbered train first, attribute rows with the official
    one-or-two-space layout, one row without its image."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    plan = [(2880, 0, 6), (2937, 0, 6), (4990, 0, 3), (8692, 1, 5), (10101, 2, 5), (11500, 2, 5)]
    ids = [ident for ident, _, _ in plan]
    rows = [(ident, part) for ident, part, n in plan for _ in range(n)]
    prototypes = rng.uniform(0.1, 0.9, (len(ids), len(ATTRIBUTES)))
    attr_lines = [str(len(rows)), " ".join(ATTRIBUTES) + " "]
    id_lines, part_lines = [], []
    for number, (ident, part) in enumerate(rows, start=1):
        name = f"{number:06d}.jpg"
        values = np.where(rng.random(len(ATTRIBUTES)) < prototypes[ids.index(ident)], 1, -1)
        attr_lines.append(name + " " + " ".join(f"{v:>2d}" for v in values))
        id_lines.append(f"{name} {ident}")
        part_lines.append(f"{name} {part}")
        if number != 3:
            common.write_image(folder / IMAGES / name, seed * 10000 + number, (40, 48))
    common.write_text(folder / ATTR_FILE, attr_lines)
    common.write_text(folder / IDENTITY_FILE, id_lines)
    common.write_text(folder / PARTITION_FILE, part_lines)
