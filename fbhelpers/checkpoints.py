"""What a ``train.fit`` run leaves on disk, and how a resume reads it back.

In a run's ``checkpoint_dir``: ``last.pt`` (:data:`CHECKPOINT`: the training state, the run's settings, the
best-model selection state and what rebuilds the model), ``best.pt`` (:data:`BEST`: the best weights when
selecting) and ``history.csv`` (:data:`HISTORY`), written by the ``Checkpointer`` (a ``callbacks.Callback``
that ``fit`` calls after every step). Every file is written under a temporary name and then renamed
(``files.atomic_path``), so that a killed process never leaves a half-written one;
checkpoints hold only tensors and plain containers and are read with ``weights_only=True``. The global RNG states
(torch, CUDA, numpy, Python) and the augmentation generator's are saved too, so a resumed run replays the
uninterrupted one exactly; a checkpoint written with other settings is refused, listing them.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import pandas as pd
import torch

from .callbacks import Callback, Selection
from .files import atomic_path, read_weights_only, save_torch

CHECKPOINT = "last.pt"
BEST = "best.pt"
HISTORY = "history.csv"


# ----------------------------------------------------------------------------------------------- files
def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """``torch.save``, atomically (``files.save_torch``): a killed process never leaves a half-written file, a full
    disk is a ``files.DiskFullError`` naming the folder. ``state`` must hold only tensors and plain containers
    (``weights_only`` loading)."""
    return save_torch(dict(state), path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``fit`` (``files.read_weights_only``: on CPU, a clear error naming the file)."""
    return read_weights_only(path, f"checkpoint {str(path)!r}")


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame`` (without its index) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    """The history rows as a frame; without rows, an empty frame with a ``step`` column."""
    return pd.DataFrame(rows) if rows else pd.DataFrame({"step": pd.Series(dtype=int)})


# ----------------------------------------------------------------------------------------------- RNG state
def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, Python) and ``generator``'s, as tensors and plain values."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(pystate), gauss],
        "augment": generator.get_state(),
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    """Restore what ``rng_state`` captured (the CUDA states only on as many devices as were saved)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, pystate, gauss = state["python"]
    random.setstate((version, tuple(pystate), gauss))
    generator.set_state(state["augment"])


# ----------------------------------------------------------------------------------------------- a run's files
class _Resumable(Protocol):
    """What the ``Checkpointer`` saves and restores (``train.TrainState``)."""

    rows: list[dict[str, float]]
    step: int

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Checkpointer(Callback):
    """A callback on every rank (the history is read back before a write); rank 0 writes, atomically, into
    ``folder``: ``last.pt`` (the ``TrainState``, ``config`` = the run's settings, ``best`` = the ``selection``
    state, and ``meta``: ``model_spec``, ``input_size``, ``couplings``) every ``every`` steps, at the end
    (``steps``) and at an early stop; ``best.pt`` (the best weights as ``model``, with ``step``, ``score``,
    ``select``, ``config`` and ``meta``) when the best step changed; and ``history.csv``."""

    all_ranks = True

    def __init__(self, folder: str | Path, every: int, steps: int, settings: Mapping[str, Any],
                 meta: Mapping[str, Any], rank: int, selection: Selection | None = None) -> None:
        self.folder, self.every, self.steps, self.settings, self.meta = Path(folder), every, steps, settings, meta
        self.rank, self.selection = rank, selection
        self.best_written: int | None = None

    def needs_history(self, step: int) -> bool:
        return step == self.steps or step % self.every == 0

    def on_step_end(self, state: _Resumable) -> None:
        if self.needs_history(state.step):
            self.write(state)

    def on_stop(self, state: _Resumable) -> None:
        self.write(state)  # an early stop (patience or any callback) is final: resume must not train on

    def write(self, state: _Resumable) -> None:
        if self.rank != 0:
            return
        selection = self.selection
        if selection is not None and selection.best_step not in (None, self.best_written):
            save_checkpoint(self.folder / BEST, {"step": selection.best_step, "score": selection.best_score,
                                                 "select": selection.select, "model": selection.best_model,
                                                 "config": self.settings, **self.meta})
            self.best_written = selection.best_step
        best = selection.state_dict() if selection is not None else None
        save_checkpoint(self.folder / CHECKPOINT, {**state.state_dict(), "config": self.settings, "best": best,
                                                   **self.meta})
        write_csv(history_frame(state.rows), self.folder / HISTORY)

    def restore(self, state: _Resumable) -> None:
        """Continue from ``last.pt`` when it exists (the selection too); ValueError listing every setting that
        differs."""
        path = self.folder / CHECKPOINT
        if not path.exists():
            return
        saved = load_checkpoint(path)
        diff = _differences(saved["config"], self.settings)
        if diff:
            listed = "; ".join(f"{k}: {_short(a)} vs {_short(b)}" for k, (a, b) in diff.items())
            raise ValueError(f"checkpoint {path} was written with other settings (saved vs now): {listed}")
        state.load_state_dict(saved)
        if self.selection is not None:
            self.selection.load_state_dict(saved["best"])
            self.best_written = self.selection.best_step


def _differences(saved: Any, now: Any, name: str = "") -> dict[str, tuple[Any, Any]]:
    """Settings that differ, by dotted name (into dicts and lists of dicts): name -> (saved, now)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        pairs = [(str(k), saved.get(k), now.get(k)) for k in dict.fromkeys([*saved, *now])]
    elif (isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now)
          and any(isinstance(v, dict) for v in saved)):
        pairs = [(str(i), a, b) for i, (a, b) in enumerate(zip(saved, now))]
    else:
        return {} if saved == now else {name: (saved, now)}
    out: dict[str, tuple[Any, Any]] = {}
    for key, a, b in pairs:
        out.update(_differences(a, b, f"{name}.{key}" if name else key))
    return out


def _short(value: Any, width: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
