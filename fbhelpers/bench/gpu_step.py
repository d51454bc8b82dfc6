"""GPU training step: images/s and model-FLOPs utilisation (MFU) of one optimisation step, fp32 eager versus bf16
autocast + ``channels_last`` (+ ``torch.compile``), and the end-to-end data path (cache -> GPU augmentation ->
step) against the step alone.

* Models: ``MultiHeadNet`` with the VGG-16 backbone at 96 px and the ResNet-50 backbone at 112 px
  (``fbhelpers.models``; plain torch), one 7-class head, cross-entropy, SGD with momentum. ``tiny=True``: the CNN4
  backbone at 32 px, batch 4 (what the test suite runs on CPU, to prove the code).
* Batch: on CUDA the largest power of two whose fp32 step (the hungriest candidate) fits in half the GPU's memory,
  at most :data:`MAX_BATCH` (:func:`fill_batch`).
* FLOPs of one step (forward + backward) counted by ``torch.utils.flop_counter.FlopCounterMode`` on a small batch
  and scaled to the batch (the counted ops are linear in it); MFU = FLOPs per step x steps/s / peak, the peak
  being a large bf16 matmul timed in the same run (:func:`matmul_peak`; on CPU the better of bf16 and fp32, as
  CPUs without bf16 units emulate it). Every candidate's MFU is against that one peak.
* End-to-end: the best candidate fed by ``MultiSourceLoader`` over a uint8 memory-mapped image array (the read
  path of the packed cache: ``CachedImages``; prefetch thread, pinned memory, non-blocking copies on CUDA), then
  ``to_float`` and ``batching.augment`` on the device, then the step; versus the same step on a batch already on
  the device. Goal: >= 80 % of step-only.

Candidates are timed interleaved (``timing.interleaved``, ``steps_per_call`` steps per call, CUDA synchronised
around each call). ``torch.compile`` is a candidate on CUDA only (its compile happens in the untimed warm-up
round); ``FBHELPERS_BENCH_COMPILE=0`` leaves it out. ``torch.backends.cudnn.benchmark`` is on for every
candidate (the trainer leaves it off). fp32 means full fp32: TF32 is off for matmuls (PyTorch's default) and, for
the run, for cuDNN convolutions too (PyTorch's default there is TF32).

On an H200 the full run (``python -m fbhelpers bench gpu_step --device cuda``) should take a few minutes, most of
it ``torch.compile``'s warm-up.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import rows_for
from .timing import interleaved

CASES: tuple[tuple[str, int], ...] = (("vgg16", 96), ("resnet50", 112))
TINY_CASES: tuple[tuple[str, int], ...] = (("cnn4", 32),)
MAX_BATCH = 1024
MFU_GOAL = 0.40
E2E_GOAL = 0.80
FP32, BF16, COMPILED = "fp32 eager", "bf16 autocast + channels_last", "bf16 autocast + channels_last + compile"


def settings(tiny: bool, device: str, repeats: int = 0) -> dict[str, Any]:
    cuda = torch.device(device).type == "cuda"
    if tiny:
        return {"cases": TINY_CASES, "batch": 4, "steps_per_call": 1, "repeats": repeats or 1,
                "peak_n": 512 if cuda else 256, "compile": False}
    return {"cases": CASES, "batch": None, "steps_per_call": 10, "repeats": repeats or 5,
            "peak_n": 8192 if cuda else 1024,
            "compile": cuda and os.environ.get("FBHELPERS_BENCH_COMPILE", "1") != "0"}


def _sync(device: torch.device) -> Callable[[], None] | None:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


class Candidate:
    """A model, its optimiser and one step's recipe: ``step(x, y)`` = forward (bf16 autocast when ``amp``,
    ``channels_last`` input when asked), cross-entropy, backward, SGD step."""

    def __init__(self, backbone: str, device: torch.device, *, amp: bool = False, channels_last: bool = False,
                 compile: bool = False, seed: int = 0) -> None:
        from ..models import MultiHeadNet
        from ..tasks import EXPR

        torch.manual_seed(seed)
        self.device, self.amp, self.channels_last = device, amp, channels_last
        self.model = MultiHeadNet((EXPR,), backbone=backbone).to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.net = torch.compile(self.model) if compile else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(x)
        loss = F.cross_entropy(out["expr"].float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def batch_of(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images ``(n, 3, size, size)`` in [0, 1] and class codes, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g).to(device),
            torch.randint(0, 7, (n,), generator=g).to(device))


def step_flops(backbone: str, size: int, batch: int, device: torch.device, probe: int = 2) -> float:
    """FLOPs of one forward + backward at ``batch``: ``FlopCounterMode`` on a ``probe``-image batch, scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = min(probe, batch)
    cand = Candidate(backbone, device)
    x, y = batch_of(probe, size, device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(cand.model(x)["expr"], y).backward()
    return counter.get_total_flops() * batch / probe


def matmul_peak(device: torch.device, n: int, repeats: int = 5) -> tuple[float, str]:
    """FLOP/s of the best of ``repeats`` timed ``n x n`` bf16 matmuls (on CPU also fp32; the better one), and a
    description."""
    sync = _sync(device)
    best: dict[torch.dtype, float] = {}
    dtypes = (torch.bfloat16,) if device.type == "cuda" else (torch.bfloat16, torch.float32)
    inner = 10 if device.type == "cuda" else 2
    for dtype in dtypes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)

        def mm() -> None:
            for _ in range(inner):
                torch.mm(a, b)

        times = interleaved({"mm": mm}, repeats, warmup=1, synchronize=sync)["mm"]
        best[dtype] = 2 * n**3 * inner / min(times)
    dtype = max(best, key=best.get)
    return best[dtype], f"{n}x{n} {str(dtype).replace('torch.', '')} matmul"


