"""Model files: a trained network as one file (:func:`save`, :func:`load`, :func:`save_from_checkpoint`): its
spec, weights, input size, relatedness tables, decision thresholds and metadata, read back with
``torch.load(weights_only=True)`` and rebuilt without the code of the run that trained it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fbhelpers.files import read_weights_only, save_torch
from fbhelpers.relatedness import Relatedness
from fbhelpers.study import Coupling
from fbhelpers.tasks import Task

from .backbones import _load_state
from .network import MultiHeadNet, build

# ----------------------------------------------------------------------------------------------- model files
MODEL_FORMAT = "fbhelpers-model"
MODEL_FORMAT_VERSION = 1
MODEL_KEYS: tuple[str, ...] = ("format", "format_version", "fbhelpers_version", "spec", "state_dict", "input_size",
                               "couplings", "tables", "thresholds", "metadata")
COUPLING_KEYS: tuple[str, ...] = ("class_task", "attr_task", "classes", "attributes", "values")


def save(model: MultiHeadNet, path: str | os.PathLike, *, input_size: int | Sequence[int] | None = None,
         couplings: Sequence[Coupling | Mapping[str, Any]] | None = None,
         tables: Mapping[str, Relatedness] | None = None,
         thresholds: Mapping[str, float | Sequence[float]] | None = None, **metadata: Any) -> Path:
    """Write ``model`` to one self-describing file that :func:`load` rebuilds without any code of the run.

    The file (``torch.save``, readable with ``weights_only=True``, written atomically: ``files.save_torch``) holds
    the keys :data:`MODEL_KEYS`: the format marker and version, the fbhelpers version, ``spec``
    (:meth:`MultiHeadNet.spec`), ``state_dict``, ``input_size`` ``[H, W]`` (an int is a square), ``couplings``
    (the relatedness tables of training, ``study.Coupling`` objects or dicts of :data:`COUPLING_KEYS`, stored
    aligned to the tasks' label orders), ``tables`` (extra named ``Relatedness``, e.g. ``{"compound":
    prior("du2014_compound")}`` for zero-shot compound expressions), ``thresholds`` (``{task: per-label decision
    thresholds}`` of the multilabel tasks, a number or one per label; [choice] 0.5 where not given) and
    ``metadata`` (the keyword arguments: plain JSON-like values, numpy scalars converted). ``input_size``,
    ``couplings``, ``tables`` and ``thresholds`` default to the model's own attributes (set by :func:`load`).
    """
    from fbhelpers import __version__  # the package imports this module first

    if not isinstance(model, MultiHeadNet):
        raise ValueError(f"save: expected a MultiHeadNet, got {type(model).__name__}")
    size = model.input_size if input_size is None else input_size
    if size is None:
        raise ValueError("save: give input_size (the model's training image size, H, W or one int)")
    record = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "fbhelpers_version": __version__,
        "spec": _json_like(model.spec(), "spec", "model"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input_size": list(_input_size(size)),
        "couplings": [_coupling_record(c, model.tasks) for c in (model.couplings if couplings is None else couplings)],
        "tables": {str(n): _table_record(t, str(n)) for n, t in (model.tables if tables is None else tables).items()},
        "thresholds": _threshold_record(model.thresholds if thresholds is None else thresholds, model.tasks),
        "metadata": {str(k): _json_like(v, str(k)) for k, v in metadata.items()},
    }
    return save_torch(record, path)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> MultiHeadNet:
    """The :class:`MultiHeadNet` saved by :func:`save`, on ``device`` and in eval mode, with its attributes
    ``input_size`` (H, W), ``couplings`` (``study.Coupling`` with ``Relatedness`` tables), ``tables`` (name ->
    ``Relatedness``), ``thresholds`` (multilabel task -> ``(K,)`` array) and ``metadata``.

    Read with ``torch.load(weights_only=True)``: a file that is not an fbhelpers model file (a tampered pickle, a
    plain state dict, a ``fit`` checkpoint, text), another format version, a missing key or weights that do not
    fit the spec raise ValueError naming the file (and the key or parameter); a missing file FileNotFoundError.
    """
    where = f"model file {os.fspath(path)!r}"
    record = _read_record(path, where)
    model = _build_from(record["spec"], record["state_dict"], where)
    try:
        model.input_size = _input_size(record["input_size"])
        model.couplings = [Coupling(c["class_task"], c["attr_task"], _relatedness(c, "coupling"))
                           for c in record["couplings"]]
        model.tables = {name: _relatedness(t, name) for name, t in record["tables"].items()}
        model.thresholds = {name: np.asarray(v, dtype=float) for name, v in record["thresholds"].items()}
        model.metadata = dict(record["metadata"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where} is malformed: {type(err).__name__}: {err}") from None
    return model.to(device).eval()


def save_from_checkpoint(checkpoint_path: str | os.PathLike, path: str | os.PathLike, **metadata: Any) -> Path:
    """Turn a ``train.fit`` checkpoint (``last.pt`` or ``best.pt``: ``model_spec``, ``model``, ``input_size``,
    ``couplings``) into a model file (:func:`save`), with the best step's weights when the run selected a model
    (``fit(..., select=...)``) and the last step's otherwise; ``metadata`` is stored, with ``checkpoint_step`` and
    the run's ``training`` settings (steps, seed, lr, optimizer, schedule) unless given. ValueError naming the file
    when it is not readable with ``weights_only=True`` or lacks a key (a checkpoint of a network other than
    ``MultiHeadNet``, or written before checkpoints carried ``model_spec``)."""
    where = f"checkpoint {os.fspath(checkpoint_path)!r}"
    state = read_weights_only(checkpoint_path, where)
    if not isinstance(state, Mapping):
        raise ValueError(f"{where} is not a train.fit checkpoint (it holds a {type(state).__name__})")
    if state.get("format") == MODEL_FORMAT:
        raise ValueError(f"{where} is already a model file (models.save, export-model): predict with it or load it "
                         f"with models.load; export-model converts train.fit checkpoints (last.pt, best.pt)")
    missing = [k for k in ("model_spec", "model", "input_size") if state.get(k) is None]
    if missing:
        raise ValueError(f"{where} lacks {missing}: it was not written by train.fit for a MultiHeadNet, or predates "
                         f"checkpoints that describe their model; rebuild the network and use models.save instead")
    best = state.get("best") or {}
    model = _build_from(state["model_spec"], best.get("model", state["model"]), where)
    config = state.get("config") or {}
    metadata.setdefault("checkpoint_step", best.get("step", state.get("step")))
    metadata.setdefault("training", {k: config[k] for k in ("steps", "seed", "lr", "optimizer", "schedule")
                                     if k in config})
    return save(model, path, input_size=state["input_size"], couplings=state.get("couplings") or [], **metadata)


def _build_from(spec: Any, state: Any, where: str) -> MultiHeadNet:
    """The network of ``spec`` holding the weights ``state``; ValueError naming ``where`` (and the parameter)."""
    if not isinstance(spec, Mapping) or not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where} is malformed: the spec must be a mapping and the state dict map names to tensors")
    try:
        model = build(spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    _load_state(model, state, where, strict=True, hint="its spec does not describe its weights")
    _check_finite(state, where)
    return model


def _check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """ValueError naming the tensors of ``state`` (the first five, and how many) holding NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{where} has NaN or infinite weights in {len(bad)} of its {len(state)} tensors: "
                         f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''} (a training run that diverged?); "
                         f"the model would predict nothing meaningful")


