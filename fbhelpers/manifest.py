"""The real datasets of ``data_manifest.yaml``: checking a data root, the lock file, and the notebooks' guard.

docs/datasets.md#preparing-the-data-root: every real dataset is listed with its expected layout under the data root;
nothing is downloaded. ``python -m fbhelpers check-data`` prints, per database, found / missing / incomplete (which
files), the rows its loader reads against the manifest's expected count, how many label rows have no image, and which
notebooks it enables; ``--record`` writes the sha256 of the annotation files present into ``fbhelpers-data.lock.json``
in the data root, and a later check reports every file that changed since. Notebooks in the ``paper`` profile call
:func:`require`, which stops at once with a message naming the dataset, where it was looked for, and that command.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import datasets
from .files import write_json_atomic
from .paths import DATASETS, data_root, find_repo_path, notebook_key

MANIFEST = "data_manifest.yaml"
LOCK = "fbhelpers-data.lock.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The ``datasets`` of ``data_manifest.yaml``, each checked for ``name``, ``root`` and ``files``; a file is a
    relative path or ``{path, sha256}``; a dataset may also give ``sha256: {relative path: hex}``,
    ``annotations`` (glob patterns of the files the lock file hashes; default ``files``) and ``expected_rows``."""
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found (pass --manifest)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise ValueError(f"{path}: expected a mapping with a 'datasets:' list")
    entries = []
    for i, entry in enumerate(data["datasets"]):
        missing = [k for k in ("name", "root", "files") if not isinstance(entry, dict) or k not in entry]
        if missing:
            label = entry.get("name", f"#{i}") if isinstance(entry, dict) else f"#{i}"
            raise ValueError(f"{path}: dataset {label} (entry {i}) lacks {missing}")
        checksums = dict(entry.get("sha256") or {})
        files = []
        for item in entry["files"] or []:
            if isinstance(item, dict):
                if "path" not in item:
                    raise ValueError(f"{path}: dataset {entry['name']}: file entry {item!r} lacks 'path'")
                files.append((str(item["path"]), item.get("sha256") or checksums.get(str(item["path"]))))
            else:
                files.append((str(item), checksums.get(str(item))))
        entries.append({"name": str(entry["name"]), "root": str(entry["root"]), "files": files,
                        "annotations": [str(p) for p in entry.get("annotations") or [f for f, _ in files]],
                        "expected_rows": entry.get("expected_rows")})
    return entries


@dataclass
class DatasetCheck:
    """What ``check-data`` found for one database under the data root."""

    name: str
    status: str  # found | missing | incomplete | mismatch (manifest sha256) | changed (since the lock file) | error
    folder: Path | None
    problems: list[str] = field(default_factory=list)
    read: int | None = None  # label rows the loader read (kept + left out, by any reason)
    rows: int | None = None  # label rows the loader keeps (with an image)
    images: int | None = None  # distinct image files of those rows
    no_image: int | None = None  # label rows whose image file is absent
    expected_rows: int | None = None
    notebooks: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Found (annotation files in place, changed since ``--record`` or not): the loaders can read it."""
        return self.status in ("found", "changed")


def annotation_files(folder: Path, patterns: list[str]) -> list[Path]:
    """The files matching ``patterns`` under ``folder`` (a folder pattern contributes every file below it)."""
    found: set[Path] = set()
    for pattern in patterns:
        for hit in folder.glob(pattern):
            found.update(p for p in hit.rglob("*") if p.is_file()) if hit.is_dir() else found.add(hit)
    return sorted(found)


def _count(check: DatasetCheck) -> None:
    """Rows, images and rows without an image as the registered loader reads them (a loader error makes the
    dataset incomplete)."""
    try:
        table = datasets.load(check.name, check.folder)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as err:
        check.status, check.problems = "incomplete", [str(err)]
        return
    skipped = table.attrs.get("skipped", {})
    check.rows, check.images = len(table), int(table["path"].nunique())
    check.read, check.no_image = len(table) + sum(skipped.values()), int(skipped.get("no image file", 0))
    others = {reason: n for reason, n in skipped.items() if reason != "no image file"}
    if not check.rows:
        check.status = "incomplete"
        check.problems = [f"no image file for any of the {check.read:,} label rows read: are the images unpacked "
                          f"where the loader looks (see `fbhelpers.datasets.{check.name}` / docs/datasets.md)?"
                          + (f" (skipped: {others})" if others else "")]


def _changed(folder: Path, name: str, lock: dict[str, Any]) -> list[str]:
    """Annotation files of ``name`` that differ from (or are gone since) the lock file's record."""
    problems = []
    for rel, digest in lock.get(name, {}).items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: gone since --record")
        elif _sha256(path) != digest:
            problems.append(f"{rel}: changed since --record")
    return problems


