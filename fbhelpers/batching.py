"""The data path: Source -> labelled arrays -> multi-source batches -> (augmented) float images.

docs/design.md#data-flow: ``table -> image store -> torch Dataset -> multi-source batch sampler -> batch`` (the image
store: the packed cache of ``datasets.cache``, or a twin's in-memory array).
P0 §4 / P1 §4 train FaceBehaviorNet on batches that *mix the databases*, so that every loss term (each task's
loss, co-annotation, distribution matching) is present in every step; ``MultiSourceLoader`` gives every batch a
fixed quota of images from each source. Labels a source does not carry stay missing (mask ``False``, target
filled with 0), never a silent 0 label.

Everything random here is a pure function of ``(seed, step)`` (sampling) or of a generator the caller owns
(augmentation), so a resumed run replays the exact same sample sequence, and DDP ranks draw disjoint samples.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .images import decode_image, image_files  # noqa: F401 (re-exported: fb.batching.decode_image)
from .source import Source
from .tasks import Task

Batch = dict[str, Any]


def _numeric_columns(source: Source, columns: Sequence[str]) -> np.ndarray:
    """``table[columns]`` as float64 with NaN for missing; a clear error naming the first non-numeric cell."""
    block = source.table[list(columns)]
    try:
        return block.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        for col in columns:
            num = pd.to_numeric(block[col], errors="coerce")
            bad = num.isna() & block[col].notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"source {source.name!r}: column {col!r} row {row} holds non-numeric value "
                    f"{block[col].iloc[row]!r}"
                ) from None
        raise


def task_arrays(source: Source, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Target and mask arrays of one task over a whole source (vectorised from the canonical table).

    Contract "Batch": multiclass -> int64 ``(N,)`` codes and bool ``(N,)`` mask; multilabel / regression ->
    float32 ``(N, K)`` values and bool ``(N, K)`` mask. Missing entries get mask ``False`` and target 0.
    A task whose columns are all absent is not labelled by this source (all masks ``False``); a task with only
    some of its columns present is refused (add the others as NaN columns: that is how a dataset says "this AU
    is not annotated here"). Multiclass codes must be integers in ``0..C-1``, multilabel values in ``[0, 1]``
    (soft targets allowed), regression values finite.
    """
    n = len(source)
    present = [c for c in task.columns if c in source.table.columns]
    if not present:
        shape = (n,) if task.kind == "multiclass" else (n, task.n_outputs)
        dtype = np.int64 if task.kind == "multiclass" else np.float32
        return np.zeros(shape, dtype), np.zeros(shape, bool)
    if len(present) != len(task.columns):
        missing = [c for c in task.columns if c not in present]
        raise ValueError(
            f"source {source.name!r}: task {task.name!r} has columns {present} but lacks {missing}; "
            "a task's columns must all be present (NaN = not annotated) or all absent"
        )
    values = _numeric_columns(source, task.columns)
    mask = ~np.isnan(values)
    if task.kind == "multiclass":
        values, mask = values[:, 0], mask[:, 0]
        bad = mask & ((values != np.round(values)) | (values < 0) | (values >= task.n_outputs))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"source {source.name!r}: task {task.name!r} row {row} has code {values[row]!r}, "
                f"expected an integer in 0..{task.n_outputs - 1}"
            )
        return np.where(mask, values, 0).astype(np.int64), mask
    if task.kind == "multilabel":
        bad = mask & ((values < 0) | (values > 1))
        what = "a value in [0, 1]"
    else:
        bad = mask & ~np.isfinite(values)
        what = "a finite value"
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"source {source.name!r}: task {task.name!r} column {task.columns[col]!r} row {row} has "
            f"{values[row, col]!r}, expected {what}"
        )
    return np.where(mask, values, 0).astype(np.float32), mask


