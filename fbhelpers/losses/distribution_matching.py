"""Distribution matching between a class head and an attribute head through R, on EVERY sample (P0 §3.2, P1 §3.2:
class -> attributes; P1 §3.2, P2 §3: attributes -> class; docs/method.md#distribution-matching-class-to-attributes,
docs/method.md#distribution-matching-attributes-to-class).

The registered term ``"dm"`` has two directions, one function each: ``dm_class_to_attr`` and
``dm_attr_to_class``; ``distribution_matching`` is the switch over both. Reconstructed details are marked
[choice] and are options.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ._inputs import _TINY, _choice
from .coannotation import EMPTY_ROWS
from .registry import COUPLINGS, CouplingBatch, Direction, register
from .relatedness import _constant
from .task import _bce_logits

REDUCTIONS: tuple[str, ...] = ("sum", "mean")
VARIANTS: tuple[str, ...] = ("bernoulli", "weighted_mean")
DIVERGENCES: tuple[str, ...] = ("kl", "ce")


def _check_options(o: Mapping[str, Any]) -> None:
    fn = "distribution_matching"
    _choice("reduction", o["reduction"], REDUCTIONS)
    _choice("variant", o["variant"], VARIANTS)
    _choice("divergence", o["divergence"], DIVERGENCES)
    _choice("empty_row", o["empty_row"], EMPTY_ROWS)
    if not o["temperature"] > 0:
        raise ValueError(f"{fn}: temperature must be > 0, got {o['temperature']!r}")
    if not 0 < o["eps"] < 0.5:
        raise ValueError(f"{fn}: eps must lie in (0, 0.5), got {o['eps']!r}")


@register("dm", "class_to_attr", check=_check_options)
def dm_class_to_attr(batch: CouplingBatch, *, reduction: Literal["sum", "mean"] = "mean", detach: bool = False,
                     bernoulli_kl: bool = False) -> Tensor:
    """DM class -> attributes (P0 §3.2, P1 §3.2): q_j = Σ_c softmax(class_logits)_c R[c, j]; per sample
    Σ_j BCE(target q_j, prediction sigmoid(attr_logit_j)), averaged over the batch.

    ``reduction="mean"`` [choice, the default everywhere] averages over attributes instead of the literal sum
    (``"sum"``: it collapsed training from scratch; docs/method.md#distribution-matching-class-to-attributes).
    Gradients reach BOTH heads unless ``detach=True`` [choice] stops them through q. BCE(q, p) is *linear* in q,
    so its gradient moves p(c|x) towards a one-hot on the class whose row R[c] the attribute head fits best: a
    pseudo-label. ``bernoulli_kl=True`` [choice] subtracts the entropy of q: Σ_j KL(Bern(q_j) || Bern(p_j)) =
    BCE(q, p) − H(q), whose gradient in q is logit(q_j) − logit(p_j) (inside the entropy q is clipped to the
    resolution of its dtype, 1.2e-7 in float32); no effect with ``detach=True``.
    """
    q = F.softmax(batch.class_logits, dim=1) @ batch.relatedness
    if detach:
        q = q.detach()
    per = _bce_logits(batch.attr_logits, q)
    if bernoulli_kl:  # minus the entropy of q, clipped only at the dtype's resolution (not at eps)
        tiny = torch.finfo(q.dtype).eps
        qc = q.clamp(tiny, 1 - tiny)
        per = per + qc * torch.log(qc) + (1 - qc) * torch.log1p(-qc)
    batch_size = max(batch.class_logits.shape[0], 1)
    return (per.sum() if reduction == "sum" else per.mean(dim=1).sum()) / batch_size


def _attr_to_class_log_q(
    attr_logits: Tensor, r: Tensor, variant: str, temperature: float, empty_row: str, eps: float
) -> Tensor:
    """log q(c|x) reconstructed from the attribute head (P1 §3.2 / P2 §3, reconstruction [choice])."""
    empty = _constant(r, ("empty",), lambda: r.sum(dim=1) == 0)
    log_off = F.logsigmoid(-attr_logits).sum(dim=1, keepdim=True)  # log Π_j (1 - p_j)
    p = torch.sigmoid(attr_logits)
    if variant == "weighted_mean":
        s = (p @ r.T) / _constant(r, ("row_sum",), lambda: r.sum(dim=1).clamp(min=_TINY))
        log_s = torch.log(s.clamp(min=_TINY))
        if empty_row == "product":
            log_s = torch.where(empty[None, :], log_off, log_s)
        elif empty_row == "inactive_fraction":
            log_s = torch.where(empty[None, :], torch.log((1 - p).mean(dim=1, keepdim=True).clamp(min=_TINY)), log_s)
        excluded = empty[None, :] & (empty_row == "none")  # score 0: stays at log(tiny) whatever the temperature
        return F.log_softmax(torch.where(excluded, log_s, log_s / temperature), dim=1)
    log_r = _constant(r, ("log_r", eps), lambda: torch.log(r.clamp(eps, 1 - eps)))
    log_1mr = _constant(r, ("log_1mr", eps), lambda: torch.log1p(-r.clamp(eps, 1 - eps)))
    ll = p @ log_r.T + (1 - p) @ log_1mr.T  # (B, C) expected Bernoulli log-likelihood
    if empty_row == "product":
        ll = torch.where(empty[None, :], log_off, ll)
    elif empty_row == "inactive_fraction":
        ll = torch.where(empty[None, :], torch.log((1 - p).mean(dim=1, keepdim=True).clamp(min=_TINY)), ll)
    return F.log_softmax(ll / temperature, dim=1)


@register("dm", "attr_to_class")
def dm_attr_to_class(batch: CouplingBatch, *, detach: bool = False,
                     variant: Literal["bernoulli", "weighted_mean"] = "bernoulli",
                     divergence: Literal["kl", "ce"] = "kl", temperature: float = 1.0,
                     empty_row: Literal["product", "inactive_fraction", "none"] = "product",
                     eps: float = 1e-4) -> Tensor:
    """DM attributes -> class (P1 §3.2, P2 §3; reconstruction [choice] ``variant``): q(c|x) from
    p_j = sigmoid(attr_logit_j), matched to p(c|x) = softmax(class_logits) by ``divergence`` [choice] ``"kl"`` =
    KL(q || p) or ``"ce"`` = -Σ_c q_c log p_c, averaged over the batch.

    ``"weighted_mean"``: s_c = Σ_j R[c,j] p_j / Σ_j R[c,j], q = s / Σ_c s; ``"bernoulli"`` (default, stable for
    hundreds or thousands of classes): ℓ_c = Σ_j p_j log R̃[c,j] + (1 - p_j) log(1 - R̃[c,j]) with R̃ = R clipped
    to [eps, 1 - eps], q = softmax(ℓ / ``temperature``); ``temperature`` sharpens (< 1) or flattens (> 1) the
    weighted mean the same way, q ∝ s^(1 / temperature). Empty rows (neutral) [choice] ``empty_row``:
    ``"product"`` score Π_j (1 - p_j) (its log replaces ℓ_c in "bernoulli"); ``"inactive_fraction"``
    mean_j (1 - p_j); ``"none"``: weighted_mean gives the row score 0 (excluded at every temperature), bernoulli
    uses the clipped all-eps profile. ``detach`` stops gradients through q (into the attribute head).
    """
    log_q = _attr_to_class_log_q(batch.attr_logits, batch.relatedness, variant, temperature, empty_row, eps)
    if detach:
        log_q = log_q.detach()
    log_p = F.log_softmax(batch.class_logits, dim=1)
    q = log_q.exp()
    per = q * ((log_q - log_p) if divergence == "kl" else -log_p)
    return per.sum() / max(batch.class_logits.shape[0], 1)


def distribution_matching(
    class_logits: Tensor,
    attr_logits: Tensor,
    relatedness: Any,
    direction: Direction = "class_to_attr",
    reduction: Literal["sum", "mean"] = "mean",
    detach: bool = False,
    variant: Literal["bernoulli", "weighted_mean"] = "bernoulli",
    divergence: Literal["kl", "ce"] = "kl",
    temperature: float = 1.0,
    empty_row: Literal["product", "inactive_fraction", "none"] = "product",
    eps: float = 1e-4,
    bernoulli_kl: bool = False,
    *,
    validate: bool = True,
) -> Tensor:
    """Distribution matching (P0 §3.2, P1 §3.2, P2 §3) on one coupling: :func:`dm_class_to_attr`,
    :func:`dm_attr_to_class` or (``direction="both"``) their sum, on every sample.

    ``reduction`` (class -> attributes only) defaults to ``"mean"`` over attributes, as in ``LossConfig`` and every
    preset; ``"sum"`` is the literal paper objective (before this package the bare function defaulted to
    ``"sum"``: pass it explicitly for the literal value). ``bernoulli_kl`` acts on class -> attributes only,
    ``variant``, ``divergence``, ``temperature``, ``empty_row`` and ``eps`` on attributes -> class only;
    ``detach`` on both. Empty batch -> 0. ``validate=False`` skips the value check of R (a host sync).
    """
    return COUPLINGS["dm"](class_logits, attr_logits, relatedness, validate=validate,
                           caller="distribution_matching", direction=direction, reduction=reduction, detach=detach,
                           variant=variant, divergence=divergence, temperature=temperature, empty_row=empty_row,
                           eps=eps, bernoulli_kl=bernoulli_kl)
