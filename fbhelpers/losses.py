"""Losses of FaceBehaviorNet: masked task losses, co-annotation, distribution matching, the total (METHOD.md §3).

Sources: P0 = Kollias et al., arXiv 1910.11111 §3; P1 = arXiv 2105.03790 §3; P2 = arXiv 2401.01219 §3.
Inputs follow the Batch section of the contract: multiclass targets are ``long (B,)`` with a ``bool (B,)`` mask,
multilabel / regression targets are ``float (B, K)`` with a ``bool (B, K)`` mask; logits are ``(B, n_outputs)``.
Every loss returns a 0-dim tensor; with nothing labelled it is exactly 0 with finite (zero) gradients.
Value checks (label codes in range, targets in [0, 1], R's entries, hard co-annotation's prototypical sets) read
tensors back to the host, a device sync on CUDA; every public loss runs them unless ``validate=False``. The
trainer validates its data (``batching.task_arrays``) and couplings (``coupling_tensor``) once at set-up and
calls the losses with ``validate=False``, so a training step makes no host sync (issue 14). Shape checks cost
nothing and always run.
A *relatedness* is a ``Relatedness`` (anything with ``.tensor()``) or a plain ``(C, K)`` tensor / array with
R[c, j] = p(attribute j | class c) in [0, 1]. Reconstructed details are marked [choice] and are parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .study import Coupling
from .tasks import Task, find_task

CoannMode = Literal["hard", "soft"]
Direction = Literal["class_to_attr", "attr_to_class", "both"]
DIRECTIONS: tuple[str, ...] = ("class_to_attr", "attr_to_class", "both")
COANN_MODES: tuple[str, ...] = ("hard", "soft")
ATTRIBUTE_SETS: tuple[str, ...] = ("all", "related")
EMPTY_ROWS: tuple[str, ...] = ("product", "inactive_fraction", "none")
REDUCTIONS: tuple[str, ...] = ("sum", "mean")
VARIANTS: tuple[str, ...] = ("bernoulli", "weighted_mean")
DIVERGENCES: tuple[str, ...] = ("kl", "ce")
_TINY = 1e-12


# ----------------------------------------------------------------------------------------------- helpers
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


def relatedness_tensor(relatedness: Any, like: Tensor | None = None, validate: bool = True) -> Tensor:
    """R as a validated 2-D tensor (dtype/device of ``like``) from a ``Relatedness`` or a tensor/array (P1 §3.1).

    Duck-typed: anything with ``.tensor()`` is a ``Relatedness``. Entries must be finite and in [0, 1] (checked
    when ``validate``: one host sync; a tensor already of that dtype and device is not copied). R is a fixed
    prior here, so the result is detached.
    """
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
    device = like.device if like is not None else None
    if hasattr(relatedness, "tensor"):
        r = relatedness.tensor(dtype=dtype, device=device)
    else:
        r = torch.as_tensor(relatedness, dtype=dtype, device=device)
    if r.ndim != 2:
        raise ValueError(f"relatedness must be a 2-D (classes, attributes) matrix, got shape {tuple(r.shape)}")
    if validate:
        bad = ~((r >= 0) & (r <= 1))
        if bool(bad.any()):
            raise ValueError(f"relatedness entries must lie in [0, 1] (p(attribute | class)), got {float(r[bad][0])}")
    return r.detach() if r.requires_grad else r  # the same tensor every step (see keep_constants)


def keep_constants(r: Tensor) -> Tensor:
    """``r`` (a relatedness tensor), marked so that the losses compute what they derive from R alone (its empty
    rows, log R clipped, row sums, prototypical sets) once and keep it on ``r``, instead of at every call; an
    in-place torch change of ``r`` is noticed (its version counter) and recomputes them. Only for a tensor the
    caller owns and never changes behind torch's back (e.g. through a numpy array sharing its memory): the trainer
    marks its private aligned copy of each coupling's R. The same operations either way, so the same values."""
    r._fb_constants = None
    return r


