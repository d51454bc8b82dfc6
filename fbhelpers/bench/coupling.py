"""Coupling overhead: the training step of MT + soft co-annotation + distribution matching (both directions)
against plain MT, same model and batch (``docs/performance.md#benchmarks``).

The method's selling point is that coupling the tasks costs nothing at training time: no architecture change,
only two loss terms over the heads' outputs and the relatedness R. This measures it on the trainer's real step
(``train.train_step``, set up as ``fit`` sets it up: the couplings aligned and validated once, the losses called
without per-step checks, R's derived tensors kept) at three coupling sizes: 7 expressions x 17 AUs (faces, DU's
table), 40 x 40 (identities x attributes) and 200 x 312 (CUB species x attributes). Both candidates start from
the same weights and draw the same batches; they are timed interleaved in one process
(``bench.timing.interleaved``, the order reversed every 10 rounds), with a second, identical MT step ("mt
again") whose ratio to MT shows what the measurement can resolve. Goal: at most 3 % extra at every size.

- CPU: the CPU demo's network (a narrow cnn4, 8-16-32-64, 3 x 3 before the heads) on 48 px images, 24 images
  per source (48 a step), one torch thread (the project's setting for small shared CPUs). Besides the wall time
  (``step_ms``) each step's CPU time of the timing thread is reported (``step_cpu_ms``): other processes on a
  shared machine inflate the first, hardly the second.
- CUDA: the paper profile's networks with bf16 autocast and ``channels_last``: VGG-16 at 112 px for faces,
  ResNet-50 at 112 px for 40 x 40 and at 224 px for 200 x 312, 64 images per source (128 a step).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ..losses import LossConfig
from ..train import resolve_device
from . import rows_for
from ._step import SIZES, bench_model, coupled_case, trainer_step
from .timing import interleaved, medians

GOAL = 1.03
CANDIDATES: dict[str, LossConfig] = {
    "mt": LossConfig(),
    "mt+coann+dm": LossConfig(coann="soft", dm="both"),
    "mt again": LossConfig(),  # a second, identical MT step: the resolution of the measurement (A/A)
}
BASELINE = "mt"
CONTROL = "mt again"
# per case on CUDA: (backbone, image size) of the paper profile (fbhelpers.profiles)
CUDA_SETUPS: dict[str, tuple[str, int]] = {"7x17": ("vgg16", 112), "40x40": ("resnet50", 112),
                                           "200x312": ("resnet50", 224)}


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    """Rows for ``python -m fbhelpers bench``: median step time (ms) of each candidate per coupling size, ratio
    to plain MT, goal ratio <= 1.03. ``repeats`` interleaved rounds (default 200 on CPU, 50 on CUDA, 3 when
    ``tiny``) after 5 warm-up rounds (1 when ``tiny``). ``tiny``: the CPU network on 16 px images, 4 per source,
    for the test suite (on any device)."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda" and not tiny
    repeats = repeats or (3 if tiny else 50 if cuda else 200)
    warmup = 1 if tiny else 5
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        for name, (n_classes, n_attrs) in SIZES.items():
            if cuda:
                backbone, size = CUDA_SETUPS[name]
                case = coupled_case(n_classes, n_attrs, n=128, size=size)
                model, quota = bench_model(case.tasks, backbone=backbone), 64
            else:
                case = coupled_case(n_classes, n_attrs, n=16 if tiny else 96, size=16 if tiny else 48)
                model, quota = bench_model(case.tasks), 4 if tiny else 24
            cpu_times: dict[str, list[float]] = {}
            steps = {cand: _cpu_timed(trainer_step(model, case, loss, device=str(dev), quota=quota,
                                                   channels_last=True, amp=cuda)[0], cpu_times.setdefault(cand, []))
                     for cand, loss in CANDIDATES.items()}
            wall = interleaved(steps, repeats, warmup=warmup, synchronize=sync, reverse_every=10)
            rows += _rows(name, "step_ms", {c: [1000 * t for t in ts] for c, ts in wall.items()})
            if dev.type == "cpu":
                rows += _rows(name, "step_cpu_ms", {c: [1000 * t for t in ts[warmup:]] for c, ts in cpu_times.items()})
            del steps, model
    finally:
        torch.set_num_threads(threads)
    return rows


def _cpu_timed(step: Callable[[], Any], times: list[float]) -> Callable[[], None]:
    """``step`` that also appends its CPU time (seconds, this thread) to ``times``."""
    def timed() -> None:
        start = time.thread_time()
        step()
        times.append(time.thread_time() - start)

    return timed


def _rows(case: str, metric: str, times_ms: dict[str, list[float]]) -> list[dict[str, Any]]:
    return rows_for("coupling", case, metric, "ms", medians(times_ms), baseline=BASELINE,
                    n={c: len(ts) for c, ts in times_ms.items()}, goal=f"<= {GOAL:.2f}",
                    met=lambda cand, value, ratio: None if ratio is None or cand == CONTROL else bool(ratio <= GOAL))
