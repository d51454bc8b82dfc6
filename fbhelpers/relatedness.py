"""Relatedness between a class task and an attribute task: R[c, j] = p(attribute j = 1 | class c).

docs/method.md#relatedness. Three origins, one object (:class:`Relatedness`):

- published priors shipped as CSV files in ``fbhelpers/data`` (:func:`prior`): DU Table 1 (Du, Tao, Martinez,
  PNAS 111(15) 2014) as used by P0 (arXiv 1910.11111, §3) and P1 (arXiv 2105.03790, §3-4);
- data-driven estimates from co-annotated samples (:func:`estimate`, P1 §4) with credible intervals;
- any table of your own (``Relatedness(table, ...)`` or :meth:`Relatedness.from_csv`), e.g. CUB's 200 x 312
  class-attribute percentages divided by 100 (P2, arXiv 2401.01219).

:func:`compare` puts two tables side by side (the relatedness study of P1 §4); :func:`estimation_curve` and
:func:`samples_needed` measure how much co-annotated data an estimate needs; :func:`under_label_noise` is the table
an estimate from noisy annotations converges to.

CSV format (read by :meth:`Relatedness.from_csv`, written by :meth:`Relatedness.to_csv`): leading ``#`` lines
carry ``# name: ...``, ``# citation: ...`` and free provenance text; the header starts with ``class``, then one
column per attribute; optional columns ``uncertain`` (non-empty text flags the row and is kept as its note),
``count`` (samples per class) and ``ci_low:<attr>`` / ``ci_high:<attr>`` for every attribute.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .tasks import Task

if TYPE_CHECKING:  # torch only where a tensor is asked for: the data check reads tables without it
    import torch

PRIORS: tuple[str, ...] = ("du2014_basic", "du2014_compound")
WEIGHTS: tuple[str, ...] = ("du", "binary")
_RESERVED = ("class", "uncertain", "count")
_CI_LOW, _CI_HIGH = "ci_low:", "ci_high:"


def _first_bad(mask: pd.DataFrame) -> tuple[str, str]:
    """(class, attribute) of the first True entry of a boolean frame."""
    i, j = np.argwhere(mask.to_numpy())[0]
    return mask.index[i], mask.columns[j]


def _check_names(names: Sequence, what: str) -> None:
    seen: set = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name)


def _as_probabilities(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` as float64 in [0, 1]; a ValueError naming the first non-number, NaN or out-of-range entry."""
    values = frame.apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = values.isna() & frame.notna()
    if bad.to_numpy().any():
        c, a = _first_bad(bad)
        raise ValueError(f"{what}[{c!r}, {a!r}] = {frame.loc[c, a]!r} is not a number")
    if values.isna().to_numpy().any():
        c, a = _first_bad(values.isna())
        raise ValueError(f"{what}[{c!r}, {a!r}] is NaN; relatedness tables must be complete")
    out = (values < 0) | (values > 1)
    if out.to_numpy().any():
        c, a = _first_bad(out)
        raise ValueError(f"{what}[{c!r}, {a!r}] = {float(values.loc[c, a])!r} is outside [0, 1]")
    return values


def _labels(labels: Task | Sequence[str]) -> tuple[str, ...]:
    return labels.labels if isinstance(labels, Task) else tuple(labels)


