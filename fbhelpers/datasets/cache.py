"""The packed image cache: every distinct image of a table decoded, cropped and resized once into a memory-mapped
uint8 ``(N, H, W, C)`` array on disk, which the trainer reads row by row (the image store, docs/design.md#data-flow).

Layout: ``<cache_dir>/<key>/`` holds ``images.npy`` (the array, opened with ``np.load(mmap_mode="r")``),
``index.json`` (the distinct ``[path, box]`` keys in row order; box ``[x, y, w, h]`` or ``null``), ``status.npy``
(per row: 0 pending, 1 decoded, 2 failed; a failed row stays zero), ``failed.json`` (row -> reason) and
``meta.json`` (root, size, mode, shape). ``key`` hashes (root, sorted distinct keys, size, mode), so a second call
with the same inputs opens the finished folder without decoding anything (delete the folder when files change).

Resumable: a build writes into ``<key>.partial/`` and flushes ``status.npy`` after every finished chunk of images
(pixels first); a killed build (even SIGKILL) continues on the next call, decoding only the images whose status is
still pending (a chunk killed half-written is redone), and ends with the same bytes as an uninterrupted one; the
folder is renamed to ``<key>`` when complete. A lock file (``<key>.lock``) serialises concurrent builds of one key.

Worker processes come from the ``forkserver`` context [choice]: ``fork`` copies a parent that already runs threads
(torch's and OpenBLAS's pools, a loader's prefetch thread, tqdm's monitor, a Jupyter kernel's) together with locks
those threads may hold, which can deadlock the child (Python 3.12 warns about it, 3.14 stopped defaulting to it);
``spawn`` re-imports fbhelpers and torch in every worker of every build (seconds each). The fork server starts once
per Python process with this module preloaded, so later pools start in milliseconds from a clean, idle process.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..display import show_progress
from ..files import DISK_ERRNOS, DiskFullError, atomic_path, check_free_space, disk_errors
from ..images import DECODER_VERSION, decode_image
from ..source import Source
from .common import BOX_COLUMNS, LOG

KEY_COLUMNS: tuple[str, ...] = ("path", *BOX_COLUMNS)
PENDING, DECODED, FAILED = 0, 1, 2
CHUNK = 64
SKIP_REASON = "image not decodable"
Record = list[Any]  # [path, [x, y, w, h] or None]: one distinct image of the cache


def default_cache_dir() -> Path:
    """``$FBHELPERS_CACHE`` or ``~/.cache/fbhelpers``."""
    return Path(os.environ.get("FBHELPERS_CACHE") or Path.home() / ".cache" / "fbhelpers").expanduser()


# ----------------------------------------------------------------------------------------------- keys
def _size(size: int | Sequence[int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in hw):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _key_frame(paths: Sequence[str | Path], boxes: Any = None) -> pd.DataFrame:
    """Per row: ``path`` (str) and the box columns (float; NaN = whole image). ValueError naming the path of a box
    that is neither all NaN nor four finite numbers with ``w, h > 0``."""
    frame = pd.DataFrame({"path": pd.Series(np.asarray(paths, dtype=object), dtype=object).astype(str)})
    box = np.full((len(frame), 4), np.nan) if boxes is None else np.asarray(boxes, dtype=np.float64)
    if box.shape != (len(frame), 4):
        raise ValueError(f"boxes must have shape ({len(frame)}, 4) (x, y, w, h per path), got {box.shape}")
    whole = np.isnan(box).all(axis=1)
    bad = ~whole & (~np.isfinite(box).all(axis=1) | (box[:, 2] <= 0) | (box[:, 3] <= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{frame['path'].iloc[i]}: crop box {box[i].tolist()} must be 4 finite numbers "
                         "x, y, w, h with w, h > 0, or all NaN (whole image)")
    for k, col in enumerate(BOX_COLUMNS):
        frame[col] = box[:, k]
    return frame


def _records(keys: pd.DataFrame) -> list[Record]:
    box = keys[list(BOX_COLUMNS)].to_numpy()
    return [[p, None if np.isnan(b[0]) else b.tolist()] for p, b in zip(keys["path"], box)]


def _digest(spec: dict[str, Any], records: list[Record]) -> str:
    text = json.dumps({**spec, "keys": records}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------------------------- lazy view
class CachedImages:
    """A lazy uint8 ``(len(rows), H, W, C)`` view of a cache array: row ``i`` is ``array[rows[i]]`` (rows may
    repeat). Indexing with an int, a slice, an int array or a bool mask reads only those rows and returns a numpy
    array; ``np.asarray`` materialises every row; ``take(index)`` is a new lazy view (``Source.subset`` / ``rows``)."""

    def __init__(self, array: np.ndarray, rows: Sequence[int] | np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(f"CachedImages needs a uint8 (N, H, W, C) array, got {array.dtype} {array.shape}")
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(array))):
            raise ValueError(f"rows must be 1-D positions in 0..{len(array) - 1}")
        self.array, self.rows = array, rows

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"CachedImages({len(self.rows)} rows over {len(self.array)} cached images {self.array.shape[1:]})"

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return np.take(self.array, rows, axis=0).view(np.ndarray)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            head, rest = (key[0], key[1:]) if key else (slice(None), ())
            first = self[head]
            return first[rest] if first.ndim == 3 else first[(slice(None), *rest)]
        if isinstance(key, (int, np.integer)):
            return np.array(self.array[self.rows[key]])
        return self._read(self.rows[key] if isinstance(key, slice) else self.rows[np.asarray(key)])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError("CachedImages cannot be read as an array without a copy")
        out = self._read(self.rows)
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, index: Sequence[int] | np.ndarray) -> "CachedImages":
        """The rows at ``index`` (positions or a bool mask) as a new lazy view; nothing is read."""
        index = np.asarray(index)
        return CachedImages(self.array, self.rows[np.flatnonzero(index) if index.dtype == bool else index])


# ----------------------------------------------------------------------------------------------- finished cache
@dataclass(frozen=True)
class CacheStats:
    """What one ``build_cache`` call did: ``n`` distinct images, ``decoded`` by this call (0 when a finished cache
    was opened), ``failed`` (path -> reason, all failures of the cache) and the wall ``seconds``."""

    n: int
    decoded: int
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the CLI: counts and images/s."""
        return (f"{self.n:,} images: {self.decoded:,} decoded now, {self.n - len(self.failed):,} cached, "
                f"{len(self.failed):,} failed; {self.seconds:.1f} s, {self.images_per_s:,.0f} images/s")


