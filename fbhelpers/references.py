"""References: recorded metrics compared with ``tests/references/<profile>.json``, and refreshed from a run.

A reference entry is ``{"value": v, "rel": r, "abs": a}`` (or a bare value with the default tolerances), compared as
``x == pytest.approx(v, rel=r, abs=a)`` is (:func:`values_match`); nested recorded dicts are compared by dotted
name (:func:`flatten_metrics`). See docs/testing.md for the tier that uses them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from .files import read_json, write_text_atomic

DEFAULT_TOLERANCES: dict[str, float] = {"rel": 0.1, "abs": 0.05}


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened to dotted names (``{"f1": {"AU1": .5}}`` -> ``{"f1.AU1": .5}``); lists kept whole."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class Mismatch:
    """One difference between recorded metrics and references: ``kind`` is "value", "missing" (in the
    reference, not recorded) or "unexpected" (recorded, not in the reference)."""

    notebook: str
    metric: str
    kind: str
    expected: Any = None
    actual: Any = None
    rel: float | None = None
    abs: float | None = None

    def __str__(self) -> str:
        where = f"{self.notebook}: {self.metric}"
        if self.kind == "missing":
            return f"{where}: in the reference ({self.expected!r}) but not recorded"
        if self.kind == "unexpected":
            return (f"{where}: recorded ({self.actual!r}) but not in the reference; "
                    "run `python -m fbhelpers refresh-references`")
        return f"{where}: recorded {self.actual!r}, reference {self.expected!r} (rel={self.rel}, abs={self.abs})"


def reference_entry(entry: Any, tolerances: Mapping[str, float] | None = None) -> tuple[Any, float, float]:
    """``(value, rel, abs)`` of one reference entry: ``{"value": v, "rel": r, "abs": a}`` (missing tolerances
    from ``tolerances``, default rel 0.1 / abs 0.05 as recommenders does) or a bare value."""
    defaults = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    if isinstance(entry, Mapping):
        if "value" not in entry:
            raise ValueError(f"reference entry {dict(entry)!r} has no 'value'")
        unknown = sorted(set(entry) - {"value", "rel", "abs"})
        if unknown:
            raise ValueError(f"reference entry {dict(entry)!r}: unknown keys {unknown}; valid: value, rel, abs")
        return entry["value"], float(entry.get("rel", defaults["rel"])), float(entry.get("abs", defaults["abs"]))
    return entry, float(defaults["rel"]), float(defaults["abs"])


def values_match(actual: Any, expected: Any, rel: float, abs: float) -> bool:
    """pytest.approx semantics without pytest: numbers within ``max(rel*|expected|, abs)``, lists element-wise,
    everything else (str, bool, None) by equality."""
    if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
        return actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.fabs(actual - expected) <= max(rel * math.fabs(expected), abs)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(values_match(a, e, rel, abs) for a, e in zip(actual, expected))
    return actual == expected


def compare_with_references(
    metrics: Mapping[str, Mapping[str, Any]],
    references: Mapping[str, Mapping[str, Any]],
    tolerances: Mapping[str, float] | None = None,
) -> list[Mismatch]:
    """Every mismatch between ``metrics`` (notebook -> recorded metrics, nested dicts flattened) and
    ``references`` (notebook -> metric -> ``{"value", "rel", "abs"}``; ``tolerances`` are the defaults for
    entries without their own). Notebooks absent from ``metrics`` are not compared.
    """
    mismatches: list[Mismatch] = []
    for notebook, recorded in metrics.items():
        flat = flatten_metrics(recorded)
        refs = references.get(notebook, {})
        for metric, entry in refs.items():
            expected, rel, abs_ = reference_entry(entry, tolerances)
            if metric not in flat:
                mismatches.append(Mismatch(notebook, metric, "missing", expected=expected, rel=rel, abs=abs_))
            elif not values_match(flat[metric], expected, rel, abs_):
                mismatches.append(Mismatch(notebook, metric, "value", expected, flat[metric], rel, abs_))
        for metric in flat.keys() - refs.keys():
            mismatches.append(Mismatch(notebook, metric, "unexpected", actual=flat[metric]))
    return mismatches


def load_references(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The reference file ``path`` (``{}`` if it does not exist); ValueError naming the file if malformed."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{notebook: {{metric: {{value, rel, abs}}}}}}")
    return data


def write_references(path: str | os.PathLike, references: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``references`` to ``path`` atomically, one metric per line (readable diffs in review)."""
    blocks = []
    for notebook in sorted(references):
        lines = [f"    {json.dumps(metric)}: {json.dumps(entry, allow_nan=False)}"
                 for metric, entry in references[notebook].items()]
        body = "{\n" + ",\n".join(lines) + "\n  }" if lines else "{}"
        blocks.append(f"  {json.dumps(notebook)}: {body}")
    text = "{\n" + ",\n".join(blocks) + "\n}\n" if blocks else "{}\n"
    json.loads(text)  # never write a file the tests cannot read
    write_text_atomic(path, text)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def update_references(
    references: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, Any]],
    notebooks: Collection[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """New references from freshly recorded ``metrics`` (floats to 6 significant digits), keeping each existing
    metric's own ``rel``/``abs`` (new ones get the defaults). Notebooks absent from ``metrics`` (e.g. failed) keep
    their entries, unless ``notebooks`` (the suite's notebooks) is given and they are not in it. Returns
    ``(new references, lines "notebook: metric: old -> new")`` for every change, addition and removal."""
    new: dict[str, dict[str, Any]] = {k: dict(v) for k, v in references.items()}
    changes: list[str] = []
    for notebook in sorted(set(references) - set(notebooks if notebooks is not None else references)):
        del new[notebook]
        changes.append(f"{notebook}: (notebook no longer in the suite) -> (removed)")
    for notebook, recorded in metrics.items():
        old = references.get(notebook, {})
        entries: dict[str, Any] = {}
        for metric, value in flatten_metrics(recorded).items():
            value = _round(value)
            previous = old.get(metric)
            entry = {"value": value, **DEFAULT_TOLERANCES}
            if isinstance(previous, Mapping):
                entry.update({k: v for k, v in previous.items() if k != "value"})
            entries[metric] = entry
            if previous is None:
                changes.append(f"{notebook}: {metric}: (new) -> {json.dumps(value)}")
            else:
                old_value = reference_entry(previous)[0]
                if old_value != value:
                    changes.append(f"{notebook}: {metric}: {json.dumps(old_value)} -> {json.dumps(value)}")
        for metric in old.keys() - entries.keys():
            changes.append(f"{notebook}: {metric}: {json.dumps(reference_entry(old[metric])[0])} -> (removed)")
        new[notebook] = entries
    return new, changes
