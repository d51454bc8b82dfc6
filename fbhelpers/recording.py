"""What a notebook records: ``record(name, value)`` into ``<output dir>/metrics.json``, and its main model file.

``configure(OUTPUT_DIR, seed=SEED)`` once (``profiles.setup`` does it), then ``record(name, value)``: values become
plain JSON (:func:`to_jsonable`) and are written atomically, so the suite (:mod:`fbhelpers.runner`) and the
notebook regression tests read every notebook's numbers from its ``metrics.json`` (:func:`load_metrics`).
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .files import read_json, write_json_atomic

ENV_OUTPUT_DIR = "FB_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = Path("runs") / "interactive"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"

_output_dir: Path | None = None


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


def configure(output_dir: str | os.PathLike | None = None, seed: int | None = None) -> Path:
    """Set where ``record()`` writes (created if needed) and, when ``seed`` is given, seed every RNG.

    ``output_dir=None`` falls back to env ``FB_OUTPUT_DIR``, else ``runs/interactive`` (relative to the
    current directory). Returns the absolute output directory. Notebooks call this (through
    ``profiles.setup``) in the cell after the parameters cell.
    """
    global _output_dir
    if output_dir is None or str(output_dir) == "":
        output_dir = os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR
    path = Path(output_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    _output_dir = path
    if seed is not None:
        seed_everything(int(seed))
    return path


def output_dir() -> Path:
    """Where ``record()`` writes now: ``configure()``'s dir, else env ``FB_OUTPUT_DIR``, else ``runs/interactive``."""
    if _output_dir is not None:
        return _output_dir
    return Path(os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR).expanduser().resolve()


def to_jsonable(value: Any, name: str = "value") -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become numbers and lists, a pandas Series a
    dict, tuples lists; NaN and +-inf become ``None`` (JSON has no NaN) **[choice: inf -> null too]**.

    Raises TypeError naming ``name`` and the type for anything else (e.g. a DataFrame: record its columns).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), name)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), name)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"record {name!r}: dict keys must be str or int, got {key!r} ({type(key).__name__})")
            out[str(key)] = to_jsonable(item, f"{name}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{name}[{i}]") for i, item in enumerate(value)]
    module = type(value).__module__
    if module.startswith("torch") and hasattr(value, "detach"):
        return to_jsonable(value.detach().cpu().tolist(), name)
    if module.startswith("pandas"):
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, pd.Series):
            return to_jsonable(value.to_dict(), name)
    raise TypeError(
        f"record {name!r}: cannot store a {type(value).__module__}.{type(value).__name__}; "
        "record numbers, strings, lists or dicts of them (e.g. one metric per call, or df.to_dict())"
    )


def load_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """The metrics recorded in ``path`` (a ``metrics.json`` or the directory holding it); ``{}`` if none yet."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / METRICS_FILE
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    return data


def record(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` in ``<output dir>/metrics.json`` (read-modify-write, atomic rename).

    Values go through ``to_jsonable`` (numpy/torch -> numbers/lists, NaN -> null). Recording a name again
    replaces its value. The runner collects these files into ``summary.csv``/``summary.md`` and the notebook
    regression tests compare them with ``tests/references/<profile>.json`` (:mod:`fbhelpers.references`).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"record: metric name must be a non-empty string, got {name!r}")
    stored = to_jsonable(value, name)
    path = output_dir() / METRICS_FILE
    metrics = load_metrics(path)
    metrics[name] = stored
    write_json_atomic(path, metrics)


def save_model(model: Any, study: Any, settings: Mapping[str, Any], **extra: Any) -> Path:
    """A notebook's main model as ``<output dir>/model.pt`` (``models.save``), so a run leaves a model that
    ``python -m fbhelpers predict`` applies: the input size of ``settings`` (``profiles.setup``'s), the couplings of
    ``study``, and as metadata the notebook, profile, data, seed and sources; ``extra`` goes to ``models.save``
    (``tables=``, ``thresholds=``, or more metadata such as ``variant=`` and ``scores=``)."""
    from .models import save

    meta = {key: settings[key] for key in ("notebook", "profile", "data", "seed")}
    return save(model, output_dir() / MODEL_FILE, input_size=settings["image_size"], couplings=study.couplings,
                sources=list(study.sources), **{**meta, **extra})
