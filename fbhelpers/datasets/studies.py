"""The papers' case studies built from a data root of real databases (the ``paper`` profile of every notebook).

A data root holds each database in its ``data_manifest.yaml`` folder (``AffectNet/``, ``RAF-DB/compound/`` ...).
Each builder loads the tables (``fbhelpers.datasets.load``), reads the images through the packed cache
(``image_source``: decoded, cropped and resized once, memory-mapped) and returns a :class:`fbhelpers.study.Study`
like the synthetic twins do, so ``train`` and ``experiments`` run unchanged:

- :func:`affect_study`: case study i (P0 §4, P1 §4): AffectNet (expressions + VA), EmotioNet, DISFA and BP4D
  (their AU subsets), Aff-Wild2 (all three); each source keeps only the labels it has, each has its own test set.
- :func:`identity_study`: case study ii (P1 §5): CelebA identities + 40 attributes, R estimated on the training split.
- :func:`species_study`: "beyond faces" (P2 §5): CUB-200-2011 species + attributes with the table CUB ships.
- :func:`class_attribute_study`: any class + attribute CSV (CAD, S-ADD, ``generic``), R estimated on the training
  split (P2 §5).
- :func:`compound_source`: a compound-expression test set (RAF-DB compound) for the zero-shot study (P1 §4.6).

A dataset a study lists but does not find is skipped with a logged message when it is optional, and stops the build
with ``check-data``'s hint when it is required (``required=None``: every listed source is required).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..relatedness import Relatedness, estimate, prior
from ..source import SPLITS, Source, split_sizes
from ..study import Coupling, Roles, Study, label_groups_of, pick_source
from ..tasks import AUS, EXPRESSIONS, FACE_TASKS, attribute_task, classification_task
from . import celeba, cub, loader
from .cache import image_source
from .common import BOX_COLUMNS, LABEL_COLUMNS, LOG, has_boxes, key_hash

FACE_SOURCES: tuple[str, ...] = ("affectnet", "emotionet", "disfa", "bp4d", "affwild2")
# Source names of case study i by role, first present wins (``Study.roles``).
FACE_ROLES: dict[str, tuple[str, ...]] = {
    "class_source": ("affectnet", "affwild2"),
    "attr_source": ("emotionet", "disfa", "bp4d", "affwild2"),
    "full_source": ("affwild2",),
}
HINT = "run `python -m fbhelpers check-data --data-root PATH` to see what is found"


def dataset_folder(data_root: str | Path, name: str) -> Path:
    """The folder of dataset ``name`` under ``data_root`` (its ``data_manifest.yaml`` ``root``)."""
    return Path(data_root).expanduser() / loader(name).folder


def load_tables(data_root: str | Path, names: Sequence[str], required: Sequence[str] | None = None,
                options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """The canonical tables of ``names`` found under ``data_root`` (``options[name]``: loader keyword arguments).

    A dataset whose folder is absent is skipped with a logged warning unless it is ``required`` (None = all), in
    which case FileNotFoundError names it, the folder looked for and the ``check-data`` command. A folder that is
    there but malformed always raises the loader's error."""
    required = set(names if required is None else required)
    tables = {}
    for name in names:
        folder = dataset_folder(data_root, name)
        if not folder.is_dir():
            if name in required:
                raise FileNotFoundError(f"dataset {name!r} is required but {folder} does not exist; {HINT}")
            LOG.warning("dataset %s not found at %s: skipped (optional)", name, folder)
            continue
        tables[name] = loader(name).load(folder, **dict((options or {}).get(name, {})))
    if not tables:
        raise FileNotFoundError(f"none of the datasets {list(names)} is under {data_root}; {HINT}")
    return tables


def scale_table(table: pd.DataFrame, n_scale: float, seed: int = 0) -> pd.DataFrame:
    """``table`` with a seeded ``n_scale`` fraction of each split's rows (at least one row per non-empty split);
    ``n_scale >= 1`` keeps everything."""
    if not n_scale > 0:
        raise ValueError(f"n_scale must be > 0, got {n_scale!r}")
    if n_scale >= 1:
        return table
    rng = np.random.default_rng(seed)
    keep = []
    for split in SPLITS:
        rows = np.flatnonzero((table["split"] == split).to_numpy())
        if len(rows):
            keep.append(rng.choice(rows, size=max(1, round(len(rows) * n_scale)), replace=False))
    return table.iloc[np.sort(np.concatenate(keep))]


