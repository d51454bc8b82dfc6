"""Zero- and few-shot recognition of classes the network never saw (P1 arXiv 2105.03790 §4.6;
docs/method.md#zero-shot-and-few-shot).

Zero-shot: each unseen class (a compound expression) is described by its attribute profile (its AUs, DU Table 1);
its score is computed from the trained attribute head alone, and the prediction is the argmax.
Few-shot: K labelled images per unseen class train a small classifier on the frozen shared features.
:func:`zero_shot_table` and :func:`few_shot_curve` run the evaluation grids of the compound study.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

SCORINGS: tuple[str, ...] = ("mean", "geometric", "loglik")


def zero_shot_scores(attr_probs: np.ndarray, profiles: np.ndarray, scoring: str = "mean",
                     eps: float = 1e-6) -> np.ndarray:
    """Score ``(N, K)`` attribute probabilities against ``(C, K)`` class profiles; returns ``(N, C)``.

    P1 §4.6 scores a compound class from the AU predictions of its prototypical AUs; how the AU probabilities are
    combined is not published **[choice]**:

    - ``"mean"`` (default): weighted mean ``Σ_j R[c,j] p_j / Σ_j R[c,j]``;
    - ``"geometric"``: weighted geometric mean ``exp(Σ_j R[c,j] log p_j / Σ_j R[c,j])``;
    - ``"loglik"``: mean Bernoulli log-likelihood of ``p`` under the profile, which also rewards AUs that are
      *absent* where the profile says so (separates e.g. ``sadly_disgusted`` (4, 10) from ``angrily_disgusted``
      (4, 10, 17)).
    """
    attr_probs = np.asarray(attr_probs, dtype=float)
    profiles = np.asarray(profiles, dtype=float)
    if attr_probs.ndim != 2 or profiles.ndim != 2 or attr_probs.shape[1] != profiles.shape[1]:
        raise ValueError(f"attr_probs (N, K) and profiles (C, K) must share K; got {attr_probs.shape} and "
                         f"{profiles.shape}")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    p = np.clip(attr_probs, eps, 1 - eps)
    weight = profiles.sum(axis=1)
    if scoring == "loglik":
        r = np.clip(profiles, eps, 1 - eps)
        return (np.log(p) @ r.T + np.log1p(-p) @ (1 - r).T) / profiles.shape[1]
    if np.any(weight <= 0):
        raise ValueError(f"scoring {scoring!r} needs every class profile to have an attribute; empty rows: "
                         f"{np.flatnonzero(weight <= 0).tolist()}")
    if scoring == "mean":
        return (p @ profiles.T) / weight
    return np.exp((np.log(p) @ profiles.T) / weight)


def indistinguishable(profiles: np.ndarray | pd.DataFrame, names: Sequence[str] | None = None) -> list[tuple]:
    """Groups of classes with identical attribute profiles (e.g. ``sadly_disgusted``, ``appalled`` and ``hatred``,
    all AU4 + AU10 in DU's compound table): no zero-shot rule can tell them apart. ``names`` default to a
    DataFrame's index, else the row indices. Each group lists its classes in row order."""
    if isinstance(profiles, pd.DataFrame):
        names = list(profiles.index) if names is None else names
    rows = np.asarray(profiles, dtype=float)
    names = list(range(len(rows))) if names is None else list(names)
    if len(names) != len(rows):
        raise ValueError(f"{len(names)} names for {len(rows)} profiles")
    groups: dict[bytes, list] = {}
    for name, row in zip(names, rows):
        groups.setdefault(row.tobytes(), []).append(name)
    return [tuple(g) for g in groups.values() if len(g) > 1]


def zero_shot_predict(attr_probs: np.ndarray, profiles: np.ndarray | pd.DataFrame,
                      scoring: str = "mean") -> np.ndarray:
    """Class index with the highest zero-shot score for each sample (P1 §4.6). Classes with identical profiles
    always tie and the argmax picks the first of them: a ``UserWarning`` names them
    (:func:`indistinguishable`)."""
    ties = indistinguishable(profiles)
    if ties:
        warnings.warn(f"zero-shot: classes with identical profiles cannot be told apart, the first of each group "
                      f"is always predicted: {ties}", UserWarning, stacklevel=2)
    return zero_shot_scores(attr_probs, np.asarray(profiles, dtype=float), scoring).argmax(axis=1)


def few_shot_split(labels: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``k`` support samples per class and of the remaining query samples
    (docs/method.md#zero-shot-and-few-shot, K-shot)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    support = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= k:
            raise ValueError(f"class {c} has {len(members)} samples; {k}-shot needs more than {k}")
        support.extend(rng.choice(members, size=k, replace=False))
    support = np.sort(np.array(support))
    return support, np.setdiff1d(np.arange(len(labels)), support)


def few_shot_predict(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
                     method: str = "prototype", seed: int = 0) -> np.ndarray:
    """Classify frozen features of query samples from K labelled support samples per class (P1 §4.6).

    ``"prototype"``: nearest class mean of L2-normalised features (cosine); ``"logistic"``: a linear probe
    (scikit-learn logistic regression on standardised features). Which probe the papers used is not stated
    **[choice]**; both are offered.
    """
    support_x, query_x = np.asarray(support_x, float), np.asarray(query_x, float)
    support_y = np.asarray(support_y)
    if method == "prototype":
        def unit(x):
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        classes = np.unique(support_y)
        protos = unit(np.stack([unit(support_x[support_y == c]).mean(axis=0) for c in classes]))
        return classes[(unit(query_x) @ protos.T).argmax(axis=1)]
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression  # here: the loaders read RAFDB_COMPOUND without sklearn

        mean, std = support_x.mean(axis=0), support_x.std(axis=0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        clf.fit((support_x - mean) / std, support_y)
        return clf.predict((query_x - mean) / std)
    raise ValueError(f"method must be 'prototype' or 'logistic', got {method!r}")


# RAF-DB compound classes in the dataset's 1-based label order (docs/datasets.md#raf-db), as DU Table 1 compound names.
RAFDB_COMPOUND: tuple[str, ...] = (
    "happily_surprised", "happily_disgusted", "sadly_fearful", "sadly_angry", "sadly_surprised", "sadly_disgusted",
    "fearfully_angry", "fearfully_surprised", "angrily_surprised", "angrily_disgusted", "disgustedly_surprised",
)
PROBES: tuple[str, ...] = ("prototype", "logistic")


def _scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> dict[str, float]:
    from .metrics import accuracy, macro_f1, uar

    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, n_classes=n_classes),
            "uar": uar(y_true, y_pred)}


def zero_shot_table(attr_probs: Mapping[str, np.ndarray] | np.ndarray, labels: np.ndarray,
                    profiles: np.ndarray | pd.DataFrame, scorings: Sequence[str] = SCORINGS) -> pd.DataFrame:
    """Zero-shot results for every attribute source x scoring rule (P1 §4.6; docs/method.md#zero-shot-and-few-shot
    "accuracy, macro-F1 and UAR against chance").

    ``attr_probs``: ``(N, K)`` attribute probabilities, or name -> such array (e.g. ``{"MT+DM AU head": p,
    "true AUs (oracle)": y}``) to compare predicted attributes with a ceiling; ``labels``: ``(N,)`` true class
    codes into the rows of ``profiles`` ``(C, K)`` (a DataFrame names its classes in the ties warning of
    :func:`zero_shot_predict`); ``scorings``: rules of :func:`zero_shot_scores` (the
    **[choice]** ablated). Returns one row per (``method``, ``scoring``) with ``accuracy``, ``macro_f1``,
    ``uar`` and ``chance`` = 1 / C (accuracy and UAR of a uniform random guess).
    """
    sources = dict(attr_probs) if isinstance(attr_probs, Mapping) else {"attributes": attr_probs}
    labels = np.asarray(labels)
    rows = []
    for method, probs in sources.items():
        probs = np.asarray(probs, dtype=float)
        if len(probs) != len(labels):
            raise ValueError(f"attr_probs[{method!r}] has {len(probs)} rows but labels has {len(labels)}")
        for scoring in scorings:
            pred = zero_shot_predict(probs, profiles, scoring)
            rows.append({"method": method, "scoring": scoring, **_scores(labels, pred, len(profiles)),
                         "chance": 1.0 / len(profiles)})
    return pd.DataFrame(rows)


def few_shot_curve(features: Mapping[str, np.ndarray], labels: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                   repeats: int = 5, methods: Sequence[str] = PROBES, seed: int = 0) -> pd.DataFrame:
    """K-shot accuracy of probes on frozen features, for several feature extractors
    (docs/method.md#zero-shot-and-few-shot few-shot; P1 §4.6): for each K in ``ks`` and each of ``repeats`` support
    draws (:func:`few_shot_split`, seed ``seed + repeat``, the same draw for every extractor), every probe in
    ``methods`` (:func:`few_shot_predict`) is fitted on the K support samples per class of each ``features[name]``
    ``(N, D)`` and scored on the rest.

    Returns a tidy frame: ``extractor``, ``probe``, ``k``, ``repeat``, ``accuracy``, ``macro_f1``, ``uar``.
    """
    labels = np.asarray(labels)
    bad = {name: np.shape(x) for name, x in features.items() if np.ndim(x) != 2 or len(x) != len(labels)}
    if bad:
        raise ValueError(f"features must be (N, D) with N = {len(labels)} labels; got shapes {bad}")
    unknown = [m for m in methods if m not in PROBES]
    if unknown:
        raise ValueError(f"unknown probes {unknown}; valid: {list(PROBES)}")
    rows = []
    for k in ks:
        for r in range(repeats):
            support, query = few_shot_split(labels, int(k), seed=seed + r)
            for name, x in features.items():
                x = np.asarray(x, dtype=float)
                for method in methods:
                    pred = few_shot_predict(x[support], labels[support], x[query], method, seed=seed + r)
                    rows.append({"extractor": name, "probe": method, "k": int(k), "repeat": r,
                                 **_scores(labels[query], pred)})
    return pd.DataFrame(rows)
