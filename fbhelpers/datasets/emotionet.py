"""EmotioNet, the manually annotated AU images (Benitez-Quiroz, Srinivasan, Martinez. EmotioNet: An Accurate,
Real-Time Algorithm for the Automatic Annotation of a Million Facial Expressions in the Wild. CVPR 2016; the
"optimization" set of ~24,600 images with manual AU labels, e.g. ``EmotioNet_FACS_aws_2020_24600.csv`` / ``.xlsx``).

Layout (the folder to pass, e.g. ``DATA/EmotioNet``)::

    <annotations>.csv | .tsv | .xlsx   the table (``annotations=`` names it; detected when it is the only one)
    images/<file name of the URL>      the user's download (``images=``; EmotioNet ships URLs, not images)

The table: one header row, then one row per image: an image URL column (``URL``; also accepted: ``url``, ``image``,
``image_url``, ``file``, ``filename``, ``file_name``, ``image_name``, ``name``, ``path``, or ``url_column=``) and
one column per AU, named ``AU 1``, ``AU1`` or ``AU01`` (the names and the URLs may carry surrounding quotes, ``'AU 1'``
and ``'http://...'`` in the 2020 release: they are stripped). Other columns (``URL orig`` ...) are ignored. Reading
``.xlsx`` needs ``openpyxl``.

Mappings applied here and nowhere else:

- AU value 1 -> 1.0, 0 -> 0.0; 999 (not annotated), -1 (the not-annotated value of re-encoded copies) or an empty
  cell -> NaN, counted per AU in ``attrs["skipped_detail"]["not annotated per AU"]`` and per value in
  ``["not annotated values"]``. Any other number (2, 5, 0.5 ...) is outside the format: its row is not a row
  ("unexpected AU value", per value in ``["unexpected AU values"]``, one warning naming the values and the first
  line) [choice: such a row may be mis-coded, e.g. intensities or shifted columns]; text that is not a number is an
  error naming the file, line and value. A row with no AU annotated is not a row ("no AU annotated"). AUs outside
  the 17 canonical ones (AU18, AU43, AU51 ...) are kept as extra ``AU<k>`` columns.
- image: ``images/<name>``, ``name`` = the last path segment of the URL (``image_name=``: a callable URL -> name,
  or the name of a column holding the file name); rows naming an image already listed are not rows
  ("duplicate image"); with ``check_images``, rows whose image is absent (dead links) are not rows
  ("no image file").
- Split: EmotioNet's manual set has no official split: seeded per image name (``common.seeded_split``,
  ``fractions`` default train 0.8 / test 0.2, ``seed``) [choice].
- ``compound_column``: a column of compound-expression labels, kept as text in column ``compound`` (empty ->
  ``<NA>``) [unverified: no public copy of a release with such a column was found to confirm its format].
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from ..tasks import AUS
from . import common
from .common import DataFormatError

NAME = "emotionet"
FOLDER = "EmotioNet"
IMAGES = "images"
SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".xlsx")
URL_COLUMNS: tuple[str, ...] = ("url", "image", "image_url", "file", "filename", "file_name", "image_name", "name",
                                "path")
NOT_ANNOTATED = 999
MISSING_VALUES: tuple[str, ...] = ("999", "-1", "")    # as the numbers are printed by _au_value, "" = empty cell
UNEXPECTED = "unexpected AU value"
FRACTIONS: dict[str, float] = {"train": 0.8, "test": 0.2}
AU_NAME = re.compile(r"^AU\s*0*(\d+)$", re.IGNORECASE)


def _clean(text: object) -> str:
    """A cell as text without surrounding blanks and quotes (``'AU 1'`` -> ``AU 1``); None -> ``""``."""
    if text is None:
        return ""
    if isinstance(text, float) and text.is_integer():
        text = int(text)
    out = str(text).strip()
    return out[1:-1].strip() if len(out) >= 2 and out[0] == out[-1] and out[0] in "'\"" else out


def _read_xlsx(path: Path) -> list[tuple[int, list[str]]]:
    try:
        import openpyxl
    except ImportError:
        raise ImportError(f"reading {path} needs openpyxl: pip install openpyxl (or save the sheet as .csv and pass "
                          "annotations=)") from None
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = book.worksheets[0].iter_rows(values_only=True)
        return [(n, [_clean(v) for v in row]) for n, row in enumerate(sheet, start=1)]
    finally:
        book.close()


def _read_text(path: Path) -> list[tuple[int, list[str]]]:
    with common.open_text(path) as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            return [(reader.line_num, [_clean(f) for f in fields]) for fields in reader]
        except csv.Error as err:
            raise DataFormatError(path, reader.line_num, f"not valid CSV: {err}") from None


def _read(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and non-blank ``(line, fields)`` rows; a row with another number of fields is an error."""
    rows = _read_xlsx(path) if path.suffix.lower() == ".xlsx" else _read_text(path)
    rows = [(line, fields) for line, fields in rows if any(fields)]
    if not rows:
        raise DataFormatError(path, 1, "empty table: expected a header row")
    (_, header), rows = rows[0], rows[1:]
    while header and not header[-1]:                # trailing empty cells of a spreadsheet
        header.pop()
    for line, fields in rows:
        if len(fields) > len(header) and not any(fields[len(header):]):
            del fields[len(header):]
        if len(fields) != len(header):
            raise DataFormatError(path, line, f"expected {len(header)} fields, got {len(fields)}", ",".join(fields))
    return header, rows


