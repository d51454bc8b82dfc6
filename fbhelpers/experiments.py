"""The papers' comparison: single-task models vs multi-task learning with and without task coupling.

``docs/method.md#measuring-the-claims`` (P0 §5, P1 §5, P2 §5): for every task and every test set compare single-task
(ST) models, MT without coupling, MT + co-annotation, MT + distribution matching (DM) and MT + both, with the same
backbone and budget; report a table over seeds, the mean relative improvement Δm over ST and flag negative transfer
(an MT variant below the ST model on a task). ``docs/method.md#where-coupling-matters``: coupling matters where
labels are scarce, so attribute F1 is also reported separately for the attributes the training sources label and for
those they do not.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from .batching import TaskDataset
from .display import show_progress
from .losses import LossConfig
from .metrics import DELTA_M_FLOOR, delta_m
from .models import MultiHeadNet
from .recording import record
from .study import Study
from .tasks import Task
from .train import TrainConfig, evaluate, fit

# Loss settings of each multi-task variant [choice]: soft co-annotation (P1/P2), DM class -> attributes with the
# stable mean reduction (docs/method.md#distribution-matching-class-to-attributes); "st" trains one single-task model
# per task instead.
VARIANTS: dict[str, dict[str, Any]] = {
    "mt": {},
    "mt_coann": {"coann": "soft"},
    "mt_dm": {"dm": "class_to_attr"},
    "mt_both": {"coann": "soft", "dm": "class_to_attr"},
}
HEADLINE: tuple[str, ...] = ("accuracy", "macro_f1", "mean_f1", "mean_f1_labelled", "mean_f1_unlabelled",
                             "mean_auc_unlabelled",
                             "mean_ccc")
LOWER_IS_BETTER: frozenset[str] = frozenset()


def _study(study: Study | Callable[[int], Study], seed: int) -> Study:
    return study if isinstance(study, Study) else study(seed)


def _label_groups(study: Study) -> dict[str, dict[str, tuple[str, ...]]]:
    """{task: {"labelled": labels, "unlabelled": labels}} for each multilabel task the study has ``label_groups``
    for (``Study.label_groups``)."""
    tasks = {t.name: t for t in study.tasks}
    return {name: {"labelled": g.labelled, "unlabelled": g.unlabelled} for name, g in study.label_groups.items()
            if name in tasks and tasks[name].kind == "multilabel"}


def _group_rows(scores: pd.DataFrame, groups: Mapping[str, Mapping[str, Sequence[str]]]) -> pd.DataFrame:
    """Rows ``mean_f1_<group>`` and ``mean_auc_<group>``: mean of the per-label F1 / ROC AUC over a group's
    labels (NaN labels skipped)."""
    rows = []
    for (source, task), part in scores.groupby(["source", "task"], sort=False):
        values = part.set_index("metric")["value"]
        for group, labels in groups.get(task, {}).items():
            for score in ("f1", "auc"):
                vals = values.reindex([f"{score}_{a}" for a in labels]).dropna()
                if len(vals):
                    rows.append((source, task, f"mean_{score}_{group}", float(vals.mean())))
    # typed even when empty: concatenated with the scores it must not turn their values into objects (pandas 3)
    return pd.DataFrame(rows, columns=["source", "task", "metric", "value"]).astype({"value": "float64"})


def _sources_for(study: Study, task: Task) -> dict:
    """Training sources that label ``task`` (the data a single-task model of it can use)."""
    train = study.split("train")
    return {n: s for n, s in train.items() if len(s) and TaskDataset(s, (task,)).labelled[task.name]}


def largest_first_quota(sources: Mapping[str, Any], quota: int, small: int | None = None) -> dict[str, int]:
    """Per-source rows per step of the CPU-sized face runs [choice]: ``quota`` from the largest source (by rows)
    and ``small`` (default a quarter of ``quota``, at least 2) from every other one, so a small source is not
    cycled through dozens of times per pass over the large one while every loss term stays in every batch."""
    sizes = {name: len(src) for name, src in sources.items()}
    largest = max(sizes, key=sizes.get)
    small = max(2, quota // 4) if small is None else small
    return {name: quota if name == largest else small for name in sizes}


# The comparison's training settings [choice]: fit's defaults but 800 steps at lr 5e-3 (the budget of the CPU
# comparison, docs/results.md); every model of a comparison trains with them (same budget).
TRAINING = TrainConfig(steps=800, lr=5e-3)


def _training(training: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    return (training or TRAINING).replace(**overrides)


def _train_scored(data: Study, tasks: Sequence[Task], sources: Mapping, couplings: Sequence, loss: LossConfig,
                  seed: int, training: TrainConfig, backbone: str, backbone_kw: Mapping[str, Any] | None,
                  ) -> VariantRun:
    """One model of the comparison: initialised from ``seed``, ``fit`` on ``sources`` with ``training`` (its
    ``seed`` replaced by ``seed``, its ``quota`` cut to the share ``sources`` hold), then every task of ``tasks``
    scored on every test set of ``data``, with the labelled / unlabelled attribute groups."""
    channels = next(iter(data.sources.values())).images.shape[-1]
    torch.manual_seed(seed)
    model = MultiHeadNet(tasks, backbone, in_channels=channels, **(backbone_kw or {}))
    quota = training.quota
    share = {n: quota[n] for n in sources} if isinstance(quota, Mapping) else quota
    history = fit(model, sources, tasks, couplings, loss, training.replace(quota=share, seed=seed))
    scores = evaluate(model, data, tasks, split="test", device=training.device)
    scores = pd.concat([scores, _group_rows(scores, _label_groups(data))], ignore_index=True)
    return VariantRun(model, history, scores)


class VariantRun(NamedTuple):
    """One trained model of a comparison: the network (None when ``compare_coupling`` was not asked to keep
    it), its ``fit`` history and its tidy test scores."""

    model: MultiHeadNet | None
    history: pd.DataFrame
    scores: pd.DataFrame


@dataclass
class Comparison:
    """What ``compare_coupling`` returns. ``results``: the tidy frame ``variant, seed, source, task, metric,
    value`` (``attrs["seconds"]``: training time of each (variant, seed)); ``runs``: every trained model's
    ``VariantRun`` keyed ``(variant, seed, model)``, ``model`` the trained task names joined by "+" (one key per
    ST task); ``histories`` / ``models`` the same keys to the histories / networks alone."""

    results: pd.DataFrame
    runs: dict[tuple[str, int, str], VariantRun]

    @property
    def histories(self) -> dict[tuple[str, int, str], pd.DataFrame]:
        return {key: run.history for key, run in self.runs.items()}

    @property
    def models(self) -> dict[tuple[str, int, str], MultiHeadNet]:
        return {key: run.model for key, run in self.runs.items() if run.model is not None}


def compare_coupling(
    study: Study | Callable[[int], Study],
    variants: Sequence[str] = ("st", "mt", "mt_coann", "mt_dm", "mt_both"),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    backbone: str = "cnn4",
    backbone_kw: Mapping[str, Any] | None = None,
    loss: Mapping[str, Any] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    data_seed: int | None = 0,
    progress: bool | None = None,
    keep_models: bool = False,
    training: TrainConfig | None = None,
    **overrides: Any,
) -> Comparison:
    """Train every variant for every seed and score every task on every test set
    (``docs/method.md#measuring-the-claims``; P1 §5 tables).

    ``study``: a ``Study`` or a callable ``seed -> Study``.
    ``data_seed``: the study is built once with this seed (only training seeds vary); None = one study per seed.
    ``variants``: ``"st"`` (one model per task, trained on the sources labelling it) and keys of ``VARIANTS``
    (or of ``configs``, name -> ``LossConfig`` keyword arguments, which extends / overrides ``VARIANTS``);
    ``loss`` holds keyword arguments shared by every variant (e.g. ``dm_weight``). Every model: the same
    backbone and the same ``training`` settings (default ``TRAINING``: 800 steps, lr 5e-3), with ``overrides`` of
    its fields (``steps``, per-source ``quota``, ``lr``, ``device``, ``augment``, ...): the same budget. Each
    run's ``fit`` seed is its training seed; ``progress``: the comparison's own bar (each ``fit`` runs without).

    Returns a ``Comparison``: ``results``, a tidy frame ``variant, seed, source, task, metric, value``
    (``evaluate`` rows, plus ``mean_f1_labelled`` / ``mean_f1_unlabelled`` and ``mean_auc_labelled`` /
    ``mean_auc_unlabelled`` where the study has ``label_groups``; ``attrs["seconds"]``: the training time of each
    (variant, seed)), and ``runs``: every model's history and scores (training curves without retraining a
    variant) and, with ``keep_models=True``, its network (confusion matrices, VA scatter or per-label scores of
    a variant without retraining it; each holds its weights in memory).
    """
    table = {**VARIANTS, **(configs or {})}
    unknown = [v for v in variants if v != "st" and v not in table]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known are ['st', *{sorted(table)}]")
    training = _training(training, {**overrides, "progress": False})
    from tqdm.auto import tqdm

    frames, seconds, kept = [], {}, {}
    runs = [(v, s) for s in seeds for v in variants]
    fixed = _study(study, data_seed) if data_seed is not None else None
    quiet = not show_progress(progress)
    for variant, seed in tqdm(runs, desc="compare", disable=quiet):
        data = fixed or _study(study, seed)
        if variant == "st":
            jobs = [((t,), _sources_for(data, t), (), LossConfig(**(loss or {}))) for t in data.tasks]
        else:
            config = LossConfig(**{**(loss or {}), **table[variant]})
            jobs = [(data.tasks, data.split("train"), data.couplings, config)]
        start = perf_counter()
        for tasks, sources, couplings, config in jobs:
            run = _train_scored(data, tasks, sources, couplings, config, seed, training, backbone, backbone_kw)
            scores = run.scores.assign(variant=variant, seed=seed)
            kept[(variant, seed, "+".join(t.name for t in tasks))] = run._replace(
                model=run.model if keep_models else None, scores=scores)
            frames.append(scores)
        seconds[(variant, seed)] = perf_counter() - start
    out = pd.concat(frames, ignore_index=True)[["variant", "seed", "source", "task", "metric", "value"]]
    out.attrs["seconds"] = seconds
    return Comparison(out, kept)


def summarize(results: pd.DataFrame, metrics: Sequence[str] | None = HEADLINE) -> pd.DataFrame:
    """Mean, std (ddof=1) and count over seeds per (variant, source, task, metric); ``metrics=None`` keeps all."""
    if metrics is not None:
        results = results[results["metric"].isin(metrics)]
    return (results.groupby(["variant", "source", "task", "metric"], sort=False)["value"]
            .agg(mean="mean", std="std", n="count").reset_index())


def comparison_table(results: pd.DataFrame, metrics: Sequence[str] | None = HEADLINE, digits: int = 3) -> pd.DataFrame:
    """The paper-style table: rows (source, task, metric), one column per variant, cells ``mean ± std``."""
    s = summarize(results, metrics)
    s["cell"] = [f"{m:.{digits}f} ± {0.0 if np.isnan(d) else d:.{digits}f}" for m, d in zip(s["mean"], s["std"])]
    order = list(dict.fromkeys(results["variant"]))
    wide = s.pivot_table(index=["source", "task", "metric"], columns="variant", values="cell", aggfunc="first")
    return wide[[v for v in order if v in wide.columns]]


def delta_m_table(results: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "mean_f1", "mean_ccc"),
                  lower_is_better: frozenset[str] = LOWER_IS_BETTER, floor: float = DELTA_M_FLOOR) -> pd.DataFrame:
    """Δm of every MT variant over the single-task models, per seed and as mean ± std (``metrics.delta_m``, Maninis
    et al. 2019, as in the MTL literature; ``docs/method.md#delta-m``). Metrics are (source, task, metric) entries
    scored by both; ST of the same seed is the reference. A single-task value below ``floor`` (a VA CCC near 0) is
    divided by ``floor`` instead (``metrics.delta_m``); ``n_floored`` counts those terms over all seeds. Columns
    ``variant, mean, std, n_floored, <seed>...``."""
    sel = results[results["metric"].isin(metrics)]
    key = sel["source"] + "/" + sel["task"] + "/" + sel["metric"]
    sel = sel.assign(key=key)
    rows = []
    for (variant, seed), part in sel[sel["variant"] != "st"].groupby(["variant", "seed"], sort=False):
        st = sel[(sel["variant"] == "st") & (sel["seed"] == seed)].set_index("key")["value"]
        mt = part.set_index("key")["value"]
        common = [k for k in mt.index if k in st.index and np.isfinite(mt[k]) and np.isfinite(st[k])]
        hib = {k: k.rsplit("/", 1)[1] not in lower_is_better for k in common}
        n_floored = int((st[common] < floor).sum())
        rows.append((variant, seed, delta_m(mt[common].to_dict(), st[common].to_dict(), hib, floor), n_floored))
    frame = pd.DataFrame(rows, columns=["variant", "seed", "delta_m", "n_floored"])
    wide = frame.pivot(index="variant", columns="seed", values="delta_m")
    wide.insert(0, "n_floored", frame.groupby("variant")["n_floored"].sum())
    wide.insert(0, "std", frame.groupby("variant")["delta_m"].std())
    wide.insert(0, "mean", frame.groupby("variant")["delta_m"].mean())
    return wide.loc[list(dict.fromkeys(frame["variant"]))]


def negative_transfer(results: pd.DataFrame, metrics: Sequence[str] | None = HEADLINE,
                      lower_is_better: frozenset[str] = LOWER_IS_BETTER) -> pd.DataFrame:
    """Negative transfer (``docs/method.md#negative-transfer``): an MT variant whose mean over seeds is worse than
    the single-task model's on a (source, task, metric). ``beyond_spread`` marks gaps larger than the larger of the
    two seed standard deviations. Columns ``variant, source, task, metric, mt, st, gap, negative,
    beyond_spread``."""
    s = summarize(results, metrics)
    st = s[s["variant"] == "st"].set_index(["source", "task", "metric"])
    rows = []
    for r in s[s["variant"] != "st"].itertuples():
        k = (r.source, r.task, r.metric)
        if k not in st.index:
            continue
        ref = st.loc[k]
        gap = (r.mean - ref["mean"]) * (-1 if r.metric in lower_is_better else 1)
        spread = np.nanmax([r.std, ref["std"], 0.0])
        rows.append((r.variant, *k, r.mean, ref["mean"], gap, gap < 0, abs(gap) > spread))
    return pd.DataFrame(rows, columns=["variant", "source", "task", "metric", "mt", "st", "gap", "negative",
                                       "beyond_spread"])


def transfer_counts(transfer: pd.DataFrame) -> pd.DataFrame:
    """Per variant, from :func:`negative_transfer`: ``negative`` cells (MT below ST), those ``beyond_spread``
    (below by more than the seed spread) and ``of`` (cells compared)."""
    negative = transfer["negative"].astype(bool)
    beyond = negative & transfer["beyond_spread"].astype(bool)
    frame = pd.DataFrame({"variant": transfer["variant"], "negative": negative, "beyond_spread": beyond})
    counts = frame.groupby("variant", sort=False)[["negative", "beyond_spread"]].sum().astype(int)
    return counts.assign(of=frame.groupby("variant", sort=False).size())


def paired_difference(results: pd.DataFrame, variant: str, baseline: str, metric: str,
                      task: str | None = None, source: str | None = None) -> pd.DataFrame:
    """``variant - baseline`` per seed for one metric (same seed = same data order and initialisation), with
    its mean and std over seeds per (source, task): the check "does coupling beat plain MT by more than the
    seed spread". Columns ``source, task, mean_diff, std_diff, min_diff, n``."""
    sel = results[(results["metric"] == metric)]
    if task is not None:
        sel = sel[sel["task"] == task]
    if source is not None:
        sel = sel[sel["source"] == source]
    wide = sel.pivot_table(index=["source", "task", "seed"], columns="variant", values="value")
    missing = [v for v in (variant, baseline) if v not in wide.columns]
    if missing:
        raise ValueError(f"no {metric!r} results for variants {missing}")
    diff = (wide[variant] - wide[baseline]).rename("diff").reset_index()
    return (diff.groupby(["source", "task"])["diff"]
            .agg(mean_diff="mean", std_diff="std", min_diff="min", n="count").reset_index())


# ----------------------------------------------------------------------------------------------- one variant, kept
# The [choice] ablation around the default coupling (docs/method.md#coupling-terms; pass as ``configs=`` to
# ``compare_coupling`` / ``fit_variant``), presets over the registered coupling terms (``losses.COUPLINGS``): the
# literal summed DM objective (it collapsed a prototype), DM with q detached, hard co-annotation (P0) instead of
# soft (P1/P2), DM in both directions (P1/P2) or attributes -> class alone (where class labels are scarce) instead
# of class -> attributes, DM class -> attributes as a Bernoulli KL (BCE − H(q)) instead of the recalled BCE
# (``losses.distribution_matching``), and the symmetric Jensen–Shannon match of q and the attribute head
# (``losses.jensen_shannon``) instead of DM.
ABLATIONS: dict[str, dict[str, Any]] = {
    "mt_dm_sum": {"dm": "class_to_attr", "dm_reduction": "sum"},
    "mt_dm_detach": {"dm": "class_to_attr", "dm_detach": True},
    "mt_coann_hard": {"coann": "hard"},
    "mt_dm_both": {"dm": "both"},
    "mt_dm_attr": {"dm": "attr_to_class"},
    "mt_dm_kl": {"dm": "class_to_attr", "dm_bernoulli_kl": True},
    "mt_dm_js": {"couplings": {"dm_js": {}}},
}
# Headline columns of ``overview``: name -> (task, metric).
OVERVIEW: dict[str, tuple[str, str]] = {
    "expr_accuracy": ("expr", "accuracy"), "expr_macro_f1": ("expr", "macro_f1"), "au_mean_f1": ("au", "mean_f1"),
    "au_f1_labelled": ("au", "mean_f1_labelled"), "au_f1_unlabelled": ("au", "mean_f1_unlabelled"),
    "au_auc_unlabelled": ("au", "mean_auc_unlabelled"),
    "va_mean_ccc": ("va", "mean_ccc"),
}


def fit_variant(
    study: Study | Callable[[int], Study],
    variant: str = "mt_dm",
    seed: int = 0,
    *,
    backbone: str = "cnn4",
    backbone_kw: Mapping[str, Any] | None = None,
    loss: Mapping[str, Any] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    data_seed: int = 0,
    training: TrainConfig | None = None,
    **overrides: Any,
) -> VariantRun:
    """Train ONE multi-task variant exactly as ``compare_coupling`` does for (``variant``, ``seed``) and keep the
    model and its training history (``docs/method.md#measuring-the-claims``; P1 §4 figures need the model:
    confusion matrices, VA scatter, per-AU F1). Same arguments (``training`` with ``overrides``, default
    ``TRAINING``) -> on CPU the same weights and scores as the comparison's run of that seed. ``variant``: a key
    of ``VARIANTS`` or of ``configs`` (e.g. ``ABLATIONS``); single-task models are not handled here (``"st"``
    trains one model per task). ``eval_every``: steps between test-set evaluations of the study recorded in the history
    (``eval/<source>/<task>/<metric>`` columns; None = none); evaluating does not change the training.
    ``scores``: the tidy rows of ``compare_coupling`` (``variant, seed, source, task, metric, value``, with the
    labelled / unlabelled label groups).
    """
    table = {**VARIANTS, **(configs or {})}
    if variant not in table:
        raise ValueError(f"unknown variant {variant!r}; known are {sorted(table)} ('st' is compare_coupling's)")
    data = _study(study, data_seed)
    config = LossConfig(**{**(loss or {}), **table[variant]})
    training = _training(training, overrides)
    if training.eval_every and training.eval_sources is None:
        training = training.replace(eval_sources=data)
    run = _train_scored(data, data.tasks, data.split("train"), data.couplings, config, seed, training, backbone,
                        backbone_kw)
    scores = run.scores.assign(variant=variant, seed=seed)[["variant", "seed", "source", "task", "metric", "value"]]
    return run._replace(scores=scores)


def per_seed(results: pd.DataFrame, columns: Mapping[str, tuple[str, str]] = OVERVIEW) -> pd.DataFrame:
    """One row per (variant, seed), one column per headline number (``columns``: name -> (task, metric), default
    ``OVERVIEW``): its mean over every test set that scores it. Paired differences between variants are
    differences of rows with the same seed (same initialisation and batches), e.g.
    ``per_seed(r).loc["mt_dm"] - per_seed(r).loc["mt"]``."""
    rows = []
    for name, (task, metric) in columns.items():
        sel = results[(results["task"] == task) & (results["metric"] == metric)]
        rows.append(sel.groupby(["variant", "seed"], sort=False)["value"].mean().rename(name))
    if not rows:
        raise ValueError("per_seed needs at least one column")
    return pd.concat(rows, axis=1)


def overview(results: pd.DataFrame, columns: Mapping[str, tuple[str, str]] = OVERVIEW,
             std: bool = False) -> pd.DataFrame:
    """One row per variant, one column per headline number (``columns``: name -> (task, metric), default
    ``OVERVIEW``): the mean over every test set that scores it, then the mean over seeds
    (``docs/method.md#seeds-and-spread``: keep every result over seeds; :func:`per_seed` before the mean).
    ``std=True`` adds ``<name>_std`` (ddof=1 over seeds). Variants keep their order of appearance; a (task, metric)
    absent for a variant is NaN."""
    wide = per_seed(results, columns)
    order = list(dict.fromkeys(results["variant"]))
    mean = wide.groupby(level="variant", sort=False).mean().reindex(order)
    if std:
        spread = wide.groupby(level="variant", sort=False).std().reindex(order).add_suffix("_std")
        mean = pd.concat([mean, spread], axis=1)[[c for n in columns for c in (n, f"{n}_std")]]
    mean.index.name = "variant"
    return mean


def paired_summary(results: pd.DataFrame, baseline: str = "mt",
                   columns: Mapping[str, tuple[str, str]] = OVERVIEW) -> pd.DataFrame:
    """Every other variant minus ``baseline``, seed by seed (:func:`per_seed` rows of the same seed: same
    initialisation and batches), summarised over seeds: rows variants, columns ``(name, "mean" | "std" | "min")``.
    A claim "A beats B" holds in these runs when the ``min`` is above 0 (``docs/method.md#seeds-and-spread``)."""
    seeds = per_seed(results, columns)
    if baseline not in seeds.index.unique("variant"):
        raise ValueError(f"no results of the baseline {baseline!r}; variants are {list(seeds.index.unique('variant'))}")
    base = seeds.xs(baseline, level="variant")
    gains = {}
    for variant in seeds.index.unique("variant"):
        if variant == baseline:
            continue
        other = seeds.xs(variant, level="variant")
        if set(other.index) != set(base.index):
            raise ValueError(f"paired_summary: {variant!r} has seeds {sorted(other.index)} but the baseline "
                             f"{baseline!r} has {sorted(base.index)}; pairs need the same seeds")
        gains[variant] = (other - base).agg(["mean", "std", "min"]).unstack()
    return pd.DataFrame(gains).T.rename_axis("variant")


def comparison_records(results: pd.DataFrame, columns: Mapping[str, tuple[str, str]] = OVERVIEW,
                       baseline: str = "mt", digits: int = 4) -> dict[str, dict[str, float]]:
    """What a comparison notebook records per headline number (``runner.record`` names -> {variant: value}):
    ``<name>`` (mean over test sets, then seeds), ``<name>_sd`` (sd over seeds, NaN with one seed) and, for each
    variant but ``baseline``, ``<name>_gain`` / ``<name>_gain_min`` (mean and smallest paired difference over
    seeds, :func:`paired_summary`). Every claim with its spread (``docs/method.md#seeds-and-spread``)."""
    main = overview(results, columns, std=True)
    gains = paired_summary(results, baseline, columns) if baseline in set(results["variant"]) else None
    out = {}
    for name in columns:
        out[name] = {v: round(float(main.loc[v, name]), digits) for v in main.index}
        out[f"{name}_sd"] = {v: round(float(main.loc[v, f"{name}_std"]), digits) for v in main.index}
        if gains is not None:
            out[f"{name}_gain"] = {v: round(float(gains.loc[v, (name, "mean")]), digits) for v in gains.index}
            out[f"{name}_gain_min"] = {v: round(float(gains.loc[v, (name, "min")]), digits) for v in gains.index}
    return out


class ComparisonTables(NamedTuple):
    """What :func:`record_comparison` computed from one comparison's results: ``overview`` (with ``_std``
    columns), ``delta`` (:func:`delta_m_table`), ``transfer`` (:func:`negative_transfer`) and ``counts``
    (:func:`transfer_counts`)."""

    overview: pd.DataFrame
    delta: pd.DataFrame | None
    transfer: pd.DataFrame | None
    counts: pd.DataFrame | None


def record_comparison(results: Comparison | pd.DataFrame, columns: Mapping[str, tuple[str, str]] = OVERVIEW,
                      scores: Sequence[str] = ("accuracy", "mean_f1", "mean_ccc"), prefix: str = "",
                      baseline: str = "mt", digits: int = 4) -> ComparisonTables:
    """Record a comparison's numbers (a :class:`Comparison` or its ``results`` frame) with ``record``, each name
    prefixed by ``prefix``, and return its tables:
    :func:`comparison_records` of ``columns`` (mean, sd, paired gains over ``baseline``) and, when the results
    hold single-task models (``"st"``), over the ``scores`` of every test set ``delta_m`` / ``delta_m_sd`` (Δm
    over ST per MT variant, mean and sd over seeds), ``n_negative_transfer`` and ``n_negative_beyond_spread``
    (:func:`transfer_counts`; docs/method.md). Without ST the last three tables are None."""
    results = results.results if isinstance(results, Comparison) else results
    values = comparison_records(results, columns, baseline, digits)
    delta = transfer = counts = None
    if "st" in set(results["variant"]):
        delta = delta_m_table(results, metrics=scores)
        transfer = negative_transfer(results, metrics=scores)
        counts = transfer_counts(transfer)
        values |= {"delta_m": {v: round(float(delta.loc[v, "mean"]), digits) for v in delta.index},
                   "delta_m_sd": {v: round(float(delta.loc[v, "std"]), digits) for v in delta.index},
                   "n_negative_transfer": {v: int(counts.loc[v, "negative"]) for v in counts.index},
                   "n_negative_beyond_spread": {v: int(counts.loc[v, "beyond_spread"]) for v in counts.index}}
    for name, value in values.items():
        record(prefix + name, value)
    return ComparisonTables(overview(results, columns, std=True), delta, transfer, counts)


def class_attribute_columns(study: Study) -> dict[str, tuple[str, str]]:
    """The headline columns of a class + attribute study (``overview`` / :func:`record_comparison`):
    ``<class task>_accuracy`` and the attribute task's mean F1, mean accuracy and the F1 of its labelled and
    unlabelled groups (``attr_*``)."""
    cls, attr = (t.name for t in study.tasks)
    return {f"{cls}_accuracy": (cls, "accuracy"), "attr_mean_f1": (attr, "mean_f1"),
            "attr_mean_accuracy": (attr, "mean_accuracy"), "attr_f1_labelled": (attr, "mean_f1_labelled"),
            "attr_f1_unlabelled": (attr, "mean_f1_unlabelled")}


def label_scores(results: pd.DataFrame, variant: str, task: str = "au", prefix: str = "f1_") -> pd.Series:
    """Per-label scores of one variant (e.g. per-AU F1, ``docs/method.md#metrics``), mean over test sets and seeds,
    labels in the results' order with ``prefix`` stripped. ValueError naming the variant when it has no such
    rows."""
    sel = results[(results["variant"] == variant) & (results["task"] == task)
                  & results["metric"].str.startswith(prefix)]
    if sel.empty:
        raise ValueError(f"no {prefix}* metrics of task {task!r} for variant {variant!r}")
    means = sel.groupby("metric", sort=False)["value"].mean()
    means.index = [m[len(prefix):] for m in means.index]
    return means.rename(variant)
