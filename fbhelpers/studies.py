"""The study of a notebook's profile in one call: the synthetic twin (``smoke``, ``demo``) or the real databases
under the data root (``paper``), with the same :class:`fbhelpers.study.Study` contract either way.

A notebook asks ``study_for(cfg, DATA_ROOT)`` and then only the study: its ``roles`` (which source is the class
source, the attribute source, the fully labelled test set), its ``label_groups`` (the labels no training source
labels), its ``relatedness`` (the coupling's table) and ``true_relatedness`` (a twin's truth, else None). Which
builder a notebook's case study uses is :data:`CASES`; the builders' common arguments come from the profile
(``image_size``, ``n_scale``, ``n_classes``, ``seed``), the rest from ``twin=`` / ``real=``. docs/design.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import datasets, synthetic
from .manifest import require_notebook
from .profiles import DATASETS
from .relatedness import Comparison, Relatedness, compare, estimate
from .source import Source
from .study import Study

#: notebook stem -> its case study: "affect" (case study i: expressions, AUs, VA), "identity" (case study ii:
#: identities + attributes) or "species" (beyond faces: species + attributes).
CASES: dict[str, str] = {
    "00_quickstart": "affect", "01_relatedness_study": "affect", "02_affect_case_study": "affect",
    "03_identity_attributes": "identity", "04_beyond_faces": "species", "05_zero_few_shot": "affect",
}


def _twin(case: str, cfg: Mapping[str, Any], options: Mapping[str, Any]) -> Study:
    common = dict(size=cfg["image_size"], seed=cfg["seed"])
    if case == "affect":
        return synthetic.affect_study(**{"regime": "paper", "n_scale": cfg["n_scale"], **common, **options})
    if case == "identity":
        return synthetic.identity_study(**{"n_identities": cfg["n_classes"], **common, **options})
    return synthetic.species_study(**{"n_species": cfg["n_classes"], **common, **options})


def _real(case: str, root: Path, cfg: Mapping[str, Any], options: Mapping[str, Any]) -> Study:
    common = dict(size=cfg["image_size"], n_scale=cfg["n_scale"], seed=cfg["seed"])
    if case == "affect":
        need = DATASETS[cfg["notebook"]]
        names = [n for n in need["required"] + need["optional"] if n in datasets.FACE_SOURCES]
        return datasets.affect_study(root, **{"sources": tuple(names), **common, **options})
    if case == "identity":
        return datasets.identity_study(root, **{"n_identities": cfg["n_classes"], **common, **options})
    return datasets.species_study(root, **{"n_species": cfg["n_classes"], **common, **options})


def study_for(cfg: Mapping[str, Any], data_root: str | Path | None = None, *, case: str | None = None,
              twin: Mapping[str, Any] | None = None, real: Mapping[str, Any] | None = None) -> Study:
    """The study of the notebook ``cfg`` was set up for (``profiles.setup``'s dict): ``case`` (default
    ``CASES[cfg["notebook"]]``) built from the twin when ``cfg["data"]`` is "synthetic", else from the real
    databases under ``data_root`` (the ``DATA_ROOT`` parameter or ``$FB_DATA_ROOT``; every database the notebook
    requires is checked first, with ``check-data``'s hint).

    Both sides get ``size`` = ``image_size`` and ``seed``; the affect twin ``regime="paper"`` and ``n_scale``;
    the object twins ``n_identities`` / ``n_species`` = ``n_classes``; the real builders ``n_scale`` and
    ``n_classes`` likewise, and the affect study the face databases of the notebook's ``profiles.DATASETS``.
    ``twin`` / ``real``: further keyword arguments of that side's builder (e.g. ``twin={"preset": "scarce_au"}``,
    ``real={"hide": HIDE_AUS}``); they win over the defaults above.
    """
    case = case or CASES[cfg["notebook"]]
    if case not in ("affect", "identity", "species"):
        raise ValueError(f"unknown case study {case!r}; valid: 'affect', 'identity', 'species'")
    if cfg["data"] == "real":
        return _real(case, require_notebook(cfg["notebook"], data_root), cfg, real or {})
    return _twin(case, cfg, twin or {})


def compound_test_for(cfg: Mapping[str, Any], data_root: str | Path | None = None, *, n: int,
                      relatedness: Relatedness) -> Source:
    """The compound-expression test set of the zero-shot study (P1 §4.6): ``n`` twin faces of ``relatedness``'s
    compound classes (carrying their true AUs), or RAF-DB's compound test split on real data."""
    if cfg["data"] == "real":
        root = require_notebook(cfg["notebook"], data_root)
        return datasets.compound_source(root, "rafdb_compound", size=cfg["image_size"])
    return synthetic.compound_test_set(n, size=cfg["image_size"], relatedness=relatedness, seed=cfg["seed"])


class OwnFaces(NamedTuple):
    """Face images to run a saved model on: ``path`` (a folder or a labels CSV; None = none) and whether the
    files carry their labels (``labelled``: twin faces rendered with their labels)."""

    path: Path | None
    labelled: bool


def own_faces_for(cfg: Mapping[str, Any], faces: str | Path | None, folder: str | Path, n: int) -> OwnFaces:
    """``faces`` (a user's folder or labels CSV) when given; else, on a twin profile, ``n`` twin faces written with
    their labels under ``folder`` (seed ``cfg["seed"] + 1000``: not the study's faces); else none (a real-data model
    needs real faces)."""
    if faces:
        return OwnFaces(Path(faces), False)
    if cfg["data"] == "real":
        return OwnFaces(None, False)
    synthetic.write_faces(folder, n=n, size=cfg["image_size"], seed=cfg["seed"] + 1000)
    return OwnFaces(Path(folder) / "labels.csv", True)


class RelatednessCheck(NamedTuple):
    """:func:`relatedness_check`: the ``estimated`` table, the ``reference`` it is compared with, their
    ``comparison`` and the ``split`` the estimate was made on."""

    estimated: Relatedness
    reference: Relatedness
    comparison: Comparison
    split: str


def relatedness_check(study: Study, coupling: int = 0) -> RelatednessCheck:
    """What the study's own labels say about a coupling's table (docs/method.md): the estimate from the rows of
    one split that carry both tasks (``relatedness.estimate``, its default Beta(1, 1) prior), compared with the
    truth when the study knows it (a twin), else with the coupling's table. The estimate is made on the training
    split, unless the coupling's table is itself an estimate (it carries counts, e.g. CelebA's) and there is no
    truth: then on the test split, to see how far apart two halves of the data put each class's row."""
    link = study.couplings[coupling]
    tasks = {t.name: t for t in study.tasks}
    classes, attributes = tasks[link.class_task].labels, tasks[link.attr_task].labels
    reference = study.true_relatedness or study.relatedness
    split = "test" if study.true_relatedness is None and reference.counts is not None else "train"
    table = pd.concat([s.table for s in study.split(split).values()], ignore_index=True)
    estimated = estimate(table, link.class_task, list(attributes), class_labels=list(classes),
                         name=f"estimated on the {split} split")
    return RelatednessCheck(estimated, reference, compare(estimated, reference), split)