class TaskDataset(Dataset):
    """A torch ``Dataset`` over one ``Source``: uint8 ``(C, H, W)`` image + per-task targets and masks.

    Targets and masks are built once, vectorised, in ``__init__`` (see ``task_arrays`` for validation);
    ``gather(index)`` returns a whole batch by plain array indexing (the fast path the loader uses).
    ``labelled[task]`` says whether this source carries any label of that task.
    """

    def __init__(self, source: Source, tasks: Sequence[Task], source_id: int = 0) -> None:
        self.source = source
        self.tasks = tuple(tasks)
        self.source_id = int(source_id)
        self.targets: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        for task in self.tasks:
            self.targets[task.name], self.masks[task.name] = task_arrays(source, task)
        self.labelled = {name: bool(m.any()) for name, m in self.masks.items()}

    @property
    def name(self) -> str:
        return self.source.name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Batch:
        image = torch.from_numpy(np.ascontiguousarray(self.source.images[i])).permute(2, 0, 1).contiguous()
        return {
            "image": image,
            "source": torch.tensor(self.source_id, dtype=torch.long),
            "targets": {k: torch.from_numpy(np.asarray(v[i])) for k, v in self.targets.items()},
            "masks": {k: torch.from_numpy(np.asarray(v[i])) for k, v in self.masks.items()},
        }

    def gather(self, index: np.ndarray) -> Batch:
        """The batch of rows ``index``: image uint8 ``(B, C, H, W)`` on CPU, targets, masks, source ids."""
        index = np.asarray(index, dtype=np.int64)
        images = np.ascontiguousarray(self.source.images[index])
        return {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "source": torch.full((len(index),), self.source_id, dtype=torch.long),
            "targets": {k: torch.from_numpy(v[index]) for k, v in self.targets.items()},
            "masks": {k: torch.from_numpy(v[index]) for k, v in self.masks.items()},
        }


def collate(parts: Sequence[Batch]) -> Batch:
    """Join samples (``image`` of shape ``(C, H, W)``: stacked) or batches (``(B, C, H, W)``: concatenated)."""
    if not parts:
        raise ValueError("collate needs at least one sample or batch")
    join = torch.stack if parts[0]["image"].dim() == 3 else torch.cat
    return {
        "image": join([p["image"] for p in parts]),
        "source": join([p["source"] for p in parts]),
        "targets": {k: join([p["targets"][k] for p in parts]) for k in parts[0]["targets"]},
        "masks": {k: join([p["masks"][k] for p in parts]) for k in parts[0]["masks"]},
    }


