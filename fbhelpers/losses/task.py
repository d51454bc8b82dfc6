"""Masked task losses: one per task kind, each averaged over the entries its sources label (docs/method.md#task-losses).

Sources: P0 = Kollias et al., arXiv 1910.11111 §3.2; P1 = arXiv 2105.03790 §3. Inputs follow the Batch section
of the contract: multiclass targets are ``long (B,)`` with a ``bool (B,)`` mask, multilabel / regression targets
are ``float (B, K)`` with a ``bool (B, K)`` mask; logits are ``(B, n_outputs)``. Every loss returns a 0-dim
tensor; with nothing labelled it is exactly 0 with finite (zero) gradients. ``validate=False`` skips the value
checks that read tensors back to the host (the trainer validates its data once at set-up).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._inputs import _check_logits, _class_target, _float, _multi_target


def _soft_cross_entropy(logits: Tensor, target: Tensor, use: Tensor) -> Tensor:
    """Mean over used samples of -sum_c target_c log softmax(logits)_c; 0 when no sample is used."""
    per = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    per = torch.where(use, per, torch.zeros_like(per))
    return per.sum() / use.sum().clamp(min=1)


def _bce_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Element-wise BCE(target, sigmoid(logits)), differentiable in BOTH arguments (log-space, stable)."""
    return -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, *, validate: bool = True) -> Tensor:
    """Cross-entropy averaged over the samples with a class label (P0 §3.2, P1 §3;
    docs/method.md#class-task-masked-cross-entropy).

    ``logits (B, C)``, ``target long (B,)`` with codes 0..C-1 where ``mask`` is True (any value elsewhere),
    ``mask bool (B,)``. No labelled sample -> exactly 0. ``validate=False`` skips the range check of the codes
    (a host sync; see the module doc).
    """
    fn = "masked_cross_entropy"
    _check_logits(fn, "logits", logits)
    logits = _float(logits)
    target, mask = _class_target(fn, logits, target, mask, validate)
    per = F.cross_entropy(logits, target, reduction="none")
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum() / mask.sum().clamp(min=1)


def masked_bce(logits: Tensor, target: Tensor, mask: Tensor, *, validate: bool = True) -> Tensor:
    """Binary cross-entropy per annotated (sample, label) entry, mean over annotated entries (P0 §3.2;
    docs/method.md#multi-label-task-masked-bce).

    ``logits (B, K)``, ``target float (B, K)`` in [0, 1] (soft targets allowed), ``mask bool (B, K)``.
    A dataset annotating only some labels contributes only those. No annotated entry -> exactly 0.
    ``validate=False`` skips the [0, 1] check of the targets (a host sync; see the module doc).
    """
    fn = "masked_bce"
    _check_logits(fn, "logits", logits)
    logits = _float(logits)
    target, mask = _multi_target(fn, logits, target, mask, unit=True, validate=validate)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum() / mask.sum().clamp(min=1)


def ccc(pred: Tensor, true: Tensor, eps: float = 1e-8) -> Tensor:
    """Concordance correlation coefficient, differentiable (P0 §3.2, Lin 1989;
    docs/method.md#valence-and-arousal-ccc-loss).

    CCC = 2 cov / (var_pred + var_true + (mean_pred - mean_true)^2) with population (1/N) moments, computed
    along dim 0: ``(N,)`` -> scalar, ``(N, K)`` -> ``(K,)``. The denominator is clamped at ``eps`` so that two
    identical constants give 0 instead of NaN.
    """
    if not isinstance(pred, Tensor) or not isinstance(true, Tensor) or pred.shape != true.shape:
        raise ValueError(
            f"ccc: pred and true must be tensors of the same shape, got "
            f"{tuple(getattr(pred, 'shape', ()))} and {tuple(getattr(true, 'shape', ()))}"
        )
    if pred.ndim not in (1, 2) or pred.shape[0] < 2:
        raise ValueError(f"ccc: needs shape (N,) or (N, K) with N >= 2, got {tuple(pred.shape)}")
    pred = _float(pred)
    true = true.to(pred.dtype)
    mp, mt = pred.mean(0), true.mean(0)
    dp, dt = pred - mp, true - mt
    cov = (dp * dt).mean(0)
    denom = (dp * dp).mean(0) + (dt * dt).mean(0) + (mp - mt) ** 2
    return 2 * cov / denom.clamp(min=eps)


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-8, *, validate: bool = True) -> Tensor:
    """1 - mean CCC over the regression outputs (P0 §3.2, P1 §3; docs/method.md#valence-and-arousal-ccc-loss).

    ``pred, target float (B, K)``, ``mask bool (B, K)``. Each output's CCC uses only the samples annotated for
    it (masked moments, as :func:`ccc`); an output with fewer than 2 annotated samples contributes nothing, the
    mean runs over the others. None usable -> exactly 0. No value check reads the targets back (``validate`` is
    accepted like the other task losses' and changes nothing).
    """
    fn = "ccc_loss"
    _check_logits(fn, "pred", pred)
    pred = _float(pred)
    target, mask = _multi_target(fn, pred, target, mask, unit=False)
    m = mask.to(pred.dtype)
    n = m.sum(0)
    n1 = n.clamp(min=1)
    mp, mt = (m * pred).sum(0) / n1, (m * target).sum(0) / n1
    dp = torch.where(mask, pred - mp, torch.zeros_like(pred))
    dt = torch.where(mask, target - mt, torch.zeros_like(target))
    cov = (dp * dt).sum(0) / n1
    denom = (dp * dp).sum(0) / n1 + (dt * dt).sum(0) / n1 + (mp - mt) ** 2
    per = 1 - 2 * cov / denom.clamp(min=eps)
    valid = n >= 2
    per = torch.where(valid, per, torch.zeros_like(per))
    return per.sum() / valid.sum().clamp(min=1)