def cached_source(name: str, table: pd.DataFrame, full: pd.DataFrame, folder: Path, size: int,
                  cache: str | Path | None, n_scale: float, seed: int, workers: int | None,
                  progress: bool | None) -> Source:
    """The ``Source`` of ``table`` (rows of the loader's ``full`` table) over the packed cache, face box crop where
    the table has one. With ``n_scale >= 1`` the cache holds every image of ``full``, the same cache
    ``python -m fbhelpers cache build`` makes, whatever subset ``table`` is; with ``n_scale < 1`` only the seeded
    fraction of rows is kept and cached (a small cache of its own: a quick look does not decode a whole database)."""
    crop = "box" if has_boxes(table) else None
    table = scale_table(table, n_scale, seed)
    within = full if n_scale >= 1 else None
    return image_source(table, folder, size, cache, name=name, crop=crop, within=within, workers=workers,
                        progress=progress)


def check_splits(sources: Mapping[str, Source], needed: Sequence[str] = ("train", "test")) -> None:
    """ValueError naming every source without rows in one of the ``needed`` splits (a study trains on ``train``
    and scores every source on ``test``)."""
    empty = {n: [s for s in needed if not (src.table["split"] == s).any()] for n, src in sources.items()}
    empty = {n: splits for n, splits in empty.items() if splits}
    if empty:
        raise ValueError(f"sources without rows in a split they need: {empty} (check the annotation files of each, "
                         f"e.g. a validation list, with `python -m fbhelpers check-data`)")


