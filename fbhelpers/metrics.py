"""Evaluation metrics (docs/method.md#metrics): numpy in, python floats out.

ABAW-style criteria as used in P1 §4: AU mean F1 over AUs, EXPR accuracy / macro-F1 / UAR, VA CCC per dimension
and their mean; attribute mean accuracy for CelebA / CUB-like attributes (P2 §4); Δm over single-task models
for negative transfer. scikit-learn computes every figure it already knows; only CCC and Δm are written here.
Missing labels (NaN in ``y_true`` or ``False`` in ``mask``) are ignored everywhere.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from fbhelpers.tasks import Task


def _annotated(y_true: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Boolean array: entries with a label (not NaN and, if given, ``mask`` True)."""
    keep = ~np.isnan(y_true)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != y_true.shape:
            raise ValueError(f"mask shape {mask.shape} does not match y_true shape {y_true.shape}")
        keep &= mask.astype(bool)
    return keep


def _pair(y_true, y_pred, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.ndim != ndim or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same {ndim}-D shape, got {t.shape} and {p.shape}")
    return t, p


def _check_binary(values: np.ndarray, what: str) -> None:
    bad = np.unique(values[(values != 0) & (values != 1)])
    if bad.size:
        raise ValueError(f"{what} must be 0/1, got values {bad[:5].tolist()}")


def _class_codes(y_true, y_pred, mask) -> tuple[np.ndarray, np.ndarray]:
    """Labelled (true, predicted) integer class codes of 1-D inputs."""
    t, p = _pair(y_true, y_pred, 1)
    keep = _annotated(t, mask)
    t, p = t[keep], p[keep]
    for what, v in (("y_true", t), ("y_pred", p)):
        bad = np.unique(v[(v != np.round(v)) | (v < 0) | ~np.isfinite(v)])
        if bad.size:
            raise ValueError(f"{what} must hold non-negative integer class codes, got {bad[:5].tolist()}")
    return t.astype(np.int64), p.astype(np.int64)


def ccc(y_true, y_pred, mask=None) -> float:
    """Lin's concordance correlation coefficient 2·cov / (var_t + var_p + (mean_t − mean_p)²), population
    (ddof=0) moments (docs/method.md#valence-and-arousal-ccc-loss; ABAW VA criterion, P1 §4). Entries with NaN
    ``y_true`` or ``mask`` False are ignored; NaN when nothing is left or the denominator is 0 (both constant and
    equal)."""
    t, p = _pair(y_true, y_pred, 1)
    keep = _annotated(t, mask)
    t, p = t[keep], p[keep]
    if not np.isfinite(p).all():
        raise ValueError(f"y_pred has non-finite values at labelled entries: {np.unique(p[~np.isfinite(p)])}")
    if t.size == 0:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    cov = np.mean((t - mt) * (p - mp))
    denom = t.var() + p.var() + (mt - mp) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def f1_per_label(y_true, y_pred, mask=None) -> np.ndarray:
    """Binary F1 of each column of 0/1 arrays ``(N, K)`` over its annotated entries (sklearn ``f1_score``,
    ``zero_division=0``). ABAW AU criterion, P1 §4. NaN for a column without annotated entries and for an
    *absent* label (annotated, but never positive): its F1 is 0 whatever a model does (0/0, or 0 from any false
    positive), so it says nothing about the model; the means leave it out and :func:`absent_labels` counts it."""
    t, p = _pair(y_true, y_pred, 2)
    keep = _annotated(t, mask)
    _check_binary(t[keep], "y_true")
    _check_binary(p[keep], "y_pred (threshold probabilities first)")
    out = np.full(t.shape[1], np.nan)
    for j in range(t.shape[1]):
        k = keep[:, j]
        if t[k, j].any():
            out[j] = f1_score(t[k, j], p[k, j], average="binary", pos_label=1, zero_division=0)
    return out


def absent_labels(y_true, mask=None) -> int:
    """Number of labels (columns of ``(N, K)`` 0/1 ``y_true``) annotated somewhere but never positive: the labels
    :func:`f1_per_label` leaves out of a mean F1."""
    t = np.asarray(y_true, dtype=float)
    keep = _annotated(t, mask)
    return int(sum(keep[:, j].any() and not t[keep[:, j], j].any() for j in range(t.shape[1])))


def auc_per_label(y_true, y_score, mask=None) -> np.ndarray:
    """ROC AUC of each column of scores ``(N, K)`` against 0/1 labels over its annotated entries (sklearn
    ``roc_auc_score``); NaN for a column without both classes. Threshold-free: it scores how well a head *ranks*
    faces per AU, which F1 at a fixed 0.5 threshold hides when the head is well ordered but poorly calibrated.
    Not a criterion of the papers (P1 §4 reports F1): a diagnostic of this kit, e.g. for the AUs that only the
    coupling teaches (docs/method.md#where-coupling-matters)."""
    t, p = _pair(y_true, y_score, 2)
    keep = _annotated(t, mask)
    _check_binary(t[keep], "y_true")
    out = np.full(t.shape[1], np.nan)
    for j in range(t.shape[1]):
        k = keep[:, j]
        if k.any() and 0 < t[k, j].sum() < k.sum():
            out[j] = roc_auc_score(t[k, j], p[k, j])
    return out


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")


def mean_f1(y_true, y_pred, mask=None) -> float:
    """Mean of :func:`f1_per_label` over labels with annotated entries that are positive somewhere (ABAW AU mean
    F1, P1 §4; attribute mean F1, P2 §4): a label absent from the test set is left out (:func:`absent_labels`
    counts them). NaN when nothing is left."""
    return _nanmean(f1_per_label(y_true, y_pred, mask))


def accuracy(y_true, y_pred, mask=None) -> float:
    """Fraction of correct class codes (sklearn ``accuracy_score``) over labelled samples (docs/method.md#metrics;
    EXPR, identity, species accuracy in P1 §4 / P2 §4). NaN when nothing is labelled."""
    t, p = _class_codes(y_true, y_pred, mask)
    return float(accuracy_score(t, p)) if t.size else float("nan")


def macro_f1(y_true, y_pred, mask=None, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 (sklearn ``f1_score(average="macro")``, ``zero_division=0``; ABAW EXPR
    criterion, P1 §4). With ``n_classes`` the mean runs over ALL classes 0..n_classes-1 (sklearn ``labels=``, as
    the ABAW criterion averages over every expression): a class missing from both ``y_true`` and ``y_pred``
    counts as F1 0. Without it, over the classes present in ``y_true`` or ``y_pred`` only. NaN when nothing is
    labelled."""
    t, p = _class_codes(y_true, y_pred, mask)
    labels = None if n_classes is None else np.arange(n_classes)
    return float(f1_score(t, p, labels=labels, average="macro", zero_division=0)) if t.size else float("nan")


def uar(y_true, y_pred, mask=None) -> float:
    """Unweighted average recall: mean per-class recall over the classes present in ``y_true`` (sklearn
    ``balanced_accuracy_score``; docs/method.md#metrics, the compound-expression UAR). NaN when nothing is labelled."""
    t, p = _class_codes(y_true, y_pred, mask)
    if not t.size:
        return float("nan")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(t, p))


def attribute_mean_accuracy(y_true, y_pred, mask=None) -> float:
    """Mean over attributes of the per-attribute accuracy on its annotated entries (sklearn
    ``accuracy_score``; CelebA / CUB attribute protocol, P2 §4). 0/1 arrays ``(N, K)``; attributes without
    annotated entries are skipped; NaN when nothing is annotated."""
    t, p = _pair(y_true, y_pred, 2)
    keep = _annotated(t, mask)
    _check_binary(t[keep], "y_true")
    _check_binary(p[keep], "y_pred (threshold probabilities first)")
    accs = [accuracy_score(t[keep[:, j], j], p[keep[:, j], j]) for j in range(t.shape[1]) if keep[:, j].any()]
    return float(np.mean(accs)) if accs else float("nan")


#: Δm's baseline floor [choice] (docs/method.md#delta-m): a term divides by max(single-task value, floor).
DELTA_M_FLOOR = 0.1


def _delta_m_term(mt: float, st: float, higher_is_better: bool = True, floor: float = DELTA_M_FLOOR) -> float:
    """One metric's term of :func:`delta_m`: (−1)^l (M_mt − M_st) / max(M_st, floor)."""
    a, b = float(mt), float(st)
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"not finite: mt={a}, st={b}")
    sign = 1.0 if higher_is_better else -1.0
    return sign * (a - b) / max(b, floor)


def delta_m(mt: Mapping[str, float], st: Mapping[str, float],
            higher_is_better: Mapping[str, bool] | None = None, floor: float = DELTA_M_FLOOR) -> float:
    """Mean relative improvement of a multi-task model over single-task ones (Maninis et al. CVPR 2019, the
    MTL-survey Δm as LibMTL computes it; docs/method.md#delta-m):
    Δm = mean_k (−1)^{l_k} (M_mt,k − M_st,k) / M_st,k with l_k = 1 when lower is better for metric k. Returned as a
    fraction (0.05 = +5 %); negative values mean negative
    transfer on average. ``higher_is_better`` defaults to True for every metric.

    The ratio assumes a positive baseline. Rule for a single-task value below ``floor`` [choice] (default 0.1;
    docs/method.md#delta-m): the term divides by ``floor`` instead,
    (−1)^{l_k} (M_mt,k − M_st,k) / max(M_st,k, floor).
    A negative baseline would flip the sign of the ratio (a CCC going from −0.05 to 0.10 would count as −3.0; now
    +1.5) and a near-zero one blow it up (0.002 → 0.3: 149; now 2.98); the rule keeps the sign, bounds the term
    by |M_mt − M_st| / floor and is continuous in the baseline (the same value on either side of the floor).
    Above the floor nothing changes. A small positive ``floor`` is required."""
    if set(mt) != set(st):
        raise ValueError(f"mt and st must have the same metrics; only in mt: {sorted(set(mt) - set(st))}, "
                         f"only in st: {sorted(set(st) - set(mt))}")
    if not mt:
        raise ValueError("delta_m needs at least one metric")
    if not floor > 0:
        raise ValueError(f"delta_m: floor must be > 0, got {floor!r}")
    hib = dict(higher_is_better or {})
    unknown = sorted(set(hib) - set(mt))
    if unknown:
        raise ValueError(f"higher_is_better names metrics not in mt/st: {unknown}")
    terms = []
    for k in mt:
        try:
            terms.append(_delta_m_term(mt[k], st[k], hib.get(k, True), floor))
        except ValueError as err:
            raise ValueError(f"metric {k!r} is {err}") from None
    return float(np.mean(terms))


def score_task(task: Task, y_true, y_pred, mask=None, threshold: float = 0.5) -> dict[str, float]:
    """All metrics of one task (docs/method.md#metrics; ABAW criteria as in P1 §4).

    - multiclass: ``y_true`` int codes ``(N,)`` (NaN = missing), ``y_pred`` logits or probabilities ``(N, C)``
      -> argmax; keys ``accuracy``, ``macro_f1`` (over all C classes), ``uar`` (over the classes present).
    - multilabel: ``y_true`` 0/1 ``(N, K)`` (NaN = missing), ``y_pred`` probabilities ``(N, K)`` thresholded at
      ``threshold`` ([choice] 0.5); keys ``mean_f1``, ``mean_accuracy``, ``f1_<label>`` (NaN for a label never
      positive in ``y_true``, left out of ``mean_f1``), ``n_absent`` (how many such labels), and the
      threshold-free ``mean_auc`` / ``auc_<label>`` (:func:`auc_per_label`, NaN for a label with one class).
    - regression: values ``(N, K)``; keys ``ccc_<label>``, ``mean_ccc``.

    ``mask`` (shape of ``y_true``, True = labelled) and NaN labels are ignored. A label without annotated
    entries gives NaN and is left out of the means.
    """
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    k = task.n_outputs
    if task.kind == "multiclass":
        if t.ndim != 1 or p.shape != (len(t), k):
            raise ValueError(f"task {task.name!r}: expected y_true (N,) and y_pred (N, {k}), "
                             f"got {t.shape} and {p.shape}")
        keep = _annotated(t, mask)
        bad = np.unique(t[keep & ((t < 0) | (t >= k) | (t != np.round(t)))])
        if bad.size:
            raise ValueError(f"task {task.name!r}: class codes must be integers in 0..{k - 1}, "
                             f"got {bad[:5].tolist()}")
        if not np.isfinite(p[keep]).all():
            raise ValueError(f"task {task.name!r}: y_pred has non-finite values at labelled rows")
        pred = p.argmax(axis=1).astype(float)
        return {"accuracy": accuracy(t, pred, keep), "macro_f1": macro_f1(t, pred, keep, n_classes=k),
                "uar": uar(t, pred, keep)}
    if t.ndim != 2 or t.shape != p.shape or t.shape[1] != k:
        raise ValueError(f"task {task.name!r}: expected y_true and y_pred of shape (N, {k}), "
                         f"got {t.shape} and {p.shape}")
    keep = _annotated(t, mask)
    if task.kind == "multilabel":
        outside = p[keep & ((p < 0) | (p > 1) | np.isnan(p))]
        if outside.size:
            raise ValueError(f"task {task.name!r}: y_pred must be probabilities in [0, 1] (apply a sigmoid to "
                             f"logits), got values such as {np.unique(outside)[:5].tolist()}")
        binary = (p >= threshold).astype(float)
        f1s = f1_per_label(t, binary, keep)
        aucs = auc_per_label(t, p, keep)
        out = {"mean_f1": _nanmean(f1s), "mean_accuracy": attribute_mean_accuracy(t, binary, keep),
               "mean_auc": _nanmean(aucs), "n_absent": float(absent_labels(t, keep))}
        out.update({f"f1_{label}": float(v) for label, v in zip(task.labels, f1s)})
        out.update({f"auc_{label}": float(v) for label, v in zip(task.labels, aucs)})
        return out
    cccs = {f"ccc_{label}": ccc(t[:, j], p[:, j], keep[:, j]) for j, label in enumerate(task.labels)}
    return {**cccs, "mean_ccc": _nanmean(np.array(list(cccs.values())))}