def _constant(r: Tensor, key: tuple, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()``, kept on ``r`` when ``r`` is marked by :func:`keep_constants` (recomputed after an in-place
    change of ``r``)."""
    if not hasattr(r, "_fb_constants"):
        return compute()
    try:
        version = r._version
    except RuntimeError:  # an inference-mode tensor has no version counter: nothing kept
        return compute()
    store = r._fb_constants
    if store is None or store[0] != version:
        store = (version, {})
        r._fb_constants = store
    if key not in store[1]:
        store[1][key] = compute()
    return store[1][key]


def _check_relatedness(fn: str, r: Tensor, class_logits: Tensor, attr_logits: Tensor) -> None:
    c, k = class_logits.shape[1], attr_logits.shape[1]
    if tuple(r.shape) != (c, k):
        raise ValueError(
            f"{fn}: relatedness has shape {tuple(r.shape)} but the heads give {c} classes "
            f"(class_logits {tuple(class_logits.shape)}) and {k} attributes (attr_logits {tuple(attr_logits.shape)})"
        )
    if class_logits.shape[0] != attr_logits.shape[0]:
        raise ValueError(
            f"{fn}: class_logits {tuple(class_logits.shape)} and attr_logits {tuple(attr_logits.shape)} "
            "have different batch sizes"
        )


def _soft_cross_entropy(logits: Tensor, target: Tensor, use: Tensor) -> Tensor:
    """Mean over used samples of -sum_c target_c log softmax(logits)_c; 0 when no sample is used."""
    per = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    per = torch.where(use, per, torch.zeros_like(per))
    return per.sum() / use.sum().clamp(min=1)


def _bce_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Element-wise BCE(target, sigmoid(logits)), differentiable in BOTH arguments (log-space, stable)."""
    return -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))


# ----------------------------------------------------------------------------------------------- task losses
def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, *, validate: bool = True) -> Tensor:
    """Cross-entropy averaged over the samples with a class label (METHOD.md §3; P0 §3.2, P1 §3).

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
    """Binary cross-entropy per annotated (sample, label) entry, mean over annotated entries (METHOD.md §3; P0 §3.2).

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
    """Concordance correlation coefficient, differentiable (METHOD.md §3; P0 §3.2, Lin 1989).

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
    """1 - mean CCC over the regression outputs (METHOD.md §3 "VA"; P0 §3.2, P1 §3).

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


