"""Loaders for the papers' real databases, the packed image cache, the study builders and the fixture root.

``load(name, root, **options)`` turns a database's official annotation files (``root`` = the dataset's own folder,
e.g. ``DATA/AffectNet``) into the canonical table (docs/datasets.md#the-canonical-table; :mod:`.common`); ``NAMES``
lists the names (those of ``data_manifest.yaml``, plus ``generic`` for any class + attribute CSV). One module per
database:

- :mod:`.affectnet` (AffectNet), :mod:`.rafdb` (RAF-DB basic and compound), :mod:`.affwild2` (Aff-Wild2 / ABAW),
  :mod:`.emotionet` (EmotioNet), :mod:`.disfa` (DISFA), :mod:`.bp4d` (BP4D-Spontaneous), :mod:`.celeba`
  (CelebA), :mod:`.cub` (CUB-200-2011, with its class x attribute table), :mod:`.generic` (CAD / S-ADD-style CSV);
- :mod:`.cache`: the packed uint8 image cache the trainer reads (``image_source``);
- :mod:`.studies`: the case studies built from a data root (``affect_study``, ``identity_study``,
  ``species_study``, ``compound_source``);
- ``make_fixture_root``: tiny copies of every database in its official layout (the tests' real-format data).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import affectnet, affwild2, bp4d, cache, celeba, common, cub, disfa, emotionet, generic, rafdb
from .cache import CachedImages, PackedCache, build_cache, image_source
from .common import DataFormatError


@dataclass(frozen=True)
class Loader:
    """A registered database: its ``load(root, **options)``, the fixture writer ``write_fixture(folder, seed)`` and
    its usual folder under the data root (``data_manifest.yaml`` ``root``)."""

    name: str
    load: Callable[..., pd.DataFrame]
    write_fixture: Callable[..., None]
    folder: str


LOADERS: dict[str, Loader] = {
    loader.name: loader for loader in (
        Loader("affectnet", affectnet.load, affectnet.write_fixture, "AffectNet"),
        Loader("rafdb_basic", rafdb.load_basic, rafdb.write_basic_fixture, "RAF-DB/basic"),
        Loader("rafdb_compound", rafdb.load_compound, rafdb.write_compound_fixture, "RAF-DB/compound"),
        Loader("affwild2", affwild2.load, affwild2.write_fixture, "Aff-Wild2"),
        Loader("emotionet", emotionet.load, emotionet.write_fixture, "EmotioNet"),
        Loader("disfa", disfa.load, disfa.write_fixture, "DISFA"),
        Loader("bp4d", bp4d.load, bp4d.write_fixture, "BP4D"),
        Loader("celeba", celeba.load, celeba.write_fixture, "CelebA"),
        Loader("cub", cub.load, cub.write_fixture, "CUB_200_2011"),
        Loader("cad", generic.load, generic.write_fixture, "CAD"),
        Loader("sadd", generic.load, generic.write_fixture, "S-ADD"),
        Loader("generic", generic.load, generic.write_fixture, "generic"),
    )
}
NAMES: tuple[str, ...] = tuple(LOADERS)


def loader(name: str) -> Loader:
    """The registered loader ``name``; KeyError listing ``NAMES`` otherwise."""
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known: {list(NAMES)}")
    return LOADERS[name]


def load(name: str, root: str | Path, **options: Any) -> pd.DataFrame:
    """The canonical table of dataset ``name`` from its own folder ``root`` (see the module's ``load`` for the
    options and the mapping it applies)."""
    return loader(name).load(root, **options)


def make_fixture_root(path: str | Path, seed: int = 0, names: tuple[str, ...] | None = None) -> Path:
    """Write tiny copies of every database (or of ``names``) in its official layout under ``path``, each in its
    ``data_manifest.yaml`` folder (``AffectNet/``, ``RAF-DB/basic/`` ...): a data root for tests and a try-out of
    ``check-data`` and the ``paper`` profile. Returns ``path``."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name in names or NAMES:
        entry = loader(name)
        entry.write_fixture(root / entry.folder, seed=seed)
    return root


__all__ = ["DataFormatError", "LOADERS", "Loader", "NAMES", "common", "load", "loader", "make_fixture_root"]


from . import studies  # noqa: E402  (the builders use the registry above)
from .studies import (  # noqa: E402
    FACE_SOURCES, affect_study, class_attribute_study, compound_source, dataset_folder, identity_study,
    species_study,
)

__all__ += ["CachedImages", "FACE_SOURCES", "PackedCache", "affect_study", "build_cache", "cache",
            "class_attribute_study", "compound_source", "dataset_folder", "identity_study", "image_source",
            "species_study", "studies"]
