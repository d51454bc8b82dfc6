"""Record a notebook's numbers, run the notebook suite with papermill, summarise it, compare with references.

DESIGN.md (data flow, last line): predictions -> metrics -> ``record()`` -> ``metrics.json`` per notebook run ->
runner summary / regression tests. REFERENCE.md §3.2: explicit recorded values plus per-metric tolerances in JSON
references, compared like recommenders does (``x == pytest.approx(ref, rel=0.1, abs=0.05)``).

Notebook side: ``configure(OUTPUT_DIR, seed=SEED)`` once (``profiles.setup`` does it), then ``record(name, value)``.
Driver side: ``run_suite(profile)`` executes ``notebooks/NN_*.ipynb`` in order and writes ``runs/<name>/``:
the executed notebooks, ``<notebook stem>/metrics.json`` (+ the figures a notebook saved there),
``summary.csv``, ``summary.md`` (the claims table of :mod:`fbhelpers.claims`, key figures, metric tables) and
``summary.html`` (the same, figures embedded) beside each executed notebook exported to ``<stem>.html``.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import numpy as np

from . import claims
from .display import HEADLESS_ENV, show_progress
from .files import atomic_path

ENV_OUTPUT_DIR = "FB_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = Path("runs") / "interactive"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
DEFAULT_TOLERANCES: dict[str, float] = {"rel": 0.1, "abs": 0.05}
KERNEL_NAME = "python3"
PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent

_output_dir: Path | None = None


# --------------------------------------------------------------------------------------------- notebook side
def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (all devices) with ``seed`` (DESIGN.md conventions: seeds everywhere)."""
    random.seed(seed)
    np.random.seed(seed)
    import torch

    torch.manual_seed(seed)


