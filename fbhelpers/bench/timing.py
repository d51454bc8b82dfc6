"""Interleaved timing: candidates run A, B, A, B, ... in one process, so drift on a shared machine hits all alike."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping


def interleaved(candidates: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                synchronize: Callable[[], None] | None = None, reverse_every: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each candidate: ``warmup`` untimed rounds, then ``repeats`` rounds, each round calling
    every candidate once in turn. ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    ``reverse_every`` = N > 0 reverses the candidates' order in every other block of N timed rounds (on a busy
    machine the one called second in a round can run measurably slower, identical candidates alike)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = synchronize or (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    forward = list(candidates.items())
    for round_ in range(warmup + repeats):
        timed = round_ - warmup
        flip = reverse_every > 0 and timed >= 0 and (timed // reverse_every) % 2 == 1
        for name, fn in (forward[::-1] if flip else forward):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def medians(times: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each candidate's times."""
    return {name: statistics.median(values) for name, values in times.items()}