def check_data(manifest: Path, root: Path | None, count: bool = True,
               names: list[str] | None = None) -> list[DatasetCheck]:
    """One :class:`DatasetCheck` per manifest dataset (or per one of ``names``). ``count``: read each found dataset
    with its loader (rows, images, rows without an image); a lock file in ``root`` (``--record``) adds "changed"
    files."""
    lock = json.loads((root / LOCK).read_text()) if root is not None and (root / LOCK).is_file() else {}
    checks = []
    for ds in load_manifest(manifest):
        if names is not None and ds["name"] not in names:
            continue
        uses = [nb for nb, need in DATASETS.items() if ds["name"] in need["required"] + need["optional"]]
        check = DatasetCheck(ds["name"], "missing", None, expected_rows=ds["expected_rows"], notebooks=uses)
        checks.append(check)
        if root is None:
            check.problems = [f"<no data root>/{ds['root']}"]
            continue
        check.folder = root / ds["root"]
        try:
            _check_folder(check, ds, count, lock)
        except Exception as err:        # one database that cannot be checked is its row, never the whole report
            check.status, check.problems = "error", [f"{type(err).__name__}: {err}"]
    return checks


def _check_folder(check: DatasetCheck, ds: dict[str, Any], count: bool, lock: dict[str, Any]) -> None:
    """Status and problems of one dataset folder (``check.folder``): its files, checksums, rows, lock file."""
    base = check.folder
    if not base.is_dir():
        check.problems = [str(base)]
        return
    absent = [str(base / rel) for rel, _ in ds["files"] if not (base / rel).exists()]
    if absent:
        check.status, check.problems = "incomplete", absent
        return
    bad = [str(base / rel) for rel, sha in ds["files"] if sha and _sha256(base / rel) != str(sha).lower()]
    check.status, check.problems = ("mismatch", bad) if bad else ("found", [])
    if count and check.status == "found" and ds["name"] in datasets.LOADERS:
        _count(check)
    changed = _changed(base, ds["name"], lock)
    if changed and check.status == "found":
        check.status, check.problems = "changed", changed


def record_lock(manifest: Path, root: Path) -> tuple[Path, int]:
    """Write the sha256 of every annotation file present (manifest ``annotations`` patterns) to ``root / LOCK``;
    returns (lock path, number of files hashed)."""
    lock = {}
    for ds in load_manifest(manifest):
        base = root / ds["root"]
        if base.is_dir():
            files = annotation_files(base, ds["annotations"])
            lock[ds["name"]] = {str(p.relative_to(base)): _sha256(p) for p in files}
    path = root / LOCK
    write_json_atomic(path, lock)
    return path, sum(len(v) for v in lock.values())


def missing_for_notebooks(checks: list[DatasetCheck]) -> dict[str, list[str]]:
    """Notebook stem -> the datasets its ``paper`` profile requires that were not found (empty: it can run)."""
    found = {c.name for c in checks if c.usable}
    return {nb: [n for n in need["required"] if n not in found] for nb, need in DATASETS.items()}


def require(name: str, DATA_ROOT: str | None = None, manifest: str | Path = MANIFEST) -> Path:
    """The folder of dataset ``name`` under the data root (``DATA_ROOT`` or ``$FB_DATA_ROOT``), after checking its
    annotation files; FileNotFoundError naming the dataset, the paths looked for and ``check-data`` otherwise."""
    path = find_repo_path(manifest)
    entries = {ds["name"]: ds for ds in load_manifest(path)}
    if name not in entries:
        raise KeyError(f"dataset {name!r} is not in {path}; known: {sorted(entries)}")
    hint = "run `python -m fbhelpers check-data --data-root PATH` to see what is found"
    try:
        root = data_root(DATA_ROOT)
    except (ValueError, FileNotFoundError) as err:
        raise FileNotFoundError(f"dataset {name!r} needs a data root: {err}; {hint}") from None
    for check in check_data(path, root, count=False, names=[name]):
        if not check.usable:
            raise FileNotFoundError(f"dataset {name!r} {check.status} under {root}: looked for {check.problems}; "
                                    f"{hint}")
    return root / entries[name]["root"]


def require_notebook(notebook: str, DATA_ROOT: str | None = None, manifest: str | Path = MANIFEST) -> Path:
    """The data root of a notebook's ``paper`` profile, after :func:`require` of every dataset it needs
    (``paths.DATASETS``); the optional ones it uses are only looked for by the study builders."""
    for name in DATASETS[notebook_key(notebook)]["required"]:
        require(name, DATA_ROOT, manifest)
    return data_root(DATA_ROOT)