def fill_batch(backbone: str, size: int, device: torch.device, fraction: float = 0.5, probe: int = 16,
               copies: int = 3) -> int:
    """On CUDA: the largest power of two (``probe`` .. :data:`MAX_BATCH`) whose fp32 step's activations, plus
    ``copies`` models with their optimiser state, fit in ``fraction`` of the GPU's memory."""
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated(device)
    cand = Candidate(backbone, device)
    x, y = batch_of(probe, size, device)
    cand.step(x, y)  # creates grads and momentum
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device) - start
    cand.step(x, y)
    torch.cuda.synchronize(device)
    per_image = max(torch.cuda.max_memory_allocated(device) - start - resident, 1) / probe
    del cand, x, y
    torch.cuda.empty_cache()
    budget = fraction * torch.cuda.get_device_properties(device).total_memory - copies * resident
    batch = probe
    while batch * 2 <= MAX_BATCH and batch * 2 * per_image <= budget:
        batch *= 2
    return batch


class EndToEnd:
    """``steps`` steps of ``candidate`` fed from a ``MultiSourceLoader`` over a memory-mapped uint8 image array
    (``CachedImages``, as the packed cache is read), augmented on the device."""

    def __init__(self, candidate: Candidate, size: int, batch: int, steps: int, folder: Path) -> None:
        import pandas as pd

        from ..batching import MultiSourceLoader
        from ..datasets.cache import CachedImages
        from ..source import Source
        from ..tasks import EXPR
        from ..train import augment_options

        n = 4 * batch
        rng = np.random.default_rng(0)
        np.save(folder / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        images = CachedImages(np.load(folder / "images.npy", mmap_mode="r"), np.arange(n))
        table = pd.DataFrame({"split": "train", "expr": pd.array(rng.integers(0, 7, n), dtype="Int64")})
        cuda = candidate.device.type == "cuda"
        self.loader = MultiSourceLoader.from_sources({"bench": Source("bench", table, images)}, (EXPR,), batch,
                                                     prefetch=2 if cuda else 0, pin_memory=cuda)
        self.candidate, self.steps, self.options = candidate, steps, augment_options(True)
        self.generator = torch.Generator()

    def __call__(self) -> None:
        from ..batching import augment, to_device, to_float

        dev = self.candidate.device
        for _ in range(self.steps):
            batch = to_device(self.loader.next_batch(), dev, non_blocking=dev.type == "cuda")
            x = augment(to_float(batch["image"]), self.generator, **self.options)
            self.candidate.step(x, batch["targets"]["expr"])

    def close(self) -> None:
        self.loader.close()


def _steps(candidate: Candidate, x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[], None]:
    def call() -> None:
        for _ in range(steps):
            candidate.step(x, y)
    return call


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark, cudnn.allow_tf32
    cudnn.benchmark = True   # cuDNN picks its fastest convolution per shape (every candidate)
    cudnn.allow_tf32 = False  # the fp32 baseline is fp32 in its convolutions too
    try:
        return _run(tiny, device, repeats)
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = before


def _run(tiny: bool, device: str, repeats: int) -> list[dict[str, Any]]:
    dev = torch.device(device)
    s = settings(tiny, device, repeats)
    sync, steps, reps = _sync(dev), s["steps_per_call"], s["repeats"]
    peak, peak_how = matmul_peak(dev, s["peak_n"])
    rows = rows_for("gpu_step", "peak", "matmul", "TFLOP/s", {peak_how: peak / 1e12}, baseline=None, n=5)
    for backbone, size in s["cases"]:
        batch = s["batch"] or (fill_batch(backbone, size, dev) if dev.type == "cuda" else 32)
        flops = step_flops(backbone, size, batch, dev)
        case = f"{backbone} {size} px, batch {batch}, {flops / batch / 1e9:.2f} GFLOP/image/step"
        specs = {FP32: {}, BF16: {"amp": True, "channels_last": True}}
        if s["compile"]:
            specs[COMPILED] = {"amp": True, "channels_last": True, "compile": True}
        cands = {name: Candidate(backbone, dev, **kw) for name, kw in specs.items()}
        x, y = batch_of(batch, size, dev)
        times = interleaved({name: _steps(c, x, y, steps) for name, c in cands.items()}, reps, warmup=1,
                            synchronize=sync)
        step_s = {name: statistics.median(t) / steps for name, t in times.items()}
        rows += rows_for("gpu_step", case, "throughput", "images/s", {k: batch / v for k, v in step_s.items()},
                         baseline=FP32, n=reps)
        rows += rows_for("gpu_step", case, "MFU", "%", {k: 100 * flops / v / peak for k, v in step_s.items()},
                         baseline=FP32, n=reps, goal=f">= {MFU_GOAL:.0%} (bf16)",
                         met=lambda c, v, r: None if c == FP32 else v >= 100 * MFU_GOAL)
        best = list(cands)[-1]
        for name in list(cands):
            if name != best:
                del cands[name]
        with tempfile.TemporaryDirectory(prefix="bench_gpu_step_") as tmp:
            e2e = EndToEnd(cands[best], size, batch, steps, Path(tmp))
            try:
                times = interleaved({"step only (batch on the device)": _steps(cands[best], x, y, steps),
                                     "cache -> device augmentation -> step": e2e}, reps, warmup=1,
                                    synchronize=sync)
            finally:
                e2e.close()
        rates = {k: batch * steps / statistics.median(t) for k, t in times.items()}
        rows += rows_for("gpu_step", f"{case}, {best}", "end-to-end", "images/s", rates,
                         baseline="step only (batch on the device)", n=reps, goal=f">= {E2E_GOAL:.0%} of step only",
                         met=lambda c, v, r: None if r is None else r >= E2E_GOAL)
        del cands, e2e, x, y
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows
