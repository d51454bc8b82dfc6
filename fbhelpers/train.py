"""The trainer: ``fit`` one multi-head network on several sources at once, ``evaluate`` it, ``predict`` with it.

P0 §4 / P1 §4 train FaceBehaviorNet end to end on mixed batches from all databases, with the combined objective
of ``losses.combined_loss`` (task losses + co-annotation + distribution matching). The papers give no training
schedule for the coupling study, so optimiser, schedule, augmentation and budget are [choice] parameters.

Device-agnostic: CPU or CUDA (``device="auto"``), bf16 autocast on CUDA, optional ``channels_last`` and
``torch.compile``. Under ``torchrun`` (``WORLD_SIZE > 1``) the same ``fit`` runs DistributedDataParallel (gloo on
CPU, NCCL on CUDA): each rank draws its own disjoint share of every source's quota; only rank 0 writes
checkpoints, history and progress. Checkpoints are written atomically and hold everything needed to resume the
exact same run: ``fit(..., resume=True)`` after a crash ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from time import perf_counter
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from . import batching
from .batching import MultiSourceLoader, TaskDataset, image_files, decode_image, to_device, to_float
from .losses import Coupling, LossConfig, combined_loss, coupling_tensor
from .metrics import score_task
from .models import output_probabilities
from .source import Source
from .study import Study
from .tasks import Task

CHECKPOINT = "last.pt"
HISTORY = "history.csv"


# ----------------------------------------------------------------------------------------------- set-up helpers
def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; anything else as given."""
    if str(device) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def _resolve_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device (bf16 autocast), got device {device}")
    return bool(amp)


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _unpack(
    sources: Study | Mapping[str, Source], tasks: Sequence[Task] | None, couplings: Sequence[Coupling] | None,
    split: str | None = "train",
) -> tuple[dict[str, Source], tuple[Task, ...], list[Coupling]]:
    if isinstance(sources, Study):
        srcs = sources.split(split) if split else dict(sources.sources)
        return srcs, tuple(tasks or sources.tasks), list(sources.couplings if couplings is None else couplings)
    if tasks is None:
        raise ValueError("tasks must be given when sources is a dict (a Study carries its own)")
    srcs = dict(sources)
    if split:
        srcs = {n: s.subset(split) if "split" in s.table else s for n, s in srcs.items()}
    return srcs, tuple(tasks), list(couplings or ())


def check_sources(sources: Mapping[str, Source], tasks: Sequence[Task]) -> dict[str, TaskDataset]:
    """Datasets of the training sources, refusing (ValueError naming them) empty sources, sources without any
    label of ``tasks`` and tasks no source labels: each would silently train nothing."""
    if not sources:
        raise ValueError("no training sources given")
    empty = [n for n, s in sources.items() if len(s) == 0]
    if empty:
        raise ValueError(f"training sources without rows (in this split): {empty}")
    datasets = {n: TaskDataset(s, tasks, source_id=k) for k, (n, s) in enumerate(sources.items())}
    unlabelled = [n for n, d in datasets.items() if not any(d.labelled.values())]
    if unlabelled:
        raise ValueError(f"sources {unlabelled} carry no label of any task {[t.name for t in tasks]}")
    orphans = [t.name for t in tasks if not any(d.labelled[t.name] for d in datasets.values())]
    if orphans:
        raise ValueError(f"tasks {orphans} are labelled by none of the sources {list(sources)}")
    return datasets


def _optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")


def _scheduler(opt: torch.optim.Optimizer, name: str, steps: int, warmup: int, lr: float):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=min(max(warmup, 1) / steps, 0.99)
        )
    if name not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'constant' or 'onecycle', got {name!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------- checkpoints
def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    key, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [version, list(pystate), gauss],
        "augment": generator.get_state(),
    }


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, pystate, gauss = state["python"]
    random.setstate((version, tuple(pystate), gauss))
    generator.set_state(state["augment"])


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to ``<path>.tmp`` then ``os.replace``: a killed process never leaves a half-written file
    (DESIGN.md conventions). ``state`` must hold only tensors and plain containers (``weights_only`` loading)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``fit`` (``torch.load(weights_only=True)``, on CPU)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"cannot read checkpoint {path} (weights_only=True): {err}") from err


def _write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame({"step": pd.Series(dtype=int)})