def configure(output_dir: str | os.PathLike | None = None, seed: int | None = None) -> Path:
    """Set where ``record()`` writes (created if needed) and, when ``seed`` is given, seed every RNG.

    ``output_dir=None`` falls back to env ``FB_OUTPUT_DIR``, else ``runs/interactive`` (relative to the
    current directory). Returns the absolute output directory. DESIGN.md §Profiles: notebooks call this (through
    ``profiles.setup``) in the cell after the parameters cell.
    """
    global _output_dir
    if output_dir is None or str(output_dir) == "":
        output_dir = os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR
    path = Path(output_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    _output_dir = path
    if seed is not None:
        seed_everything(int(seed))
    return path


def output_dir() -> Path:
    """Where ``record()`` writes now: ``configure()``'s dir, else env ``FB_OUTPUT_DIR``, else ``runs/interactive``."""
    if _output_dir is not None:
        return _output_dir
    return Path(os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR).expanduser().resolve()


def to_jsonable(value: Any, name: str = "value") -> Any:
    """``value`` as plain JSON data: numpy/torch scalars and arrays become numbers and lists, a pandas Series a
    dict, tuples lists; NaN and +-inf become ``None`` (JSON has no NaN) **[choice: inf -> null too]**.

    Raises TypeError naming ``name`` and the type for anything else (e.g. a DataFrame: record its columns).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), name)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), name)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"record {name!r}: dict keys must be str or int, got {key!r} ({type(key).__name__})")
            out[str(key)] = to_jsonable(item, f"{name}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{name}[{i}]") for i, item in enumerate(value)]
    module = type(value).__module__
    if module.startswith("torch") and hasattr(value, "detach"):
        return to_jsonable(value.detach().cpu().tolist(), name)
    if module.startswith("pandas"):
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, pd.Series):
            return to_jsonable(value.to_dict(), name)
    raise TypeError(
        f"record {name!r}: cannot store a {type(value).__module__}.{type(value).__name__}; "
        "record numbers, strings, lists or dicts of them (e.g. one metric per call, or df.to_dict())"
    )


def _read_json(path: Path) -> Any:
    """The JSON in ``path`` (``{}`` if the file does not exist); ValueError naming the file and line if invalid."""
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None


def load_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """The metrics recorded in ``path`` (a ``metrics.json`` or the directory holding it); ``{}`` if none yet."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / METRICS_FILE
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    return data


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a reader never
    sees a half-written file; the file gets the usual permissions (0666 less the umask), not mkstemp's 0600."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, newline="")


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (``write_text_atomic``); NaN is refused."""
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def record(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` in ``<output dir>/metrics.json`` (read-modify-write, atomic rename).

    Values go through ``to_jsonable`` (numpy/torch -> numbers/lists, NaN -> null). Recording a name again
    replaces its value. The runner collects these files into ``summary.csv``/``summary.md`` and the notebook
    regression tests compare them with ``tests/references/<profile>.json`` (REFERENCE.md §3.2).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"record: metric name must be a non-empty string, got {name!r}")
    stored = to_jsonable(value, name)
    path = output_dir() / METRICS_FILE
    metrics = load_metrics(path)
    metrics[name] = stored
    write_json_atomic(path, metrics)


def save_model(model: Any, study: Any, settings: Mapping[str, Any], **extra: Any) -> Path:
    """A notebook's main model as ``<output dir>/model.pt`` (``models.save``), so a run leaves a model that
    ``python -m fbhelpers predict`` applies: the input size of ``settings`` (``profiles.setup``'s), the couplings of
    ``study``, and as metadata the notebook, profile, data, seed and sources; ``extra`` goes to ``models.save``
    (``tables=``, ``thresholds=``, or more metadata such as ``variant=`` and ``scores=``)."""
    from .models import save

    meta = {key: settings[key] for key in ("notebook", "profile", "data", "seed")}
    return save(model, output_dir() / MODEL_FILE, input_size=settings["image_size"], couplings=study.couplings,
                sources=list(study.sources), **{**meta, **extra})


# --------------------------------------------------------------------------------------------- references
def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened to dotted names (``{"f1": {"AU1": .5}}`` -> ``{"f1.AU1": .5}``); lists kept whole."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class Mismatch:
    """One difference between recorded metrics and references: ``kind`` is "value", "missing" (in the
    reference, not recorded) or "unexpected" (recorded, not in the reference)."""

    notebook: str
    metric: str
    kind: str
    expected: Any = None
    actual: Any = None
    rel: float | None = None
    abs: float | None = None

    def __str__(self) -> str:
        where = f"{self.notebook}: {self.metric}"
        if self.kind == "missing":
            return f"{where}: in the reference ({self.expected!r}) but not recorded"
        if self.kind == "unexpected":
            return (f"{where}: recorded ({self.actual!r}) but not in the reference; "
                    "run `python -m fbhelpers refresh-references`")
        return f"{where}: recorded {self.actual!r}, reference {self.expected!r} (rel={self.rel}, abs={self.abs})"


def reference_entry(entry: Any, tolerances: Mapping[str, float] | None = None) -> tuple[Any, float, float]:
    """``(value, rel, abs)`` of one reference entry: ``{"value": v, "rel": r, "abs": a}`` (missing tolerances
    from ``tolerances``, default rel 0.1 / abs 0.05 as recommenders does) or a bare value."""
    defaults = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    if isinstance(entry, Mapping):
        if "value" not in entry:
            raise ValueError(f"reference entry {dict(entry)!r} has no 'value'")
        unknown = sorted(set(entry) - {"value", "rel", "abs"})
        if unknown:
            raise ValueError(f"reference entry {dict(entry)!r}: unknown keys {unknown}; valid: value, rel, abs")
        return entry["value"], float(entry.get("rel", defaults["rel"])), float(entry.get("abs", defaults["abs"]))
    return entry, float(defaults["rel"]), float(defaults["abs"])


def values_match(actual: Any, expected: Any, rel: float, abs: float) -> bool:
    """pytest.approx semantics without pytest: numbers within ``max(rel*|expected|, abs)``, lists element-wise,
    everything else (str, bool, None) by equality."""
    if isinstance(expected, bool) or isinstance(actual, bool) or expected is None or actual is None:
        return actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.fabs(actual - expected) <= max(rel * math.fabs(expected), abs)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(values_match(a, e, rel, abs) for a, e in zip(actual, expected))
    return actual == expected


def compare_with_references(
    metrics: Mapping[str, Mapping[str, Any]],
    references: Mapping[str, Mapping[str, Any]],
    tolerances: Mapping[str, float] | None = None,
) -> list[Mismatch]:
    """Every mismatch between ``metrics`` (notebook -> recorded metrics, nested dicts flattened) and
    ``references`` (notebook -> metric -> ``{"value", "rel", "abs"}``; ``tolerances`` are the defaults for
    entries without their own). Notebooks absent from ``metrics`` are not compared. REFERENCE.md §3.2.
    """
    mismatches: list[Mismatch] = []
    for notebook, recorded in metrics.items():
        flat = flatten_metrics(recorded)
        refs = references.get(notebook, {})
        for metric, entry in refs.items():
            expected, rel, abs_ = reference_entry(entry, tolerances)
            if metric not in flat:
                mismatches.append(Mismatch(notebook, metric, "missing", expected=expected, rel=rel, abs=abs_))
            elif not values_match(flat[metric], expected, rel, abs_):
                mismatches.append(Mismatch(notebook, metric, "value", expected, flat[metric], rel, abs_))
        for metric in flat.keys() - refs.keys():
            mismatches.append(Mismatch(notebook, metric, "unexpected", actual=flat[metric]))
    return mismatches


def load_references(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The reference file ``path`` (``{}`` if it does not exist); ValueError naming the file if malformed."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected {{notebook: {{metric: {{value, rel, abs}}}}}}")
    return data


def write_references(path: str | os.PathLike, references: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``references`` to ``path`` atomically, one metric per line (readable diffs in review)."""
    blocks = []
    for notebook in sorted(references):
        lines = [f"    {json.dumps(metric)}: {json.dumps(entry, allow_nan=False)}"
                 for metric, entry in references[notebook].items()]
        body = "{\n" + ",\n".join(lines) + "\n  }" if lines else "{}"
        blocks.append(f"  {json.dumps(notebook)}: {body}")
    text = "{\n" + ",\n".join(blocks) + "\n}\n" if blocks else "{}\n"
    json.loads(text)  # never write a file the tests cannot read
    write_text_atomic(path, text)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def update_references(
    references: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, Any]],
    notebooks: Collection[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """New references from freshly recorded ``metrics`` (floats to 6 significant digits), keeping each existing
    metric's own ``rel``/``abs`` (new ones get the defaults). Notebooks absent from ``metrics`` (e.g. failed) keep
    their entries, unless ``notebooks`` (the suite's notebooks) is given and they are not in it. Returns
    ``(new references, lines "notebook: metric: old -> new")`` for every change, addition and removal."""
    new: dict[str, dict[str, Any]] = {k: dict(v) for k, v in references.items()}
    changes: list[str] = []
    for notebook in sorted(set(references) - set(notebooks if notebooks is not None else references)):
        del new[notebook]
        changes.append(f"{notebook}: (notebook no longer in the suite) -> (removed)")
    for notebook, recorded in metrics.items():
        old = references.get(notebook, {})
        entries: dict[str, Any] = {}
        for metric, value in flatten_metrics(recorded).items():
            value = _round(value)
            previous = old.get(metric)
            entry = {"value": value, **DEFAULT_TOLERANCES}
            if isinstance(previous, Mapping):
                entry.update({k: v for k, v in previous.items() if k != "value"})
            entries[metric] = entry
            if previous is None:
                changes.append(f"{notebook}: {metric}: (new) -> {json.dumps(value)}")
            else:
                old_value = reference_entry(previous)[0]
                if old_value != value:
                    changes.append(f"{notebook}: {metric}: {json.dumps(old_value)} -> {json.dumps(value)}")
        for metric in old.keys() - entries.keys():
            changes.append(f"{notebook}: {metric}: {json.dumps(reference_entry(old[metric])[0])} -> (removed)")
        new[notebook] = entries
    return new, changes


# --------------------------------------------------------------------------------------------- suite
@dataclass(frozen=True)
class NotebookError:
    """Where and how a notebook failed: ``cell_index`` (0-based, in the committed notebook; None if the kernel
    never reached a cell), the cell's first source line, the exception name and message."""

    cell_index: int | None
    first_line: str
    ename: str
    evalue: str

    def __str__(self) -> str:
        where = "before any cell ran" if self.cell_index is None else f"at cell {self.cell_index} (`{self.first_line}`)"
        return f"{where}: {self.ename}: {self.evalue}"


@dataclass
class NotebookResult:
    """One executed notebook: ``executed`` (the output .ipynb), ``output_dir`` (its OUTPUT_DIR), wall time,
    its recorded ``metrics``, the PNG ``figures`` it saved at the top of OUTPUT_DIR, and ``error`` (None if it ran);
    ``html`` its HTML export once ``export_html`` made it, else ``html_error`` says why not."""

    name: str
    executed: Path
    output_dir: Path
    seconds: float
    metrics: dict[str, Any]
    figures: list[Path]
    error: NotebookError | None = None
    html: Path | None = None
    html_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SuiteResult:
    """What ``run_suite`` did: ``notebooks`` in execution order, and the summary files under ``out``."""

    profile: str
    out: Path
    notebooks: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(nb.ok for nb in self.notebooks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failures(self) -> list[NotebookResult]:
        return [nb for nb in self.notebooks if not nb.ok]

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return {nb.name: nb.metrics for nb in self.notebooks}

    @property
    def summary_csv(self) -> Path:
        return self.out / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.out / "summary.md"

    @property
    def summary_html(self) -> Path:
        return self.out / "summary.html"

    def failure_report(self) -> str:
        """One line per failed notebook: notebook, cell (index and first line), error."""
        return "\n".join(f"{nb.name} failed {nb.error}" for nb in self.failures)


def find_repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists (or is absolute), else the same relative path under the repository root
    this package lives in when that exists there (so ``python -m fbhelpers`` works from any directory)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


def discover_notebooks(notebooks_dir: str | os.PathLike = "notebooks", only: list[str] | None = None) -> list[Path]:
    """The suite's notebooks: ``NN_*.ipynb`` in ``notebooks_dir``, sorted; ``only`` keeps those whose name
    starts with one of its prefixes (``["02", "05"]``). ValueError naming a prefix that matches nothing."""
    directory = find_repo_path(notebooks_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"notebooks directory {directory} does not exist (run from the repository root)")
    notebooks = sorted(directory.glob(NOTEBOOK_GLOB))
    if only:
        prefixes = [str(p).strip() for p in only if str(p).strip()]
        unknown = [p for p in prefixes if not any(nb.stem.startswith(p) for nb in notebooks)]
        if unknown:
            raise ValueError(f"--only {unknown}: no notebook matches; available: {[nb.stem for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(p) for p in prefixes)]
    return notebooks


def notebook_parameters(notebook: Path, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Route user ``params`` for one notebook: a name the parameters cell declares is passed as is; any other
    name goes, lower-cased, into the notebook's ``OVERRIDES`` dict (profile settings, e.g. ``STEPS`` ->
    ``OVERRIDES["steps"]``) when it declares one, else is passed as is (papermill then warns)."""
    import papermill

    if not params:
        return {}
    declared = set(papermill.inspect_notebook(str(notebook)))
    routed: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in params.items():
        if key in declared or "OVERRIDES" not in declared:
            routed[key] = value
        else:
            overrides[key.lower()] = value
    if overrides:
        routed["OVERRIDES"] = {**(routed.get("OVERRIDES") or {}), **overrides}
    return routed


@contextlib.contextmanager
def _kernel_environment(notebook_output: Path, threads: int | None = None) -> Iterator[None]:
    """Environment inherited by the kernel papermill starts: headless (``FB_HEADLESS``), quiet progress bars,
    OUTPUT_DIR as the record() fallback, ``threads`` CPU threads for torch and numpy (``OMP_NUM_THREADS``; None =
    their default) and, from a source checkout, the same fbhelpers as this process (checkout first on PYTHONPATH: an
    editable install made before ``fbhelpers/__init__.py`` existed resolves to a namespace)."""
    saved = dict(os.environ)
    os.environ[ENV_OUTPUT_DIR] = str(notebook_output)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault(HEADLESS_ENV, "1")  # static figures, no progress bars in executed notebooks
    # ipykernel's inline backend renders PNGs without a display; Agg would drop figures from executed notebooks.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    if (REPO_ROOT / "pyproject.toml").is_file():
        paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _first_line(source: str) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= 80 else line[:77] + "..."


def _notebook_error(err: BaseException, executed: Path) -> NotebookError:
    """Translate a papermill error to the committed notebook's cell index (minus the injected parameters cell)."""
    import nbformat
    import papermill

    if not isinstance(err, papermill.PapermillExecutionError):
        message = str(err).strip()
        return NotebookError(None, "", type(err).__name__, message.splitlines()[0] if message else "")
    index = err.cell_index  # in the executed notebook before papermill added its error-marker cells
    with contextlib.suppress(Exception):
        tags = [cell.metadata.get("tags", []) for cell in nbformat.read(executed, as_version=4).cells]
        tags = [t for t in tags if "papermill-error-cell-tag" not in t]
        index -= sum("injected-parameters" in t for t in tags[:index])
    return NotebookError(index, _first_line(err.source), err.ename, err.evalue)


def run_notebook(
    notebook: Path, out: Path, profile: str, params: Mapping[str, Any] | None = None, progress: bool = True,
    threads: int | None = None,
) -> NotebookResult:
    """Execute one notebook with papermill (kernel ``python3``, cwd = its directory) with parameters PROFILE,
    OUTPUT_DIR = ``out/<stem>`` and ``params``; write it to ``out/<stem>.ipynb``. ``threads``: CPU threads of
    its kernel (None = torch's default). Never raises on a notebook error: the result carries it (REFERENCE.md
    §3.1)."""
    import papermill

    notebook = Path(notebook).resolve()
    out = Path(out).resolve()
    name = notebook.stem
    nb_out = out / name
    executed = out / f"{name}.ipynb"
    if nb_out.is_dir():
        shutil.rmtree(nb_out)
    nb_out.mkdir(parents=True)
    executed.unlink(missing_ok=True)
    bar: bool | dict = {"desc": name, "leave": False} if bool(progress) and show_progress() else False
    error = None
    start = time.perf_counter()
    with _kernel_environment(nb_out, threads):
        try:
            parameters = {**notebook_parameters(notebook, params), "PROFILE": profile, "OUTPUT_DIR": str(nb_out)}
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=parameters, kernel_name=KERNEL_NAME,
                cwd=str(notebook.parent), progress_bar=bar,
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # no kernel-app log noise (TCP warning, ...)
            )
        except Exception as err:  # noqa: BLE001 - a failing notebook is recorded, the suite goes on
            error = _notebook_error(err, executed)
    seconds = time.perf_counter() - start
    try:
        metrics = load_metrics(nb_out)
    except ValueError as err:
        metrics = {}
        error = error or NotebookError(None, "", "ValueError", str(err))
    figures = sorted(nb_out.glob("*.png"))   # what it saved at its top level; subfolders hold data (rendered faces)
    return NotebookResult(name, executed, nb_out, seconds, metrics, figures, error)


def format_value(value: Any) -> str:
    """A recorded value for tables: floats to 4 significant digits, null as NaN, lists/dicts as JSON."""
    if value is None:
        return "NaN"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_link(path: Path, base: Path) -> str:
    """A markdown link to ``path``, relative to ``base`` when inside it."""
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()
    return f"[{path.name}]({rel.replace(' ', '%20')})"


# Each notebook's key figures for the report, in order (PNG names in its OUTPUT_DIR); a missing one is skipped and a
# notebook not listed shows its first figure.
KEY_FIGURES: dict[str, tuple[str, ...]] = {
    "00_quickstart": ("comparison.png", "per_au_f1.png"),
    "01_relatedness_study": ("estimate_vs_truth.png", "estimation_curve.png"),
    "02_affect_case_study": ("au_labelled_vs_unlabelled.png", "comparison.png"),
    "03_identity_attributes": ("attr_labelled_vs_unlabelled.png", "comparison.png"),
    "04_beyond_faces": ("attr_labelled_vs_unlabelled.png", "comparison.png"),
    "05_zero_few_shot": ("zero_shot_bars.png", "few_shot.png"),
}


def key_figures(nb: NotebookResult) -> list[Path]:
    """The figures of ``nb`` the report inlines: its ``KEY_FIGURES`` that exist, else its first figure."""
    names = KEY_FIGURES.get(nb.name)
    if names is None:
        return list(nb.figures[:1])
    return [nb.output_dir / name for name in names if (nb.output_dir / name).is_file()]


def _md_image(path: Path, base: Path, embed: bool) -> str:
    """A markdown image of ``path``: linked relative to ``base``, or ``embed``-ded as a base64 data URI."""
    if embed:
        import base64

        return f"![{path.stem}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()
    return f"![{path.stem}]({rel.replace(' ', '%20')})"


def _holds_cell(verdict: claims.Verdict) -> str:
    """The "holds?" cell: yes / **no** / n/a, with "1 seed" when the run had no seed spread."""
    text = f"**{verdict.holds}**" if verdict.holds == claims.FAILS else verdict.holds
    return text + " (1 seed)" if verdict.one_seed else text


def claims_lines(result: SuiteResult) -> list[str]:
    """The markdown table "notebook · question · claim · measured (with spread) · holds?" of :mod:`fbhelpers.claims`
    on ``result``'s metrics, sorted by notebook; notebooks the run lacks show n/a."""
    lines = ["## Claims", "", "What each notebook claims and whether this run's recorded numbers bear it out (rules: "
             "`fbhelpers/claims.py`, with the thresholds of the claims tier `tests/test_claims.py`; measured: mean "
             "± sd over seeds, paired gain over MT and its worst seed).", "",
             "| notebook | question | claim | measured (with spread) | holds? |", "|---|---|---|---|---|"]
    for verdict in sorted(claims.verdicts(result.metrics), key=lambda v: v.claim.notebook):
        c = verdict.claim
        measured = f"`{c.value}` {verdict.measured}"
        lines.append("| " + " | ".join(_md_cell(t) for t in (c.notebook, c.question, c.claim, measured))
                     + f" | {_holds_cell(verdict)} |")
    return lines


def _title_lines(result: SuiteResult) -> list[str]:
    """The title and the totals."""
    total = sum(nb.seconds for nb in result.notebooks)
    n_failed = len(result.failures)
    return [f"# fbhelpers run `{result.out.name}` (profile `{result.profile}`)", "",
            f"{len(result.notebooks)} notebooks, {len(result.notebooks) - n_failed} ok, {n_failed} failed, "
            f"{total:.1f} s of notebook time in all. Written {time.strftime('%Y-%m-%d %H:%M:%S')}."]


def _overview_lines(result: SuiteResult) -> list[str]:
    """One row per notebook (status, wall time, counts, HTML export), then the failures."""
    out = result.out
    n_failed = len(result.failures)
    lines = ["## Notebooks", "", "| notebook | status | wall time (s) | metrics | figures | HTML |",
             "|---|---|---:|---:|---:|---|"]
    for nb in result.notebooks:
        status = "ok" if nb.ok else "**FAILED**"
        export = _md_link(nb.html, out) if nb.html else f"not exported: {_md_cell(nb.html_error or 'not yet')}"
        lines.append(f"| {_md_link(nb.executed, out)} | {status} | {nb.seconds:.1f} | "
                     f"{len(flatten_metrics(nb.metrics))} | {len(nb.figures)} | {export} |")
    if n_failed:
        lines += ["", "## Failures", ""]
        lines += [f"- **{nb.name}** failed {_md_cell(str(nb.error))}" for nb in result.failures]
    return lines


def _notebook_lines(nb: NotebookResult, out: Path, html: bool) -> list[str]:
    """One notebook's section: its key figures (embedded when ``html``), its metric table, links to all figures."""
    export = f"; as HTML: {_md_link(nb.html, out)}" if nb.html else ""
    lines = ["", f"## {nb.name}", "",
             f"Executed notebook: {_md_link(nb.executed, out)}{export}; wall time {nb.seconds:.1f} s.", ""]
    figures = key_figures(nb)
    if figures:
        lines += [" ".join(_md_image(fig, out, html) for fig in figures), ""]
    flat = flatten_metrics(nb.metrics)
    if flat:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {_md_cell(k)} | {_md_cell(format_value(v))} |" for k, v in flat.items()]
    else:
        lines.append("No metrics recorded.")
    if nb.figures:
        lines += ["", "Figures: " + ", ".join(_md_link(fig, out) for fig in nb.figures)]
    return lines


def summary_markdown(result: SuiteResult, html: bool = False) -> str:
    """The report as markdown: title, claims table, overview, then per notebook its key figures and metric table.
    ``html``: figures embedded as base64 (the source of summary.html)."""
    lines = _title_lines(result) + [""] + claims_lines(result) + [""] + _overview_lines(result)
    for nb in result.notebooks:
        lines += _notebook_lines(nb, result.out, html)
    return "\n".join(lines) + "\n"


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.4}}
table {{border-collapse: collapse; margin: 1em 0}} th, td {{border: 1px solid #ccc; padding: 4px 8px;
vertical-align: top}} img {{max-width: 100%; margin: 4px 0}} code {{background: #f4f4f4}}</style>
</head><body>
{body}
</body></html>
"""


def summary_html(result: SuiteResult) -> str:
    """``summary_markdown(html=True)`` rendered as a self-contained HTML page (nbconvert's markdown filter)."""
    from html import escape

    from nbconvert.filters import markdown2html

    title = escape(f"fbhelpers run {result.out.name} (profile {result.profile})")
    return _HTML_PAGE.format(title=title, body=markdown2html(summary_markdown(result, html=True)))


def export_html(nb: NotebookResult) -> None:
    """Export ``nb``'s executed notebook to ``<stem>.html`` beside it (nbconvert's HTMLExporter, images embedded)
    and set ``nb.html``; on any failure set ``nb.html_error`` instead (the report shows it; the suite goes on)."""
    nb.html, nb.html_error = None, None
    try:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(nb.executed, as_version=4))
        target = nb.executed.with_suffix(".html")
        write_text_atomic(target, body)
        nb.html = target
    except Exception as err:  # noqa: BLE001 - a failed export is reported in the summary, never fails the suite
        message = str(err).strip().splitlines()
        nb.html_error = f"{type(err).__name__}: {message[0] if message else ''}"


def write_summary(result: SuiteResult) -> None:
    """Write ``summary.csv`` (notebook, metric, value; nested dicts flattened), ``summary.md`` (the claims table,
    an overview, then per notebook its key figures, a table of its numbers and links to its figures) and
    ``summary.html`` (the same, self-contained). ``export_html`` makes the notebooks' HTML exports. A failure to
    render summary.html is written into it instead and never raises."""
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    rows = [(nb.name, metric, value)
            for nb in result.notebooks for metric, value in flatten_metrics(nb.metrics).items()]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["notebook", "metric", "value"])
    for notebook, metric, value in rows:
        cell = "" if value is None else json.dumps(value) if isinstance(value, list) else value
        writer.writerow([notebook, metric, cell])
    write_text_atomic(result.summary_csv, buffer.getvalue())
    write_text_atomic(result.summary_md, summary_markdown(result))
    try:
        page = summary_html(result)
    except Exception as err:  # noqa: BLE001 - the report must not fail the suite
        from html import escape

        body = f"<p>summary.html could not be rendered: {escape(f'{type(err).__name__}: {err}')}</p>"
        page = _HTML_PAGE.format(title="fbhelpers run", body=body)
    write_text_atomic(result.summary_html, page)


def _executed(notebooks: list[Path], out: Path, profile: str, params: Mapping[str, Any], progress: bool,
              jobs: int, threads: int | None) -> Iterator[NotebookResult]:
    """Each notebook's result as it finishes: in order in this process (``jobs`` = 1) or from ``jobs`` worker
    processes (spawned: each sets its kernel's environment without touching another's)."""
    if jobs == 1:
        yield from (_run_with_retry(nb, out, profile, params, progress, None) for nb in notebooks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_with_retry, nb, out, profile, params, False, threads): nb for nb in notebooks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as err:  # noqa: BLE001 - a dead worker (e.g. killed for memory) is a failed notebook
                nb = futures[future]
                yield NotebookResult(nb.stem, out / f"{nb.stem}.ipynb", out / nb.stem, 0.0, {}, [],
                                     NotebookError(None, "", type(err).__name__, str(err)))


def _run_with_retry(notebook: Path, out: Path, profile: str, params: Mapping[str, Any], progress: bool,
                    threads: int | None) -> NotebookResult:
    """:func:`run_notebook`, once more when it failed before its first cell ran (a kernel that did not start, e.g.
    two kernels picking the same port at once: papermill issue 511)."""
    result = run_notebook(notebook, out, profile, params, progress, threads)
    if result.error is not None and result.error.cell_index is None and not result.metrics:
        result = run_notebook(notebook, out, profile, params, progress, threads)
    return result


def run_suite(
    profile: str = "demo",
    only: list[str] | None = None,
    out: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    notebooks_dir: str | os.PathLike = "notebooks",
    progress: bool = True,
    jobs: int = 1,
) -> SuiteResult:
    """Execute the suite's notebooks in order (``NN_*.ipynb``; ``only`` selects by prefix) through papermill,
    into ``out`` (default ``runs/<profile>``). A failing notebook is recorded and the next one runs; the summary
    is rewritten after every notebook, so an interrupted run keeps what succeeded. Check ``result.exit_code`` /
    ``result.failure_report()``. ``params`` override notebook parameters (see ``notebook_parameters``); PROFILE
    and OUTPUT_DIR are set by the runner. DESIGN.md §Notebook map.

    ``jobs`` > 1 runs that many notebooks at once, each in its own worker process with ``cores // jobs`` CPU
    threads (the notebooks are independent; on a small CPU one thread per training is faster than two that
    spin-wait). 0 = one job per core, at most 2 [choice]. The summary keeps the suite's order.
    """
    params = dict(params or {})
    reserved = sorted({"PROFILE", "OUTPUT_DIR"} & set(params))
    if reserved:
        raise ValueError(f"params {reserved} are set by the runner; use profile= / out= instead")
    notebooks = discover_notebooks(notebooks_dir, only)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching {NOTEBOOK_GLOB} in {find_repo_path(notebooks_dir)}")
    result = SuiteResult(profile, Path(out if out is not None else Path("runs") / profile).resolve())
    result.out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = max(1, min(jobs or min(2, cores), len(notebooks)))
    threads = max(1, cores // jobs) if jobs > 1 else None
    say(f"Running {len(notebooks)} notebook(s), profile {profile!r}, into {result.out}"
        + (f", {jobs} at a time ({threads} thread(s) each)" if jobs > 1 else ""), flush=True)
    order = {notebook.stem: i for i, notebook in enumerate(notebooks)}
    for done, nb in enumerate(_executed(notebooks, result.out, profile, params, progress, jobs, threads), 1):
        result.notebooks = sorted([*result.notebooks, nb], key=lambda r: order[r.name])
        export_html(nb)
        write_summary(result)
        status = "ok" if nb.ok else f"FAILED {nb.error}"
        say(f"[{done}/{len(notebooks)}] {nb.name}: {status} ({nb.seconds:.1f} s, {len(nb.metrics)} metrics)",
            flush=True)
    if not result.ok:
        print(result.failure_report(), file=sys.stderr, flush=True)
    return result