@dataclass(eq=False, repr=False)
class Relatedness:
    """A classes x attributes table of p(attribute | class) with its provenance (docs/method.md#relatedness; P1 §3-4).

    ``table``: DataFrame, index = class names, columns = attribute names, values in [0, 1].
    ``name`` / ``citation`` / ``provenance``: where the numbers come from.
    ``ci_low`` / ``ci_high``: optional per-entry interval (same shape), e.g. from :func:`estimate`.
    ``counts``: optional Series of samples per class. ``uncertain``: class names whose row is doubtful;
    ``notes``: optional text per uncertain class (e.g. the alternative transcription of that row).
    Validated on construction: unique non-empty names, values in [0, 1], no NaN, consistent CI / counts.
    """

    table: pd.DataFrame
    name: str = "unnamed"
    citation: str = ""
    ci_low: pd.DataFrame | None = None
    ci_high: pd.DataFrame | None = None
    counts: pd.Series | None = None
    uncertain: tuple[str, ...] = ()
    provenance: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.table, pd.DataFrame):
            raise ValueError(f"Relatedness {self.name!r}: table must be a DataFrame, got {type(self.table).__name__}")
        if self.table.shape[0] == 0 or self.table.shape[1] == 0:
            raise ValueError(f"Relatedness {self.name!r}: empty table {self.table.shape}")
        _check_names(list(self.table.index), "class")
        _check_names(list(self.table.columns), "attribute")
        where = f"Relatedness {self.name!r}"
        self.table = _as_probabilities(self.table, where).rename_axis(index="class", columns="attribute")
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError(f"{where}: give both ci_low and ci_high or neither")
        if self.ci_low is not None:
            self.ci_low = self._like_table(self.ci_low, "ci_low")
            self.ci_high = self._like_table(self.ci_high, "ci_high")
            inverted = self.ci_low > self.ci_high
            if inverted.to_numpy().any():
                c, a = _first_bad(inverted)
                raise ValueError(f"{where}: ci_low[{c!r}, {a!r}] = {self.ci_low.loc[c, a]} > ci_high = "
                                 f"{self.ci_high.loc[c, a]}")
        if self.counts is not None:
            counts = pd.Series(self.counts)
            missing = [c for c in self.classes if c not in counts.index]
            if missing or len(counts) != len(self.classes):
                extra = [c for c in counts.index if c not in self.table.index]
                raise ValueError(f"{where}: counts must have one entry per class; missing {missing}, extra {extra}")
            counts = counts.reindex(list(self.classes))
            values = pd.to_numeric(counts, errors="coerce").astype("float64")
            bad = values.isna() | (values < 0) | (values != np.floor(values)) | ~np.isfinite(values)
            if bad.any():
                first = bad[bad].index[0]
                raise ValueError(f"{where}: counts[{first!r}] = {counts[first]} is not a count")
            self.counts = values.astype("int64").rename("count").rename_axis("class")
        self.uncertain = tuple(self.uncertain)
        unknown = [c for c in self.uncertain if c not in self.table.index]
        if unknown:
            raise ValueError(f"{where}: uncertain names unknown classes {unknown}")
        self.notes = dict(self.notes)
        stray = [c for c in self.notes if c not in self.uncertain]
        if stray:
            raise ValueError(f"{where}: notes are for uncertain classes only; {stray} are not in uncertain")

    def _like_table(self, frame: pd.DataFrame, what: str) -> pd.DataFrame:
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"Relatedness {self.name!r}: {what} must be a DataFrame")
        missing = [c for c in self.classes if c not in frame.index]
        missing += [a for a in self.attributes if a not in frame.columns]
        if missing or frame.shape != self.table.shape:
            raise ValueError(f"Relatedness {self.name!r}: {what} must match the table's classes and attributes; "
                             f"shape {frame.shape} vs {self.table.shape}, missing {missing}")
        frame = frame.loc[list(self.classes), list(self.attributes)]
        return _as_probabilities(frame, f"Relatedness {self.name!r} {what}").rename_axis(
            index="class", columns="attribute")

    def __repr__(self) -> str:
        extra = f", uncertain={list(self.uncertain)}" if self.uncertain else ""
        ci = ", with CI" if self.ci_low is not None else ""
        return f"Relatedness({self.name!r}, {len(self.classes)} classes x {len(self.attributes)} attributes{ci}{extra})"

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in row order."""
        return tuple(self.table.index)

    @property
    def attributes(self) -> tuple[str, ...]:
        """Attribute names, in column order."""
        return tuple(self.table.columns)

    def tensor(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """R as a (classes, attributes) tensor (``dtype`` default float32), in the table's row/column order (what
        the losses consume)."""
        import torch

        return torch.tensor(self.table.to_numpy(dtype=np.float64, copy=True), dtype=dtype or torch.float32,
                            device=device)

    def check(self, class_task: Task, attr_task: Task) -> None:
        """Raise ValueError unless rows == ``class_task.labels`` and columns == ``attr_task.labels``, in order.

        The message names the missing / extra classes or attributes; use :meth:`align` to reorder or subset.
        """
        for task, kind in ((class_task, "multiclass"), (attr_task, "multilabel")):
            if task.kind != kind:
                raise ValueError(f"Relatedness {self.name!r}: task {task.name!r} is {task.kind}, expected {kind}")
        for task, names, what in ((class_task, self.classes, "classes"), (attr_task, self.attributes, "attributes")):
            if tuple(task.labels) == names:
                continue
            missing = [n for n in task.labels if n not in names]
            extra = [n for n in names if n not in task.labels]
            if missing or extra:
                raise ValueError(f"Relatedness {self.name!r} does not match task {task.name!r}: {what} missing from "
                                 f"the table {missing}, extra in the table {extra}")
            raise ValueError(f"Relatedness {self.name!r}: same {what} as task {task.name!r} in a different order; "
                             f"use .align(...)")

    def align(self, class_labels: Task | Sequence[str], attr_labels: Task | Sequence[str],
              fill: float | None = None) -> Relatedness:
        """A copy restricted and reordered to ``class_labels`` x ``attr_labels`` (names or Tasks).

        A class absent from the table is an error. An attribute absent from the table is an error unless ``fill``
        is given: its column then holds ``fill`` with the uninformative interval [0, 1] **[choice]**.
        """
        classes, attrs = _labels(class_labels), _labels(attr_labels)
        _check_names(classes, "class")
        _check_names(attrs, "attribute")
        missing = [c for c in classes if c not in self.table.index]
        if missing:
            raise ValueError(f"Relatedness {self.name!r} has no row for classes {missing}; it has {list(self.classes)}")
        absent = [a for a in attrs if a not in self.table.columns]
        if absent and fill is None:
            raise ValueError(f"Relatedness {self.name!r} has no column for attributes {absent}; "
                             f"pass fill=0.0 (or another value) to add them")

        def pick(frame: pd.DataFrame, value: float | None) -> pd.DataFrame:
            return frame.reindex(index=list(classes), columns=list(attrs), fill_value=value)

        has_ci = self.ci_low is not None
        return Relatedness(
            table=pick(self.table, fill), name=self.name, citation=self.citation,
            ci_low=pick(self.ci_low, 0.0) if has_ci else None, ci_high=pick(self.ci_high, 1.0) if has_ci else None,
            counts=None if self.counts is None else self.counts.reindex(list(classes)),
            uncertain=tuple(c for c in self.uncertain if c in classes), provenance=self.provenance,
            notes={c: n for c, n in self.notes.items() if c in classes})

    def matrix(self, class_labels: Task | Sequence[str], attr_labels: Task | Sequence[str],
               fill: float | None = None) -> np.ndarray:
        """R as a float ``(classes, attributes)`` array in the order of ``class_labels`` x ``attr_labels`` (names
        or Tasks; :meth:`align`): the one way to multiply predictions by R, e.g. ``p(expr) @ R`` with the
        columns in the AU head's order. The losses, the notebooks and ``inference`` all use it."""
        return self.align(class_labels, attr_labels, fill=fill).table.to_numpy(dtype=np.float64, copy=True)

    @classmethod
    def from_csv(cls, path: str | Path) -> Relatedness:
        """Read a table in this module's CSV format; errors name the file, line and offending value."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"cannot read relatedness file {str(path)!r}: {err}") from err
        return _parse_csv(text, str(path), default_name=path.stem)

    def to_csv(self, path: str | Path) -> Path:
        """Write the table (with provenance, uncertain flags, counts and CIs) in the format of :meth:`from_csv`."""
        path = Path(path)
        buf = io.StringIO()
        buf.write(f"# name: {self.name}\n")
        if self.citation:
            buf.write(f"# citation: {self.citation}\n")
        for line in self.provenance.splitlines():
            buf.write(f"# {line}\n" if line else "#\n")
        attrs = list(self.attributes)
        header = ["class", *attrs]
        if self.uncertain:
            header.append("uncertain")
        if self.counts is not None:
            header.append("count")
        if self.ci_low is not None:
            header += [_CI_LOW + a for a in attrs] + [_CI_HIGH + a for a in attrs]
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for c in self.classes:
            row = [c, *(repr(float(v)) for v in self.table.loc[c])]
            if self.uncertain:
                row.append(self.notes.get(c) or "uncertain" if c in self.uncertain else "")
            if self.counts is not None:
                row.append(str(int(self.counts[c])))
            if self.ci_low is not None:
                row += [repr(float(v)) for v in self.ci_low.loc[c]] + [repr(float(v)) for v in self.ci_high.loc[c]]
            writer.writerow(row)
        path.write_text(buf.getvalue(), encoding="utf-8")
        return path


def _parse_csv(text: str, where: str, default_name: str) -> Relatedness:
    """Parse the CSV format described in the module docstring; ``where`` names the file in errors."""
    meta = {"name": default_name, "citation": ""}
    provenance: list[str] = []
    header: list[str] | None = None
    attrs: list[str] = []
    rows: dict[str, list[float]] = {}
    low: dict[str, list[float]] = {}
    high: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    notes: dict[str, str] = {}

    def fail(lineno: int, msg: str) -> ValueError:
        return ValueError(f"{where}: line {lineno}: {msg}")

    def prob(lineno: int, column: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise fail(lineno, f"column {column!r}: value {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise fail(lineno, f"column {column!r}: value {raw!r} is outside [0, 1]")
        return value

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            key, sep, value = body.partition(":")
            if sep and key.strip().lower() in meta:
                meta[key.strip().lower()] = value.strip()
            else:
                provenance.append(body[len("provenance:"):].strip() if body.lower().startswith("provenance:")
                                  else body)
            continue
        fields = [f.strip() for f in next(csv.reader([line]))]
        if header is None:
            if fields[0] != "class":
                raise fail(lineno, f"header must start with 'class', got {fields[0]!r}")
            seen: set[str] = set()
            for name in fields:
                if not name or name in seen:
                    raise fail(lineno, f"empty or duplicate column name {name!r}")
                seen.add(name)
            header = fields
            attrs = [f for f in fields if f not in _RESERVED and not f.startswith((_CI_LOW, _CI_HIGH))]
            if not attrs:
                raise fail(lineno, "no attribute columns in the header")
            ci_cols = [f for f in fields if f.startswith((_CI_LOW, _CI_HIGH))]
            expected = [_CI_LOW + a for a in attrs] + [_CI_HIGH + a for a in attrs]
            if ci_cols and sorted(ci_cols) != sorted(expected):
                odd = sorted(set(ci_cols) ^ set(expected))
                raise fail(lineno, f"CI columns must cover every attribute in pairs; missing or unknown {odd}")
            continue
        if len(fields) != len(header):
            raise fail(lineno, f"expected {len(header)} fields, got {len(fields)}")
        record = dict(zip(header, fields))
        cls = record["class"]
        if not cls:
            raise fail(lineno, "empty class name")
        if cls in rows:
            raise fail(lineno, f"duplicate class {cls!r}")
        rows[cls] = [prob(lineno, a, record[a]) for a in attrs]
        if _CI_LOW + attrs[0] in record:
            low[cls] = [prob(lineno, _CI_LOW + a, record[_CI_LOW + a]) for a in attrs]
            high[cls] = [prob(lineno, _CI_HIGH + a, record[_CI_HIGH + a]) for a in attrs]
        if "count" in record:
            raw = record["count"]
            if not raw.isdigit():
                raise fail(lineno, f"column 'count': value {raw!r} is not a non-negative integer")
            counts[cls] = int(raw)
        if record.get("uncertain"):
            notes[cls] = record["uncertain"]
    if header is None or not rows:
        raise ValueError(f"{where}: no {'header' if header is None else 'class rows'} found")

    def frame(data: dict[str, list[float]]) -> pd.DataFrame:
        return pd.DataFrame.from_dict(data, orient="index", columns=attrs)

    try:
        return Relatedness(
            table=frame(rows), name=meta["name"], citation=meta["citation"],
            ci_low=frame(low) if low else None, ci_high=frame(high) if high else None,
            counts=pd.Series(counts) if "count" in header else None,
            uncertain=tuple(notes), provenance="\n".join(provenance), notes=notes)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def prior(name: str, weights: str = "du",
          overrides: Mapping[str, Sequence[str] | Mapping[str, float]] | None = None) -> Relatedness:
    """A published expression -> AU prior shipped in ``fbhelpers/data`` (DU Table 1;
    docs/method.md#du-2014-basic-expressions).

    ``"du2014_basic"``: 7 expressions (EXPRESSIONS order) x 17 AUs; prototypical AUs 1, observational AUs their
    fraction of DU's subjects (AU11 dropped: outside the 17 AUs). Used by P0 §3 and P1 §3.
    ``"du2014_compound"``: DU's 15 compound expressions, prototypical sets only (weight 1); the 4 rows whose
    transcriptions disagree are in ``.uncertain`` with the alternative in ``.notes``.
    ``weights`` **[choice]**: ``"du"`` (the fractions, P1) or ``"binary"`` (every listed AU = 1, P0).
    ``overrides``: class -> AU names (that row becomes exactly those AUs at 1) or class -> {AU: value} (that row
    becomes those values, 0 elsewhere). An overridden row leaves ``uncertain``; the change is logged in
    ``provenance``. For a whole table of your own use :meth:`Relatedness.from_csv`.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; valid names: {', '.join(PRIORS)}")
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    filename = f"{name}.csv"
    text = resources.files("fbhelpers").joinpath("data", filename).read_text(encoding="utf-8")
    rel = _parse_csv(text, f"fbhelpers/data/{filename}", default_name=name)
    table = rel.table.copy()
    provenance = rel.provenance
    uncertain, notes = list(rel.uncertain), dict(rel.notes)
    if weights == "binary":
        table = (table > 0).astype("float64")
        provenance += "\nweights='binary': every listed AU set to 1 (P0 variant)."
    for cls, row in (overrides or {}).items():
        if cls not in table.index:
            raise ValueError(f"override for unknown class {cls!r}; classes of {name!r}: {list(table.index)}")
        if isinstance(row, str):
            raise ValueError(f"override of {cls!r} must be a list of attribute names or a mapping, got {row!r}")
        values = dict(row) if isinstance(row, Mapping) else {a: 1.0 for a in row}
        unknown = [a for a in values if a not in table.columns]
        if unknown:
            raise ValueError(f"override of {cls!r} names unknown attributes {unknown}; valid: {list(table.columns)}")
        table.loc[cls] = 0.0
        for attr, value in values.items():
            try:
                table.loc[cls, attr] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"override of {cls!r}: {attr} = {value!r} is not a number") from None
        provenance += f"\nuser override: {cls} = {values}"
        if cls in uncertain:
            uncertain.remove(cls)
            provenance += f" (shipped row was uncertain: {notes.pop(cls, '')})"
    return Relatedness(table=table, name=name, citation=rel.citation, uncertain=tuple(uncertain),
                       provenance=provenance, notes=notes)


