"""Jensen–Shannon distribution matching, class -> attributes: a symmetric, bounded match of the attribute
probabilities the class head implies and those the attribute head predicts
(docs/method.md#adding-a-coupling-term; measured in docs/results.md#jensenshannon-distribution-matching).

q_j(x) = Σ_c softmax(class_logits)_c R[c, j] as in P0 §3.2 / P1 §3.2, p_j(x) = sigmoid(attr_logit_j); per sample
and attribute the Jensen–Shannon divergence (Lin 1991) of the two Bernoullis,
JS(q, p) = ½ KL(q || m) + ½ KL(p || m) = H(m) − ½ H(q) − ½ H(p) with m = (q + p) / 2 and H the binary entropy
in nats: symmetric, 0 exactly when q = p, at most log 2. [choice] a variant not in the papers: unlike their BCE
(linear in q: a pseudo-label for the class head, docs/method.md#distribution-matching-class-to-attributes) and
like ``bernoulli_kl`` it pulls q and p towards each other, and its value is bounded. Registered as the
coupling term ``"dm_js"``.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ._inputs import _choice
from .registry import CouplingBatch, register


def _entropy(x: Tensor) -> Tensor:
    """Binary entropy in nats of probabilities ``x``, clipped to the resolution of their dtype (finite gradients)."""
    tiny = torch.finfo(x.dtype).eps
    x = x.clamp(tiny, 1 - tiny)
    return -(x * torch.log(x) + (1 - x) * torch.log1p(-x))


def bernoulli_js(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise Jensen–Shannon divergence (nats) of Bernoulli(a) and Bernoulli(b), a and b probabilities:
    H((a + b) / 2) − ½ H(a) − ½ H(b); symmetric, in [0, log 2]."""
    return _entropy((a + b) / 2) - (_entropy(a) + _entropy(b)) / 2


def _check_options(o: Mapping[str, Any]) -> None:
    _choice("reduction", o["reduction"], ("sum", "mean"))


@register("dm_js", "class_to_attr", check=_check_options)
def dm_js_class_to_attr(batch: CouplingBatch, *, reduction: Literal["sum", "mean"] = "mean") -> Tensor:
    """Σ_j JS(Bern(q_j) || Bern(sigmoid(attr_logit_j))) per sample with q = softmax(class_logits) @ R, averaged over
    the batch; ``reduction="mean"`` (default, as ``dm``) averages over attributes instead of summing. Gradients
    reach both heads."""
    q = F.softmax(batch.class_logits, dim=1) @ batch.relatedness
    per = bernoulli_js(q, torch.sigmoid(batch.attr_logits))
    return (per.sum() if reduction == "sum" else per.mean(dim=1).sum()) / max(batch.class_logits.shape[0], 1)