# ----------------------------------------------------------------------------------------------- co-annotation
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
    """Co-annotation: one task's missing labels filled from the other task's labels via R.

    Sources: P0 §3.2 (co-annotation); P1 §3 and P2 §3 ("soft co-annotation"); METHOD.md §3.

    Targets come from labels only (no gradient flows into them). ``direction="both"`` sums the two terms.

    class -> attributes: applies to every (sample, attribute) entry where the sample HAS a class label c and
    that attribute is NOT annotated [choice: entry-wise; for samples without any attribute label, the P0 case,
    this is every attribute]. Target: ``mode="soft"`` -> R[c, j] as a soft target; ``mode="hard"`` (P0: binary
    prototypical sets) -> 1 where R[c, j] >= ``threshold`` (default 1.0 = prototypical), 0 where R[c, j] = 0,
    and NO target where 0 < R[c, j] < ``threshold`` (an observational AU such as happiness AU6 at 0.51 is
    neither on nor off for a face of that class). P0's binary table (every listed AU = 1) is
    ``relatedness.prior(name, weights="binary")``. Hard mode refuses a table in which a non-empty row has no
    entry >= ``threshold`` (an estimated table, CUB's percentages): it has no prototypical sets, use "soft".
    ``attributes="related"`` [choice] keeps only entries with R[c, j] > 0. Loss: BCE averaged over those entries.

    attributes -> class: applies to samples WITHOUT a class label that have at least one annotated attribute.
    ``"hard"``: active = annotated with y_j >= 0.5; a class matches when its prototypical set {j: R[c,j] >=
    threshold} is non-empty and contained in the active set; the sample gets that class when exactly one class
    matches, otherwise it is skipped. ``"soft"``: t(c) ∝ s_c = Σ_j R[c,j] y_j / Σ_j R[c,j] over annotated j
    (s_c = 0 if none of c's related attributes is annotated); samples with Σ_c s_c = 0 are skipped. Loss: CE
    with the (soft) target averaged over used samples. ``attributes`` has no effect here (R = 0 adds nothing).

    Empty rows (a class with R[c] = 0, e.g. neutral) [choice] ``empty_row``: ``"product"`` s = Π_j (1 - y_j)
    over annotated j; ``"inactive_fraction"`` s = fraction of annotated attributes that are inactive (mean of
    1 - y_j); ``"none"`` the class never gets a co-annotated target. In hard mode both non-"none" rules make the
    empty-row class match exactly when no annotated attribute is active. Caveat: with attribute sources that
    annotate only a subset of attributes, an inactive annotated subset is weak evidence for the empty row;
    use ``"none"`` there.

    ``validate=False`` skips the value checks of the labels and of R, and hard mode's prototypical check (host
    syncs; the trainer runs them once at set-up, see the module doc).
    """
    fn = "co_annotation"
    _choice("mode", mode, COANN_MODES)
    _choice("direction", direction, DIRECTIONS)
    _choice("attributes", attributes, ATTRIBUTE_SETS)
    _choice("empty_row", empty_row, EMPTY_ROWS)
    _check_logits(fn, "class_logits", class_logits)
    _check_logits(fn, "attr_logits", attr_logits)
    class_logits, attr_logits = _float(class_logits), _float(attr_logits)
    r = relatedness_tensor(relatedness, attr_logits, validate)
    _check_relatedness(fn, r, class_logits, attr_logits)
    cls, cmask = _class_target(fn, class_logits, class_target, class_mask, validate)
    y, amask = _multi_target(fn, attr_logits, attr_target, attr_mask, unit=True, validate=validate)
    total = attr_logits.new_zeros(())

    if mode == "hard" and validate:
        check_prototypical(r, threshold)
    if direction in ("class_to_attr", "both"):
        rc = r[cls]  # (B, K): R row of each sample's class (row 0 for unlabelled samples, masked out below)
        target = rc if mode == "soft" else (rc >= threshold).to(rc.dtype)
        entries = cmask[:, None] & ~amask
        if mode == "hard":
            entries = entries & ((rc >= threshold) | (rc == 0))
        if attributes == "related":
            entries = entries & (rc > 0)
        total = total + masked_bce(attr_logits, target, entries, validate=False)  # R's entries: in [0, 1]

    if direction in ("attr_to_class", "both"):
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
            total = total + masked_cross_entropy(class_logits, target, use, validate=False)  # argmax: in range
        else:
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
            total = total + _soft_cross_entropy(class_logits, s / norm.clamp(min=_TINY), use)
    return total


# ----------------------------------------------------------------------------------------------- distribution matching
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