def _find(root: str | Path, annotations: str | Path | None) -> tuple[Path, Path]:
    """(dataset folder, annotation table); FileNotFoundError naming the folder to pass when a parent was given."""
    if annotations is not None:
        base = Path(root).expanduser().resolve()
        path = base / annotations
        if not path.is_file():
            common.dataset_root(root, NAME, [str(annotations)], FOLDER)
        return base, path
    base = common.dataset_root(root, NAME, [], FOLDER)
    tables = [p for p in sorted(base.iterdir()) if p.is_file() and p.suffix.lower() in SUFFIXES
              and not p.name.startswith(("~$", "."))]
    if len(tables) == 1:
        return base, tables[0]
    if tables:
        raise FileNotFoundError(f"{NAME}: several annotation tables in {base}: {[p.name for p in tables]}; "
                                "pass annotations= to name one")
    below = [d for d in sorted(base.iterdir()) if d.is_dir() and any(
        p.suffix.lower() in SUFFIXES for p in d.iterdir() if p.is_file()) and (d / IMAGES).is_dir()]
    hint = f"; the files are under {below[0]}: pass that folder as root" if below else (
        f" (the dataset's own folder, usually named {FOLDER!r}; annotations= names the table)")
    raise FileNotFoundError(f"{NAME}: {base} holds no annotation table ({', '.join(SUFFIXES)}){hint}")


def _column(path: Path, header: list[str], name: str | None, candidates: tuple[str, ...], what: str) -> int:
    lowered = [h.lower() for h in header]
    for wanted in [name.lower()] if name else candidates:
        if wanted in lowered:
            return lowered.index(wanted)
    raise DataFormatError(path, 1, f"no {what} column (looked for {[name] if name else list(candidates)})",
                          ",".join(header))


def _au_value(path: Path, line: int, text: str, au: str, counts: dict[str, Counter]) -> float:
    """0 / 1 as floats, the not-annotated values as NaN (counted); any other number NaN, counted in
    ``counts["unexpected"]`` with its line in ``counts["lines"]``."""
    if text in ("0", "1"):
        return float(text)
    if text:
        value = common.parse_number(path, line, text, au)
        if value in (0, 1):
            return float(value)
        text = f"{value:g}"
    if text not in MISSING_VALUES:
        counts["unexpected"][text] += 1
        counts["lines"][line] += 1
        return np.nan
    counts["per AU"][au] += 1
    counts["values"][text or "empty"] += 1
    return np.nan


def _drop_unexpected(path: Path, frame: pd.DataFrame, lines: list[int], counts: dict[str, Counter]
                     ) -> tuple[pd.DataFrame, int]:
    """``frame`` without the rows holding an unexpected AU value (one warning naming the values and first line)."""
    bad = np.isin(lines, list(counts["lines"]))
    if bad.any():
        values = ", ".join(f"{v} (x{n})" for v, n in counts["unexpected"].most_common())
        common.LOG.warning("%s: %d rows hold AU values other than 0, 1 and the not-annotated 999 / -1 / empty: %s; "
                           "first on line %d; those rows are skipped", path, int(bad.sum()), values,
                           min(counts["lines"]))
    return frame[~bad], int(bad.sum())


def _image_names(path: Path, header: list[str], rows: list[tuple[int, list[str]]], url: int,
                 image_name: Callable[[str], str] | str | None) -> list[str]:
    if isinstance(image_name, str):
        column = _column(path, header, image_name, (), "image name")
        names = [f[column] for _, f in rows]
    else:
        rule = image_name or (lambda u: PurePosixPath(urlsplit(u).path).name)
        names = [str(rule(f[url])) for _, f in rows]
    for (line, fields), name in zip(rows, names):
        if not name or name in (".", ".."):
            raise DataFormatError(path, line, "no image file name in this row", fields[url])
    return names


