"""CUB-200-2011, species and attributes of birds (Wah, Branson, Welinder, Perona, Belongie. The Caltech-UCSD
Birds-200-2011 Dataset. Caltech, CNS-TR-2011-001, 2011).

Layout (the folder to pass is ``CUB_200_2011``, as unpacked from the official tarball)::

    images.txt                    "<image_id> <image_name>"      images/<image_name>
    image_class_labels.txt        "<image_id> <class_id>"        (1..200)
    classes.txt                   "<class_id> <class_name>"
    train_test_split.txt          "<image_id> <is_training_image>"  (1 train, 0 test)
    attributes/image_attribute_labels.txt   "<image_id> <attribute_id> <is_present> <certainty_id> <time>"
    attributes/class_attribute_labels_continuous.txt   one line per class, one percentage per attribute
    ../attributes.txt  OR  attributes/attributes.txt   "<attribute_id> <attribute_name>"

The README places ``attributes.txt`` in ``attributes/``; the tarball puts it next to ``CUB_200_2011/``: both are
looked for (the one inside first). Some lines of ``image_attribute_labels.txt`` carry more than five fields in
the released file; only the first four are read (as public loaders do, e.g. yewsiang/ConceptBottleneck
``CUB/data_processing.py``), so a line needs at least four.

Name files are checked, as a cut or short file silently shortens names (``004.Groov``, ``has_upperpar``): class
names must read ``NNN.Name`` with ``NNN`` the class id, attribute names ``has_<part>::<value>``, their counts must
match the rows and columns of ``class_attribute_labels_continuous.txt`` (the release: 200 classes, 312 attributes),
and a class name must equal the folder of its images in ``images.txt``; otherwise a DataFormatError names the file,
line and name.

Mappings applied here and nowhere else:

- ``species`` = class_id - 1 (``Int64`` codes 0..199, ``table.attrs["species_labels"]`` = the classes.txt names).
- split: is_training_image 1 -> "train", 0 -> "test".
- one float column per attribute, named as in attributes.txt, = is_present (0/1); an (image, attribute) pair with
  no line is NaN; certainty_id 1 ("not visible", attributes/certainties.txt): ``not_visible="missing"`` (default)
  makes the label NaN, ``"keep"`` keeps is_present as given **[choice: an attribute the annotator could not see is
  not evidence of its absence, so it is left out of the loss]**. A later line for the same pair overrides an
  earlier one.
- :func:`relatedness`: the class x attribute table = class_attribute_labels_continuous.txt / 100.
"""
from __future__ import annotations

import re
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from ..relatedness import Relatedness
from . import common
from .common import DataFormatError

NAME = "cub"
FOLDER = "CUB_200_2011"
CITATION = ("Wah, Branson, Welinder, Perona, Belongie. The Caltech-UCSD Birds-200-2011 Dataset. "
            "CNS-TR-2011-001, 2011.")
IMAGE_LABELS = "attributes/image_attribute_labels.txt"
CONTINUOUS = "attributes/class_attribute_labels_continuous.txt"
FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", IMAGE_LABELS, CONTINUOUS)
ATTRIBUTE_NAMES = ("attributes/attributes.txt", "../attributes.txt")
NOT_VISIBLE = 1
N_CLASSES, N_ATTRIBUTES = 200, 312           # the release's counts (the fixture has fewer)
CLASS_NAME = re.compile(r"^(\d{3})\.\S+$")
ATTRIBUTE_NAME = re.compile(r"^has_[a-z_]+::\S+$")
CERTAINTIES = (1, 2, 3, 4)


def _id_table(path: Path, what: str) -> tuple[list[int], list[str], list[int]]:
    """ids, values and line numbers of an ``<id> <value>`` file (ids >= 1, each once)."""
    ids, values, lines = [], [], []
    seen: set[int] = set()
    for line, fields in common.text_rows(path, n_fields=2):
        i = common.parse_number(path, line, fields[0], f"{what} id", int)
        if i < 1 or i in seen:
            raise DataFormatError(path, line, f"{what} id must be >= 1 and listed once", fields[0])
        seen.add(i)
        ids.append(i)
        values.append(fields[1])
        lines.append(line)
    return ids, values, lines


