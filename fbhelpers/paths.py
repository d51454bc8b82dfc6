"""Where things are: the repository, the notebook suite's names, the real-data root.

A low module (standard library only), so that the data check (``manifest``, ``python -m fbhelpers check-data``), the
notebooks' set-up (``profiles``) and the suite (``runner``) share one answer without importing each other or torch.

- :func:`find_repo_path`: a path relative to the current folder, else to the repository this package lives in;
- :data:`NOTEBOOKS` / :func:`notebook_key`: the suite's notebooks ("02" -> "02_affect_case_study");
- :data:`DATASETS`: the real databases each notebook's ``paper`` profile needs;
- :func:`data_root`: the real-data root (``DATA_ROOT`` parameter, else ``$FB_DATA_ROOT``).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
ENV_DATA_ROOT = "FB_DATA_ROOT"

#: notebook key -> notebook stem, in suite order.
NOTEBOOKS: dict[str, str] = {
    "00": "00_quickstart",
    "01": "01_relatedness_study",
    "02": "02_affect_case_study",
    "03": "03_identity_attributes",
    "04": "04_beyond_faces",
    "05": "05_zero_few_shot",
}

#: notebook stem -> the real databases (``data_manifest.yaml`` names) its ``paper`` profile needs ("required") and
#: uses when they are there ("optional"). Each notebook's header names the same; ``check-data`` reports them.
DATASETS: dict[str, dict[str, list[str]]] = {
    "00_quickstart": {"required": ["affectnet", "emotionet", "disfa", "affwild2"], "optional": []},
    "01_relatedness_study": {"required": ["affwild2"], "optional": ["celeba", "cub"]},
    "02_affect_case_study": {"required": ["affectnet", "emotionet", "disfa", "bp4d", "affwild2"], "optional": []},
    "03_identity_attributes": {"required": ["celeba"], "optional": []},
    "04_beyond_faces": {"required": ["cub"], "optional": []},
    "05_zero_few_shot": {"required": ["affectnet", "emotionet", "rafdb_compound"], "optional": []},
}


def find_repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists (or is absolute), else the same relative path under the repository root
    this package lives in when that exists there (so ``python -m fbhelpers`` works from any directory)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


def notebook_key(notebook: str) -> str:
    """The stem of ``notebook`` given as "02", "02_affect_case_study", a file name or a path (KeyError if unknown)."""
    name = Path(str(notebook)).stem
    for key, stem in NOTEBOOKS.items():
        if name in (key, stem):
            return stem
    raise KeyError(f"unknown notebook {notebook!r}; valid: {sorted(NOTEBOOKS)} or {sorted(NOTEBOOKS.values())}")


def data_root(DATA_ROOT: str | os.PathLike | None = None) -> Path:
    """The real-data root: the notebook's ``DATA_ROOT`` parameter, else env ``FB_DATA_ROOT``.

    ValueError when neither is set, FileNotFoundError (naming the path and where it came from) when it is not a
    directory. Layouts under it: ``data_manifest.yaml`` (``python -m fbhelpers check-data``).
    """
    origin = "DATA_ROOT"
    if DATA_ROOT in (None, ""):
        DATA_ROOT, origin = os.environ.get(ENV_DATA_ROOT), f"${ENV_DATA_ROOT}"
    if not DATA_ROOT:
        raise ValueError(f"no data root: set the DATA_ROOT parameter or the {ENV_DATA_ROOT} environment variable")
    root = Path(DATA_ROOT).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} (from {origin}) is not a directory")
    return root
