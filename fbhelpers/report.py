"""The report of a suite run: the results it is made of, and ``summary.csv``, ``summary.md``, ``summary.html``.

``summary.md`` holds the claims table of :mod:`fbhelpers.claims`, an overview, then per notebook its key figures and
metric table; ``summary.html`` is the same with the figures embedded, beside each executed notebook exported to
``<stem>.html``. :mod:`fbhelpers.runner` fills a :class:`SuiteResult` and calls :func:`write_summary` after every
notebook.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import claims
from .files import write_text_atomic
from .references import flatten_metrics


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
