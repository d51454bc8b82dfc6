"""Prediction on a user's images with a saved model (:func:`predict_table`, ``python -m fbhelpers predict``).

The images must be **aligned face crops**, framed like the model's training images (the face filling the image,
upright, eyes level): fbhelpers has no face detector, and a model trained on crops says little about a whole
photograph. Each file is decoded by ``images.decode_image``, as training data is: Pillow, EXIF orientation applied,
every mode brought to 8 bits (16-bit and float greyscale scaled, transparency composited on black: see
``fbhelpers.images``), converted to the model's channels (RGB, or L for a one-channel model) and resized to the
model's ``input_size`` (bicubic, aspect ratio not kept); the probabilities are those of ``train.predict`` on the
decoded images.

One row per readable image, in the order listed (a folder or a glob: sorted paths; a CSV, a table or a list:
their order). Columns, in this order:

- ``path``: the image as listed (the CSV's or table's own ``path`` value; otherwise the file's path as found in
  the folder, by the glob or as given);
- for each task of the model, in the model's task order (``T`` the task's name, ``<label>`` each of its labels in
  the task's label order):

  - multiclass: ``T`` (the predicted label name, the most probable class), then ``T_<label>`` (softmax
    probabilities, summing to 1);
  - multilabel: ``T_<label>`` (sigmoid probabilities) for every label, then ``T_<label>_on`` for every label (1
    when the probability is at least the model's decision threshold for that label, ``models.load``'s
    ``thresholds``, [choice] 0.5 unless saved otherwise; else 0);
  - regression: ``T_<label>`` (the predicted value, in [-1, 1]);

- ``compound``, ``compound_score``: only when the model carries a ``"compound"`` table (``models.save(...,
  tables={"compound": prior("du2014_compound")})``) whose attributes are labels of a multilabel task (the first
  such task): the zero-shot compound class (P1 §4.6; ``zeroshot.zero_shot_scores`` with its default ``"mean"``
  scoring of that task's probabilities against the table's rows) and its score.

A file that is not a readable image (missing, truncated, not an image at all, or not a regular file: a FIFO, a
device or a folder listed in a CSV, never opened) is skipped with a warning and listed in ``frame.attrs["skipped"]``
(``{"path", "reason"}`` dicts; ``strict=True`` raises instead); no image to read at all (an empty folder, a glob
matching nothing, an empty CSV) is a ValueError. Outputs that are NaN or infinite (broken weights) are a ValueError
naming the images, never a table.
"""
from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import models, train
from .display import show_progress
from .images import IMAGE_EXTENSIONS, decode_image, image_files
from .metrics import score_task
from .tasks import Task
from .zeroshot import zero_shot_scores

COMPOUND_TABLE = "compound"