def as_test_split(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``val`` rows as ``test`` when it has no ``test`` rows (a release whose test labels are
    not public: its validation set is the test set) [choice]."""
    if (table["split"] == "test").any():
        return table
    out = table.copy()
    out["split"] = out["split"].replace({"val": "test"})
    return out


VAL_GROUPS: dict[str, str] = {"affwild2": "video", "disfa": "subject", "bp4d": "subject"}  # kept on one side


def validation_split(table: pd.DataFrame, fraction: float = 0.1, seed: int = 0, groups: pd.Series | None = None,
                     keep_class: str | None = None) -> pd.DataFrame:
    """``table`` with a seeded ``fraction`` of its training rows moved to ``val`` (for model selection), chosen by a
    hash of the path, or of ``groups`` (a key per row, e.g. the subject or video: a group's rows stay on one side)
    [choice]. ``keep_class``: a class column whose every class keeps at least one training row (a class seen only in
    validation would never be trained on). A table that already has ``val`` rows (e.g. CelebA's official
    partition) or ``fraction=0`` is kept."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0 or (table["split"] == "val").any():
        return table
    keys = table["path"] if groups is None else groups.loc[table.index].astype(str)
    train = (table["split"] == "train").to_numpy()
    move = train & (key_hash(keys, seed + 1) < fraction)
    if keep_class is not None:
        classes = table[keep_class].to_numpy()
        left = pd.Series(train & ~move).groupby(classes).transform("sum").to_numpy()
        orphans = pd.Series(move & (left == 0))
        move &= ~(orphans & (orphans.groupby(classes).cumsum() == 1)).to_numpy()
    out = table.copy()
    out.loc[move, "split"] = "val"
    return out


def _skipped(sources: Mapping[str, Source]) -> dict[str, dict[str, int]]:
    return {n: dict(src.table.attrs.get("skipped", {})) for n, src in sources.items()}


def hide_training_labels(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with ``columns`` set missing on its training and validation rows (test rows keep them): the papers'
    setting of labels no training source carries, reproduced on a fully labelled database [choice]."""
    out = table.copy()
    unknown = [c for c in columns if c not in out.columns]
    if unknown:
        raise KeyError(f"hide: no columns {unknown} in the table")
    out.loc[out["split"] != "test", list(columns)] = np.nan
    return out


def affect_study(data_root: str | Path, sources: Sequence[str] = FACE_SOURCES, *,
                 required: Sequence[str] | None = None, size: int = 112, cache: str | Path | None = None,
                 n_scale: float = 1.0, seed: int = 0, hide: Sequence[str] = (), val_fraction: float = 0.1,
                 relatedness: Relatedness | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                 workers: int | None = None, progress: bool | None = None) -> Study:
    """Case study i on the real databases (P0 §4, P1 §4): EXPR + AU + VA from ``sources``.

    Each source keeps only the labels it has (the canonical face columns; every other AU column NaN), with its
    own test split: AffectNet's validation list, the held-out subject fold of DISFA and BP4D, EmotioNet's seeded
    test split, and Aff-Wild2's validation videos (the challenge's test labels are not public, so its ``val``
    split is the test set here [choice]; a video whose task files sit in both challenge splits goes wholly to
    ``val``, loader option ``overlap="val"``, so no frame is both a training and a test image).

    ``relatedness``: the expression x AU table of the couplings (default DU's, ``prior("du2014_basic")``, as in
    P1). ``hide``: AUs (or other label columns) whose training labels are removed in every source, to measure what
    coupling teaches where no database labels an AU (docs/method.md#where-coupling-matters) [choice]. ``options``:
    loader keyword arguments per dataset. ``size``: image side in pixels; ``cache``: the image cache folder (default
    ``$FBHELPERS_CACHE`` or ``~/.cache/fbhelpers``); ``n_scale``: fraction of each split kept (the cache always holds
    every image, so a later full run reuses it). ``val_fraction``: training rows moved to a ``val`` split for model
    selection (:func:`validation_split`; whole videos of Aff-Wild2, whole subjects of DISFA and BP4D) [choice 0.1].
    ``label_groups["au"]``: the AUs some training split labels and the others; ``roles``: AffectNet (class),
    EmotioNet (attributes) and Aff-Wild2 (every task), each the next present one of :data:`FACE_ROLES` when
    absent; ``true_relatedness`` None (real data). ``info``: ``labelled_aus`` / ``unlabelled_aus`` (the same
    groups), ``sizes``, ``skipped`` (rows each loader or the cache left out, by reason) and ``missing`` (optional
    datasets not found).
    """
    options = {**(options or {}), "affwild2": {"overlap": "val", **dict((options or {}).get("affwild2", {}))}}
    tables = load_tables(data_root, sources, required, options)
    srcs = {}
    for name, table in tables.items():
        groups = table[VAL_GROUPS[name]] if name in VAL_GROUPS else None
        split = validation_split(_face_table(name, table, options), val_fraction, seed, groups)
        srcs[name] = cached_source(name, hide_training_labels(split, hide), table, dataset_folder(data_root, name),
                                   size, cache, n_scale, seed, workers, progress)
    check_splits(srcs)
    rel = (relatedness or prior("du2014_basic")).align(FACE_TASKS[0].labels, AUS, fill=0.0)
    groups = label_groups_of(srcs, FACE_TASKS)
    info = {"data_root": str(data_root), "size": size, "n_scale": n_scale, "relatedness": rel.name,
            "labelled_aus": list(groups["au"].labelled), "unlabelled_aus": list(groups["au"].unlabelled),
            "sizes": split_sizes(srcs), "skipped": _skipped(srcs), "missing": [n for n in sources if n not in tables]}
    roles = Roles(**{role: pick_source(list(srcs), names) for role, names in FACE_ROLES.items()})
    return Study(srcs, FACE_TASKS, [Coupling("expr", "au", rel)], rel, info=info, label_groups=groups, roles=roles)



def _face_table(name: str, table: pd.DataFrame, options: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The canonical face columns (+ face box) of a loader's table; a ``val`` split becomes ``test``. ValueError
    when an ``expr`` code is outside the 7 canonical classes (a loader option such as AffectNet's ``classes=8``
    needs an 8-class task, which this study does not build)."""
    keep = ["path", "split", "source", *LABEL_COLUMNS, *(BOX_COLUMNS if has_boxes(table) else ())]
    out = table[[c for c in keep if c in table.columns]].copy()
    out["split"] = out["split"].replace({"val": "test"})
    if (out["expr"].dropna() >= len(EXPRESSIONS)).any():
        raise ValueError(f"{name}: expression codes beyond the {len(EXPRESSIONS)} canonical classes (loader options "
                         f"{dict(options.get(name, {}))}); the affect study uses the 7-class EXPR task")
    out.attrs = dict(table.attrs)
    return out


def _class_attribute(name: str, table: pd.DataFrame, full: pd.DataFrame, folder: Path, class_col: str,
                     class_labels: Sequence[str], attributes: Sequence[str], relatedness: Relatedness | None,
                     hide: Sequence[str], *, size: int, cache: str | Path | None, n_scale: float, seed: int,
                     val_fraction: float, workers: int | None, progress: bool | None) -> Study:
    """A class + attribute study of one database: tasks ``class_col`` (multiclass) and ``attr`` (multilabel),
    coupled by ``relatedness`` (None: estimated on the training split with every label, P1 §5 / P2 §5, before
    ``hide``'s attributes lose their training labels: R is known, the batches do not carry them [choice]);
    ``val_fraction`` of the training rows become the ``val`` split (:func:`validation_split`; every class keeps a
    training row)."""
    keep = ["path", "split", "source", class_col, *attributes]
    table = validation_split(as_test_split(table[keep]), val_fraction, seed, keep_class=class_col)
    src = cached_source(name, table, full, folder, size, cache, n_scale, seed, workers, progress)
    check_splits({name: src})
    class_task, attr_task = classification_task(class_col, class_labels), attribute_task("attr", attributes)
    train = src.table[src.table["split"] == "train"]
    rel = relatedness or estimate(train, class_col, list(attributes), class_labels=list(class_labels),
                                  name=f"{name}: estimated on the training split")
    rel = rel.align(class_task.labels, attr_task.labels)
    src = Source(name, hide_training_labels(src.table, hide), src.images)
    groups = label_groups_of({name: src}, (class_task, attr_task))
    info = {"size": size, "n_scale": n_scale, "relatedness": rel.name,
            "attributes_labelled": list(groups["attr"].labelled),
            "attributes_unlabelled": list(groups["attr"].unlabelled),
            "sizes": split_sizes({name: src}), "skipped": _skipped({name: src})}
    return Study({name: src}, (class_task, attr_task), [Coupling(class_col, "attr", rel)], rel, info=info,
                 label_groups=groups, roles=Roles(name, name, name))


def within_class_split(table: pd.DataFrame, class_col: str, test_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """``table`` re-split so that every class has images on both sides: per class, ``round(test_fraction * n)``
    images (at least one and at most n - 1 when the class has two or more, none when it has one) go to "test", the
    rest to "train",
    chosen by a seeded hash of the path (stable under row order) [choice]. CelebA's official partition keeps the
    identities of train, val and test disjoint (a face-verification protocol), so identity *classification*
    (P1 §5) needs its own split."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = table.assign(_hash=key_hash(table["path"], seed))
    rank = order.groupby(class_col)["_hash"].rank(method="first")
    size = order.groupby(class_col)[class_col].transform("size")
    n_test = np.where(size >= 2, np.clip(np.round(size * test_fraction), 1, size - 1), 0)
    out = table.copy()
    out["split"] = np.where(rank.to_numpy() <= n_test, "test", "train")
    return out


def identity_study(data_root: str | Path, *, n_identities: int = 0, hide: Sequence[str] = (),
                   split: str = "within_identity", test_fraction: float = 0.2, val_fraction: float = 0.1,
                   size: int = 112, cache: str | Path | None = None, n_scale: float = 1.0, seed: int = 0,
                   workers: int | None = None, progress: bool | None = None) -> Study:
    """Case study ii on CelebA (P1 §5): tasks ``identity`` and ``attr`` (the 40 attributes), R estimated on the
    training split. ``n_identities``: keep the N most frequent identities (0 = all 10,177). ``split``:
    ``"within_identity"`` (default; :func:`within_class_split` with ``test_fraction``: every identity has training
    and test images) or ``"official"`` (CelebA's partition, whose identities do not overlap: only for the attributes).
    ``hide``: attributes whose training labels are removed, to measure what coupling teaches where no label is
    (docs/method.md#where-coupling-matters). ``val_fraction``: training rows moved to ``val`` (:func:`validation_split`;
    the official split keeps CelebA's own validation partition)."""
    if split not in ("within_identity", "official"):
        raise ValueError(f"split must be 'within_identity' or 'official', got {split!r}")
    folder = dataset_folder(data_root, "celeba")
    full = load_tables(data_root, ["celeba"])["celeba"]
    table = celeba.top_identities(full, n_identities) if n_identities else full
    if split == "within_identity":
        table = within_class_split(table, "identity", test_fraction, seed)
    return _class_attribute("celeba", table, full, folder, "identity", table.attrs["identity_labels"],
                            celeba.ATTRIBUTES, None, hide, size=size, cache=cache, n_scale=n_scale, seed=seed,
                            val_fraction=val_fraction, workers=workers, progress=progress)


def species_study(data_root: str | Path, *, n_species: int = 0, hide: Sequence[str] = (), val_fraction: float = 0.1,
                  size: int = 112, cache: str | Path | None = None, n_scale: float = 1.0, seed: int = 0,
                  workers: int | None = None, progress: bool | None = None) -> Study:
    """"Beyond faces" on CUB-200-2011 (P2 §5): tasks ``species`` and ``attr`` (312 attributes) coupled by the class x
    attribute table CUB ships (``class_attribute_labels_continuous.txt`` / 100, docs/method.md#class-attribute-tables).
    ``n_species``: the first N species (0 = all 200). ``hide``: attributes unlabelled in training; an entry ending in
    ``::`` hides a whole group (CUB names its attributes ``group::value``, e.g. ``has_bill_shape::``)."""
    folder = dataset_folder(data_root, "cub")
    full = load_tables(data_root, ["cub"])["cub"]
    labels, rel = list(full.attrs["species_labels"]), cub.relatedness(folder)
    table = full[full["species"] < n_species] if n_species else full
    labels = labels[:n_species] if n_species else labels
    attributes = list(rel.attributes)
    hidden = [a for a in attributes if a in hide or any(h.endswith("::") and a.startswith(h) for h in hide)]
    unmatched = [h for h in hide if not any(a == h or (h.endswith("::") and a.startswith(h)) for a in attributes)]
    if unmatched:
        raise KeyError(f"hide: {unmatched} name no CUB attribute (nor a group ending in '::')")
    return _class_attribute("cub", table, full, folder, "species", labels, attributes, rel, hidden, size=size,
                            cache=cache, n_scale=n_scale, seed=seed, val_fraction=val_fraction, workers=workers,
                            progress=progress)


def class_attribute_study(name: str, data_root: str | Path, *, hide: Sequence[str] = (), val_fraction: float = 0.1,
                          size: int = 112, cache: str | Path | None = None, n_scale: float = 1.0, seed: int = 0,
                          options: Mapping[str, Any] | None = None, workers: int | None = None,
                          progress: bool | None = None) -> Study:
    """A class + attribute CSV database (``cad``, ``sadd`` or ``generic``; see :mod:`.generic`) as a study (P2 §5):
    the class column and every attribute column, R estimated on the training split."""
    table = load_tables(data_root, [name], options={name: dict(options or {})})[name]
    class_col = (options or {}).get("class_name", "category")
    attributes = list(table.attrs["attributes"])
    return _class_attribute(name, table, table, dataset_folder(data_root, name), class_col,
                            table.attrs["class_labels"], attributes, None, hide, size=size, cache=cache,
                            n_scale=n_scale, seed=seed, val_fraction=val_fraction, workers=workers, progress=progress)


def compound_source(data_root: str | Path, name: str = "rafdb_compound", *, split: str | None = "test",
                    size: int = 112, cache: str | Path | None = None, workers: int | None = None,
                    progress: bool | None = None) -> Source:
    """A compound-expression test set (P1 §4.6, docs/method.md#zero-shot-and-few-shot): ``compound`` codes in the order
    of ``zeroshot.RAFDB_COMPOUND``; ``split`` None keeps every row."""
    full = load_tables(data_root, [name])[name]
    table = full[full["split"] == split] if split is not None else full
    if table.empty:
        raise ValueError(f"{name}: no rows in split {split!r} (splits: {sorted(set(full['split']))})")
    return image_source(table, dataset_folder(data_root, name), size, cache, name=name, within=full,
                        workers=workers, progress=progress)
