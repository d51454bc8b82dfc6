"""Input checks shared by every loss: option values, logits' shapes, safe masked targets (docs/method.md#task-losses).

Value checks (label codes in range, targets in [0, 1]) read tensors back to the host, a device sync on CUDA; they
run unless ``validate=False``. Shape checks cost nothing and always run.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

_TINY = 1e-12


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def _float(x: Tensor) -> Tensor:
    """float32 compute for half-precision inputs (AMP), float64 kept for exact checks."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_logits(fn: str, arg: str, logits: Tensor, n_outputs: int | None = None) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{fn}: {arg} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{fn}: {arg} must have shape (B, n_outputs), got shape {tuple(logits.shape)}")
    if n_outputs is not None and logits.shape[1] != n_outputs:
        raise ValueError(f"{fn}: {arg} has shape {tuple(logits.shape)}, expected {n_outputs} outputs per sample")


def _check_shape(fn: str, arg: str, x: Tensor, expected: tuple[int, ...], ref: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{fn}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != expected:
        raise ValueError(f"{fn}: {arg} has shape {tuple(x.shape)} but {ref}; expected {expected}")


def _class_target(fn: str, logits: Tensor, target: Tensor, mask: Tensor,
                  validate: bool = True) -> tuple[Tensor, Tensor]:
    """(safe target, bool mask): labelled codes must lie in 0..C-1 (checked when ``validate``: one host sync);
    unlabelled ones become 0."""
    b, c = logits.shape
    ref = f"logits have shape {tuple(logits.shape)}"
    _check_shape(fn, "target", target, (b,), ref)
    _check_shape(fn, "mask", mask, (b,), ref)
    mask = mask.bool()
    if target.is_floating_point():
        raise ValueError(f"{fn}: class target must be integer codes (long), got dtype {target.dtype}")
    if validate and bool((mask & ((target < 0) | (target >= c))).any()):
        labelled = target[mask]
        lo, hi = int(labelled.min()), int(labelled.max())
        raise ValueError(f"{fn}: class label {lo if lo < 0 else hi} out of range [0, {c - 1}] ({c} classes)")
    return torch.where(mask, target, torch.zeros_like(target)).long(), mask


def _multi_target(fn: str, logits: Tensor, target: Tensor, mask: Tensor, unit: bool,
                  validate: bool = True) -> tuple[Tensor, Tensor]:
    """(safe float target, bool mask) for (B, K) targets; unlabelled entries become 0 (NaN-safe). With ``unit``
    and ``validate`` the annotated values must lie in [0, 1] (one host sync)."""
    ref = f"logits have shape {tuple(logits.shape)}"
    _check_shape(fn, "target", target, tuple(logits.shape), ref)
    _check_shape(fn, "mask", mask, tuple(logits.shape), ref)
    mask = mask.bool()
    target = torch.where(mask, target.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=logits.device))
    if unit and validate:
        bad = mask & ~((target >= 0) & (target <= 1))
        if bool(bad.any()):
            raise ValueError(f"{fn}: targets must lie in [0, 1] where annotated, got {float(target[bad][0])}")
    return target, mask