def predict_table(
    model: nn.Module | str | os.PathLike,
    inputs: str | os.PathLike | pd.DataFrame | Sequence[str | os.PathLike],
    *,
    recursive: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    strict: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Predictions of every task of ``model`` on image files, one row per image (columns: see the module docstring).

    ``model``: a model from ``models.load`` (or a ``MultiHeadNet`` given ``input_size``) or the path of a model
    file. ``inputs``: a folder (its files with an image suffix, ``images.IMAGE_EXTENSIONS``, in sub-folders too
    unless ``recursive=False``), a glob pattern, a CSV file with a ``path`` column (relative paths are relative to
    the CSV's folder), a DataFrame with a ``path`` column (relative to the working directory), or a list of
    paths. Images are decoded ``batch_size`` at a time. A file that does not decode is skipped and listed in
    ``frame.attrs["skipped"]`` (ValueError with ``strict``). ``progress``: a tqdm bar (default: on unless the
    environment sets ``CI``). ``frame.attrs["device"]`` is the device used.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    files = list_images(inputs, recursive=recursive)
    dev = train.resolve_device(device)
    net = models.load(model, dev) if isinstance(model, (str, os.PathLike)) else model
    size, mode = _input_format(net)
    from tqdm.auto import tqdm

    show = show_progress(progress)
    kept: list[str] = []
    skipped: list[dict[str, str]] = []
    chunks: list[dict[str, np.ndarray]] = []
    with tqdm(total=len(files), desc="predict", unit="img", disable=not show) as bar:
        for start in range(0, len(files), batch_size):
            part = files[start:start + batch_size]
            images = _decode(part, size, mode, strict, kept, skipped)
            if images:
                chunks.append(train.predict(net, np.stack(images), batch_size=batch_size, device=dev))
                _check_finite(chunks[-1], kept[-len(images):], len(kept))
            bar.update(len(part))
    if not chunks:
        raise ValueError(f"none of the {len(files)} listed files is a readable image; first: {skipped[0]['reason']}")
    if skipped:
        shown = "; ".join(s["reason"] for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        warnings.warn(f"skipped {len(skipped)} of {len(files)} files that are not readable images (listed in "
                      f"frame.attrs['skipped']): {shown}", stacklevel=2)
    outputs = {t.name: np.concatenate([c[t.name] for c in chunks]) for t in net.tasks}
    frame = _frame(net, kept, outputs)
    frame.attrs.update(skipped=skipped, device=str(dev))
    return frame


def score_predictions(predictions: pd.DataFrame, labels: pd.DataFrame, tasks: Sequence[Task],
                      thresholds: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every task of ``tasks`` whose columns ``labels`` carries (the canonical layout: ``expr`` codes, one 0/1 column
    per AU, ``valence`` / ``arousal``; NaN = not labelled), scored with ``metrics.score_task`` on the rows of
    ``predictions`` (a :func:`predict_table` frame), matched to ``labels`` by ``path``: the accuracy, F1 and CCC of
    a model on a labelled set of your own images. Multilabel tasks are thresholded at ``thresholds[task]`` (a
    loaded model's ``thresholds``, as its ``_on`` columns are), 0.5 by default as in ``train.evaluate``.
    Returns a tidy frame ``task, metric, value``; ValueError when a predicted path has no labels row."""
    if labels["path"].duplicated().any():
        raise ValueError(f"labels: repeated paths, e.g. {labels.loc[labels['path'].duplicated(), 'path'].iloc[0]!r}")
    merged = predictions[["path"]].astype(str).merge(labels.astype({"path": str}), on="path", how="left",
                                                     indicator=True)
    unmatched = merged.loc[merged["_merge"] == "left_only", "path"]
    if len(unmatched):
        raise ValueError(f"{len(unmatched)} predicted paths have no labels row, e.g. {unmatched.iloc[0]!r} (predict "
                         f"on the labels CSV itself so the paths match)")
    records = []
    for task in tasks:
        if not all(c in merged.columns for c in task.columns):
            continue
        y_true = merged[list(task.columns)].astype(float).to_numpy()
        y_pred = predictions[[f"{task.name}_{label}" for label in task.labels]].to_numpy(dtype=float)
        y_true = y_true[:, 0] if task.kind == "multiclass" else y_true
        scored = score_task(task, y_true, y_pred, threshold=(thresholds or {}).get(task.name, 0.5))
        records += [(task.name, metric, float(value)) for metric, value in scored.items()]
    return pd.DataFrame(records, columns=["task", "metric", "value"])


def list_images(inputs: str | os.PathLike | pd.DataFrame | Sequence[str | os.PathLike],
                recursive: bool = True) -> list[tuple[str, Path]]:
    """``(path as listed, file)`` pairs of :func:`predict_table`'s ``inputs``, in prediction order; ValueError when
    nothing is listed, FileNotFoundError when ``inputs`` is neither a folder, a file nor a matching pattern."""
    if isinstance(inputs, pd.DataFrame):
        return _from_table(inputs, Path("."), "the table")
    if not isinstance(inputs, (str, os.PathLike)):
        files = [(os.fspath(p), Path(p)) for p in inputs]
        if not files:
            raise ValueError("no image paths given")
        return files
    path = Path(inputs)
    if path.is_dir():
        return [(os.fspath(p), p) for p in image_files(path, recursive)]
    if path.is_file() and path.suffix.lower() == ".csv":
        return _from_table(_read_csv(path), path.parent, f"CSV file {os.fspath(path)!r}")
    if path.exists():  # a FIFO or a device too: decode_image refuses it by name, never opening it
        return [(os.fspath(path), path)]
    if any(c in os.fspath(inputs) for c in "*?["):
        matches = sorted(p for p in glob.glob(os.fspath(inputs), recursive=recursive)
                         if not Path(p).is_dir() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not matches:
            raise ValueError(f"no file matches the pattern {os.fspath(inputs)!r}")
        return [(p, Path(p)) for p in matches]
    raise FileNotFoundError(f"no folder, file or matching glob pattern: {os.fspath(inputs)!r}")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read CSV file {os.fspath(path)!r}: {err}") from None


def _from_table(table: pd.DataFrame, root: Path, what: str) -> list[tuple[str, Path]]:
    if "path" not in table.columns:
        raise ValueError(f"{what} has no 'path' column (columns: {list(table.columns)})")
    empty = [int(i) for i in np.flatnonzero(table["path"].isna().to_numpy())]
    if empty:
        raise ValueError(f"{what}: empty 'path' in rows {empty[:5]} (0-based, header not counted)")
    if table.empty:
        raise ValueError(f"{what} lists no image (no rows)")
    return [(str(p), root / str(p)) for p in table["path"]]


def _input_format(model: nn.Module) -> tuple[tuple[int, int], str]:
    """The model's input size (H, W) and Pillow mode ("RGB" or "L")."""
    if not getattr(model, "tasks", None):
        raise ValueError(f"predict_table: expected a MultiHeadNet, got {type(model).__name__}")
    size = getattr(model, "input_size", None)
    if size is None:
        raise ValueError("predict_table: the model has no input_size; load it from a model file (models.load) or "
                         "set model.input_size = (H, W), the size of its training images")
    return tuple(size), "L" if getattr(model, "in_channels", 3) == 1 else "RGB"


def _decode(part: list[tuple[str, Path]], size: tuple[int, int], mode: str, strict: bool, kept: list[str],
            skipped: list[dict[str, str]]) -> list[np.ndarray]:
    """Decoded images of one batch of files; appends to ``kept`` / ``skipped`` (or raises, with ``strict``)."""
    images = []
    for shown, file in part:
        try:
            images.append(decode_image(file, size, mode))
        except (FileNotFoundError, ValueError) as err:
            if strict:
                raise
            skipped.append({"path": shown, "reason": str(err)})
            continue
        kept.append(shown)
    return images


def _check_finite(outputs: dict[str, np.ndarray], paths: list[str], n_read: int) -> None:
    """ValueError naming the images of ``paths`` (first few, and how many) whose outputs hold NaN or infinity."""
    bad = np.zeros(len(paths), dtype=bool)
    for values in outputs.values():
        bad |= ~np.isfinite(values.reshape(len(paths), -1)).all(axis=1)
    if bad.any():
        shown = [p for p, b in zip(paths, bad) if b][:3]
        raise ValueError(f"the model's outputs are NaN or infinite for {int(bad.sum())} of the last {len(paths)} "
                         f"of {n_read} images read, e.g. {shown}: its weights are broken (a training run that "
                         f"diverged?); no predictions returned")


def _frame(model: nn.Module, paths: list[str], outputs: dict[str, np.ndarray]) -> pd.DataFrame:
    """The prediction table (the column order of the module docstring); ValueError on a repeated column name."""
    columns: list[tuple[str, Any]] = [("path", paths)]
    for task in model.tasks:
        columns += _task_columns(task, outputs[task.name], getattr(model, "thresholds", {}).get(task.name, 0.5))
    columns += _compound_columns(model, outputs)
    names = [n for n, _ in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task and label names give repeated prediction columns {repeated}; rename them")
    return pd.DataFrame(dict(columns))


def _task_columns(task: Task, values: np.ndarray, threshold: float | np.ndarray) -> list[tuple[str, np.ndarray]]:
    """One task's columns: see the module docstring."""
    named = [(f"{task.name}_{label}", values[:, j]) for j, label in enumerate(task.labels)]
    if task.kind == "multiclass":
        return [(task.name, np.asarray(task.labels, dtype=object)[values.argmax(axis=1)]), *named]
    if task.kind == "multilabel":
        on = (values >= np.broadcast_to(np.asarray(threshold, dtype=float), values.shape[1:])).astype(np.int64)
        return [*named, *((f"{name}_on", on[:, j]) for j, (name, _) in enumerate(named))]
    return named


def _compound_columns(model: nn.Module, outputs: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """``compound`` and ``compound_score`` from the model's compound table, if it has one that fits a task."""
    table = getattr(model, "tables", {}).get(COMPOUND_TABLE)
    if table is None:
        return []
    for task in model.tasks:
        if task.kind == "multilabel" and set(table.attributes) <= set(task.labels):
            profiles = table.matrix(table.classes, task.labels, fill=0.0)
            scores = zero_shot_scores(outputs[task.name], profiles)
            best = scores.argmax(axis=1)
            return [(COMPOUND_TABLE, np.asarray(table.classes, dtype=object)[best]),
                    ("compound_score", scores[np.arange(len(best)), best])]
    warnings.warn(f"the model's {COMPOUND_TABLE!r} table (attributes {list(table.attributes)[:5]}...) fits no "
                  f"multilabel task; no compound columns", stacklevel=4)
    return []