def _names(path: Path, what: str, count: int) -> tuple[list[str], list[int]]:
    """Names and line numbers of an ``<id> <name>`` file whose ids are 1..N in order (classes.txt, attributes.txt),
    each name in its format, at least ``count`` of them (the rows / columns of the continuous table)."""
    ids, names, lines = _id_table(path, what)
    for expected, (i, line, name) in enumerate(zip(ids, lines, names), start=1):
        if i != expected:
            raise DataFormatError(path, line, f"{what} ids must be 1..N in order; expected {expected}", i)
        match = (CLASS_NAME if what == "class" else ATTRIBUTE_NAME).match(name)
        if not match or (what == "class" and int(match.group(1)) != i):
            form = f"{i:03d}.Name" if what == "class" else "has_<part>::<value>"
            raise DataFormatError(path, line, f"{what} name must read {form}: cut short?", name)
    if len(names) < count:
        release = N_CLASSES if what == "class" else N_ATTRIBUTES
        raise DataFormatError(path, lines[-1] if lines else None, f"{len(names)} {what} names, but {CONTINUOUS} has "
                              f"{count} {'rows' if what == 'class' else 'columns'} (the release: {release}): "
                              "cut short?", names[-1] if names else None)
    return names, lines


def _continuous_shape(base: Path) -> tuple[int, int]:
    """(rows, fields of the first row) of class_attribute_labels_continuous.txt: one row per class, one field per
    attribute."""
    rows = list(common.text_rows(base / CONTINUOUS))
    return len(rows), len(rows[0][1]) if rows else 0


def _class_attribute_names(base: Path) -> tuple[list[str], list[int], list[str]]:
    """The checked names of classes.txt (with their line numbers) and of attributes.txt (module docstring)."""
    n_classes, n_attributes = _continuous_shape(base)
    attributes, _ = _names(attributes_file(base), "attribute", n_attributes)
    classes, lines = _names(base / "classes.txt", "class", n_classes)
    return classes, lines, attributes


def _check_folders(path: Path, classes: list[str], lines: list[int], names: list[str], species: np.ndarray) -> None:
    """DataFormatError naming the line of classes.txt (``path``) whose class name is not the folder ``NNN.Name``
    of its images in images.txt (a cut name)."""
    for name, code in zip(names, species):
        folder = name.split("/")[0] if "/" in name else ""
        match = CLASS_NAME.match(folder)
        if match and int(match.group(1)) == code and folder != classes[code - 1]:
            raise DataFormatError(path, lines[code - 1], f"class name differs from its image folder {folder!r} in "
                                  "images.txt: cut short?", classes[code - 1])


def _per_image(path: Path, image_ids: dict[int, int], what: str, allowed: tuple[int, ...]) -> np.ndarray:
    """The ``<image_id> <value>`` file as one integer per image (order of ``image_ids``); every image needs one."""
    ids, texts, lines = _id_table(path, "image")
    values = np.array([common.parse_number(path, ln, t, what, int) for ln, t in zip(lines, texts)], dtype=np.int64)
    common.check_codes(path, lines, values, allowed, what)
    out = np.full(len(image_ids), -1, dtype=np.int64)
    for i, value, line in zip(ids, values, lines):
        if i not in image_ids:
            raise DataFormatError(path, line, "image id not in images.txt", i)
        out[image_ids[i]] = value
    if (out < 0).any():
        missing = [i for i, row in image_ids.items() if out[row] < 0][0]
        raise DataFormatError(path, None, "no line for image id (listed in images.txt)", missing)
    return out