@dataclass
class PackedCache:
    """A finished cache folder: ``images`` (read-only memory-mapped uint8 ``(N, H, W, C)``), ``keys`` (``path`` and
    box columns in row order), ``status`` (per row: 1 decoded, 2 failed), ``meta`` and the ``stats`` of this call."""

    folder: Path
    images: np.ndarray
    keys: pd.DataFrame
    status: np.ndarray
    meta: dict[str, Any]
    stats: CacheStats

    @classmethod
    def open(cls, folder: str | Path, decoded: int = 0, seconds: float = 0.0) -> "PackedCache":
        """Open a finished cache folder (``<cache_dir>/<key>``)."""
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"{folder} is not a finished image cache (no meta.json)")
        records = json.loads((folder / "index.json").read_text())
        box = np.array([b if b is not None else [np.nan] * 4 for _, b in records], dtype=np.float64).reshape(-1, 4)
        keys = _key_frame([p for p, _ in records], box)
        reasons = json.loads((folder / "failed.json").read_text())
        failed = {records[int(row)][0]: reason for row, reason in reasons.items()}
        stats = CacheStats(len(records), decoded, failed, seconds)
        return cls(folder, np.load(folder / "images.npy", mmap_mode="r"), keys, np.load(folder / "status.npy"),
                   json.loads((folder / "meta.json").read_text()), stats)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def ok(self) -> np.ndarray:
        """Per cache row: True where the image was decoded."""
        return self.status == DECODED

    def rows(self, paths: Sequence[str | Path], boxes: Any = None) -> np.ndarray:
        """The cache row of every ``(path, box)`` (int64, table order); KeyError naming the first one not cached."""
        query = _key_frame(paths, boxes)
        index = self.keys.assign(row=np.arange(len(self.keys)))
        rows = query.merge(index, how="left", on=list(KEY_COLUMNS), sort=False)["row"].to_numpy()
        missing = np.isnan(rows)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise KeyError(f"{query['path'].iloc[i]} (box {query.iloc[i, 1:].tolist()}) is not in cache {self.folder}")
        return rows.astype(np.int64)


# ----------------------------------------------------------------------------------------------- building
def _decode_chunk(task: tuple[np.ndarray, list[Record], str, tuple[int, int], str]) -> tuple[np.ndarray, ...]:
    """Worker: decode one chunk -> (its cache rows, uint8 pixels, reason per image or None)."""
    rows, records, root, size, mode = task
    out = np.zeros((len(records), *size, 3 if mode == "RGB" else 1), np.uint8)
    reasons: list[str | None] = []
    for i, (path, box) in enumerate(records):
        try:
            out[i] = decode_image(Path(root) / path, size, mode, box=box)
            reasons.append(None)
        except (FileNotFoundError, ValueError) as err:
            reasons.append(str(err))
    return rows, out, reasons


