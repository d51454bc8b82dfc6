"""Optional ipywidgets explorers, each with a plain-output fallback (DESIGN.md: widgets never required).

``ipywidgets`` is imported only inside the functions. ``interactive=None`` picks widgets when ipywidgets imports,
the code runs in a live kernel (an IPython shell with a kernel, i.e. a notebook frontend) and neither ``CI`` nor
``FB_HEADLESS`` is set to a true value **[choice]**; executed notebooks (papermill, the runner) should set
``FB_HEADLESS=1``, because a kernel alone does not tell whether anybody is looking. ``interactive=False`` always
gives the fallback: a :class:`Figures` list of static figures that displays itself as a cell's value.
Interactive views render figures to PNG into an ``ipywidgets.Image``, so they need no ``Output`` capture.
"""
from __future__ import annotations

import html
import io
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .display import headless
from .relatedness import Relatedness
from .tasks import FACE_TASKS, Task

ALL_CLASSES = "(all classes)"
MAX_ACTIVE = 8  # active attribute names listed per sample before "+k more"
CAPTION_WIDTH = 40  # characters per caption line in the static sample grid


class Figures(list):
    """Static fallback output: a list of Figures; as a notebook cell's value it displays every figure."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for fig in self:
            display(fig)


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as err:
        raise ImportError("interactive=True needs ipywidgets (pip install ipywidgets, the [widgets] extra); "
                          "use interactive=False for static figures") from err
    return ipywidgets


def use_widgets(interactive: bool | None = None) -> bool:
    """Whether an explorer builds widgets: ``interactive`` when given (True fails without ipywidgets), else
    auto: not under ``CI`` / ``FB_HEADLESS``, ipywidgets importable, and a live kernel."""
    if interactive is not None:
        if interactive:
            _ipywidgets()
        return bool(interactive)
    if headless():
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=plots.DPI, bbox_inches="tight")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- relatedness
def _tables(rels: Relatedness | Mapping[str, Relatedness] | Sequence[Relatedness]) -> dict[str, Relatedness]:
    if isinstance(rels, Relatedness):
        tables = {rels.name: rels}
    elif isinstance(rels, Mapping):
        tables = dict(rels)
    else:
        tables = {r.name: r for r in rels}
    if not tables:
        raise ValueError("relatedness_explorer needs at least one table")
    bad = [k for k, v in tables.items() if not isinstance(v, Relatedness)]
    if bad:
        raise ValueError(f"relatedness_explorer: entries {bad} are not Relatedness objects")
    return tables


def _describe_table(rel: Relatedness) -> str:
    lines = [f"<b>{html.escape(rel.name)}</b>: {len(rel.classes)} classes x {len(rel.attributes)} attributes"
             f"{', with intervals' if rel.ci_low is not None else ''}"]
    if rel.citation:
        lines.append(f"source: {html.escape(rel.citation)}")
    for cls in rel.uncertain:
        note = rel.notes.get(cls, "")
        lines.append(f"uncertain: {html.escape(cls)}{' (' + html.escape(note) + ')' if note else ''}")
    return "<br>".join(lines)


def relatedness_explorer(rels: Relatedness | Mapping[str, Relatedness] | Sequence[Relatedness],
                         interactive: bool | None = None):
    """Browse relatedness tables (METHOD.md §2; P1 §3-4: prior, estimated, compound): a table dropdown and a
    class dropdown; "(all classes)" shows the heatmap, a class shows its row as bars next to the same class in
    the other tables (``plots.relatedness_profile``). ``rels``: one table, name -> table, or a list (keyed by
    name). Returns an ``ipywidgets.VBox``, or in the fallback :class:`Figures` with one heatmap per table."""
    tables = _tables(rels)
    if not use_widgets(interactive):
        return Figures(plots.relatedness_heatmap(rel, title=name) for name, rel in tables.items())
    w = _ipywidgets()
    first = next(iter(tables.values()))
    table = w.Dropdown(options=list(tables), description="table")
    cls = w.Dropdown(options=[ALL_CLASSES, *first.classes], description="class")
    image = w.Image(format="png")
    info = w.HTML()
    updating = [False]

    def render(*_) -> None:
        if updating[0]:
            return
        rel = tables[table.value]
        if cls.value == ALL_CLASSES:
            fig = plots.relatedness_heatmap(rel, title=table.value)
        else:
            others = [r for name, r in tables.items() if name != table.value and cls.value in r.classes]
            fig = plots.relatedness_profile([rel, *others], cls.value)
        image.value = _png(fig)
        info.value = _describe_table(rel)

    def on_table(_) -> None:
        rel = tables[table.value]
        keep = cls.value if cls.value in rel.classes else ALL_CLASSES
        updating[0] = True
        try:
            cls.options = [ALL_CLASSES, *rel.classes]
            cls.value = keep
        finally:
            updating[0] = False
        render()

    table.observe(on_table, names="value")
    cls.observe(render, names="value")
    render()
    return w.VBox([w.HBox([table, cls]), image, info])


# ---------------------------------------------------------------------------------------------- samples
def _short_list(names: Sequence[str]) -> str:
    if not names:
        return "none"
    more = len(names) - MAX_ACTIVE
    return ", ".join(names[:MAX_ACTIVE]) + (f", +{more} more" if more > 0 else "")


def _truth(task: Task, row: pd.Series) -> str:
    if task.kind == "multiclass":
        value = row[task.name]
        return "—" if pd.isna(value) else task.labels[int(value)]
    values = pd.to_numeric(row[list(task.labels)], errors="coerce").astype("float64")
    if values.isna().all():
        return "—"
    if task.kind == "regression":
        return ", ".join("—" if np.isnan(v) else f"{v:+.2f}" for v in values)
    text = _short_list([lab for lab, v in values.items() if v == 1])
    missing = int(values.isna().sum())
    return text + (f" ({missing} unlabelled)" if missing else "")


def _prediction(task: Task, pred: np.ndarray, threshold: float = 0.5) -> str:
    pred = np.asarray(pred, dtype=float)
    if task.kind == "multiclass":
        if pred.ndim == 0:
            return task.labels[int(pred)]
        k = int(pred.argmax())
        return f"{task.labels[k]} ({pred[k]:.2f})"
    if task.kind == "regression":
        return ", ".join(f"{v:+.2f}" for v in pred)
    return _short_list([lab for lab, p in zip(task.labels, pred) if p >= threshold])


def _check_samples(images, table, predictions, tasks):
    if table is None and hasattr(images, "table") and hasattr(images, "images"):
        images, table = images.images, images.table
    if table is None:
        raise ValueError("sample_browser needs a table (or a Source as first argument)")
    images = np.asarray(images)
    table = table.reset_index(drop=True)
    if images.ndim != 4 or len(images) != len(table):
        raise ValueError(f"images must be (N, H, W, C) with N = {len(table)} table rows, got {images.shape}")
    if tasks is None:
        tasks = [t for t in FACE_TASKS if all(c in table.columns for c in t.columns)]
    tasks = list(tasks)
    for task in tasks:
        missing = [c for c in task.columns if c not in table.columns]
        if missing:
            raise KeyError(f"task {task.name!r}: columns {missing} not in the table")
    predictions = dict(predictions or {})
    names = {t.name for t in tasks}
    for name, pred in predictions.items():
        if name not in names:
            raise KeyError(f"predictions for unknown task {name!r}; tasks are {sorted(names)}")
        if len(pred) != len(table):
            raise ValueError(f"predictions[{name!r}] has {len(pred)} rows, the table {len(table)}")
    return images, table, predictions, tasks


def _sample_lines(table: pd.DataFrame, i: int, tasks: Sequence[Task],
                 predictions: Mapping[str, np.ndarray] | None = None) -> list[str]:
    """Text lines describing sample ``i``: one per task, ``task: label`` and ``-> prediction`` when given."""
    row = table.iloc[i]
    lines = []
    for task in tasks:
        line = f"{task.name}: {_truth(task, row)}"
        if predictions and task.name in predictions:
            line += f" → {_prediction(task, predictions[task.name][i])}"
        lines.append(line)
    return lines


def _header(table: pd.DataFrame, i: int) -> str:
    where = " ".join(str(table.iloc[i][c]) for c in ("source", "split") if c in table.columns)
    return f"#{i} {where}".strip()


def _sample_grid(images: np.ndarray, table: pd.DataFrame, tasks: Sequence[Task],
                 predictions: Mapping[str, np.ndarray], n: int, ncols: int) -> Figure:
    n = min(n, len(images))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    captions = ["\n".join(textwrap.fill(line, CAPTION_WIDTH, subsequent_indent="    ")
                          for line in _sample_lines(table, k, tasks, predictions)) for k in range(n)]
    lines = max(c.count("\n") + 1 for c in captions)
    fig, axes = plots.subplots(nrows, ncols, figsize=(3.0 * ncols, (2.6 + 0.15 * lines) * nrows),
                               layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        ax.grid(False)
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_visible(False)
            continue
        img = images[k]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=255)
        ax.set_title(_header(table, k), fontsize=9)
        ax.set_xlabel(captions[k], fontsize=8, loc="left")
    fig.suptitle("samples: label → prediction" if predictions else "samples: labels")
    return fig


def _image_png(img: np.ndarray, min_size: int = 160) -> bytes:
    from PIL import Image

    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    scale = max(1, -(-min_size // max(pil.size)))
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _sample_html(table: pd.DataFrame, i: int, tasks: Sequence[Task],
                 predictions: Mapping[str, np.ndarray]) -> str:
    row = table.iloc[i]
    cells = ""
    for t in tasks:
        cells += f"<tr><td><b>{html.escape(t.name)}</b></td><td>{html.escape(_truth(t, row))}</td>"
        if predictions:
            pred = _prediction(t, predictions[t.name][i]) if t.name in predictions else "—"
            cells += f"<td>{html.escape(pred)}</td>"
        cells += "</tr>"
    head = "<tr><th>task</th><th>label</th>" + ("<th>prediction</th>" if predictions else "") + "</tr>"
    return f"<b>{html.escape(_header(table, i))}</b><table>{head}{cells}</table>"


def sample_browser(images, table: pd.DataFrame | None = None, predictions: Mapping[str, np.ndarray] | None = None,
                   tasks: Sequence[Task] | None = None, interactive: bool | None = None, n: int = 16,
                   ncols: int = 4):
    """Look at samples with their labels and predictions (DESIGN.md data flow: canonical table + images).

    ``images``: uint8 ``(N, H, W, C)`` with ``table`` row i <-> image i, or a ``Source`` (then no table).
    ``predictions``: task name -> array with one row per sample (``train.predict``: class probabilities,
    attribute probabilities thresholded at 0.5, regression values; multiclass codes ``(N,)`` also work).
    ``tasks`` default: the face tasks whose columns are in the table. Interactive: a slider over samples, the
    image and a label / prediction table. Fallback: :class:`Figures` with a grid of the first ``n`` samples.
    """
    images, table, predictions, tasks = _check_samples(images, table, predictions, tasks)
    if len(images) == 0:
        raise ValueError("sample_browser: no samples")
    if not use_widgets(interactive):
        return Figures([_sample_grid(images, table, tasks, predictions, n, ncols)])
    w = _ipywidgets()
    slider = w.IntSlider(value=0, min=0, max=len(images) - 1, description="sample", continuous_update=False)
    image = w.Image(format="png")
    text = w.HTML()

    def render(*_) -> None:
        i = slider.value
        image.value = _image_png(images[i])
        text.value = _sample_html(table, i, tasks, predictions)

    slider.observe(render, names="value")
    render()
    return w.VBox([slider, w.HBox([image, text])])