def _quotas(names: Sequence[str], quota: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(quota, Mapping):
        unknown = sorted(set(quota) - set(names))
        missing = [n for n in names if n not in quota]
        if unknown or missing:
            raise ValueError(f"quota: unknown sources {unknown}, sources without a quota {missing}")
        out = {n: int(quota[n]) for n in names}
    else:
        out = {n: int(quota) for n in names}
    bad = {n: q for n, q in out.items() if q < 0}
    if bad or sum(out.values()) == 0:
        raise ValueError(f"quota must be >= 0 per source and > 0 in total, got {out}")
    return out


class MultiSourceSampler:
    """Per-step row indices of every source: ``quota[source]`` rows for this rank at every step.

    P0 §4 / P1 §4: batches mix the databases. Each source is read as an endless stream of independent
    permutations (permutation ``e`` of source ``k`` comes from ``default_rng([seed, k, e])``), so a source is
    reshuffled whenever it is exhausted. With ``world_size`` ranks, step ``t`` takes the next block of
    ``world_size * quota`` entries of the current permutation and rank ``r`` keeps slice ``r``, so ranks see
    disjoint rows within a step and every rank runs the same number of steps. A permutation holds
    ``len(source) // block`` whole blocks (the last ``len(source) % block`` rows of each shuffle are skipped,
    different ones every epoch, like ``drop_last``); a source smaller than one block is read as one endless
    stream across its permutations (it is oversampled, and rows may repeat within a step).
    ``weights[source]`` (per-row, non-negative) switches that source to sampling with replacement
    proportionally to the weights (e.g. class balancing) [choice].
    The state is just ``step``: ``state_dict()`` / ``load_state_dict()`` resume the exact same sequence.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        quota: int | Mapping[str, int],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.names = list(sizes)
        self.sizes = {n: int(sizes[n]) for n in self.names}
        empty = [n for n, s in self.sizes.items() if s == 0]
        if empty:
            raise ValueError(f"sources without rows cannot be sampled: {empty}")
        self.quota = _quotas(self.names, quota)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.weights: dict[str, np.ndarray] = {}
        for name, w in (weights or {}).items():
            if name not in self.sizes:
                raise ValueError(f"weights given for unknown source {name!r}; sources are {self.names}")
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (self.sizes[name],) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError(
                    f"weights[{name!r}] must be {self.sizes[name]} finite non-negative values with a "
                    f"positive sum, got shape {w.shape}"
                )
            self.weights[name] = w / w.sum()
        self.step = 0
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        """Steps per epoch: steps until the largest source (relative to its quota) is read once."""
        return max(
            max(1, self.sizes[n] // (self.quota[n] * self.world_size)) for n in self.names if self.quota[n] > 0
        )

    def _permutation(self, k: int, name: str, epoch: int) -> np.ndarray:
        cached = self._perm.get(name)
        if cached is None or cached[0] != epoch:
            cached = (epoch, np.random.default_rng([self.seed, k, epoch]).permutation(self.sizes[name]))
            self._perm[name] = cached
        return cached[1]

    def indices_at(self, step: int) -> dict[str, np.ndarray]:
        """This rank's row indices of every source at ``step`` (pure function of seed, step, rank)."""
        out = {}
        for k, name in enumerate(self.names):
            q, n = self.quota[name], self.sizes[name]
            if q == 0:
                out[name] = np.zeros(0, dtype=np.int64)
                continue
            if name in self.weights:
                rng = np.random.default_rng([self.seed, k, step, 1])
                drawn = rng.choice(n, size=q * self.world_size, p=self.weights[name])
                out[name] = drawn[self.rank * q:(self.rank + 1) * q]
                continue
            block = q * self.world_size
            if block <= n:  # whole blocks per permutation (its last n % block rows skipped): ranks disjoint
                epoch, b = divmod(step, n // block)
                start = b * block + self.rank * q
                out[name] = self._permutation(k, name, epoch)[start:start + q]
                continue
            start = (step * self.world_size + self.rank) * q  # source smaller than a step: endless stream
            pos = np.arange(start, start + q)
            epochs, offsets = np.divmod(pos, n)
            idx = np.empty(q, dtype=np.int64)
            for e in np.unique(epochs):
                sel = epochs == e
                idx[sel] = self._permutation(k, name, int(e))[offsets[sel]]
            out[name] = idx
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            yield self.indices_at(self.step)
            self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "quota": dict(self.quota), "sizes": dict(self.sizes)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue at ``state["step"]``; refuses a state from different sources, quotas or seed."""
        for key in ("seed", "quota", "sizes"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]!r}, this sampler {getattr(self, key)!r}")
        self.step = int(state["step"])


class MultiSourceLoader:
    """Iterates mixed batches: for each step, ``quota[source]`` rows of every source, collated in source order.

    ``datasets`` maps source name -> ``TaskDataset`` (build them with ``from_sources``). Batches are dicts as in
    the contract's Batch section with ``image`` still uint8 on CPU (the trainer moves, converts and augments).
    ``len(loader)`` = steps per epoch (see ``MultiSourceSampler``); iterating yields one epoch of steps and
    continues the streams on the next iteration; ``next_batch()`` gives one step. ``prefetch`` batches are
    gathered ahead in a background thread (useful with memory-mapped images); ``pin_memory`` pins them for
    asynchronous host-to-GPU copies. ``state_dict()`` counts *consumed* steps, so prefetching does not
    change what a resumed run sees.
    """

    def __init__(
        self,
        datasets: Mapping[str, TaskDataset],
        quota: int | Mapping[str, int],
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: Mapping[str, np.ndarray] | None = None,
        prefetch: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.datasets = dict(datasets)
        self.sampler = MultiSourceSampler(
            {n: len(d) for n, d in self.datasets.items()}, quota,
            seed=seed, rank=rank, world_size=world_size, weights=weights,
        )
        self.names = self.sampler.names
        self.prefetch, self.pin_memory = int(prefetch), bool(pin_memory)
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_sources(
        cls, sources: Mapping[str, Source], tasks: Sequence[Task], quota: int | Mapping[str, int], **kwargs: Any
    ) -> "MultiSourceLoader":
        """Wrap each source in a ``TaskDataset`` (source id = position in ``sources``) and build the loader."""
        datasets = {name: TaskDataset(src, tasks, source_id=k) for k, (name, src) in enumerate(sources.items())}
        return cls(datasets, quota, **kwargs)

    def __len__(self) -> int:
        return len(self.sampler)

    def batch_at(self, step: int) -> Batch:
        """The batch of ``step`` (a pure function of seed, step and rank)."""
        idx = self.sampler.indices_at(step)
        batch = collate([self.datasets[n].gather(idx[n]) for n in self.names if len(idx[n])])
        if self.pin_memory:
            batch = _map_tensors(batch, lambda t: t.pin_memory())
        return batch

    def _producer(self, first: int) -> None:
        step = first
        while not self._stop.is_set():
            item = self.batch_at(step)
            while not self._stop.is_set():
                try:
                    self._queue.put((step, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def next_batch(self) -> Batch:
        """The batch of the next step."""
        step = self.sampler.step
        if self.prefetch <= 0:
            batch = self.batch_at(step)
        else:
            if self._thread is None:
                self._queue = queue.Queue(maxsize=self.prefetch)
                self._stop.clear()
                self._thread = threading.Thread(target=self._producer, args=(step,), daemon=True)
                self._thread.start()
            got, batch = self._queue.get()
            assert got == step, f"prefetch out of order: got step {got}, expected {step}"
        self.sampler.step = step + 1
        return batch

    def close(self) -> None:
        """Stop the prefetch thread (it restarts on the next ``next_batch``)."""
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():  # drain, so a producer waiting on a full queue stops at once
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.001)
            self._thread, self._queue = None, None

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(len(self)):
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.close()
        self.sampler.load_state_dict(state)


def _map_tensors(batch: Batch, fn) -> Batch:
    return {
        k: ({kk: fn(vv) for kk, vv in v.items()} if isinstance(v, dict) else fn(v)) for k, v in batch.items()
    }


def to_device(batch: Batch, device: torch.device | str, non_blocking: bool = False) -> Batch:
    """Every tensor of a batch moved to ``device``."""
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` in 0..255 -> float32 in ``[0, 1]`` on the same device."""
    if images.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {images.dtype}")
    return images.float().div_(255.0)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` (bit for bit on CPU in float32 / float64, see
    ``tests/test_bench.py``) without its ``(B, h * w, 3)`` base grid and batched matmul: the grid is separable,
    ``x' = a x + b y + c``, so two broadcast passes over ``(B, h, w)`` per coordinate build it (10x faster on CPU
    at 64 x 112 x 112, where ``affine_grid`` cost as much as ``grid_sample`` itself). Other dtypes (whose matmul
    rounds once where this rounds per operation) and sides of 1 px go to ``F.affine_grid``."""
    if theta.dtype not in (torch.float32, torch.float64) or h <= 1 or w <= 1:
        return F.affine_grid(theta, [theta.shape[0], 1, h, w], align_corners=False)
    kw = {"dtype": theta.dtype, "device": theta.device}
    xs = torch.linspace(-1, 1, w, **kw) * (w - 1) / w  # as ATen's base grid: times (w - 1), then divided by w
    ys = (torch.linspace(-1, 1, h, **kw) * (h - 1) / h)[:, None]
    t = theta[:, :, :, None, None]
    grid = torch.empty(theta.shape[0], h, w, 2, **kw)
    for k in (0, 1):  # (a x + b y) + c, the matmul's order; a x and b y are small, two passes over (B, h, w)
        torch.add(t[:, k, 0] * xs, t[:, k, 1] * ys, out=grid[..., k]).add_(t[:, k, 2])
    return grid


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    crop: tuple[float, float] | None = (0.8, 1.0),
    flip: bool = True,
    brightness: float = 0.2,
    contrast: float = 0.2,
    rotate: float = 10.0,
) -> torch.Tensor:
    """Random whole-batch augmentation of float images ``(B, C, H, W)`` in ``[0, 1]``, on their own device.

    [choice] (the papers name no augmentation): random resized crop (area fraction drawn from ``crop``, random
    position inside the image; ``None`` = off), rotation up to ``rotate`` degrees, horizontal flip with
    probability 1/2 (sensible for expressions, AUs and valence/arousal, which are left/right symmetric; turn
    ``flip`` off for tasks that are not), all as one affine grid (``_affine_grid``) + ``grid_sample`` (reflection
    padding); then per-image brightness (``x * U(1 - b, 1 + b)``) and contrast (around the image's mean grey,
    ``U(1 - c, 1 + c)``) jitter, clamped to ``[0, 1]``. Random numbers come from ``generator`` (a CPU
    generator, so results do not depend on the device): all of them drawn at once and moved to the images'
    device in one copy, asynchronous from pinned memory on CUDA (no host sync).
    """
    if not images.is_floating_point():
        raise ValueError(f"augment expects float images in [0, 1] (see to_float), got {images.dtype}")
    b = images.shape[0]
    ranges = {"crop": crop, "tx": (-1, 1), "ty": (-1, 1)} if crop is not None else {}
    ranges.update({"rotate": (-rotate, rotate)} if rotate else {})
    ranges.update({"flip": (0, 1)} if flip else {})
    ranges.update({"brightness": (1 - brightness, 1 + brightness)} if brightness else {})
    ranges.update({"contrast": (1 - contrast, 1 + contrast)} if contrast else {})
    drawn = torch.rand(len(ranges), b, generator=generator)  # = one rand(b) per range, in this order
    if ranges:
        drawn = torch.stack([low + (high - low) * d for (low, high), d in zip(ranges.values(), drawn)])
    if images.device.type == "cuda":
        drawn = drawn.pin_memory()
    u = dict(zip(ranges, drawn.to(images.device, non_blocking=True)))

    scale = torch.ones(b, device=images.device)
    tx = torch.zeros(b, device=images.device)
    ty = torch.zeros(b, device=images.device)
    if crop is not None:
        scale = u["crop"].sqrt()
        tx, ty = (1 - scale) * u["tx"], (1 - scale) * u["ty"]
    angle = u["rotate"] * (torch.pi / 180) if rotate else torch.zeros(b, device=images.device)
    sign = torch.ones(b, device=images.device)
    if flip:
        sign = torch.where(u["flip"] < 0.5, -1.0, 1.0)
    if crop is not None or rotate or flip:
        cos, sin = angle.cos() * scale, angle.sin() * scale
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1
        ).to(images.dtype)
        grid = _affine_grid(theta, images.shape[-2], images.shape[-1])
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    else:
        images = images.clone()   # never change the caller's tensor
    # in place on our own tensor: the same operations in the same order as out-of-place ones (identical results)
    # without a fresh batch-sized tensor (an allocation and its page faults on CPU) per operation
    if brightness:
        images.mul_(u["brightness"].view(b, 1, 1, 1).to(images.dtype))
    if contrast:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images.sub_(mean).mul_(u["contrast"].view(b, 1, 1, 1).to(images.dtype)).add_(mean)
    return images.clamp_(0.0, 1.0)
