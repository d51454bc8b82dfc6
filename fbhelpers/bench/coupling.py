"""Coupling overhead: the training step of MT + soft co-annotation + distribution matching (both directions)
against plain MT, same model and batch (issue 14 item 2; README "Performance").

The method's selling point is that coupling the tasks costs nothing at training time: no architecture change,
only two loss terms over the heads' outputs and the relatedness R. This measures it on the trainer's real step
(``train.train_step``, set up as ``fit`` sets it up: the couplings aligned and validated once, the losses called
without per-step checks) at three coupling sizes: 7 expressions x 17 AUs (faces, DU's table), 40 x 40
(identities x attributes) and 200 x 312 (CUB species x attributes). The network is the CPU demo's narrow cnn4 on
48 px images, 24 images per source per step (48 a step); both candidates start from the same weights and draw the
same batches. Candidates are timed interleaved in one process (``bench.timing.interleaved``), one torch thread
on the CPU (the project's setting for small shared CPUs). Goal: at most 3 % extra at every size.
"""
from __future__ import annotations

from typing import Any

import torch

from ..losses import LossConfig
from ..train import resolve_device
from ._step import SIZES, bench_model, coupled_case, trainer_step
from .timing import interleaved, medians

GOAL = 1.03
CANDIDATES: dict[str, LossConfig] = {
    "mt": LossConfig(),
    "mt+coann+dm": LossConfig(coann="soft", dm="both"),
}
BASELINE = "mt"


def run(*, tiny: bool = False, device: str = "cpu", repeats: int = 0) -> list[dict[str, Any]]:
    """Rows for ``python -m fbhelpers bench``: median step time (ms) of each candidate per coupling size, ratio
    to plain MT, goal ratio <= 1.03. ``repeats`` (default 200; 3 when ``tiny``) interleaved rounds after 5
    warm-up rounds (1 when ``tiny``). ``tiny``: 16 px images, 4 per source, for the test suite."""
    dev = resolve_device(device)
    repeats = repeats or (3 if tiny else 200)
    warmup = 1 if tiny else 5
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        for name, (n_classes, n_attrs) in SIZES.items():
            case = coupled_case(n_classes, n_attrs, n=16 if tiny else 96, size=16 if tiny else 48)
            model = bench_model(case.tasks)
            steps = {cand: trainer_step(model, case, loss, device=str(dev), quota=4 if tiny else 24)[0]
                     for cand, loss in CANDIDATES.items()}
            times = interleaved(steps, repeats, warmup=warmup, synchronize=sync)
            rows += _rows(name, {c: [1000 * t for t in ts] for c, ts in times.items()})
    finally:
        torch.set_num_threads(threads)
    return rows


def _rows(case: str, times_ms: dict[str, list[float]]) -> list[dict[str, Any]]:
    med = medians(times_ms)
    base = med[BASELINE]
    rows = []
    for cand, value in med.items():
        ratio = None if cand == BASELINE else value / base
        rows.append({"benchmark": "coupling", "case": case, "candidate": cand, "metric": "step_ms",
                     "value": float(value), "unit": "ms", "ratio": ratio,
                     "goal": "" if ratio is None else f"<= {GOAL:.2f}",
                     "met": None if ratio is None else bool(ratio <= GOAL), "n": len(times_ms[cand])})
    return rows
