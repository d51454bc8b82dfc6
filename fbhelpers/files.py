"""Writing fbhelpers' own files: atomically, and with plain data that a ``weights_only`` load reads back unchanged.

The files fbhelpers writes and reads back, or that a user reads while a run goes on (metrics, checkpoints and
history, model files, prediction tables, the image cache's index), go through :func:`atomic_path`: written under a
temporary name in the same folder, then renamed, so a reader (or a resumed run) never sees a half-written file and a
killed process leaves none behind. Settings and specs stored in checkpoints and model files go through
:func:`plain_data` first, so that what is read back compares equal to what was written; :func:`read_weights_only`
reads such files back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends without error, removed
    when it raises. The folder is created; the file gets the usual permissions (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def plain_data(value: Any) -> Any:
    """``value`` with tuples as lists, numpy scalars as Python numbers and mapping keys as strings, recursively:
    the form it has after a ``weights_only`` save and load, so a stored setting compares equal to a fresh one."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def read_weights_only(path: str | os.PathLike, where: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU: a file fbhelpers wrote (a checkpoint, a model file). ``where``
    names it in the errors: FileNotFoundError, or ValueError for anything the load refuses (a tampered or
    foreign file)."""
    import torch  # here, so that writing metrics does not import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"{where} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = (f"it pickles {refused.group(1)}, which weights_only loading refuses (a tampered or foreign file)"
                  if refused else f"torch.load(weights_only=True) cannot read it ({type(err).__name__}: "
                                  f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else ''})")
        raise ValueError(f"{where} is not an fbhelpers file: {reason}") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path` (a reader never sees a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (``write_text_atomic``); NaN is refused."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path`` (``{}`` if the file does not exist); ValueError naming the file and line if invalid."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