def _input_size(value: Any) -> tuple[int, int]:
    """(H, W) from an int (a square) or a pair of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    pair = tuple(pair) if isinstance(pair, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                 for v in pair):
        raise ValueError(f"input_size must be a positive int or a pair (H, W) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _task(tasks: Sequence[Task], name: str, kind: str, what: str) -> Task:
    """The task ``name`` of kind ``kind``; ValueError naming ``what`` otherwise."""
    found = [t for t in tasks if t.name == name]
    if not found or found[0].kind != kind:
        raise ValueError(f"{what}: {name!r} is not a {kind} task of the model; its tasks are "
                         f"{[(t.name, t.kind) for t in tasks]}")
    return found[0]


def _relatedness(record: Mapping[str, Any], name: str) -> Relatedness:
    """A ``Relatedness`` from a stored record (``classes``, ``attributes``, ``values`` and optional provenance)."""
    table = pd.DataFrame(np.asarray(record["values"], dtype=float), index=list(record["classes"]),
                         columns=list(record["attributes"]))
    return Relatedness(table=table, name=record.get("name", name), citation=record.get("citation", ""),
                       provenance=record.get("provenance", ""), uncertain=tuple(record.get("uncertain", ())),
                       notes=dict(record.get("notes", {})))


def _coupling_record(coupling: Coupling | Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    """A coupling as plain lists (:data:`COUPLING_KEYS` and the table's ``name``), its table aligned to the class
    and attribute tasks' label orders."""
    if isinstance(coupling, Mapping):
        missing = [k for k in COUPLING_KEYS if k not in coupling]
        if missing:
            raise ValueError(f"coupling {dict(coupling)!r:.200} lacks the keys {missing}")
        names, rel = (coupling["class_task"], coupling["attr_task"]), _relatedness(coupling, "coupling")
    elif isinstance(coupling, Coupling):
        names, rel = (coupling.class_task, coupling.attr_task), coupling.relatedness
    else:
        raise ValueError(f"couplings: expected study.Coupling objects or dicts, got {type(coupling).__name__}")
    what = f"coupling {names[0]!r} x {names[1]!r}"
    ct, at = _task(tasks, names[0], "multiclass", what), _task(tasks, names[1], "multilabel", what)
    if not isinstance(rel, Relatedness):
        values = torch.as_tensor(rel).detach().cpu().double().numpy()
        if values.shape != (ct.n_outputs, at.n_outputs):
            raise ValueError(f"{what}: relatedness has shape {values.shape}, the tasks need "
                             f"({ct.n_outputs}, {at.n_outputs})")
        rel = Relatedness(pd.DataFrame(values, index=list(ct.labels), columns=list(at.labels)))
    rel = rel.align(ct.labels, at.labels)
    return {"class_task": ct.name, "attr_task": at.name, "name": rel.name, "classes": list(rel.classes),
            "attributes": list(rel.attributes), "values": rel.table.to_numpy(dtype=float).tolist()}


def _table_record(rel: Relatedness, name: str) -> dict[str, Any]:
    """A named ``Relatedness`` as plain lists and strings."""
    if not isinstance(rel, Relatedness):
        raise ValueError(f"tables[{name!r}]: expected a Relatedness, got {type(rel).__name__}")
    return {"name": rel.name, "citation": rel.citation, "provenance": rel.provenance,
            "uncertain": list(rel.uncertain), "notes": dict(rel.notes), "classes": list(rel.classes),
            "attributes": list(rel.attributes), "values": rel.table.to_numpy(dtype=float).tolist()}


def _threshold_record(thresholds: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, list[float]]:
    """Per-label decision thresholds of every multilabel task ([choice] 0.5 where not given), each in [0, 1]."""
    for name in thresholds:
        _task(tasks, name, "multilabel", "thresholds")
    record = {}
    for t in (t for t in tasks if t.kind == "multilabel"):
        given = thresholds.get(t.name, 0.5)
        values = np.asarray(given, dtype=float)
        values = np.full(t.n_outputs, float(values)) if values.ndim == 0 else values
        if values.shape != (t.n_outputs,) or not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"thresholds[{t.name!r}] must be one number or {t.n_outputs} numbers in [0, 1] "
                             f"(labels {list(t.labels)}), got {given!r}")
        record[t.name] = values.tolist()
    return record