# ----------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    couplings: Sequence[Coupling] | None = None,
    loss_config: LossConfig | None = None,
    *,
    steps: int = 500,
    quota: int | Mapping[str, int] = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    schedule: str = "cosine",
    warmup_steps: int | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    channels_last: bool = False,
    compile: bool = False,
    grad_clip: float | None = 5.0,
    augment: bool | Mapping[str, Any] = True,
    sample_weights: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    eval_sources: Study | Mapping[str, Source] | None = None,
    eval_every: int | None = None,
    eval_split: str | None = "test",
    progress: bool | None = None,
    history_csv: str | Path | None = None,
    sync_every: int | None = None,
    prefetch: int | None = None,
) -> pd.DataFrame:
    """Train ``model`` on mixed multi-source batches with ``combined_loss`` (P0 §4, P1 §4); returns the history.

    ``sources``: name -> ``Source`` (their ``train`` split is used) or a ``Study`` (its train split, tasks and
    couplings unless given). Every step takes ``quota`` rows from each source (int or per-source dict; per rank
    under DDP, so the global batch is ``world_size * sum(quota)``), so every loss term is present in every step.
    Refused before training (ValueError naming them): empty sources, sources without any label, tasks without
    any source. Loss: ``loss_config`` (default ``LossConfig()``) over ``couplings``.

    [choice] defaults: AdamW (``optimizer="sgd"``: momentum 0.9, Nesterov), weight decay on all parameters,
    ``schedule="cosine"`` with linear warm-up over ``warmup_steps`` (default 5 % of ``steps``; ``"constant"``
    keeps lr after warm-up; ``"onecycle"`` is torch's OneCycleLR with the warm-up as its rising phase),
    gradient-norm clipping at ``grad_clip``, augmentation ``batching.augment`` (True = its defaults, a dict =
    its keyword arguments, False = off). ``amp="auto"``: bf16 autocast on CUDA only (losses in float32).
    ``channels_last`` (faster convolutions on recent GPUs and often on CPU) and ``compile`` (``torch.compile``)
    change speed, not results beyond floating-point rounding. ``sample_weights``: per-row sampling weights of
    some sources (see ``MultiSourceSampler``). ``prefetch``: batches gathered ahead in a thread (default 2 on
    CUDA, 0 on CPU).

    The sample sequence, the augmentation and dropout randomness are pure functions of (``seed``, step, rank),
    so a run is reproducible on CPU and a resumed run replays it exactly. ``checkpoint_dir``: ``last.pt`` every
    ``checkpoint_every`` steps (default ``steps // 10``) and at the end, plus ``history.csv``; ``resume=True``
    continues from ``last.pt`` when it exists (its settings must match). ``eval_sources`` are scored with
    ``evaluate`` on ``eval_split`` every ``eval_every`` steps and at the end (columns
    ``eval/<source>/<task>/<metric>``). A NaN or infinite loss stops training with an error naming the step, the
    term and the sources. ``sync_every``: steps between reading losses back from the device (default 1 on CPU,
    25 on CUDA). History: one row per step with ``step`` (completed steps), ``total``, each unweighted loss term,
    ``lr`` and ``images_per_s``; also written to ``history_csv``.
    """
    rank, world, local_rank = _dist_env()
    srcs, tasks, couplings = _unpack(sources, tasks, couplings)
    loss_config = loss_config or LossConfig()
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    datasets = check_sources(srcs, tasks)
    warmup = round(0.05 * steps) if warmup_steps is None else int(warmup_steps)
    checkpoint_every = checkpoint_every or max(1, steps // 10)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    aug_kwargs = {} if augment is True else dict(augment) if augment else None

    own_group = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if resolve_device(device, local_rank).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        own_group = True
    bar, loader = None, None
    try:
        dev = resolve_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        use_amp = _resolve_amp(amp, dev)
        sync_every = sync_every or (25 if dev.type == "cuda" else 1)
        prefetch = (2 if dev.type == "cuda" else 0) if prefetch is None else prefetch

        model.to(dev)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        opt = _optimizer(model.parameters(), optimizer, lr, weight_decay)
        sched = _scheduler(opt, schedule, steps, warmup, lr)
        loader = MultiSourceLoader(
            datasets, quota, seed=seed, rank=rank, world_size=world, weights=sample_weights,
            prefetch=prefetch, pin_memory=dev.type == "cuda",
        )
        coupled = [Coupling(ct.name, at.name, r) for ct, at, r in  # R aligned and on the device once
                   (coupling_tensor(c, tasks, torch.zeros((), device=dev)) for c in couplings)
                   ] if loss_config.coann or loss_config.dm else []
        generator = torch.Generator()
        config = {"steps": steps, "quota": loader.sampler.quota, "seed": seed, "lr": lr, "optimizer": optimizer,
                  "schedule": schedule, "warmup": warmup, "sources": loader.sampler.sizes,
                  "tasks": [t.name for t in tasks]}

        rows: list[dict[str, float]] = []
        start = 0
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            diff = {k: (state["config"].get(k), v) for k, v in config.items() if state["config"].get(k) != v}
            if diff:
                raise ValueError(f"checkpoint {ckpt_path} was written with other settings (saved, now): {diff}")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            loader.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"], generator)
            rows = [dict(zip(state["history"]["columns"], r)) for r in state["history"]["rows"]]
            for row in rows:
                row["step"] = int(row["step"])
            start = int(state["step"])

        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if compile:
            net = torch.compile(net)

        from tqdm.auto import tqdm

        show = rank == 0 and (progress if progress is not None else not os.environ.get("CI"))
        bar = tqdm(total=steps, initial=start, desc="fit", disable=not show or start >= steps)
        names = loader.names
        labelled = {t.name: [n for n in names if datasets[n].labelled[t.name]] for t in tasks}
        images_per_step = world * sum(loader.sampler.quota.values())
        pending: list[tuple[int, torch.Tensor, float]] = []
        keys: list[str] = []
        clock = perf_counter()

        def flush() -> None:
            nonlocal clock
            if not pending:
                return
            values = torch.stack([v for _, v, _ in pending])
            if world > 1:
                dist.all_reduce(values)
                values /= world
            now = perf_counter()
            speed = images_per_step * len(pending) / max(now - clock, 1e-9)
            clock = now
            for (step, _, lr_now), vals in zip(pending, values.cpu().tolist()):
                terms = dict(zip(["total", *keys], vals))
                if not all(map(math.isfinite, vals)):
                    bad = [k for k in keys if not math.isfinite(terms[k])] or ["total"]
                    which = labelled.get(bad[0], names)
                    raise FloatingPointError(
                        f"non-finite loss at step {step}: term {bad[0]!r} = {terms[bad[0]]} (all terms {terms}); "
                        f"sources in the batch feeding it: {which}"
                    )
                rows.append({"step": step, **terms, "lr": lr_now, "images_per_s": speed})
            pending.clear()
            bar.set_postfix(loss=f"{rows[-1]['total']:.4f}", refresh=False)

        def checkpoint(step: int) -> None:
            if rank != 0:
                return
            history = _history_frame(rows)
            save_checkpoint(ckpt_path, {
                "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "sampler": loader.state_dict(), "rng": _rng_state(generator),
                "config": config,
                "history": {"columns": list(history.columns), "rows": history.to_numpy(float).tolist()},
            })
            _write_csv(history, Path(checkpoint_dir) / HISTORY)

        for step in range(start, steps):
            batch = to_device(loader.next_batch(), dev, non_blocking=dev.type == "cuda")
            step_seed = _step_seed(seed, step, rank)
            torch.manual_seed(step_seed)
            generator.manual_seed(step_seed)
            x = to_float(batch["image"])
            if aug_kwargs is not None:
                x = batching.augment(x, generator, **aug_kwargs)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                out = net(x)
            out = {k: v.float() for k, v in out.items()}
            total, terms = combined_loss(out, batch, tasks, coupled, loss_config, step=step)
            if not keys:
                keys = list(terms)
            lr_now = opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            total.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            pending.append((step + 1, torch.stack([total.detach(), *(terms[k].detach() for k in keys)]), lr_now))
            done = step + 1
            is_eval = eval_sources is not None and (done == steps or (eval_every and done % eval_every == 0))
            is_ckpt = ckpt_path is not None and (done == steps or done % checkpoint_every == 0)
            if len(pending) >= sync_every or is_eval or is_ckpt or done == steps:
                flush()
            if is_eval and rank == 0:
                scores = evaluate(model, eval_sources, tasks, split=eval_split, device=dev, amp=use_amp)
                rows[-1].update({f"eval/{r.source}/{r.task}/{r.metric}": r.value for r in scores.itertuples()})
            if is_ckpt:
                checkpoint(done)
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if loader is not None:
            loader.close()
        if own_group:
            dist.destroy_process_group()
    history = _history_frame(rows)
    if rank == 0 and history_csv is not None:
        _write_csv(history, history_csv)
    return history


# ----------------------------------------------------------------------------------------------- inference
def _eval_batches(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
                  amp: bool, forward) -> list:
    """``forward(x)`` on every batch of uint8 ``(N, H, W, C)`` images (as float ``(B, C, H, W)``), in eval mode and
    without gradients; the model's train / eval mode is restored afterwards."""
    was_training = model.training
    model.eval().to(device)
    outputs = []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                part = images[i:i + batch_size]
                part = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
                x = to_float(part.permute(0, 3, 1, 2).to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs.append(forward(x))
    finally:
        model.train(was_training)
    return outputs


def _outputs(model: nn.Module, images: np.ndarray | torch.Tensor, tasks: Sequence[Task], batch_size: int,
             device: torch.device, amp: bool) -> dict[str, np.ndarray]:
    """Probabilities (multiclass softmax, multilabel sigmoid) or values (regression) for uint8 ``(N, H, W, C)``."""
    def forward(x: torch.Tensor) -> dict[str, np.ndarray]:
        out = model(x)
        probs = {}
        for t in tasks:
            probs[t.name] = output_probabilities(t.kind, out[t.name].float()).cpu().numpy()
        return probs

    chunks = _eval_batches(model, images, batch_size, device, amp, forward)
    return {t.name: np.concatenate([c[t.name] for c in chunks]) for t in tasks}


def evaluate(
    model: nn.Module,
    sources: Study | Mapping[str, Source],
    tasks: Sequence[Task] | None = None,
    split: str | None = "test",
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> pd.DataFrame:
    """Every task scored on every source's ``split`` (None = all rows) where that split has labels for it
    (METHOD.md §5: every task on every test set; metrics of ``metrics.score_task``, P1 §4 criteria).

    Returns a tidy frame with columns ``source, task, metric, value``.
    """
    srcs, tasks, _ = _unpack(sources, tasks, None, split)
    dev = resolve_device(device)
    use_amp = _resolve_amp(amp, dev)
    records = []
    for k, (name, src) in enumerate(srcs.items()):
        if len(src) == 0:
            continue
        ds = TaskDataset(src, tasks, source_id=k)
        labelled = [t for t in tasks if ds.labelled[t.name]]
        if not labelled:
            continue
        preds = _outputs(model, src.images, labelled, batch_size, dev, use_amp)
        for t in labelled:
            for metric, value in score_task(t, ds.targets[t.name], preds[t.name], ds.masks[t.name]).items():
                records.append((name, t.name, metric, float(value)))
    return pd.DataFrame(records, columns=["source", "task", "metric", "value"])


def predict(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source | pd.DataFrame | str | Path,
    tasks: Sequence[Task] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    size: int | tuple[int, int] | None = None,
    amp: bool | str = False,
    root: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of every task (P1 §4 heads): probabilities ``(N, C)`` (multiclass softmax), ``(N, K)``
    (multilabel sigmoid) or values ``(N, K)`` (regression).

    ``inputs``: uint8 images ``(N, H, W, C)`` (array or tensor), a ``Source``, a canonical table with a
    ``path`` column (relative paths resolved against ``root``; rows in table order), or a folder of face crops
    (files in sorted path order, see ``batching.image_files``). Files are decoded with Pillow, RGB or grey to
    match ``model.in_channels``, and resized to ``size``, which is then required. ``tasks`` default to
    ``model.tasks``.
    """
    tasks = tuple(tasks or getattr(model, "tasks", ()))
    if not tasks:
        raise ValueError("predict: give tasks (the model has no .tasks attribute)")
    if isinstance(inputs, Source):
        images = inputs.images
    elif isinstance(inputs, (str, Path, pd.DataFrame)):
        if size is None:
            raise ValueError("predict: size (the model's input size) is needed to resize images from files")
        if isinstance(inputs, pd.DataFrame):
            if "path" not in inputs.columns:
                raise ValueError(f"predict: the table has no 'path' column (columns: {list(inputs.columns)})")
            files = [Path(root or ".") / p for p in inputs["path"]]
        else:
            files = image_files(inputs)
        mode = "L" if getattr(model, "in_channels", 3) == 1 else "RGB"
        images = np.stack([decode_image(p, size, mode) for p in files])
    else:
        images = inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"predict: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    return _outputs(model, images, tasks, batch_size, dev, _resolve_amp(amp, dev))


def features(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor | Source,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    amp: bool | str = False,
) -> np.ndarray:
    """Frozen shared features ``(N, feature_dim)`` (float32) of uint8 images ``(N, H, W, C)`` or a ``Source``:
    the output of the shared layers, before the task heads (P1 §4.6 few-shot probes; METHOD.md §4). The model
    is put in eval mode for the pass (BatchNorm running statistics, no dropout) and restored afterwards; it
    needs a ``features(x)`` method (``models.MultiHeadNet``)."""
    if not callable(getattr(model, "features", None)):
        raise ValueError(f"features: {type(model).__name__} has no features(x) method (use models.MultiHeadNet)")
    images = inputs.images if isinstance(inputs, Source) else inputs
    if images.ndim != 4 or images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"features: expected uint8 images (N, H, W, C), got {images.dtype} {tuple(images.shape)}")
    dev = resolve_device(device)
    chunks = _eval_batches(model, images, batch_size, dev, _resolve_amp(amp, dev),
                           lambda x: model.features(x).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, int(getattr(model, "feature_dim", 0))), np.float32)
    return np.concatenate(chunks)
