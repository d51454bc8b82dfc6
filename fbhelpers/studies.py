"""The study of a notebook's profile in one call: the synthetic twin (``smoke``, ``demo``) or the real databases
under the data root (``paper``), with the same :class:`fbhelpers.study.Study` contract either way.

A notebook asks ``study_for(cfg, DATA_ROOT)`` and then only the study: its ``roles`` (which source is the class
source, the attribute source, the fully labelled test set), its ``label_groups`` (the labels no training source
labels), its ``relatedness`` (the coupling's table) and ``true_relatedness`` (a twin's truth, else None). Which
builder a notebook's case study uses is :data:`CASES`; the builders' common arguments come from the profile
(``image_size``, ``n_scale``, ``n_classes``, ``seed``), the rest from ``twin=`` / ``real=``. The same one-call
pattern gives the other data a notebook needs: the compound test set (``compound_test_for``), face files for a
saved model (``own_faces_for``), the co-annotated rows a relatedness is estimated from (``coannotated_for``) and
the class x attribute tables beyond expressions (``object_tables_for``); ``relatedness_check`` compares a study's
coupling table with what its own labels say. docs/design.md.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import datasets, synthetic
from .manifest import require_notebook
from .paths import DATASETS
from .relatedness import Comparison, Relatedness, compare, estimate, under_label_noise
from .source import Source
from .study import Study
from .tasks import AUS

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


class CoannotatedRows(NamedTuple):
    """The rows P1 estimates the expression x AU table from (P1 §4): training faces of case study i's all-task
    source that carry an expression and AU labels, ``aus`` the AUs it annotates. On a twin, ``truth`` is the
    generator's p(AU | expr) and ``observed`` that table seen through the source's label noise
    (``relatedness.under_label_noise``, what an estimate converges to); both None on real data. ``note``: what the
    rows are, in one line."""

    table: pd.DataFrame
    aus: list[str]
    name: str
    truth: Relatedness | None
    observed: Relatedness | None
    note: str

    def curve(self, estimated: Relatedness, sizes: Sequence[int]) -> tuple[Relatedness, Any, list[int]]:
        """``relatedness.estimation_curve``'s reference, draws and sizes: with a truth, the truth, fresh clean labels
        of the twin's generator (``synthetic.sample_labels``) and ``sizes``; without, ``estimated`` (the estimate
        from every row), subsamples of the rows and the ``sizes`` up to half of them."""
        if self.truth is not None:
            return self.truth, (lambda n, seed: synthetic.sample_labels(n, seed=seed)), list(sizes)
        half = len(self.table) // 2
        return estimated, self.table[["expr", *self.aus]], [n for n in sizes if n <= half] or [max(1, half)]


_NOT_AFFWILD2 = ("affectnet_like", "emotionet_like", "disfa_like", "bp4d_like")


def coannotated_for(cfg: Mapping[str, Any], data_root: str | Path | None = None) -> CoannotatedRows:
    """:class:`CoannotatedRows` of the profile: the twin's ``affwild2_like`` training rows (only that source is
    rendered) or Aff-Wild2's training frames under ``data_root`` (labels only: no image is read)."""
    if cfg["data"] == "real":
        root = require_notebook(cfg["notebook"], data_root)
        frames = datasets.load("affwild2", datasets.dataset_folder(root, "affwild2"))
        frames = frames[(frames["split"] == "train") & frames["expr"].notna()]
        aus = [a for a in AUS if frames[a].notna().any()]
        table = frames[frames[aus].notna().any(axis=1)]
        note = f"{len(table)} co-annotated Aff-Wild2 training frames from {table['video'].nunique()} videos"
        return CoannotatedRows(table, aus, "Aff-Wild2", None, None, note)
    study = _twin("affect", cfg, {"sources": {name: {"n_train": 0, "n_test": 0} for name in _NOT_AFFWILD2}})
    spec = study.info["specs"]["affwild2_like"]
    observed = under_label_noise(study.true_relatedness, class_noise=spec["expr_noise"], attr_noise=spec["au_noise"],
                                 name="generator through the annotations")
    table = study.sources["affwild2_like"].subset("train").table
    note = (f"{len(table)} co-annotated training faces; expression noise {spec['expr_noise']}, AU label noise "
            f"{spec['au_noise']}")
    return CoannotatedRows(table, [a for a in AUS if a in spec["aus"]], "Aff-Wild2-like", study.true_relatedness,
                           observed, note)


class ObjectTables(NamedTuple):
    """Class x attribute tables beyond expressions (P2 §3): ``tables`` by name; ``pool``, co-annotated identity
    rows to estimate ``identity`` (the identity table) from, with ``n_identities`` identities and about
    ``images_per_identity`` rows each (None when there are none); ``estimated``: ``identity`` is itself the
    estimate from every row of the pool (real CelebA), so a check of an estimate uses at most half of them."""

    tables: dict[str, Relatedness]
    pool: pd.DataFrame | None
    identity: Relatedness | None
    n_identities: int
    images_per_identity: int
    estimated: bool


def object_tables_for(cfg: Mapping[str, Any], data_root: str | Path | None = None, *, n_identities: int = 40,
                      images_per_identity: int = 20, n_species: int = 30) -> ObjectTables:
    """:class:`ObjectTables` of the profile: the identity twin (``images_per_identity`` co-annotated images of each
    of ``n_identities``) and the species twin (``n_species``), their true tables; or, labels only, CelebA's
    ``n_identities`` most frequent identities (R estimated from all their images) and CUB's shipped table, each
    when it is under ``data_root`` (they are optional)."""
    seed = cfg["seed"]
    if cfg["data"] != "real":
        ids = synthetic.identity_study(n_identities=n_identities, images_per_identity=0, attr_images_per_identity=0,
                                       coann_images_per_identity=images_per_identity, test_images_per_identity=1,
                                       size=32, seed=seed)
        birds = synthetic.species_study(n_species=n_species, images_per_species=0, attr_images_per_species=0,
                                        coann_images_per_species=1, test_images_per_species=1, size=32, seed=seed)
        tables = {"identity twin": ids.true_relatedness, "species twin": birds.true_relatedness}
        pool = ids.sources["coannotated"].subset("train").table
        return ObjectTables(tables, pool, ids.true_relatedness, n_identities, images_per_identity, False)
    root = require_notebook(cfg["notebook"], data_root)
    tables, pool, identity = {}, None, None
    if datasets.dataset_folder(root, "celeba").is_dir():
        pool = datasets.load("celeba", datasets.dataset_folder(root, "celeba"), top_identities=n_identities)
        identity = estimate(pool, "identity", datasets.celeba.ATTRIBUTES, class_labels=pool.attrs["identity_labels"],
                            name="CelebA, all images")
        n_identities, images_per_identity = len(identity.classes), len(pool) // len(identity.classes)
        tables["CelebA"] = identity
    if datasets.dataset_folder(root, "cub").is_dir():
        tables["CUB-200-2011"] = datasets.cub.relatedness(datasets.dataset_folder(root, "cub"))
    return ObjectTables(tables, pool, identity, n_identities, images_per_identity, True)