def _json_like(value: Any, key: str, what: str = "metadata") -> Any:
    """``value`` as plain data a ``weights_only`` file holds (numpy scalars converted, tuples as lists);
    ValueError naming ``what`` and ``key`` for anything else."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v, f"{key}[{i}]", what) for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_like(v, f"{key}.{k}", what) for k, v in value.items()}
    raise ValueError(f"{what} {key!r}: {type(value).__name__} {value!r:.80} is not plain data (None, bool, int, "
                     f"float, str, or lists and str-keyed dicts of them)")


def _read_record(path: str | os.PathLike, where: str) -> Mapping[str, Any]:
    """The checked contents of a model file: the format marker, version and every key of :data:`MODEL_KEYS`."""
    record = read_weights_only(path, where)
    if not isinstance(record, Mapping) or record.get("format") != MODEL_FORMAT:
        hint = ""
        if isinstance(record, Mapping) and "model" in record and ("optimizer" in record or "model_spec" in record):
            hint = (f" (a train.fit checkpoint: export it first with `python -m fbhelpers export-model "
                    f"{os.fspath(path)} model.pt` or models.save_from_checkpoint, then use model.pt)")
        elif isinstance(record, Mapping) and record and all(isinstance(v, torch.Tensor) for v in record.values()):
            hint = " (a plain state dict: build the network and use load_weights)"
        raise ValueError(f"{where} is not an fbhelpers model file: no 'format': {MODEL_FORMAT!r} marker{hint}")
    if record.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(f"{where} has 'format_version' {record.get('format_version')!r}; this fbhelpers reads "
                         f"version {MODEL_FORMAT_VERSION}")
    missing = [k for k in MODEL_KEYS if k not in record]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing}")
    return record
