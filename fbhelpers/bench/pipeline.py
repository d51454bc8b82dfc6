"""Data pipeline: the packed uint8 cache + whole-batch augmentation (what ``train.fit`` reads) versus the naive
pipeline (a torch ``DataLoader`` whose workers open each JPEG with Pillow, resize it and augment it alone).

Both read the same ``n_images`` generated JPEGs (256-512 px, :func:`fbhelpers.bench.images.write_jpegs`) and
deliver the same thing: float ``(B, 3, S, S)`` batches in [0, 1] on ``device``, augmented by
:func:`fbhelpers.batching.augment` with the trainer's default settings (random resized crop, rotation, flip,
brightness and contrast), ``batch`` images per batch, ``WORKERS`` worker processes on the naive side.

* ``cached``: ``image_source`` (the cache, built once before timing; its build rate is reported separately) ->
  ``MultiSourceLoader`` (``gather`` of a whole batch by array indexing; on CUDA a prefetch thread and pinned memory)
  -> ``to_device`` (non-blocking on CUDA) -> ``to_float`` -> ``augment`` of the whole batch: the exact calls of
  ``train.train_step``.
* ``naive``: ``DataLoader(num_workers=WORKERS, persistent_workers=True)`` over a ``Dataset`` whose
  ``__getitem__`` runs ``batching.decode_image`` (Pillow decode + bicubic resize, the same function the cache
  build runs) and ``augment`` on that one image; default collation stacks the batch (pinned on CUDA).

A third candidate, ``cached, 1 thread``, runs the cached path with one intra-op thread: on a shared machine
whose cores other processes keep busy, an OpenMP team of torch threads can lose most of its time waiting for a
descheduled member (``OMP_WAIT_POLICY=passive`` in the environment avoids that), which one thread never does.

One timed call = one pass of ``batches_per_call`` batches through each pipeline; the prefetch thread is stopped
at the end of a call and the naive loader's epoch is exhausted, so neither works while the other is timed.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rows_for
from .images import write_jpegs
from .timing import interleaved

WORKERS = 2
GOAL = 5.0


def settings(tiny: bool, repeats: int = 0) -> dict[str, int]:
    """Full: 2,000 JPEGs at 112 px (the notebooks' image size), batches of 64, 16 per timed call, 5 repeats."""
    if tiny:
        return {"n_images": 32, "size": 32, "batch": 8, "batches_per_call": 2, "repeats": repeats or 1}
    return {"n_images": 2000, "size": 112, "batch": 64, "batches_per_call": 16, "repeats": repeats or 5}


def augment_options() -> dict[str, Any]:
    """``batching.augment``'s settings as ``train.fit(augment=True)`` uses them."""
    from .. import train

    return train.augment_options(True)


class NaiveDataset(torch.utils.data.Dataset):
    """One JPEG per item: Pillow decode + resize to ``size`` (``batching.decode_image``), then ``augment`` of that
    single image (its own seeded generator), as float ``(3, S, S)``."""

    def __init__(self, root: Path, names: list[str], size: int) -> None:
        self.root, self.names, self.size = Path(root), list(names), int(size)
        self.options = augment_options()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        from ..batching import augment, decode_image, to_float

        pixels = decode_image(self.root / self.names[i], self.size)
        x = to_float(torch.from_numpy(np.require(pixels, requirements="W")).permute(2, 0, 1)[None])
        return augment(x, torch.Generator().manual_seed(int(i)), **self.options)[0]


class NaivePipeline:
    """Calling it runs ``batches`` batches of the naive pipeline (random images, a new order every call) and
    returns the last batch, on ``device``."""

    def __init__(self, root: Path, names: list[str], size: int, batch: int, batches: int, device: str) -> None:
        self.device = torch.device(device)
        self.n = batch * batches
        self.order = torch.Generator().manual_seed(1)
        sampler = torch.utils.data.RandomSampler(range(len(names)), num_samples=self.n, generator=self.order)
        self.loader = torch.utils.data.DataLoader(
            NaiveDataset(root, names, size), batch_size=batch, sampler=sampler, num_workers=WORKERS,
            persistent_workers=WORKERS > 0, pin_memory=self.device.type == "cuda", drop_last=True)

    def __call__(self) -> torch.Tensor:
        x = None
        for x in self.loader:
            x = x.to(self.device, non_blocking=True)
        return x


class CachedPipeline:
    """Calling it runs ``batches`` batches of the trainer's data path over the packed cache (see the module
    docstring) and returns the last batch, on ``device``; ``threads``: torch's intra-op threads during the call
    (None = as they are)."""

    def __init__(self, source, batch: int, batches: int, device: str, threads: int | None = None) -> None:
        from ..batching import MultiSourceLoader
        from ..tasks import EXPR

        self.device = torch.device(device)
        self.batches = batches
        cuda = self.device.type == "cuda"
        self.loader = MultiSourceLoader.from_sources({"bench": source}, (EXPR,), batch, prefetch=2 if cuda else 0,
                                                     pin_memory=cuda)  # the trainer's defaults
        self.generator = torch.Generator()
        self.options = augment_options()
        self.threads = threads

    def __call__(self) -> torch.Tensor:
        from ..batching import augment, to_device, to_float

        cuda = self.device.type == "cuda"
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads or before)
        try:
            x = None
            for _ in range(self.batches):
                batch = to_device(self.loader.next_batch(), self.device, non_blocking=cuda)
                x = augment(to_float(batch["image"]), self.generator, **self.options)
        finally:
            self.loader.close()
            torch.set_num_threads(before)
        return x