@contextmanager
def _mapper(workers: int, n_tasks: int) -> Iterator[Callable]:
    """``map`` in this process for one worker or one task, else a forkserver pool's ``imap_unordered``."""
    if workers <= 1 or n_tasks <= 1:
        yield map
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ctx.Pool(min(workers, n_tasks)) as pool:
        yield pool.imap_unordered


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def _start_partial(partial: Path, spec: dict[str, Any], records: list[Record]) -> None:
    """A fresh ``<key>.partial`` folder: index, meta, zero array (disk space checked and reserved up front) and,
    last, status. A full disk (or an array over the file size limit) is a ``files.DiskFullError`` naming the array
    file, and the folder is removed."""
    shape = (len(records), *spec["size"], 3 if spec["mode"] == "RGB" else 1)
    images, needed = partial / "images.npy", int(np.prod(shape))
    partial.mkdir(parents=True, exist_ok=True)
    try:
        with disk_errors(images, needed):
            check_free_space(images, needed)
            _write_json(partial / "index.json", records)
            _write_json(partial / "meta.json", {**spec, "shape": list(shape), "version": 1})
            _write_json(partial / "failed.json", {})
            _reserve(np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=shape), images)
            np.save(partial / "status.tmp.npy", np.zeros(len(records), np.uint8))
            os.replace(partial / "status.tmp.npy", partial / "status.npy")
    except DiskFullError:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _reserve(array: np.memmap, path: Path) -> None:
    """Allocate the disk blocks of the memory-mapped ``array`` (file ``path``) now, so that a full disk is an error
    here and not a crash when a later chunk is written; a file system without fallocate keeps the file sparse."""
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, array.offset + array.nbytes)
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise


def _build(folder: Path, spec: dict[str, Any], records: list[Record], *, workers: int, strict: bool,
           progress: bool | None, chunk: int) -> int:
    """Decode every pending image (``chunk`` per task) into ``<key>.partial``, then rename it to ``folder``;
    returns the number decoded."""
    from tqdm.auto import tqdm

    partial = folder.with_name(folder.name + ".partial")
    if not (partial / "status.npy").is_file():
        _start_partial(partial, spec, records)
    images = np.load(partial / "images.npy", mmap_mode="r+")
    status = np.load(partial / "status.npy", mmap_mode="r+")
    failed = {k: v for k, v in json.loads((partial / "failed.json").read_text()).items()
              if status[int(k)] == FAILED}
    pending = np.flatnonzero(status == PENDING)
    tasks = [(rows, [records[r] for r in rows], spec["root"], tuple(spec["size"]), spec["mode"])
             for rows in (pending[i:i + chunk] for i in range(0, len(pending), chunk))]
    quiet = not show_progress(progress)
    decoded = 0
    with _mapper(workers, len(tasks)) as run, tqdm(total=len(records), initial=len(records) - len(pending),
                                                   desc="caching images", unit="img", disable=quiet) as bar:
        for rows, pixels, reasons in run(_decode_chunk, tasks):
            bad = [(int(row), r) for row, r in zip(rows, reasons) if r is not None]
            if bad and strict:
                raise ValueError(f"{bad[0][1]} (strict=True; strict=False skips undecodable images)")
            images[rows] = pixels
            images.flush()
            if bad:
                failed.update({str(row): reason for row, reason in bad})
                _write_json(partial / "failed.json", failed)
            status[rows] = [DECODED if r is None else FAILED for r in reasons]
            status.flush()
            decoded += len(pixels) - len(bad)
            bar.update(len(pixels))
    del images, status
    _write_json(partial / "failed.json", failed)
    os.replace(partial, folder)
    return decoded


