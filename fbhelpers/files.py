"""Writing fbhelpers' own files: atomically, and with plain data that a ``weights_only`` load reads back unchanged.

The files fbhelpers writes and reads back, or that a user reads while a run goes on (metrics, checkpoints and
history, model files, prediction tables, the image cache's index), go through :func:`atomic_path`: written under a
temporary name in the same folder, then renamed, so a reader (or a resumed run) never sees a half-written file and a
killed process leaves none behind. Settings and specs stored in checkpoints and model files go through
:func:`plain_data` first, so that what is read back compares equal to what was written; :func:`read_weights_only`
reads such files back with ``torch.load(weights_only=True)``.

A write that does not fit (no space left, a file over the size limit, a quota) raises :class:`DiskFullError`
naming the file, its folder, the bytes needed (when known) and the bytes free; the partial file is removed and the
file already at ``path`` is left as it was.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


DISK_ERRNOS: dict[int, str] = {errno.ENOSPC: "no space left on the device",
                               errno.EFBIG: "file too large (over the file system's or the process's file size "
                                            "limit, see `ulimit -f`)",
                               errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(OSError):
    """A write that did not fit (``errno`` one of :data:`DISK_ERRNOS`); the message names the file, its folder, the
    bytes needed (when known) and free."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends without error, removed
    when it raises. The folder is created; the file gets the usual permissions (0666 less the umask). ``needed``:
    the bytes the file takes at least, when known: checked against the free space first. A full disk (or a file
    over the size limit) is a :class:`DiskFullError` (:func:`disk_errors`)."""
    path = Path(path)
    with disk_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed is not None:
            check_free_space(path, needed)
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


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn an ENOSPC / EFBIG / EDQUOT error raised in the block (or wrapped in another error, as torch does) into a
    :class:`DiskFullError` naming ``path`` (:func:`disk_full_error`); other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        code = _disk_errno(err)
        if code is None:
            raise
        raise disk_full_error(path, code, needed) from None


def check_free_space(path: str | os.PathLike, needed: int) -> None:
    """:class:`DiskFullError` when the folder of ``path`` has fewer than ``needed`` bytes free."""
    if shutil.disk_usage(Path(path).parent).free < needed:
        raise disk_full_error(path, errno.ENOSPC, needed)


def disk_full_error(path: str | os.PathLike, code: int, needed: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` of a write of ``path`` that failed with ``code``: its folder, the bytes needed
    (``needed``, when known) and free (``shutil.disk_usage``)."""
    folder = Path(path).parent
    try:
        free = f"{format_bytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    need = f"at least {format_bytes(needed)} needed" if needed is not None else "size needed unknown"
    return DiskFullError(code, f"cannot write {os.fspath(path)}: {DISK_ERRNOS[code]} (folder {os.fspath(folder)}: "
                               f"{need}, {free}); nothing half-written was left, files already there are unchanged")


def format_bytes(n: int) -> str:
    """``n`` bytes for a person: ``"512 bytes"``, ``"12.3 MiB"``."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _disk_errno(err: BaseException) -> int | None:
    """The errno of :data:`DISK_ERRNOS` in ``err`` or the errors it chains (``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_path`), after checking that the folder has room for
    its tensors. Written through an open file, so that a full disk is the OS error :func:`disk_errors` names (a
    save to a path says only ``[enforce fail at inline_container.cc] unexpected pos``)."""
    import torch  # here, so that writing metrics does not import torch

    with atomic_path(path, needed=_tensor_bytes(obj)) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the distinct tensor storages in ``obj`` (through mappings, lists and tuples)."""
    import torch

    storages: dict[int, int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return sum(storages.values())


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