def _label_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(line numbers, (N, 4) int64 of image id, attribute id, is_present, certainty) of image_attribute_labels.txt;
    fields beyond the fourth are ignored."""
    cols = [array("q") for _ in range(5)]
    for line, fields in common.text_rows(path, min_fields=4):
        cols[0].append(line)
        for k, what in enumerate(("image id", "attribute id", "is_present", "certainty_id")):
            try:
                cols[k + 1].append(int(fields[k]))
            except ValueError:
                raise DataFormatError(path, line, f"{what} is not an integer", fields[k]) from None
    return np.frombuffer(cols[0], dtype=np.int64), np.stack([np.frombuffer(c, dtype=np.int64) for c in cols[1:]], 1)


def _attribute_matrix(path: Path, image_ids: dict[int, int], n_attributes: int, not_visible: str) -> np.ndarray:
    """(images, attributes) float matrix of is_present (NaN where no line or, with "missing", not visible)."""
    lines, data = _label_columns(path)
    common.check_codes(path, lines, data[:, 2], (0, 1), "is_present")
    common.check_codes(path, lines, data[:, 3], CERTAINTIES, "certainty_id")
    bad = (data[:, 1] < 1) | (data[:, 1] > n_attributes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, int(lines[i]), f"attribute id outside 1..{n_attributes}", int(data[i, 1]))
    lookup = np.full(int(max(image_ids, default=0)) + 1, -1, dtype=np.int64)
    lookup[list(image_ids)] = list(image_ids.values())
    rows = np.where(data[:, 0] < len(lookup), lookup[np.clip(data[:, 0], 0, len(lookup) - 1)], -1)
    if (rows < 0).any():
        i = int(np.flatnonzero(rows < 0)[0])
        raise DataFormatError(path, int(lines[i]), "image id not in images.txt", int(data[i, 0]))
    values = data[:, 2].astype(float)
    if not_visible == "missing":
        values[data[:, 3] == NOT_VISIBLE] = np.nan
    matrix = np.full((len(image_ids), n_attributes), np.nan)
    matrix[rows, data[:, 1] - 1] = values
    return matrix


def attributes_file(base: Path) -> Path:
    """``attributes.txt``: ``attributes/attributes.txt`` inside the dataset folder (README) or next to the folder
    (the official tarball); FileNotFoundError naming both places otherwise."""
    for rel in ATTRIBUTE_NAMES:
        if (base / rel).is_file():
            return (base / rel).resolve()
    raise FileNotFoundError(f"{NAME}: attributes.txt is in neither {base / ATTRIBUTE_NAMES[0]} nor "
                            f"{(base / ATTRIBUTE_NAMES[1]).resolve()} (the official tarball puts it next to "
                            f"{base.name}/)")


def load(root: str | Path, *, not_visible: str = "missing", check_images: bool = True,
         allow_outside_root: bool = False) -> pd.DataFrame:
    """CUB-200-2011 (Wah et al., CNS-TR-2011-001) as a canonical table: ``species`` (class_id - 1), one float 0/1
    column per attribute (names from attributes.txt), split from train_test_split.txt (1 train, 0 test).
    ``not_visible``: ``"missing"`` (certainty 1 -> NaN, default) or ``"keep"``; see the module docstring.
    ``allow_outside_root``: keep rows whose image path leaves the dataset folder (``..`` or an absolute path in the
    annotation; counted and skipped by default)."""
    if not_visible not in ("missing", "keep"):
        raise ValueError(f"not_visible must be 'missing' or 'keep', got {not_visible!r}")
    base = common.dataset_root(root, NAME, FILES, FOLDER)
    classes, class_lines, attributes = _class_attribute_names(base)
    ids, names, _ = _id_table(base / "images.txt", "image")
    image_ids = {i: row for row, i in enumerate(ids)}
    species = _per_image(base / "image_class_labels.txt", image_ids, "class id", tuple(range(1, len(classes) + 1)))
    _check_folders(base / "classes.txt", classes, class_lines, names, species)
    train = _per_image(base / "train_test_split.txt", image_ids, "is_training_image", (0, 1))
    matrix = _attribute_matrix(base / IMAGE_LABELS, image_ids, len(attributes), not_visible)
    frame = pd.DataFrame(matrix, columns=attributes)
    frame.insert(0, "path", [f"images/{n}" for n in names])
    frame.insert(1, "split", np.where(train == 1, "train", "test"))
    frame.insert(2, "species", species - 1)
    frame.insert(3, "image_id", ids)
    skipped: dict[str, int] = {}
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    table = common.canonical(frame, NAME, labels=("species", *attributes), classes=("species",))
    table.attrs["species_labels"] = list(classes)
    table.attrs["attributes"] = list(attributes)
    return common.report_skips(table, NAME, skipped)


def relatedness(root: str | Path) -> Relatedness:
    """The class x attribute table CUB ships: ``attributes/class_attribute_labels_continuous.txt`` (percent of
    annotators who saw the attribute present, one row per class of classes.txt, one column per attribute of
    attributes.txt) divided by 100; errors name the file, line and value."""
    base = common.dataset_root(root, NAME, ["classes.txt", CONTINUOUS], FOLDER)
    classes, _, attributes = _class_attribute_names(base)
    path = base / CONTINUOUS
    rows = []
    for line, fields in common.text_rows(path, n_fields=len(attributes)):
        values = [common.parse_number(path, line, t, "percentage") for t in fields]
        bad = next((t for t, v in zip(fields, values) if not 0 <= v <= 100), None)
        if bad is not None:
            raise DataFormatError(path, line, "percentage outside [0, 100]", bad)
        rows.append(values)
    if len(rows) != len(classes):
        raise DataFormatError(path, None, f"expected one line per class of classes.txt ({len(classes)}), "
                                          f"got {len(rows)}", len(rows))
    table = pd.DataFrame(np.array(rows) / 100, index=classes, columns=attributes)
    return Relatedness(table, name="CUB-200-2011 class attributes", citation=CITATION,
                       provenance=f"{path} (percent of annotators, / 100); attribute names from "
                                  f"{attributes_file(base)}")


FIXTURE_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
                   "004.Groove_billed_Ani")
FIXTURE_ATTRIBUTES = ("has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger", "has_bill_shape::hooked",
                      "has_bill_shape::needle", "has_wing_color::blue", "has_wing_color::brown",
                      "has_wing_color::iridescent", "has_wing_color::purple", "has_upperparts_color::blue",
                      "has_upperparts_color::brown", "has_upperparts_color::iridescent",
                      "has_upperparts_color::purple")


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny CUB-200-2011: 4 classes x (4 train + 2 test) images, 12 attributes with ``attributes.txt`` one level
    above ``folder`` (as in the tarball), image labels drawn from the class percentages, some certainty-1 (not
    visible) lines and one line with extra trailing fields."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    percent = np.round(rng.uniform(0, 100, (len(FIXTURE_CLASSES), len(FIXTURE_ATTRIBUTES))), 6)
    images, labels, split, attr_lines = [], [], [], []
    for c, cls in enumerate(FIXTURE_CLASSES, start=1):
        stem = "_".join(w.capitalize() for w in cls.split(".", 1)[1].split("_"))
        for k, is_train in enumerate([1, 1, 0, 1, 0, 1]):
            image_id = len(images) + 1
            name = f"{cls}/{stem}_{k + 1:04d}_{int(rng.integers(1000, 99999))}.jpg"
            images.append(f"{image_id} {name}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {is_train}")
            common.write_image(folder / "images" / name, seed * 10000 + image_id, (48, 40))
            for a in range(len(FIXTURE_ATTRIBUTES)):
                present = int(rng.random() * 100 < percent[c - 1, a])
                certainty = int(rng.choice(CERTAINTIES, p=(0.15, 0.15, 0.3, 0.4)))
                extra = " 0 0" if (image_id, a) == (2, 4) else ""
                attr_lines.append(f"{image_id} {a + 1} {present} {certainty} {rng.uniform(1, 30):.3f}{extra}")
    common.write_text(folder / "images.txt", images)
    common.write_text(folder / "image_class_labels.txt", labels)
    common.write_text(folder / "train_test_split.txt", split)
    common.write_text(folder / "classes.txt", [f"{i} {n}" for i, n in enumerate(FIXTURE_CLASSES, start=1)])
    common.write_text(folder / IMAGE_LABELS, attr_lines)
    common.write_text(folder / "attributes/certainties.txt",
                      ["1 not visible", "2 guessing", "3 probably", "4 definitely"])
    common.write_text(folder / CONTINUOUS, [" ".join(f"{v:.15f}" for v in row) for row in percent])
    common.write_text(folder.parent / "attributes.txt",
                      [f"{i} {n}" for i, n in enumerate(FIXTURE_ATTRIBUTES, start=1)])