def build_cache(paths: Sequence[str | Path], root: str | Path, size: int | tuple[int, int],
                cache_dir: str | Path | None = None, *, boxes: Any = None, mode: str = "RGB",
                workers: int | None = None, strict: bool = False, progress: bool | None = None,
                chunk: int = CHUNK) -> PackedCache:
    """Decode every distinct ``(path, box)`` once into the cache folder ``<cache_dir>/<key>`` and open it.

    ``paths``: relative to ``root`` (repeats allowed); ``boxes``: ``(len(paths), 4)`` crop boxes ``x, y, w, h`` in
    pixels of the upright image (NaN row = whole image) or None; ``size``: int (square) or ``(h, w)``; ``mode``:
    ``"RGB"`` or ``"L"``. Decoding (``images.decode_image``) runs in ``workers`` processes (default: the usable
    cores, at most 8), ``chunk`` images per task. An image that does not decode or is missing is logged by path,
    its row stays zero with status "failed" (``stats.failed``), or, with ``strict=True``, the build stops with a
    ValueError naming the path and the reason (finished chunks are kept for the next call). ``progress``: tqdm bar
    (None = on unless ``$CI`` is set). ``cache_dir`` default: :func:`default_cache_dir`. A finished cache with the
    same key is opened without decoding; an interrupted build resumes (see the module docstring).
    """
    start = time.perf_counter()
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    spec = {"root": str(Path(root).expanduser().resolve()), "size": list(_size(size)), "mode": mode,
            "decoder": DECODER_VERSION}
    keys = _key_frame(paths, boxes).drop_duplicates()
    if keys.empty:
        raise ValueError("build_cache: no image paths given")
    records = _records(keys.sort_values(list(KEY_COLUMNS), na_position="first", kind="stable"))
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    folder = base / _digest(spec, records)
    decoded = 0
    if not folder.is_dir():
        with _locked(base / f"{folder.name}.lock"):
            if not folder.is_dir():
                n_workers = workers or min(8, len(os.sched_getaffinity(0)))
                decoded = _build(folder, spec, records, workers=n_workers, strict=strict, progress=progress,
                                 chunk=chunk)
    packed = PackedCache.open(folder, decoded, time.perf_counter() - start)
    failed = packed.stats.failed
    if failed and strict:
        raise ValueError(f"{next(iter(failed.values()))} (cached as failed in {folder}; strict=True)")
    if failed:
        shown = "; ".join(f"{p}: {r}" for p, r in list(failed.items())[:5])
        LOG.warning("image cache %s: %d of %d images not decodable, skipped: %s%s", folder, len(failed),
                    len(packed), shown, " ..." if len(failed) > 5 else "")
    return packed


# ----------------------------------------------------------------------------------------------- table -> Source
def _boxes(table: pd.DataFrame, crop: str | None) -> np.ndarray | None:
    return table[list(BOX_COLUMNS)].to_numpy(np.float64) if crop else None


def cache_table(table: pd.DataFrame, root: str | Path, size: int | tuple[int, int], cache: str | Path | None = None,
                *, crop: str | None = None, mode: str = "RGB", workers: int | None = None, strict: bool = False,
                progress: bool | None = None) -> PackedCache:
    """:func:`build_cache` of the distinct images of a canonical ``table`` (its ``path`` column; with ``crop="box"``
    each row cropped to its ``box_x, box_y, box_w, box_h``): what ``python -m fbhelpers cache build`` runs and
    :func:`image_source` reads."""
    if crop not in (None, "box"):
        raise ValueError(f"crop must be None or 'box', got {crop!r}")
    missing = [c for c in ("path", *(BOX_COLUMNS if crop else ())) if c not in table.columns]
    if missing:
        raise KeyError(f"the table lacks the columns {missing}")
    return build_cache(table["path"], root, size, cache, boxes=_boxes(table, crop), mode=mode, workers=workers,
                       strict=strict, progress=progress)


def image_source(table: pd.DataFrame, root: str | Path, size: int | tuple[int, int],
                 cache: str | Path | None = None, *, name: str | None = None, crop: str | None = None,
                 within: pd.DataFrame | None = None, mode: str = "RGB", workers: int | None = None,
                 strict: bool = False, progress: bool | None = None) -> Source:
    """A ``Source`` over the canonical ``table`` whose images are a lazy :class:`CachedImages` view of the packed
    cache of its distinct images (built or opened by :func:`build_cache` in folder ``cache``).

    ``crop="box"`` crops each row to its ``box_x, box_y, box_w, box_h`` columns (NaN = whole image). Rows whose
    image failed are left out, counted in ``table.attrs["skipped"]["image not decodable"]`` (added to the counts
    already there) and logged on the ``fbhelpers.datasets`` logger. ``name`` defaults to
    ``table.attrs["dataset"]`` or the first ``source`` value. ``within``: a larger table (e.g. the loader's whole
    table) whose images the cache holds, so that every subset of one database shares one cache; ``table``'s rows
    must be among them. ValueError naming the source and ``root`` for an empty table.
    """
    first = str(table["source"].iloc[0]) if len(table) and "source" in table else "images"
    name = name or table.attrs.get("dataset") or first
    if table.empty:
        raise ValueError(f"{name}: no rows to read images for under {root} (every label row may lack its image "
                         f"file: see table.attrs['skipped'] or `python -m fbhelpers check-data`)")
    packed = cache_table(table if within is None else within, root, size, cache, crop=crop, mode=mode,
                         workers=workers, strict=strict, progress=progress)
    rows = packed.rows(table["path"], _boxes(table, crop))
    keep = packed.ok[rows]
    n_bad = int((~keep).sum())
    if n_bad:
        skipped = dict(table.attrs.get("skipped", {}))
        skipped[SKIP_REASON] = skipped.get(SKIP_REASON, 0) + n_bad
        table = table[keep]
        table.attrs = {**table.attrs, "skipped": skipped}
        LOG.warning("%s: %d rows kept; skipped %d (%s)", name, len(table), n_bad, SKIP_REASON)
    return Source(name, table, CachedImages(packed.images, rows[keep]))