def load(root: str | Path, *, annotations: str | Path | None = None, images: str = IMAGES,
         url_column: str | None = None, image_name: Callable[[str], str] | str | None = None,
         fractions: Mapping[str, float] = FRACTIONS, seed: int = 0, compound_column: str | None = None,
         check_images: bool = True, allow_outside_root: bool = False) -> pd.DataFrame:
    """The canonical table of EmotioNet's manually annotated images (Benitez-Quiroz et al., CVPR 2016): ``AU<k>``
    0/1/NaN from the table, a seeded split (mappings in the module docstring). ``annotations``: the table (relative
    to root; default the only ``.csv``/``.tsv``/``.xlsx`` in root); ``images``: the download folder (relative to
    root); ``url_column``: the URL column's name; ``image_name``: URL -> file name rule or a column of file names;
    ``fractions`` / ``seed``: the split; ``compound_column``: optional compound-label column [unverified];
    ``check_images``: drop and count rows whose image is absent; ``allow_outside_root``: keep rows whose image path
    leaves the dataset folder (``..`` or an absolute path in the annotation; counted and skipped by default)."""
    base, path = _find(root, annotations)
    header, rows = _read(path)
    url = _column(path, header, url_column, URL_COLUMNS, "image URL")
    au_columns = {i: f"AU{int(m.group(1))}" for i, h in enumerate(header) if (m := AU_NAME.match(h))}
    if not au_columns:
        raise DataFormatError(path, 1, "no AU column (named like 'AU 1' or AU1)", ",".join(header))
    counts = {"per AU": Counter(), "values": Counter(), "unexpected": Counter(), "lines": Counter()}
    data = {au: [_au_value(path, line, f[i], au, counts) for line, f in rows] for i, au in au_columns.items()}
    frame = pd.DataFrame(data)
    names = _image_names(path, header, rows, url, image_name)
    frame["path"] = [PurePosixPath(images, n).as_posix() for n in names]
    if compound_column is not None:
        column = _column(path, header, compound_column, (), "compound label")
        frame["compound"] = pd.array([f[column] or pd.NA for _, f in rows], dtype="string")
    aus = list(au_columns.values())
    frame, unexpected = _drop_unexpected(path, frame, [line for line, _ in rows], counts)
    annotated = frame[aus].notna().any(axis=1).to_numpy()
    frame = frame[annotated]
    duplicate = frame["path"].duplicated().to_numpy()
    skipped = {UNEXPECTED: unexpected, "no AU annotated": int((~annotated).sum()),
               "duplicate image": int(duplicate.sum())}
    frame = frame[~duplicate].reset_index(drop=True)
    frame["split"] = common.seeded_split(frame["path"].tolist(), fractions, seed)
    frame, _ = common.keep_images(frame, base, skipped, check_images=check_images,
                                  allow_outside_root=allow_outside_root)
    extra = sorted((a for a in aus if a not in AUS), key=lambda a: int(a[2:]))
    table = common.canonical(frame[["path", "split", *aus, *(["compound"] if compound_column else [])]], NAME)
    table = table[[c for c in table.columns if c not in extra] + extra]
    table.attrs.update(annotations=path.name, aus=aus)
    detail = {"not annotated per AU": dict(counts["per AU"]), "not annotated values": dict(counts["values"]),
              "unexpected AU values": dict(counts["unexpected"])}
    return common.report_skips(table, NAME, skipped, detail)


FIXTURE_FILE = "EmotioNet_FACS_aws_2020_24600.csv"
FIXTURE_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 17, 18, 20, 25, 26, 43)
FIXTURE_ROWS = 60
FIXTURE_DEAD: tuple[int, ...] = (3, 17, 42)         # 0-based rows whose image is absent (dead links)
FIXTURE_UNANNOTATED = 11                            # every AU 999 on this row
FIXTURE_DUPLICATE = (25, 8)                         # row 25 repeats row 8's URL


def fixture_url(i: int) -> str:
    """The URL of fixture row ``i`` (0-based)."""
    return f"http://farm{1 + i % 9}.staticflickr.com/{1000 + i}/{i:05d}_{7 * i + 3:x}.jpg"


def write_fixture(folder: Path, seed: int = 0) -> None:
    """A tiny EmotioNet: ``EmotioNet_FACS_aws_2020_24600.csv`` with columns ``URL``, ``URL orig`` and ``'AU 1'``
    ... ``'AU 43'`` (:data:`FIXTURE_AUS`, quoted as in the 2020 release), 60 rows of quoted URLs with 0/1 values,
    some 999 and a few -1, one row all 999, one duplicate URL, and images under ``images/`` except for the dead
    links of :data:`FIXTURE_DEAD`."""
    folder, rng = Path(folder), np.random.default_rng(seed)
    lines = [",".join(["URL", "URL orig", *(f"'AU {au}'" for au in FIXTURE_AUS)])]
    for i in range(FIXTURE_ROWS):
        url = fixture_url(FIXTURE_DUPLICATE[1] if i == FIXTURE_DUPLICATE[0] else i)
        values = rng.integers(0, 2, len(FIXTURE_AUS)).astype(object)
        values[rng.random(len(FIXTURE_AUS)) < 0.08] = NOT_ANNOTATED
        if i % 13 == 5:
            values[i % len(FIXTURE_AUS)] = -1
        if i == FIXTURE_UNANNOTATED:
            values[:] = NOT_ANNOTATED
        lines.append(",".join([f"'{url}'", f"'{url.replace('http://', 'http://orig.')}'", *map(str, values)]))
        if i not in FIXTURE_DEAD and i != FIXTURE_DUPLICATE[0]:
            common.write_image(folder / IMAGES / PurePosixPath(urlsplit(url).path).name, seed * 1000 + i)
    common.write_text(folder / FIXTURE_FILE, lines)
