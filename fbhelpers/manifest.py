"""The real datasets of ``data_manifest.yaml``: reading it, checking a data root, and the notebooks' guard.

DESIGN.md: every real dataset is listed with its expected layout under the data root; nothing is downloaded.
``python -m fbhelpers check-data`` prints the report; notebooks in the ``paper`` profile call :func:`require`,
which stops at once with a message naming the dataset, where it was looked for, and that command.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from . import profiles, runner

MANIFEST = "data_manifest.yaml"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The ``datasets`` of ``data_manifest.yaml``, each checked for ``name``, ``root`` and ``files``; a file is a
    relative path or ``{path, sha256}``; a dataset may also give ``sha256: {relative path: hex}``."""
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found (pass --manifest)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise ValueError(f"{path}: expected a mapping with a 'datasets:' list")
    datasets = []
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
        datasets.append({"name": str(entry["name"]), "root": str(entry["root"]), "files": files})
    return datasets


def check_data(manifest: Path, root: Path | None) -> list[tuple[str, str, list[str]]]:
    """Per dataset ``(name, status, details)``: status "found", "missing" (details = the paths looked for that
    are absent) or "mismatch" (sha256 differs; details = those files)."""
    report = []
    for ds in load_manifest(manifest):
        if root is None:
            report.append((ds["name"], "missing", [f"<no data root>/{ds['root']}"]))
            continue
        base = root / ds["root"]
        absent = [str(base / rel) for rel, _ in ds["files"] if not (base / rel).is_file()]
        if not ds["files"] and not base.is_dir():
            absent = [str(base)]
        if absent:
            report.append((ds["name"], "missing", absent))
            continue
        bad = [str(base / rel) for rel, sha in ds["files"] if sha and _sha256(base / rel) != str(sha).lower()]
        report.append((ds["name"], "mismatch" if bad else "found", bad or [str(base)]))
    return report


def require(name: str, DATA_ROOT: str | None = None, manifest: str | Path = MANIFEST) -> Path:
    """The folder of dataset ``name`` under the data root (``DATA_ROOT`` or ``$FB_DATA_ROOT``), after checking its
    annotation files; FileNotFoundError naming the dataset, the paths looked for and ``check-data`` otherwise."""
    path = runner.find_repo_path(manifest)
    entries = {ds["name"]: ds for ds in load_manifest(path)}
    if name not in entries:
        raise KeyError(f"dataset {name!r} is not in {path}; known: {sorted(entries)}")
    hint = "run `python -m fbhelpers check-data --data-root PATH` to see what is found"
    try:
        root = profiles.data_root(DATA_ROOT)
    except (ValueError, FileNotFoundError) as err:
        raise FileNotFoundError(f"dataset {name!r} needs a data root: {err}; {hint}") from None
    status = dict((n, (s, d)) for n, s, d in check_data(path, root))[name]
    if status[0] != "found":
        raise FileNotFoundError(f"dataset {name!r} {status[0]} under {root}: looked for {status[1]}; {hint}")
    return root / entries[name]["root"]
