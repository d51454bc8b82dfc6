"""Co-annotation: one task's missing labels filled from the other task's labels through R (P0 §3.2 "co-annotation";
P1 §3 and P2 §3 "soft co-annotation"; docs/method.md#co-annotation).

The registered term ``"coann"`` has two directions, one function each: ``coann_class_to_attr`` and
``coann_attr_to_class``; ``co_annotation`` is the switch over both. Targets come from labels only (no gradient
flows into them). Reconstructed details are marked [choice] and are options.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from ._inputs import _TINY, _choice
from .registry import COUPLINGS, CouplingBatch, Direction, register
from .relatedness import _constant, relatedness_tensor
from .task import _soft_cross_entropy, masked_bce, masked_cross_entropy

CoannMode = Literal["hard", "soft"]
COANN_MODES: tuple[str, ...] = ("hard", "soft")
ATTRIBUTE_SETS: tuple[str, ...] = ("all", "related")
EMPTY_ROWS: tuple[str, ...] = ("product", "inactive_fraction", "none")


def check_prototypical(relatedness: Any, threshold: float = 1.0) -> None:
    """ValueError unless every non-empty row of R has a prototypical entry (R[c, j] >= ``threshold``): what hard
    co-annotation (P0 §3.2) needs. Names the rows (class indices) that have none and their largest entry."""
    r = relatedness_tensor(relatedness)
    row_max = r.max(dim=1).values
    bad = torch.nonzero((row_max > 0) & (row_max < threshold)).flatten().tolist()
    if bad:
        largest = ", ".join(f"row {i}: {float(row_max[i]):.3g}" for i in bad[:5])
        raise ValueError(f"hard co-annotation needs binary prototypical sets (entries >= threshold {threshold}), "
                         f"but {len(bad)} non-empty rows of R have none (largest entry {largest}); "
                         "use coann='soft' for an estimated or percentage table")


def _check_options(o: Mapping[str, Any]) -> None:
    _choice("mode", o["mode"], COANN_MODES)
    _choice("attributes", o["attributes"], ATTRIBUTE_SETS)
    _choice("empty_row", o["empty_row"], EMPTY_ROWS)


def _prototypical_sets(r: Tensor, o: Mapping[str, Any]) -> None:
    """The set-up check of R: hard mode needs prototypical sets (a host sync; the trainer runs it once)."""
    if o["mode"] == "hard":
        check_prototypical(r, o["threshold"])


@register("coann", "class_to_attr", labels=True, r_like="attr", check=_check_options,
          check_relatedness=_prototypical_sets)
def coann_class_to_attr(batch: CouplingBatch, *, mode: CoannMode = "soft", threshold: float = 1.0,
                        attributes: Literal["all", "related"] = "all") -> Tensor:
    """Co-annotation class -> attributes (P0 §3.2; soft: P1 §3, P2 §3): BCE averaged over every (sample,
    attribute) entry where the sample HAS a class label c and that attribute is NOT annotated [choice: entry-wise;
    for a sample without any attribute label, the P0 case, every attribute]. Target: ``mode="soft"`` R[c, j];
    ``"hard"`` (P0's binary prototypical sets) 1 where R[c, j] >= ``threshold``, 0 where R[c, j] = 0 and none
    where 0 < R[c, j] < ``threshold`` (an observational AU). ``attributes="related"`` [choice] keeps only
    R[c, j] > 0."""
    r, cls, cmask, amask = batch.relatedness, batch.class_target, batch.class_mask, batch.attr_mask
    rc = r[cls]  # (B, K): R row of each sample's class (row 0 for unlabelled samples, masked out below)
    target = rc if mode == "soft" else (rc >= threshold).to(rc.dtype)
    entries = cmask[:, None] & ~amask
    if mode == "hard":
        entries = entries & ((rc >= threshold) | (rc == 0))
    if attributes == "related":
        entries = entries & (rc > 0)
    return masked_bce(batch.attr_logits, target, entries, validate=False)  # R's entries: in [0, 1]


@register("coann", "attr_to_class")
def coann_attr_to_class(batch: CouplingBatch, *, mode: CoannMode = "soft", threshold: float = 1.0,
                        empty_row: Literal["product", "inactive_fraction", "none"] = "product") -> Tensor:
    """Co-annotation attributes -> class (P0 §3.2; soft: P1 §3, P2 §3), on samples WITHOUT a class label that
    have at least one annotated attribute. ``"hard"``: active = annotated with y_j >= 0.5; a class matches when
    its prototypical set {j: R[c, j] >= threshold} is non-empty and contained in the active set; the sample gets
    that class when exactly one class matches, else it is skipped. ``"soft"``: t(c) ∝ s_c = Σ_j R[c, j] y_j /
    Σ_j R[c, j] over annotated j; samples with Σ_c s_c = 0 are skipped. Loss: CE with the (soft) target averaged
    over used samples. Empty rows (neutral) [choice] ``empty_row``: ``"product"`` s = Π_j (1 - y_j) over
    annotated j, ``"inactive_fraction"`` the mean of 1 - y_j over them, ``"none"`` never a target; in hard mode
    both non-"none" rules match the empty row exactly when no annotated attribute is active."""
    r, cmask, y, amask = batch.relatedness, batch.class_mask, batch.attr_target, batch.attr_mask
    use = ~cmask & amask.any(dim=1)
    ann = amask.to(y.dtype)
    empty = _constant(r, ("empty",), lambda: r.sum(dim=1) == 0)  # (C,)
    if mode == "hard":
        active = (amask & (y >= 0.5)).to(y.dtype)
        proto = _constant(r, ("proto", threshold, y.dtype), lambda: (r >= threshold).to(y.dtype))
        missing = (1 - active) @ proto.T  # (B, C): prototypical attributes not active
        has_proto = _constant(r, ("has_proto", threshold), lambda: proto.sum(dim=1) > 0)
        match = (missing == 0) & has_proto
        if empty_row != "none":
            match = match | (empty[None, :] & (active.sum(dim=1, keepdim=True) == 0))
        use = use & (match.sum(dim=1) == 1)
        target = match.to(torch.long).argmax(dim=1)
        return masked_cross_entropy(batch.class_logits, target, use, validate=False)  # argmax: in range
    num, den = (y * ann) @ r.T, ann @ r.T
    s = torch.where(den > 0, num / den.clamp(min=_TINY), torch.zeros_like(num))
    if empty_row == "product":
        s_empty = torch.where(amask, 1 - y, torch.ones_like(y)).prod(dim=1)
    elif empty_row == "inactive_fraction":
        s_empty = ((1 - y) * ann).sum(dim=1) / ann.sum(dim=1).clamp(min=1)
    else:
        s_empty = torch.zeros_like(y[:, 0])
    s = torch.where(empty[None, :], s_empty[:, None], s)
    norm = s.sum(dim=1, keepdim=True)
    use = use & (norm[:, 0] > 0)
    return _soft_cross_entropy(batch.class_logits, s / norm.clamp(min=_TINY), use)


def co_annotation(
    class_logits: Tensor,
    attr_logits: Tensor,
    class_target: Tensor,
    class_mask: Tensor,
    attr_target: Tensor,
    attr_mask: Tensor,
    relatedness: Any,
    mode: CoannMode = "soft",
    direction: Direction = "both",
    threshold: float = 1.0,
    attributes: Literal["all", "related"] = "all",
    empty_row: Literal["product", "inactive_fraction", "none"] = "product",
    *,
    validate: bool = True,
) -> Tensor:
    """Co-annotation (P0 §3.2; P1 §3, P2 §3 soft) on one coupling: :func:`coann_class_to_attr`,
    :func:`coann_attr_to_class` or (``direction="both"``) their sum.

    ``class_logits (B, C)``, ``attr_logits (B, K)``, their targets with masks (as the task losses take them),
    ``relatedness`` a ``Relatedness`` or ``(C, K)`` R. P0's binary table (every listed AU = 1) is
    ``relatedness.prior(name, weights="binary")``. Hard mode refuses a table in which a non-empty row has no entry
    >= ``threshold`` (an estimated table, CUB's percentages): it has no prototypical sets, use "soft". Caveat of
    ``empty_row``: with attribute sources that annotate only a subset of attributes, an inactive annotated subset
    is weak evidence for the empty row; use ``"none"`` there. ``validate=False`` skips the value checks of the
    labels and of R, and hard mode's prototypical check (host syncs; the trainer runs them once at set-up).
    """
    return COUPLINGS["coann"](class_logits, attr_logits, relatedness, class_target, class_mask, attr_target,
                              attr_mask, validate=validate, caller="co_annotation", mode=mode, direction=direction,
                              threshold=threshold, attributes=attributes, empty_row=empty_row)