def distribution_matching(
    class_logits: Tensor,
    attr_logits: Tensor,
    relatedness: Any,
    direction: Direction = "class_to_attr",
    reduction: Literal["sum", "mean"] = "sum",
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
    """Distribution matching between a class head and an attribute head, on EVERY sample.

    Sources: P0 §3.2 and P1 §3.2 (class -> attributes); P1 §3.2 and P2 §3 (attributes -> class); METHOD.md §3, §7.

    class -> attributes (P0/P1): q_j = Σ_c softmax(class_logits)_c R[c, j]; per sample Σ_j BCE(target q_j,
    prediction sigmoid(attr_logit_j)), averaged over the batch (``reduction="sum"``, the literal objective and
    the default here). ``reduction="mean"`` [choice] averages over attributes instead (METHOD.md §7: the
    literal sum collapsed training from scratch; the mean is stable). Gradients reach BOTH heads unless
    ``detach=True`` [choice] stops them through q (then the class head gets none from this term).
    What the class head learns from it: BCE(q, p) is *linear* in q, hence in p(c|x), so its gradient moves
    p(c|x) towards a one-hot on the class whose row R[c] the attribute head's output fits best (the lowest
    Σ_j BCE(R[c, j], p_j)): a pseudo-label, not a match of the two distributions. ``bernoulli_kl=True``
    [choice] subtracts the entropy of q: Σ_j KL(Bern(q_j) || Bern(p_j)) = BCE(q, p) − H(q), whose gradient
    in q is logit(q_j) − logit(p_j): it pulls q towards the attribute head's p (the same gradient into the
    attribute head; inside the entropy q is clipped to the resolution of its dtype, 1.2e-7 in float32). It has no
    effect with ``detach=True`` (no gradient through q) and none on attributes -> class.

    attributes -> class (P1/P2, reconstruction [choice] ``variant``): q(c|x) from p_j = sigmoid(attr_logit_j):
    ``"weighted_mean"`` s_c = Σ_j R[c,j] p_j / Σ_j R[c,j], q = s / Σ_c s; ``"bernoulli"`` (default, stable for
    hundreds or thousands of classes) ℓ_c = Σ_j p_j log R̃[c,j] + (1 - p_j) log(1 - R̃[c,j]) with R̃ = R
    clipped to [eps, 1 - eps], q = softmax(ℓ / ``temperature``); ``temperature`` sharpens (< 1) or flattens
    (> 1) the weighted mean the same way, q ∝ s^(1 / temperature) (1 = the plain normalised s). Empty rows
    (neutral) [choice] ``empty_row``: ``"product"`` score Π_j (1 - p_j) (its log replaces ℓ_c in "bernoulli");
    ``"inactive_fraction"`` mean_j (1 - p_j); ``"none"``: weighted_mean gives the row score 0 (excluded at every
    temperature), bernoulli uses the clipped all-eps profile.
    q is matched to p(c|x) = softmax(class_logits) with ``divergence`` [choice] ``"kl"`` = KL(q || p) or
    ``"ce"`` = -Σ_c q_c log p_c, averaged over the batch; ``reduction`` does not apply to this term (it is one
    divergence, not a sum of per-attribute terms); ``detach`` stops gradients through q (into the attribute
    head). ``direction="both"`` sums the two terms. Empty batch -> 0. ``validate=False`` skips the value check of
    R (a host sync; see the module doc).
    """
    fn = "distribution_matching"
    _choice("direction", direction, DIRECTIONS)
    _choice("reduction", reduction, REDUCTIONS)
    _choice("variant", variant, VARIANTS)
    _choice("divergence", divergence, DIVERGENCES)
    _choice("empty_row", empty_row, EMPTY_ROWS)
    if not temperature > 0:
        raise ValueError(f"{fn}: temperature must be > 0, got {temperature!r}")
    if not 0 < eps < 0.5:
        raise ValueError(f"{fn}: eps must lie in (0, 0.5), got {eps!r}")
    _check_logits(fn, "class_logits", class_logits)
    _check_logits(fn, "attr_logits", attr_logits)
    class_logits, attr_logits = _float(class_logits), _float(attr_logits)
    r = relatedness_tensor(relatedness, class_logits, validate)
    _check_relatedness(fn, r, class_logits, attr_logits)
    batch = max(class_logits.shape[0], 1)
    total = class_logits.new_zeros(())

    if direction in ("class_to_attr", "both"):
        q = F.softmax(class_logits, dim=1) @ r
        if detach:
            q = q.detach()
        per = _bce_logits(attr_logits, q)
        if bernoulli_kl:  # minus the entropy of q, clipped only at the dtype's resolution (not at eps)
            tiny = torch.finfo(q.dtype).eps
            qc = q.clamp(tiny, 1 - tiny)
            per = per + qc * torch.log(qc) + (1 - qc) * torch.log1p(-qc)
        total = total + (per.sum() if reduction == "sum" else per.mean(dim=1).sum()) / batch

    if direction in ("attr_to_class", "both"):
        log_q = _attr_to_class_log_q(attr_logits, r, variant, temperature, empty_row, eps)
        if detach:
            log_q = log_q.detach()
        log_p = F.log_softmax(class_logits, dim=1)
        q = log_q.exp()
        per = q * ((log_q - log_p) if divergence == "kl" else -log_p)
        total = total + per.sum() / batch
    return total


# ----------------------------------------------------------------------------------------------- the total objective
@dataclass
class LossConfig:
    """Flat loss settings (notebook parameters) for :func:`combined_loss` (METHOD.md §3 "Total"; P1 §3).

    ``task_weights``: λ_t per task name (missing -> 1; weights are not published). ``coann``: None | "hard" |
    "soft" with ``coann_weight``, ``coann_direction``, ``coann_threshold``, ``coann_attributes``,
    ``coann_empty_row`` (see :func:`co_annotation`). ``dm``: None | "class_to_attr" | "attr_to_class" | "both"
    with ``dm_weight``, ``dm_reduction`` ("mean" = stable default [choice], "sum" = the literal paper objective,
    METHOD.md §7), ``dm_detach``, ``dm_variant``, ``dm_divergence``, ``dm_temperature``, ``dm_empty_row``,
    ``dm_bernoulli_kl``, ``dm_eps`` (see
    :func:`distribution_matching`) and ``dm_warmup_steps`` [choice]: λ_dm ramps linearly from 1/N to 1 over the
    first N steps (0 = off).
    """

    task_weights: dict[str, float] = field(default_factory=dict)
    coann: CoannMode | None = None
    coann_weight: float = 1.0
    coann_direction: Direction = "both"
    coann_threshold: float = 1.0
    coann_attributes: Literal["all", "related"] = "all"
    coann_empty_row: Literal["product", "inactive_fraction", "none"] = "product"
    dm: Direction | None = None
    dm_weight: float = 1.0
    dm_reduction: Literal["sum", "mean"] = "mean"
    dm_detach: bool = False
    dm_variant: Literal["bernoulli", "weighted_mean"] = "bernoulli"
    dm_divergence: Literal["kl", "ce"] = "kl"
    dm_temperature: float = 1.0
    dm_empty_row: Literal["product", "inactive_fraction", "none"] = "product"
    dm_bernoulli_kl: bool = False
    dm_eps: float = 1e-4
    dm_warmup_steps: int = 0

    def __post_init__(self) -> None:
        _choice("coann", self.coann, (None, *COANN_MODES))
        _choice("coann_direction", self.coann_direction, DIRECTIONS)
        _choice("coann_attributes", self.coann_attributes, ATTRIBUTE_SETS)
        _choice("coann_empty_row", self.coann_empty_row, EMPTY_ROWS)
        _choice("dm", self.dm, (None, *DIRECTIONS))
        _choice("dm_reduction", self.dm_reduction, REDUCTIONS)
        _choice("dm_variant", self.dm_variant, VARIANTS)
        _choice("dm_divergence", self.dm_divergence, DIVERGENCES)
        _choice("dm_empty_row", self.dm_empty_row, EMPTY_ROWS)
        if self.dm_warmup_steps < 0:
            raise ValueError(f"dm_warmup_steps must be >= 0, got {self.dm_warmup_steps!r}")
        if not 0 < self.dm_eps < 0.5:
            raise ValueError(f"dm_eps must lie in (0, 0.5), got {self.dm_eps!r}")
        if self.dm_bernoulli_kl and (self.dm not in ("class_to_attr", "both") or self.dm_detach):
            raise ValueError(f"dm_bernoulli_kl acts on DM class -> attributes with gradients through q; it has no "
                             f"effect with dm={self.dm!r}, dm_detach={self.dm_detach!r}")

    def task_weight(self, name: str) -> float:
        """λ_t for task ``name`` (1.0 unless set)."""
        return float(self.task_weights.get(name, 1.0))


def coupling_tensor(
    coupling: Coupling, tasks: Sequence[Task], like: Tensor | None = None, validate: bool = True
) -> tuple[Task, Task, Tensor]:
    """(class task, attribute task, R aligned to their label orders) for one coupling (P1 §3.1).

    A ``Relatedness`` is reordered with ``.matrix(class labels, attribute labels)``; a plain tensor must already
    have shape (number of classes, number of attributes). ``validate`` checks R's entries (see
    :func:`relatedness_tensor`).
    """
    ct, at = find_task(tasks, coupling.class_task), find_task(tasks, coupling.attr_task)
    if ct.kind != "multiclass" or at.kind != "multilabel":
        raise ValueError(
            f"coupling ({ct.name!r}, {at.name!r}): needs a multiclass and a multilabel task, "
            f"got {ct.kind!r} and {at.kind!r}"
        )
    rel = coupling.relatedness
    if hasattr(rel, "matrix"):
        rel = rel.matrix(ct.labels, at.labels)
    try:
        r = relatedness_tensor(rel, like, validate)
    except ValueError as err:
        raise ValueError(f"coupling ({ct.name!r}, {at.name!r}): {err}") from None
    if tuple(r.shape) != (ct.n_outputs, at.n_outputs):
        raise ValueError(
            f"coupling ({ct.name!r}, {at.name!r}): relatedness has shape {tuple(r.shape)} but tasks "
            f"{ct.name!r} x {at.name!r} need ({ct.n_outputs}, {at.n_outputs})"
        )
    return ct, at, r


def combined_loss(
    outputs: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    tasks: Sequence[Task],
    couplings: Sequence[Coupling],
    config: LossConfig,
    step: int | None = None,
    *,
    validate: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L = Σ_t λ_t L_t + λ_coann L_coann + λ_dm L_dm (METHOD.md §3 "Total"; P0 §3.2, P1 §3).

    ``outputs``: task name -> head output; ``batch`` as in the contract (``targets``/``masks`` per task name).
    L_t: multiclass -> :func:`masked_cross_entropy`, multilabel -> :func:`masked_bce`, regression ->
    :func:`ccc_loss`. L_coann / L_dm sum :func:`co_annotation` / :func:`distribution_matching` over the
    couplings. Returns (total, terms) with unweighted terms keyed by task name, "coann", "dm" (only active ones).
    ``step`` drives the DM warm-up (None = fully on). ``validate=False`` skips every value check (labels, R,
    prototypical sets: host syncs) for callers that validated their data and couplings once (the trainer).
    """
    if not tasks:
        raise ValueError("combined_loss: no tasks given")
    terms: dict[str, Tensor] = {}
    unknown = sorted(set(config.task_weights) - {t.name for t in tasks})
    if unknown:
        raise KeyError(f"task_weights names unknown tasks {unknown}; tasks are {[t.name for t in tasks]}")
    targets, masks = batch["targets"], batch["masks"]

    def get(task: Task) -> tuple[Tensor, Tensor, Tensor]:
        for what, d in (("outputs", outputs), ("batch['targets']", targets), ("batch['masks']", masks)):
            if task.name not in d:
                raise KeyError(f"task {task.name!r} missing from {what} (keys {sorted(d)})")
        out = outputs[task.name]
        if out.ndim != 2 or out.shape[1] != task.n_outputs:
            raise ValueError(
                f"task {task.name!r}: output has shape {tuple(out.shape)}, expected (B, {task.n_outputs})"
            )
        return out, targets[task.name], masks[task.name]

    loss_fns = {"multiclass": masked_cross_entropy, "multilabel": masked_bce, "regression": ccc_loss}
    parts: list[Tensor] = []
    for task in tasks:
        out, tgt, msk = get(task)
        try:
            terms[task.name] = loss_fns[task.kind](out, tgt, msk, validate=validate)
        except ValueError as err:
            raise ValueError(f"task {task.name!r}: {err}") from err
        parts.append(config.task_weight(task.name) * terms[task.name])

    if config.coann or config.dm:
        ramp = 1.0
        if config.dm_warmup_steps and step is not None:
            ramp = min(1.0, (step + 1) / config.dm_warmup_steps)
        coann, dm = [], []
        for coupling in couplings:
            like = outputs.get(coupling.class_task)
            ct, at, r = coupling_tensor(coupling, tasks, None if like is None else _float(like), validate)
            (c_out, c_tgt, c_msk), (a_out, a_tgt, a_msk) = get(ct), get(at)
            try:
                if config.coann:
                    coann.append(co_annotation(
                        c_out, a_out, c_tgt, c_msk, a_tgt, a_msk, r, mode=config.coann,
                        direction=config.coann_direction, threshold=config.coann_threshold,
                        attributes=config.coann_attributes, empty_row=config.coann_empty_row, validate=validate))
                if config.dm:
                    dm.append(distribution_matching(
                        c_out, a_out, r, direction=config.dm, reduction=config.dm_reduction,
                        detach=config.dm_detach, variant=config.dm_variant, divergence=config.dm_divergence,
                        temperature=config.dm_temperature, empty_row=config.dm_empty_row,
                        bernoulli_kl=config.dm_bernoulli_kl, eps=config.dm_eps, validate=validate))
            except ValueError as err:
                raise ValueError(f"coupling ({ct.name!r}, {at.name!r}): {err}") from err
        if coann:
            terms["coann"] = torch.stack(coann).sum()
            parts.append(config.coann_weight * terms["coann"])
        if dm:
            terms["dm"] = torch.stack(dm).sum()
            parts.append(config.dm_weight * ramp * terms["dm"])
    return torch.stack(parts).sum(), terms