def build(n_images: int, size: int, folder: Path) -> tuple[Path, list[str], Any, float]:
    """JPEGs in ``folder/images``, their cache in ``folder/cache`` (timed: seconds of the build) and the
    ``Source`` over it: ``(root, names, source, build seconds)``."""
    import pandas as pd

    from ..datasets.cache import build_cache, image_source

    root = folder / "images"
    names = write_jpegs(root, n_images)
    build_cache(names[:4], root, 8, folder / "warm-up", workers=WORKERS, chunk=1, progress=False)  # fork server
    start = time.perf_counter()
    packed = build_cache(names, root, size, folder / "cache", workers=WORKERS, progress=False)
    seconds = time.perf_counter() - start
    assert packed.stats.decoded == n_images, packed.stats.summary()
    table = pd.DataFrame({"path": names, "split": "train", "source": "bench",
                          "expr": pd.array(np.arange(n_images) % 7, dtype="Int64")})
    return root, names, image_source(table, root, size, folder / "cache", progress=False), seconds


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    s = settings(tiny, repeats)
    n, size, batch, per_call = s["n_images"], s["size"], s["batch"], s["batches_per_call"]
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        root, names, source, build_s = build(n, size, Path(tmp))
        naive = NaivePipeline(root, names, size, batch, per_call, device)
        cached = CachedPipeline(source, batch, per_call, device)
        a, b = naive(), cached()
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            raise AssertionError(f"the pipelines deliver different batches: {a.shape} {a.dtype} {a.device} vs "
                                 f"{b.shape} {b.dtype} {b.device}")
        candidates = {"naive": naive, "cached": cached}
        if torch.get_num_threads() > 1:
            candidates["cached, 1 thread"] = CachedPipeline(source, batch, per_call, device, threads=1)
            candidates["cached, 1 thread"]()
        times = interleaved(candidates, s["repeats"], warmup=0, synchronize=sync)
        candidates.clear()
        del naive  # the last reference: stops the persistent workers before the folder goes
    images = batch * per_call
    rate = {f"{k} ({_describe(k)})": images / statistics.median(t) for k, t in times.items()}
    base = next(iter(rate))
    case = f"{n:,} JPEGs 256-512 px -> float {batch}x3x{size}x{size} batches, augmented"
    rows = rows_for("pipeline", case, "throughput", "images/s", rate, baseline=base, n=s["repeats"],
                    goal=f">= {GOAL:g}x naive", met=lambda c, v, r: None if r is None else r >= GOAL)
    rows += rows_for("pipeline", f"cache build, {n:,} JPEGs -> {size} px (once, before timing)", "throughput",
                     "images/s", {f"build_cache, {WORKERS} workers": n / build_s}, baseline=None, n=1)
    return rows


def _describe(name: str) -> str:
    return {"naive": f"Pillow + per-sample augment, DataLoader {WORKERS} workers",
            "cached": f"packed uint8 cache + batch augment, torch's {torch.get_num_threads()} threads",
            "cached, 1 thread": "the same, torch.set_num_threads(1)"}[name]
