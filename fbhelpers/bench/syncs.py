"""Host-device synchronisations per training step, counted (``docs/performance.md#benchmarks``).

A host sync is any operation that makes the host wait for the device to read a value back: ``.item()``,
``bool(t)`` (a Python ``if`` on a tensor), ``int(t)`` / ``float(t)``, ``.tolist()``, ``.cpu()`` / ``.numpy()``,
``torch.nonzero``, boolean-mask indexing ``x[mask]`` (its result size depends on the values), ``torch.equal`` ...
Each one stalls the CUDA stream, so a training step should make none except when the trainer reads its losses
back (every ``sync_every`` steps).

How they are counted:

- on CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` makes torch warn at every synchronising call; the warnings
  are counted (everything, torch's own calls included);
- on CPU nothing synchronises, so the Python paths that would are instrumented: the tensor methods and torch
  functions above are wrapped while :class:`SyncCounter` is active and every call made from code outside torch's
  own package is counted (torch's optimisers read their step counters with ``.item()``, but those counters
  stay on the host even on CUDA, so they are not device syncs).

``run()`` is the benchmark command's entry (``python -m fbhelpers bench syncs``): syncs per ``train.train_step``
of MT + soft co-annotation + distribution matching (both directions) on the face coupling, with the losses'
per-call checks on ("validate", the public loss functions' default and what every step once did)
and off (the trainer's path: ``fit`` validates data and couplings once at set-up).
"""
from __future__ import annotations

import os
import statistics
import sys
import warnings
from collections import Counter
from typing import Any, Callable

import torch

_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
# tensor methods that read a value back to the host
_METHODS: tuple[str, ...] = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__array__",
                             "nonzero", "argwhere", "masked_select", "cpu", "numpy", "equal", "allclose")
# torch functions that do
_FUNCTIONS: tuple[str, ...] = ("nonzero", "argwhere", "masked_select", "unique", "equal", "allclose", "is_nonzero")


def _bool_index(index: Any) -> bool:
    """True when an index (or one part of a tuple index) is a boolean / uint8 tensor: ``x[mask]``."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts)


class SyncCounter:
    """Context manager counting host syncs while active (see the module doc for how, per device).

    ``total``: syncs so far; ``counts``: per operation; ``sites``: per ``(file:line, operation)`` of the calling
    code (CPU only), to find them."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.counts: Counter[str] = Counter()
        self.sites: Counter[tuple[str, str]] = Counter()
        self._saved: list[tuple[Any, str, Any, bool]] = []
        self._records: list[warnings.WarningMessage] | None = None
        self._catch: warnings.catch_warnings | None = None

    @property
    def total(self) -> int:
        if self._records is not None:
            self._count_warnings()
        return sum(self.counts.values())

    # -------------------------------------------------------------------------------------------- CPU: wrappers
    def _hit(self, name: str) -> None:
        frame = sys._getframe(2)
        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(_TORCH_DIR):
            return
        self.counts[name] += 1
        self.sites[(f"{os.path.basename(path)}:{frame.f_lineno}", name)] += 1

    def _wrap(self, owner: Any, name: str, check: Callable[..., bool] | None = None) -> None:
        if not hasattr(owner, name):
            return
        original = getattr(owner, name)
        own = name in vars(owner)
        hit = self._hit

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if check is None or check(*args, **kwargs):
                hit(name if check is None else "bool-mask indexing")
            return original(*args, **kwargs)

        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        self._saved.append((owner, name, original, own))
        setattr(owner, name, wrapper)

    def _patch(self) -> None:
        for name in _METHODS:
            self._wrap(torch.Tensor, name)
        for name in _FUNCTIONS:
            self._wrap(torch, name)
        self._wrap(torch.Tensor, "__getitem__", lambda self, index: _bool_index(index))
        self._wrap(torch.Tensor, "__setitem__", lambda self, index, value: _bool_index(index))

    def _unpatch(self) -> None:
        for owner, name, original, own in reversed(self._saved):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._saved.clear()

    # -------------------------------------------------------------------------------------------- CUDA: warnings
    def _count_warnings(self) -> None:
        for w in self._records:
            if "synchroniz" in str(w.message):
                self.counts["cuda sync"] += 1
        self._records.clear()

    def __enter__(self) -> "SyncCounter":
        if self.device.type == "cuda":
            self._catch = warnings.catch_warnings(record=True)
            self._records = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.synchronize(self.device)
            torch.cuda.set_sync_debug_mode("warn")
        else:
            self._patch()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            self._count_warnings()
            self._catch.__exit__(*exc)
            self._records = self._catch = None
        else:
            self._unpatch()


def syncs_per_call(fn: Callable[[], Any], calls: int, device: str | torch.device = "cpu",
                   warmup: int = 1) -> list[int]:
    """Host syncs made by each of ``calls`` calls of ``fn`` (after ``warmup`` uncounted calls)."""
    for _ in range(warmup):
        fn()
    per_call = []
    with SyncCounter(device) as counter:
        for _ in range(calls):
            before = counter.total
            fn()
            per_call.append(counter.total - before)
    return per_call


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    """Rows for ``python -m fbhelpers bench``: syncs per ``train_step`` (median over ``repeats`` steps, default 5;
    the count is the same every step) of MT, and of MT + soft co-annotation + DM (both directions) with the
    losses' per-call checks on (``validate``, baseline) and off (``trainer``), on the face coupling (7 x 17).
    Goal: 0 for the trainer's step (the losses are read back by the trainer every ``sync_every`` steps, outside
    the step). The step is ``fit``'s: default augmentation, bf16 autocast on CUDA (on the CPU the augmentation's
    host-to-device copies are not visible; on CUDA they would be counted)."""
    from ..losses import LossConfig
    from ..train import augment_options, resolve_device
    from ._step import bench_model, coupled_case, trainer_step

    dev = resolve_device(device)
    steps = repeats or (2 if tiny else 5)
    case = coupled_case(7, 17, n=16 if tiny else 96, size=16 if tiny else 48)
    model = bench_model(case.tasks)
    quota = 4 if tiny else 24
    variants = {
        "mt+coann+dm validate": (LossConfig(coann="soft", dm="both"), True),
        "mt+coann+dm": (LossConfig(coann="soft", dm="both"), False),
        "mt": (LossConfig(), False),
    }
    counts = {}
    for name, (loss, validate) in variants.items():
        step, _ = trainer_step(model, case, loss, device=str(dev), quota=quota, validate=validate,
                               augment=augment_options(True), amp=dev.type == "cuda")
        counts[name] = syncs_per_call(step, steps, dev)
    base = statistics.median(counts["mt+coann+dm validate"])
    rows = []
    for name, per in counts.items():
        value = float(statistics.median(per))
        baseline = name == "mt+coann+dm validate"
        rows.append({"benchmark": "syncs", "case": case.name, "candidate": name, "metric": "syncs_per_step",
                     "value": value, "unit": "syncs", "ratio": None if baseline else (value / base if base else None),
                     "goal": "" if baseline else "== 0", "met": None if baseline else value == 0,
                     "n": len(per)})
    return rows
