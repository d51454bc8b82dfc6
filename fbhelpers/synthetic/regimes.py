"""Annotation regimes of SynthFaces: the multi-source face study of the papers, on the synthetic twin.

P0 (arXiv 1910.11111) and P1 (arXiv 2105.03790 §4) train one network on databases whose labels hardly overlap:
AffectNet (expressions + VA), EmotioNet, DISFA and BP4D (each its own AU subset) and Aff-Wild2 (all three, a
few AUs). :func:`face_study` builds that setting from :mod:`fbhelpers.synthetic.faces`: every source has a
``train`` split that keeps only the labels its namesake annotates and a fully labelled ``test`` split. The hard
cases of docs/method.md#where-coupling-matters are presets: ``scarce_au`` (some AUs labelled by no training source) and
``scarce_expr`` (few expression labels, two classes never labelled); ``full`` labels everything (a learnability check).
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..relatedness import Relatedness, prior
from ..source import Source, split_sizes
from ..tasks import AUS, EXPRESSIONS, FACE_TASKS, VA_LABELS
from .faces import (FaceConfig, au_probabilities, bayes_ceiling, check_table, render_faces, sample_labels,
                    sample_nuisance)
from ..study import Coupling, LabelGroups, Roles, Study, pick_source


def _aus(*numbers: int) -> tuple[str, ...]:
    return tuple(f"AU{k}" for k in numbers)


# AU subsets annotated by the real databases, restricted to the 17 AUs (docs/method.md#tasks,
# docs/datasets.md#per-database).
AU_SETS: dict[str, tuple[str, ...]] = {
    "emotionet": _aus(1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26),   # EmotioNet 2017 challenge
    "disfa": _aus(1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26),
    "bp4d": _aus(1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "abaw": _aus(1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26),   # Aff-Wild2, ABAW 2021 onwards
    "abaw2020": _aus(1, 2, 4, 6, 12, 15, 20, 25),              # Aff-Wild2, first ABAW (FG 2020)
}
# AffectNet manually annotated training images per class, EXPRESSIONS order (Mollahosseini et al., IEEE TAC 2017).
AFFECTNET_COUNTS: tuple[int, ...] = (74874, 24882, 3803, 6378, 134415, 25459, 14090)
REGIMES: tuple[str, ...] = ("paper", "pair")
PRESETS: tuple[str, ...] = ("default", "scarce_au", "scarce_expr", "full")
LABEL_TASKS: tuple[str, ...] = ("expr", "au", "va")
# Source names by role, first present wins (``Study.roles``): the paper regime's *_like databases, then the pair's.
ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "class_source": ("affectnet_like", "affwild2_like", "expr_source"),
    "attr_source": ("emotionet_like", "disfa_like", "bp4d_like", "affwild2_like", "au_source"),
    "full_source": ("affwild2_like",),
}
_RARE: tuple[str, ...] = ("fear", "disgust")  # classes left unlabelled by scarce_expr [choice]
_NO_RARE = tuple(c for c in EXPRESSIONS if c not in _RARE)


@dataclass(frozen=True)
class SourceSpec:
    """One source of a study: sizes and the labels its training split keeps (the test split keeps all).

    ``n_val``: rows of the ``val`` split, drawn like the training split (same prior, noise and kept labels: what a
    held-out part of that database would carry) for model selection; None = ``n_train // 10`` **[choice]**.

    ``tasks`` ⊆ ("expr", "au", "va"); ``aus``: annotated AU subset (None = all 17); ``expr_classes``: classes
    whose expression labels are kept (None = all; others become missing); ``imbalance`` in [0, 1]: training
    class prior ∝ uniform^(1-γ) · AffectNet^γ **[choice]**; ``expr_noise``: P(annotated expression wrong);
    ``au_noise``: P(an annotated AU label flipped) **[choice]**.
    """

    name: str
    n_train: int
    n_test: int = 300
    n_val: int | None = None
    tasks: tuple[str, ...] = LABEL_TASKS
    aus: tuple[str, ...] | None = None
    expr_classes: tuple[str, ...] | None = None
    imbalance: float = 0.0
    expr_noise: float = 0.1
    au_noise: float = 0.02

    def __post_init__(self) -> None:
        for attr in ("n_train", "n_test", "n_val"):
            value = getattr(self, attr)
            if attr == "n_val" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"source {self.name!r}: {attr} must be a non-negative integer, got {value!r}")
        bad = [t for t in self.tasks if t not in LABEL_TASKS]
        if bad:
            raise ValueError(f"source {self.name!r}: unknown tasks {bad}; valid: {list(LABEL_TASKS)}")
        if self.aus is not None:
            bad = [a for a in self.aus if a not in AUS]
            if bad:
                raise ValueError(f"source {self.name!r}: unknown AU names {bad}; valid AUs: {list(AUS)}")
        if self.expr_classes is not None:
            bad = [c for c in self.expr_classes if c not in EXPRESSIONS]
            if bad:
                raise ValueError(f"source {self.name!r}: unknown expressions {bad}; valid: {list(EXPRESSIONS)}")
        for attr in ("imbalance", "expr_noise", "au_noise"):
            if not 0.0 <= getattr(self, attr) <= 1.0:
                raise ValueError(f"source {self.name!r}: {attr} must be in [0, 1], got {getattr(self, attr)!r}")

    @property
    def labelled_aus(self) -> tuple[str, ...]:
        """AUs this source labels in training."""
        if "au" not in self.tasks or self.n_train == 0:
            return ()
        return AUS if self.aus is None else tuple(a for a in AUS if a in self.aus)

    @property
    def labelled_classes(self) -> tuple[str, ...]:
        """Expressions this source labels in training."""
        if "expr" not in self.tasks or self.n_train == 0:
            return ()
        return EXPRESSIONS if self.expr_classes is None else tuple(c for c in EXPRESSIONS if c in self.expr_classes)


def _paper(preset: str) -> list[SourceSpec]:
    ev, au, all3 = ("expr", "va"), ("au",), LABEL_TASKS
    if preset == "scarce_au":  # BP4D-like left out: AU7, 10, 14, 23, 24 get no training label
        return [SourceSpec("affectnet_like", 6000, tasks=ev),
                SourceSpec("emotionet_like", 300, tasks=au, aus=AU_SETS["emotionet"]),
                SourceSpec("disfa_like", 150, tasks=au, aus=AU_SETS["disfa"]),
                SourceSpec("affwild2_like", 300, tasks=all3, aus=AU_SETS["abaw2020"])]
    if preset == "scarce_expr":
        return [SourceSpec("affectnet_like", 300, tasks=ev, expr_classes=_NO_RARE),
                SourceSpec("emotionet_like", 4000, tasks=au, aus=AU_SETS["emotionet"]),
                SourceSpec("disfa_like", 1500, tasks=au, aus=AU_SETS["disfa"]),
                SourceSpec("bp4d_like", 1500, tasks=au, aus=AU_SETS["bp4d"]),
                SourceSpec("affwild2_like", 300, tasks=all3, aus=AU_SETS["abaw"], expr_classes=_NO_RARE)]
    specs = [SourceSpec("affectnet_like", 4000, tasks=ev),
             SourceSpec("emotionet_like", 3000, tasks=au, aus=AU_SETS["emotionet"]),
             SourceSpec("disfa_like", 800, tasks=au, aus=AU_SETS["disfa"]),
             SourceSpec("bp4d_like", 800, tasks=au, aus=AU_SETS["bp4d"]),
             SourceSpec("affwild2_like", 600, tasks=all3, aus=AU_SETS["abaw"])]
    if preset == "full":
        specs = [replace(s, tasks=all3, aus=None) for s in specs]
    return specs


def _pair(preset: str) -> list[SourceSpec]:
    if preset == "scarce_au":  # docs/method.md#where-coupling-matters: AUs no source labels
        return [SourceSpec("expr_source", 4000, 500, tasks=("expr", "va")),
                SourceSpec("au_source", 150, 500, tasks=("au",), aus=AU_SETS["abaw2020"])]
    if preset == "scarce_expr":
        return [SourceSpec("expr_source", 300, 500, tasks=("expr", "va"), expr_classes=_NO_RARE),
                SourceSpec("au_source", 4000, 500, tasks=("au",))]
    tasks = LABEL_TASKS if preset == "full" else None
    return [SourceSpec("expr_source", 4000, 500, tasks=tasks or ("expr", "va")),
            SourceSpec("au_source", 1500, 500, tasks=tasks or ("au",))]


def source_specs(regime: str = "paper", preset: str = "default") -> list[SourceSpec]:
    """The sources of a regime / preset before scaling (P1 §4 databases; docs/method.md#where-coupling-matters).

    ``"paper"``: affectnet_like (expr + VA), emotionet_like / disfa_like / bp4d_like (AU subsets of the real
    databases), affwild2_like (all three, ABAW AU set). ``"pair"``: expr_source (expr + VA) and au_source (AUs),
    the two-source pair of docs/method.md#where-coupling-matters. Presets: ``default``, ``scarce_au``, ``scarce_expr``,
    ``full``.
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    return _paper(preset) if regime == "paper" else _pair(preset)


def _class_prior(imbalance: float) -> np.ndarray:
    counts = np.asarray(AFFECTNET_COUNTS, dtype=np.float64)
    p = (counts / counts.sum()) ** imbalance
    return p / p.sum()


def _build(spec: SourceSpec, size: int, channels: int, seed: int, relatedness: Relatedness,
           config: FaceConfig) -> tuple[Source, pd.DataFrame]:
    """Render one source; returns it and its truth table (true labels and AU intensities of every row)."""
    seq = np.random.SeedSequence([seed, zlib.crc32(spec.name.encode())])
    tables, truths, images = [], [], []
    n_val = spec.n_train // 10 if spec.n_val is None else spec.n_val
    for (split, n), ss in zip((("train", spec.n_train), ("test", spec.n_test), ("val", n_val)), seq.spawn(3)):
        labels_rng, nuisance_rng, noise_rng = (np.random.default_rng(s) for s in ss.spawn(3))
        train = split != "test"  # val is drawn like train
        cfg = replace(config, class_prior=tuple(_class_prior(spec.imbalance if train else 0.0)),
                      expr_noise=spec.expr_noise if train else 0.0)
        truth = sample_labels(n, relatedness, cfg, labels_rng)
        nuisance = sample_nuisance(n, cfg, nuisance_rng)
        truth.insert(0, "split", split)
        truth.insert(1, "source", spec.name)
        truth["occluded"] = nuisance["occ"].to_numpy() > 0
        table = truth[["split", "source"]].copy()
        keep_expr = (not train) or "expr" in spec.tasks
        kept = spec.labelled_classes if train else EXPRESSIONS
        observed = truth["expr_obs"]
        table["expr"] = observed.where(keep_expr & observed.isin([EXPRESSIONS.index(c) for c in kept]),
                                       pd.NA).astype("Int64")
        au_kept = AUS if not train else spec.labelled_aus
        for au in AUS:
            if au in au_kept:
                y = truth[au].to_numpy()
                flip = noise_rng.random(n) < (spec.au_noise if train else 0.0)
                table[au] = np.where(flip, 1.0 - y, y)
            else:
                table[au] = np.nan
        for va in VA_LABELS:
            table[va] = truth[va] if ((not train) or "va" in spec.tasks) else np.nan
        tables.append(table)
        truths.append(truth.drop(columns=["expr_obs"]))
        images.append(render_faces(truth, nuisance, size, channels))
    table = pd.concat(tables, ignore_index=True)
    return Source(spec.name, table, np.concatenate(images)), pd.concat(truths, ignore_index=True)


def face_study(regime: str = "paper", preset: str = "default", size: int = 64, n_scale: float = 1.0, seed: int = 0,
               relatedness: Relatedness | None = None, channels: int = 3, config: FaceConfig | None = None,
               sources: Mapping[str, Mapping[str, Any]] | None = None, expr_noise: float | None = None,
               au_noise: float | None = None, imbalance: float | None = None) -> Study:
    """The SynthFaces multi-source study (P0 §4, P1 §4 on the twin of docs/method.md#synthetic-twins) -> :class:`Study`.

    ``regime`` / ``preset``: see :func:`source_specs`. ``n_scale`` multiplies every source's sizes (a positive
    size stays >= 1). ``relatedness``: expression x AU table of the generative story and of the coupling
    (default ``prior("du2014_basic")``; AUs absent from it are never prototypical). ``config``: the generative
    knobs (:class:`FaceConfig`). ``sources``: per-source overrides of :class:`SourceSpec` fields, e.g.
    ``{"disfa_like": {"n_train": 100, "aus": ("AU1", "AU2")}}``. ``expr_noise``, ``au_noise``, ``imbalance``:
    override that field in every source. Same arguments and seed -> identical images and tables. Each source's
    ``test`` split is drawn with a uniform class prior and carries every label without noise **[choice]**; its
    ``val`` split (``SourceSpec.n_val``, default a tenth of ``n_train``) is drawn like its training split, so
    validation scores exist only for the labels that source carries, as with a real database.

    ``Study.truth[name]``: every row's true expression, AUs, intensities (``i_AU*``), VA and ``occluded``.
    ``Study.label_groups["au"]``: the AUs some training split labels and the others; ``Study.roles``: the
    affectnet_like / emotionet_like / affwild2_like sources (``expr_source`` / ``au_source`` in the pair regime,
    which has no fully labelled source); ``Study.true_relatedness``: the data-generating table p(AU | expr)
    (:func:`au_probabilities`), while ``Study.relatedness`` is ``relatedness``, the coupling's table.
    ``Study.info``: ``labelled_aus`` / ``unlabelled_aus`` and ``labelled_classes`` / ``unlabelled_classes``
    (by any training split), ``bayes_ceiling`` (test expression accuracy given the true AUs, uniform prior),
    ``p_au_given_expr`` (the data-generating table), ``sizes``, ``specs``, ``config`` and the arguments.
    """
    specs = source_specs(regime, preset)
    if not (isinstance(n_scale, (int, float)) and n_scale > 0):
        raise ValueError(f"n_scale must be a positive number, got {n_scale!r}")
    cfg = config or FaceConfig()
    rel = prior("du2014_basic") if relatedness is None else relatedness
    check_table(rel)
    rel = rel.align(EXPRESSIONS, AUS, fill=0.0)
    names = [s.name for s in specs]
    unknown = [name for name in (sources or {}) if name not in names]
    if unknown:
        raise ValueError(f"sources overrides name unknown sources {unknown}; {regime}/{preset} has {names}")
    valid_fields = [f.name for f in fields(SourceSpec) if f.name != "name"]
    shared = {k: v for k, v in (("expr_noise", expr_noise), ("au_noise", au_noise), ("imbalance", imbalance))
              if v is not None}
    built: list[SourceSpec] = []
    for spec in specs:
        changes = {**shared, **dict((sources or {}).get(spec.name, {}))}
        bad = [k for k in changes if k not in valid_fields]
        if bad:
            raise ValueError(f"source {spec.name!r}: unknown fields {bad}; valid: {valid_fields}")
        spec = replace(spec, **changes)
        scaled = {k: (max(1, int(round(getattr(spec, k) * n_scale))) if getattr(spec, k) else getattr(spec, k))
                  for k in ("n_train", "n_test", "n_val")}
        built.append(replace(spec, **scaled))
    study_sources, truth = {}, {}
    for spec in built:
        study_sources[spec.name], truth[spec.name] = _build(spec, size, channels, seed, rel, cfg)
    labelled_aus = [a for a in AUS if any(a in s.labelled_aus for s in built)]
    labelled_classes = [c for c in EXPRESSIONS if any(c in s.labelled_classes for s in built)]
    info = {
        "regime": regime, "preset": preset, "size": size, "channels": channels, "seed": seed, "n_scale": n_scale,
        "relatedness": rel.name,
        "labelled_aus": labelled_aus, "unlabelled_aus": [a for a in AUS if a not in labelled_aus],
        "labelled_classes": labelled_classes,
        "unlabelled_classes": [c for c in EXPRESSIONS if c not in labelled_classes],
        "bayes_ceiling": bayes_ceiling(rel, cfg.au_miss, cfg.au_spont),
        "p_au_given_expr": au_probabilities(rel, cfg.au_miss, cfg.au_spont),
        "sizes": split_sizes(study_sources),
        "specs": {s.name: asdict(s) for s in built},
        "config": asdict(cfg),
    }
    generator = Relatedness(info["p_au_given_expr"], name="generator p(AU | expr)",
                            citation="fbhelpers.synthetic.faces.au_probabilities (the twin's data-generating table)")
    roles = Roles(**{role: pick_source(names, candidates) for role, candidates in ROLE_CANDIDATES.items()})
    return Study(sources=study_sources, tasks=FACE_TASKS, couplings=[Coupling("expr", "au", rel)],
                 relatedness=rel, truth=truth, info=info, label_groups={"au": LabelGroups.split(AUS, labelled_aus)},
                 roles=roles, true_relatedness=generator)


affect_study = face_study  # case study i's builder under the name it has on real data (``fbhelpers.datasets``)