def _class_codes(column: pd.Series, class_col: str,
                 class_labels: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer codes (-1 = missing) and class names for a code column (Int64) or a name column (strings)."""
    present = column.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        if class_labels is None:
            raise ValueError(f"column {class_col!r} holds integer codes; pass class_labels to name them")
        labels = tuple(class_labels)
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        bad = present & ((values != np.round(values)) | (values < 0) | (values >= len(labels)))
        if bad.any():
            raise ValueError(f"column {class_col!r}: code {float(values[bad][0])!r} is not in 0..{len(labels) - 1}")
        codes = np.where(present, np.nan_to_num(values), -1).astype(np.int64)
        return codes, labels
    names = column.astype("object")
    labels = tuple(class_labels) if class_labels is not None else tuple(sorted(set(names[present])))
    index = {c: i for i, c in enumerate(labels)}
    unknown = [v for v in names[present] if v not in index]
    if unknown:
        raise ValueError(f"column {class_col!r}: class {unknown[0]!r} is not in class_labels {list(labels)}")
    codes = np.array([index[v] if p else -1 for v, p in zip(names, present)], dtype=np.int64)
    return codes, labels


def estimate(table: pd.DataFrame, class_col: str, attr_cols: Sequence[str],
             class_labels: Sequence[str] | None = None, smoothing: float = 1.0, ci: float = 0.95,
             extend_to_bounds: bool = True, name: str | None = None) -> Relatedness:
    """Data-driven relatedness from co-annotated rows (P1 §4: Aff-Wild2 frames with both labels).

    R[c, j] = #(class c, attribute j = 1) / #(class c) over rows where both the class and attribute j are
    labelled (NaN / <NA> are ignored, not counted as 0). **[choice]** Smoothing: a symmetric
    Beta(``smoothing``, ``smoothing``) prior (must be > 0; use e.g. 1e-9 for the raw ratio); the table holds the
    posterior mean (k + s) / (n + 2s) and ``ci_low`` / ``ci_high`` the equal-tailed ``ci`` credible interval of
    Beta(k + s, n - k + s) (scipy.stats.beta.ppf). **[choice]** ``extend_to_bounds``: when k = 0 (k = n, n > 0)
    the lower (upper) end is set to 0 (1), the Jeffreys-interval boundary fix of Brown, Cai & DasGupta (Statist.
    Sci. 16(2), 2001), so that a prior's exact 0/1 entries can fall inside the interval. An entry with no
    co-annotated rows (n = 0) is the prior mean 0.5 with the prior's interval; classes with no co-annotated row
    at all are listed in ``uncertain`` **[choice]**. ``counts`` = rows of each class with at least one labelled
    attribute. ``class_col`` holds Int64 codes mapped through ``class_labels`` or class-name strings (``class_labels``
    then fixes the order; default sorted). Attribute columns hold 0/1 (or booleans) and NaN / <NA>.
    """
    attr_cols = list(attr_cols)
    _check_names(attr_cols, "attribute")
    missing = [c for c in [class_col, *attr_cols] if c not in table.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the table; it has {list(table.columns)}")
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0 (a Beta(s, s) prior), got {smoothing!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    codes, labels = _class_codes(table[class_col], class_col, class_labels)
    _check_names(labels, "class")
    y = np.empty((len(table), len(attr_cols)), dtype=np.float64)
    for j, col in enumerate(attr_cols):
        try:
            values = pd.to_numeric(table[col]).to_numpy(dtype="float64", na_value=np.nan)
        except (ValueError, TypeError) as err:
            raise ValueError(f"attribute column {col!r} is not numeric: {err}") from err
        odd = ~np.isnan(values) & (values != 0) & (values != 1)
        if odd.any():
            raise ValueError(f"attribute column {col!r}: value {float(values[odd][0])!r} is not 0, 1 or missing")
        y[:, j] = values
    keep = codes >= 0
    codes, y = codes[keep], y[keep]
    labelled = ~np.isnan(y)
    n = np.zeros((len(labels), len(attr_cols)))
    k = np.zeros_like(n)
    np.add.at(n, codes, labelled)
    np.add.at(k, codes, y == 1)
    rows = np.bincount(codes[labelled.any(axis=1)], minlength=len(labels))
    a, b = k + smoothing, n - k + smoothing
    tail = (1 - ci) / 2
    from scipy import stats  # here: the tables import without scipy.stats (a second's import for the data check)

    low, high = stats.beta.ppf(tail, a, b), stats.beta.ppf(1 - tail, a, b)
    if extend_to_bounds:
        low = np.where((k == 0) & (n > 0), 0.0, low)
        high = np.where((k == n) & (n > 0), 1.0, high)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=list(labels), columns=attr_cols)

    return Relatedness(
        table=frame(a / (a + b)), name=name or f"estimate({class_col})",
        citation="estimated from co-annotated data (P1 arXiv 2105.03790 §4)",
        ci_low=frame(low), ci_high=frame(high),
        counts=pd.Series(rows, index=list(labels)),
        uncertain=tuple(c for c, r in zip(labels, rows) if r == 0),
        notes={c: "no co-annotated rows" for c, r in zip(labels, rows) if r == 0},
        provenance=(f"{int(keep.sum())} rows with a class label; Beta({smoothing}, {smoothing}) prior, posterior "
                    f"mean and {ci:.0%} equal-tailed credible interval"
                    f"{' (extended to 0 / 1 when k = 0 / n)' if extend_to_bounds else ''}"))


@dataclass(eq=False)
class Comparison:
    """Result of :func:`compare` on the classes and attributes the two tables share."""

    difference: pd.DataFrame  # a - b per entry
    divergence: pd.Series  # per class: mean over attributes of Bernoulli KL(a || b)
    summary: float  # mean absolute difference
    coverage: float | None  # fraction of b's entries inside a's interval (None if a has no CI)
    classes: tuple[str, ...]  # shared, in a's order
    attributes: tuple[str, ...]
    dropped_classes: tuple[str, ...]  # in only one of the two tables
    dropped_attributes: tuple[str, ...]


def compare(a: Relatedness, b: Relatedness, eps: float = 1e-6) -> Comparison:
    """Compare two relatedness tables (P1 §4: data-driven vs prior relatedness).

    On the shared classes and attributes (error if none): ``difference`` = a - b, ``divergence`` per class = mean
    over attributes of KL(Bernoulli(a) || Bernoulli(b)) with both clipped to [eps, 1 - eps] **[choice]**,
    ``summary`` = mean absolute difference, ``coverage`` = fraction of b's entries inside a's interval.
    """
    classes = tuple(c for c in a.classes if c in b.table.index)
    attrs = tuple(x for x in a.attributes if x in b.table.columns)
    if not classes or not attrs:
        raise ValueError(f"compare({a.name!r}, {b.name!r}): no shared {'classes' if not classes else 'attributes'}; "
                         f"{list(a.classes if not classes else a.attributes)} vs "
                         f"{list(b.classes if not classes else b.attributes)}")
    ta = a.table.loc[list(classes), list(attrs)]
    tb = b.table.loc[list(classes), list(attrs)]
    p = np.clip(ta.to_numpy(), eps, 1 - eps)
    q = np.clip(tb.to_numpy(), eps, 1 - eps)
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    coverage = None
    if a.ci_low is not None:
        lo = a.ci_low.loc[list(classes), list(attrs)].to_numpy()
        hi = a.ci_high.loc[list(classes), list(attrs)].to_numpy()
        coverage = float(np.mean((tb.to_numpy() >= lo) & (tb.to_numpy() <= hi)))
    return Comparison(
        difference=ta - tb,
        divergence=pd.Series(kl.mean(axis=1), index=list(classes), name="kl").rename_axis("class"),
        summary=float(np.abs(ta.to_numpy() - tb.to_numpy()).mean()),
        coverage=coverage, classes=classes, attributes=attrs,
        dropped_classes=tuple(c for c in (*a.classes, *b.classes) if c not in classes),
        dropped_attributes=tuple(x for x in (*a.attributes, *b.attributes) if x not in attrs))


def under_label_noise(rel: Relatedness, class_noise: float = 0.0, attr_noise: float = 0.0,
                      class_prior: Sequence[float] | None = None, name: str | None = None) -> Relatedness:
    """The table that :func:`estimate` converges to when the co-annotated labels are noisy (P1 §4 estimates
    from Aff-Wild2 annotations, which carry annotation noise; docs/method.md#data-driven-estimates).

    Noise model **[choice]** (the one of ``fbhelpers.synthetic.face_study``): the annotated class equals the
    true class with probability 1 - ``class_noise``, otherwise one of the other C - 1 classes uniformly; every
    annotated attribute is flipped with probability ``attr_noise``, independently. With true-class prior
    ``class_prior`` (None = uniform), p(true c | annotated a) ∝ prior_c p(a | c), and the expected table is
    Q[a, j] = q (1 - attr_noise) + (1 - q) attr_noise with q = Σ_c p(c | a) R[c, j].
    """
    for what, value in (("class_noise", class_noise), ("attr_noise", attr_noise)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{what} must be in [0, 1], got {value!r}")
    n = len(rel.classes)
    prior_c = np.full(n, 1.0 / n) if class_prior is None else np.asarray(class_prior, dtype=np.float64)
    if prior_c.shape != (n,) or (prior_c < 0).any() or not prior_c.sum() > 0:
        raise ValueError(f"class_prior must be {n} non-negative weights (one per class of {rel.name!r}), "
                         f"got {class_prior!r}")
    if n == 1 and class_noise > 0:
        raise ValueError(f"class_noise needs at least 2 classes; {rel.name!r} has one")
    flip = np.full((n, n), class_noise / max(n - 1, 1))
    np.fill_diagonal(flip, 1.0 - class_noise)
    joint = prior_c[:, None] * flip  # [true c, annotated a]
    posterior = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)  # p(c | a), columns sum to 1
    q = posterior.T @ rel.table.to_numpy()
    q = q * (1.0 - attr_noise) + (1.0 - q) * attr_noise
    return Relatedness(
        table=pd.DataFrame(q, index=list(rel.classes), columns=list(rel.attributes)),
        name=name or f"{rel.name} under label noise", citation=rel.citation,
        provenance=(f"{rel.name} seen through annotations with class_noise={class_noise}, attr_noise={attr_noise}"
                    f" (fbhelpers.relatedness.under_label_noise)"))


def estimation_curve(truth: Relatedness, data: pd.DataFrame | Callable[[int, int], pd.DataFrame],
                     sizes: Sequence[int], repeats: int = 10, class_col: str = "expr",
                     class_labels: Sequence[str] | None = None, smoothing: float = 1.0, ci: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """How many co-annotated samples the data-driven relatedness needs (P1 §4; docs/method.md#data-driven-estimates):
    for every size n in ``sizes`` and each of ``repeats`` draws, :func:`estimate` on n co-annotated rows and score it
    against the known ``truth`` on its classes x attributes.

    ``data``: a pool of co-annotated rows (a DataFrame; n rows drawn without replacement per repeat, so n must
    not exceed the pool) or a sampler ``data(n, seed) -> DataFrame`` (e.g. a synthetic twin's label sampler,
    fresh rows per repeat). ``class_col`` holds codes into ``class_labels`` (default ``truth.classes``) or class
    names; the attribute columns are ``truth.attributes``. ``smoothing`` and ``ci`` go to :func:`estimate`.

    Returns a tidy frame, one row per (n, repeat): ``n``, ``repeat``, ``error`` = mean |R_hat - R_true|,
    ``max_error``, ``coverage`` = fraction of truth entries inside the credible interval, ``ci_width`` = mean
    interval width. The draws are a pure function of ``seed``.
    """
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"sizes must be positive sample counts, got {sizes!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    pool = data if isinstance(data, pd.DataFrame) else None
    if pool is None and not callable(data):
        raise ValueError(f"data must be a DataFrame or a callable (n, seed) -> DataFrame, got {type(data).__name__}")
    if pool is not None and max(sizes) > len(pool):
        raise ValueError(f"size {max(sizes)} exceeds the pool of {len(pool)} co-annotated rows")
    labels = tuple(truth.classes if class_labels is None else class_labels)
    attrs = list(truth.attributes)
    true = truth.table.to_numpy()
    rows = []
    for i, n in enumerate(sizes):
        for r in range(repeats):
            draw_seed = int(np.random.SeedSequence([seed, i, r]).generate_state(1)[0])
            if pool is not None:
                pick = np.random.default_rng(draw_seed).choice(len(pool), size=n, replace=False)
                rows_n = pool.iloc[np.sort(pick)]
            else:
                rows_n = data(n, draw_seed)
            est = estimate(rows_n, class_col, attrs, class_labels=labels, smoothing=smoothing, ci=ci)
            order = (list(truth.classes), attrs)
            lo, hi = est.ci_low.loc[order].to_numpy(), est.ci_high.loc[order].to_numpy()
            err = np.abs(est.table.loc[order].to_numpy() - true)
            rows.append({"n": n, "repeat": r, "error": float(err.mean()), "max_error": float(err.max()),
                         "coverage": float(np.mean((true >= lo) & (true <= hi))),
                         "ci_width": float(np.mean(hi - lo))})
    return pd.DataFrame(rows)


def samples_needed(curve: pd.DataFrame, threshold: float = 0.05, column: str = "error") -> int | None:
    """Smallest ``n`` of an :func:`estimation_curve` whose mean ``column`` over repeats is below ``threshold``
    (None if no size reaches it). P1 §4: how much co-annotated data a usable relatedness estimate needs."""
    missing = [c for c in ("n", column) if c not in curve.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the curve; it has {list(curve.columns)}")
    means = curve.groupby("n")[column].mean().sort_index()
    below = means[means < threshold]
    return int(below.index[0]) if len(below) else None
