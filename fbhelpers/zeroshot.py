"""Zero- and few-shot recognition of classes the network never saw (P1 arXiv 2105.03790 §4.6; METHOD.md §4).

Zero-shot: each unseen class (a compound expression) is described by its attribute profile (its AUs, DU Table 1);
its score is computed from the trained attribute head alone, and the prediction is the argmax.
Few-shot: K labelled images per unseen class train a small classifier on the frozen shared features.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

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


def zero_shot_predict(attr_probs: np.ndarray, profiles: np.ndarray, scoring: str = "mean") -> np.ndarray:
    """Class index with the highest zero-shot score for each sample (P1 §4.6)."""
    return zero_shot_scores(attr_probs, profiles, scoring).argmax(axis=1)


def few_shot_split(labels: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``k`` support samples per class and of the remaining query samples (METHOD.md §4, K-shot)."""
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
        mean, std = support_x.mean(axis=0), support_x.std(axis=0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        clf.fit((support_x - mean) / std, support_y)
        return clf.predict((query_x - mean) / std)
    raise ValueError(f"method must be 'prototype' or 'logistic', got {method!r}")
