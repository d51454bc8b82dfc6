"""A trained network applied: ``evaluate`` (every task scored on every source), ``predict`` (per-task
probabilities or values) and ``features`` (the shared layers' output)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..batching import TaskDataset, decode_image, image_files, to_float
from ..metrics import score_task
from ..models import output_probabilities
from ..source import Source
from ..study import Study
from ..tasks import Task
from .devices import _resolve_amp, resolve_device
from .setup import _unpack


def _eval_batches(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
                  amp: bool, forward) -> list:
    """``forward(x)`` on every batch of uint8 ``(N, H, W, C)`` images (as float ``(B, C, H, W)``), in eval mode and
    without gradients; the model's train / eval mode is restored afterwards."""
    was_training = model.training
    model.eval().to(device)
    outputs = []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                part = images[i:i + batch_size]
                part = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
                x = to_float(part.permute(0, 3, 1, 2).to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs.append(forward(x))
    finally:
        model.train(was_training)
    return outputs


def _outputs(model: nn.Module, images: np.ndarray | torch.Tensor, tasks: Sequence[Task], batch_size: int,
             device: torch.device, amp: bool) -> dict[str, np.ndarray]:
    """Probabilities (multiclass softmax, multilabel sigmoid) or values (regression) for uint8 ``(N, H, W, C)``."""
    def forward(x: torch.Tensor) -> dict[str, np.ndarray]:
        out = model(x)
        probs = {}
        for t in tasks:
            probs[t.name] = output_probabilities(t.kind, out[t.name].float()).cpu().numpy()
        return probs

    chunks = _eval_batches(model, images, batch_size, device, amp, forward)
    return {t.name: np.concatenate([c[t.name] for c in chunks]) for t in tasks}


def evaluate(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    split: str | None = "test",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> pd.DataFrame:
    """Every task scored on every source's ``split`` (None = all rows) where that split has labels for it
    (``docs/method.md#measuring-the-claims``: every task on every test set; metrics of ``metrics.score_task``, P1 §4
    criteria).

    Returns a tidy frame with columns ``source, task, metric, value``.
    """
    srcs, tasks, _ = _unpack(sources, tasks, None, split)
    dev = resolve_device(device)
    use_amp = _resolve_amp(amp, dev)
    records = []
    for k, (name, src) in enumerate(srcs.items()):
        if len(src) == 0:
            continue
        ds = TaskDataset(src, tasks, source_id=k)
        labelled = [t for t in tasks if ds.labelled[t.name]]
        if not labelled:
            continue
        preds = _outputs(model, src.images, labelled, batch_size, dev, use_amp)
        for t in labelled:
            for metric, value in score_task(t, ds.targets[t.name], preds[t.name], ds.masks[t.name]).items():
                records.append((name, t.name, metric, float(value)))
    return pd.DataFrame(records, columns=["source", "task", "metric", "value"])


def predict(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source | pd.DataFrame | str | Path,
    tasks: Sequence[Task] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    size: int | tuple[int, int] | None = None,
    amp: bool | str = False,
    root: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of every task (P1 §4 heads): probabilities ``(N, C)`` (multiclass softmax), ``(N, K)``
    (multilabel sigmoid) or values ``(N, K)`` (regression).

    ``inputs``: uint8 images ``(N, H, W, C)`` (array or tensor), a ``Source``, a canonical table with a
    ``path`` column (relative paths resolved against ``root``; rows in table order), or a folder of face crops
    (files in sorted path order, see ``batching.image_files``). Files are decoded with Pillow, RGB or grey to
    match ``model.in_channels``, and resized to ``size`` (default: the ``input_size`` of a model from
    ``models.load``). ``tasks`` default to ``model.tasks``.
    """
    tasks = tuple(tasks or getattr(model, "tasks", ()))
    if not tasks:
        raise ValueError("predict: give tasks (the model has no .tasks attribute)")
    if isinstance(inputs, Source):
        images = inputs.images
    elif isinstance(inputs, (str, Path, pd.DataFrame)):
        size = size or getattr(model, "input_size", None)
        if size is None:
            raise ValueError("predict: size (the model's input size) is needed to resize images from files "
                             "(a model from models.load knows it)")
        if isinstance(inputs, pd.DataFrame):
            if "path" not in inputs.columns:
                raise ValueError(f"predict: the table has no 'path' column (columns: {list(inputs.columns)})")
            files = [Path(root or ".") / p for p in inputs["path"]]
        else:
            files = image_files(inputs)
        mode = "L" if getattr(model, "in_channels", 3) == 1 else "RGB"
        images = np.stack([decode_image(p, size, mode) for p in files])
    else:
        images = inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"predict: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    return _outputs(model, images, tasks, batch_size, dev, _resolve_amp(amp, dev))


def features(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> np.ndarray:
    """Frozen shared features ``(N, feature_dim)`` (float32) of uint8 images ``(N, H, W, C)`` or a ``Source``: the
    output of the shared layers, before the task heads (P1 §4.6 few-shot probes;
    ``docs/method.md#zero-shot-and-few-shot``). The model is put in eval mode for the pass (BatchNorm running
    statistics, no dropout) and restored afterwards; it needs a ``features(x)`` method (``models.MultiHeadNet``)."""
    if not callable(getattr(model, "features", None)):
        raise ValueError(f"features: {type(model).__name__} has no features(x) method (use models.MultiHeadNet)")
    images = inputs.images if isinstance(inputs, Source) else inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"features: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    chunks = _eval_batches(model, images, batch_size, dev, _resolve_amp(amp, dev),
                           lambda x: model.features(x).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, int(getattr(model, "feature_dim", 0))), np.float32)
    return np.concatenate(chunks)
