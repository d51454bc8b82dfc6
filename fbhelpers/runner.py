"""The notebook suite: ``run_suite(profile)`` executes ``notebooks/NN_*.ipynb`` in order through papermill.

It writes ``runs/<name>/``: the executed notebooks, ``<notebook stem>/metrics.json`` (what each recorded with
:func:`fbhelpers.recording.record`, + the figures it saved there) and the report of :mod:`fbhelpers.report`
(``summary.csv``, ``summary.md``, ``summary.html``). A failing notebook is recorded and the next one runs.

This module also re-exports the names that notebooks and scripts reach as ``fbhelpers.runner.X`` from the modules
that now hold them: :mod:`fbhelpers.recording` (``record``, ``configure``, ``save_model``, ...),
:mod:`fbhelpers.references` (comparing with and refreshing the references), :mod:`fbhelpers.report` (the
results and the summary files) and :mod:`fbhelpers.paths` (``find_repo_path``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from .display import HEADLESS_ENV, show_progress
from .files import write_json_atomic, write_text_atomic
from .paths import REPO_ROOT, find_repo_path
from .recording import (
    DEFAULT_OUTPUT_DIR, ENV_OUTPUT_DIR, METRICS_FILE, MODEL_FILE, configure, load_metrics, output_dir, record,
    save_model, seed_everything, to_jsonable,
)
from .references import (
    DEFAULT_TOLERANCES, Mismatch, compare_with_references, flatten_metrics, load_references, reference_entry,
    update_references, values_match, write_references,
)
from .report import (
    KEY_FIGURES, NotebookError, NotebookResult, SuiteResult, claims_lines, export_html, format_value, key_figures,
    summary_html, summary_markdown, write_summary,
)

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
KERNEL_NAME = "python3"

__all__ = [
    "DEFAULT_OUTPUT_DIR", "DEFAULT_TOLERANCES", "ENV_OUTPUT_DIR", "KERNEL_NAME", "KEY_FIGURES", "METRICS_FILE",
    "MODEL_FILE", "Mismatch", "NOTEBOOK_GLOB", "NotebookError", "NotebookResult", "REPO_ROOT", "SuiteResult",
    "claims_lines", "compare_with_references", "configure", "discover_notebooks", "export_html", "find_repo_path",
    "flatten_metrics", "format_value", "key_figures", "load_metrics", "load_references", "notebook_parameters",
    "output_dir", "record", "reference_entry", "run_notebook", "run_suite", "save_model", "seed_everything",
    "summary_html", "summary_markdown", "to_jsonable", "update_references", "values_match", "write_json_atomic",
    "write_references", "write_summary", "write_text_atomic",
]


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
    its kernel (None = torch's default). Never raises on a notebook error: the result carries it."""
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
    two kernels picking the same port at once, a known papermill race)."""
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
    and OUTPUT_DIR are set by the runner.

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
