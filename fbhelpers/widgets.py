"""Optional ipywidgets explorers, each with a plain-output fallback (docs/design.md#notebooks: widgets never required).

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


class _Updating:
    """An explorer's guard: inside ``with updating:`` its render callback returns at once, so that several controls
    reset together (a dropdown's options, a slider's range) render once, after."""

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> "_Updating":
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False

    def restart(self, slider, n: int) -> None:
        """``slider`` over ``n`` items (0 .. n - 1; 0 .. 0 when none), back at the first, without rendering."""
        with self:
            slider.max = max(0, n - 1)
            slider.value = 0


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
    """Browse relatedness tables (docs/method.md#relatedness; P1 §3-4: prior, estimated, compound): a table dropdown and
    a class dropdown; "(all classes)" shows the heatmap, a class shows its row as bars next to the same class in
    the other tables (``plots.relatedness_profile``: attributes in canonical order, AUs by number, blank where a
    table lacks one; each table labelled as in the dropdown, in one colour for the explorer's life, the selected
    one edged in black). ``rels``: one table, name -> table, or a list (keyed by
    name). Returns an ``ipywidgets.VBox``, or in the fallback :class:`Figures` with one heatmap per table."""
    tables = _tables(rels)
    if not use_widgets(interactive):
        return Figures(plots.relatedness_heatmap(rel, title=name) for name, rel in tables.items())
    w = _ipywidgets()
    first = next(iter(tables.values()))
    names = list(tables)
    colors = [f"C{k % 10}" for k in range(len(names))]
    table = w.Dropdown(options=names, description="table")
    cls = w.Dropdown(options=[ALL_CLASSES, *first.classes], description="class")
    image = w.Image(format="png")
    info = w.HTML()
    updating = _Updating()

    def render(*_) -> None:
        if updating.active:
            return
        rel = tables[table.value]
        if cls.value == ALL_CLASSES:
            fig = plots.relatedness_heatmap(rel, title=table.value)
        else:  # every table in the dropdown's order, labels and colours fixed for the explorer's life
            fig = plots.relatedness_profile(list(tables.values()), cls.value, labels=names, colors=colors,
                                            selected=names.index(table.value),
                                            title=f"relatedness profile of {cls.value!r} (edged: {table.value})")
        image.value = _png(fig)
        info.value = _describe_table(rel)

    def on_table(_) -> None:
        rel = tables[table.value]
        keep = cls.value if cls.value in rel.classes else ALL_CLASSES
        with updating:
            cls.options = [ALL_CLASSES, *rel.classes]
            cls.value = keep
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
    ncols = max(1, min(ncols, n, int(plots.MAX_WIDTH // 3.0)))  # 3 in per caption: at most MAX_WIDTH wide
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
    """Look at samples with their labels and predictions (docs/design.md#data-flow: canonical table + images).

    ``images``: uint8 ``(N, H, W, C)`` with ``table`` row i <-> image i, or a ``Source`` (then no table).
    ``predictions``: task name -> array with one row per sample (``train.predict``: class probabilities,
    attribute probabilities thresholded at 0.5, regression values; multiclass codes ``(N,)`` also work).
    ``tasks`` default: the face tasks whose columns are in the table. Interactive: a slider over samples, the
    image and a label / prediction table. Fallback: :class:`Figures` with a grid of the first ``n`` samples,
    at most three columns (``plots.MAX_WIDTH``, JupyterLab's output width) whatever ``ncols`` asks.
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


class Views(Figures):
    """Static fallback output of figures and tables (DataFrames); as a cell's value it displays each in turn."""


def _html_table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.round(digits).to_html(border=0)


# ---------------------------------------------------------------------------------------------- 00: DM by hand
DM_HEADS = ("untrained (all 0.5)", "trained-looking (a happiness face)")


def _renormalise(weights: Sequence[float]) -> np.ndarray:
    """Slider weights -> probabilities summing to 1 (uniform when every weight is 0)."""
    w = np.clip(np.asarray(weights, dtype=float), 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


def dm_head(rel: Relatedness, head: str) -> np.ndarray:
    """A fixed AU head for the DM explorer: ``DM_HEADS[0]`` outputs 0.5 everywhere (logits 0); ``DM_HEADS[1]``
    looks trained on a happiness face: the table's happiness row clipped to [0.05, 0.95]."""
    if head == DM_HEADS[0]:
        return np.full(len(rel.attributes), 0.5)
    if head == DM_HEADS[1]:
        row = "happiness" if "happiness" in rel.classes else rel.classes[0]
        return np.clip(rel.table.loc[row].to_numpy(dtype=float), 0.05, 0.95)
    raise ValueError(f"head must be one of {DM_HEADS}, got {head!r}")


def dm_terms(p_class: Sequence[float], rel: Relatedness, au_probs: Sequence[float],
             reduction: str = "mean") -> dict:
    """The coupling terms of ONE face (P0/P1 §3.2; ``losses``): q = p(c|x) · R, DM class -> AU with
    ``reduction`` between q and the AU head's ``au_probs``, and co-annotation class -> AU (soft and hard) for
    the face labelled with its most probable expression and no AU label. Returns ``q`` and the three losses."""
    import torch

    from . import losses

    p = torch.tensor(np.asarray(p_class, dtype=float))[None]
    a = torch.tensor(np.clip(np.asarray(au_probs, dtype=float), 1e-6, 1 - 1e-6))[None]
    class_logits, au_logits = torch.log(p.clamp(min=1e-12)), torch.logit(a)
    r = losses.relatedness_tensor(rel, class_logits)
    target = p.argmax(dim=1)
    no_au = torch.zeros_like(a, dtype=torch.bool)

    def coann(mode: str) -> float:
        return float(losses.co_annotation(class_logits, au_logits, target, torch.ones(1, dtype=torch.bool),
                                          torch.zeros_like(a), no_au, r, mode=mode, direction="class_to_attr"))

    dm = losses.distribution_matching(class_logits, au_logits, r, direction="class_to_attr", reduction=reduction)
    return {"q": (p @ r)[0].numpy(), f"DM class → AU ({reduction})": float(dm),
            "co-annotation soft": coann("soft"), "co-annotation hard": coann("hard")}


def _dm_loss_frame(terms: Mapping) -> pd.DataFrame:
    return pd.Series({k: v for k, v in terms.items() if k != "q"}, name="loss").to_frame()


def _dm_figure(p: np.ndarray, rel: Relatedness, au_probs: np.ndarray, table: str, head: str) -> Figure:
    q = p @ rel.table.to_numpy(dtype=float)
    top = ", ".join(f"{c} {v:.2f}" for c, v in sorted(zip(rel.classes, p), key=lambda t: -t[1])[:3])
    fig = plots.distribution_match(q, au_probs, list(rel.attributes), figsize=(7.5, 3.6),
                                   title=f"{table}; AU head {head.split(' (')[0]}\np(c|x): {top}")
    return fig


def dm_explorer(tables: Relatedness | Mapping[str, Relatedness], probs: Sequence[float] | None = None,
                interactive: bool | None = None):
    """Distribution matching by hand on one face (notebook 00): sliders for the face's expression
    probabilities (renormalised to sum to 1), a table dropdown, the AU head (:data:`DM_HEADS`) and the DM
    reduction. Shows q = p(c|x) · R (blue) against the AU head (orange) and the loss terms of :func:`dm_terms`.
    ``probs`` default: uniform. Fallback: :class:`Views` with that figure and the loss table for the defaults."""
    tables = _tables(tables)
    first = next(iter(tables.values()))
    start = _renormalise(np.ones(len(first.classes)) if probs is None else probs)
    if not use_widgets(interactive):
        name, head = next(iter(tables)), DM_HEADS[0]
        au = dm_head(first, head)
        return Views([_dm_figure(start, first, au, name, head), _dm_loss_frame(dm_terms(start, first, au))])
    w = _ipywidgets()
    sliders = [w.FloatSlider(value=float(v), min=0.0, max=1.0, step=0.01, description=c, continuous_update=False)
               for c, v in zip(first.classes, start)]
    table = w.Dropdown(options=list(tables), description="table")
    head = w.Dropdown(options=list(DM_HEADS), description="AU head")
    reduction = w.ToggleButtons(options=["mean", "sum"], description="DM reduction")
    image, info = w.Image(format="png"), w.HTML()

    def render(*_) -> None:
        rel = tables[table.value]
        p = _renormalise([s.value for s in sliders])
        au = dm_head(rel, head.value)
        image.value = _png(_dm_figure(p, rel, au, table.value, head.value))
        norm = pd.Series(p, index=list(rel.classes), name="p(c|x)").to_frame().T
        info.value = (f"<b>renormalised</b>{_html_table(norm, 2)}<b>losses</b>"
                      f"{_html_table(_dm_loss_frame(dm_terms(p, rel, au, reduction.value)), 4)}")

    for control in (*sliders, table, head, reduction):
        control.observe(render, names="value")
    render()
    return w.VBox([w.HBox([w.VBox(sliders), w.VBox([table, head, reduction, info])]), image])


# ---------------------------------------------------------------------------------------------- 02: face browser
BROWSER_VARIANTS = {"st": "ST", "mt": "MT", "mt_dm": "MT + DM"}


def variant_predictions(models: Mapping[tuple, object], sources: Mapping[str, object], seed: int,
                        variants: Mapping[str, str] | None = None, device: str = "auto") -> dict:
    """Predictions of the networks kept by ``experiments.compare_coupling(..., keep_models=True)`` (its
    ``.models``, keys ``(variant, seed, tasks)``; ST has one network per task) on every source: ``{label: {source:
    {task: array}}}``."""
    from . import train

    out: dict = {}
    for variant, label in (variants or BROWSER_VARIANTS).items():
        nets = [m for (v, s, _), m in models.items() if v == variant and s == seed]
        if not nets:
            raise KeyError(f"no network of variant {variant!r} and seed {seed} in models")
        out[label] = {name: {task: pred for net in nets
                             for task, pred in train.predict(net, src, device=device).items()}
                      for name, src in sources.items()}
    return out


def unlabelled_active(table: pd.DataFrame, unlabelled: Sequence[str]) -> np.ndarray:
    """Rows whose true label of at least one AU in ``unlabelled`` (no training source labels it) is 1."""
    cols = [a for a in unlabelled if a in table.columns]
    if not cols:
        return np.zeros(len(table), dtype=bool)
    values = table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return (np.nan_to_num(values, nan=0.0) >= 0.5).any(axis=1)


def _source_tasks(table: pd.DataFrame) -> list[Task]:
    """The face tasks whose columns the table has and labels at least one row of."""
    return [t for t in FACE_TASKS if all(c in table.columns for c in t.columns) and table[list(t.columns)].notna()
            .to_numpy().any()]


def _face_rows(table: pd.DataFrame, i: int, preds: Mapping[str, Mapping[str, np.ndarray]]) -> list[list[str]]:
    """One row per labelled task: task, true label, then each variant's prediction."""
    row = table.iloc[i]
    return [[t.name, _truth(t, row), *(_prediction(t, p[t.name][i]) if t.name in p else "—" for p in preds.values())]
            for t in _source_tasks(table)]


def _face_gallery(images: np.ndarray, table: pd.DataFrame, index: np.ndarray,
                  preds: Mapping[str, Mapping[str, np.ndarray]], title: str, ncols: int = 4) -> Figure:
    n = max(1, len(index))
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    captions = []
    for i in index:
        lines = []
        for task, truth, *guess in _face_rows(table, i, preds):
            lines.append(f"{task} label: {truth}")
            lines += [f"  {label}: {g}" for label, g in zip(preds, guess)]
        captions.append("\n".join(textwrap.fill(x, 34, subsequent_indent="      ") for x in lines))
    lines = max([c.count("\n") + 1 for c in captions] or [1])
    fig, axes = plots.subplots(nrows, ncols, figsize=(min(2.5, plots.MAX_WIDTH / ncols) * ncols,
                                                      (2.2 + 0.16 * lines) * nrows),
                               layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        ax.grid(False)
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(index):
            ax.set_visible(False)
            if not len(index) and k == 0:
                ax.set_visible(True)
                ax.text(0.5, 0.5, "no face matches", ha="center", va="center", transform=ax.transAxes)
            continue
        img = images[index[k]]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=255)
        ax.set_title(_header(table, index[k]), fontsize=9)
        ax.set_xlabel(captions[k], fontsize=8, loc="left")
    fig.suptitle(title, y=0.995, va="top")
    fig.get_layout_engine().set(rect=(0, 0, 1, 0.94))
    return fig


def _face_html(table: pd.DataFrame, i: int, preds: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    head = "".join(f"<th>{html.escape(x)}</th>" for x in ("task", "label", *preds))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>"
                   for row in _face_rows(table, i, preds))
    return f"<b>{html.escape(_header(table, i))}</b><table><tr>{head}</tr>{body}</table>"


def face_browser(sources: Mapping[str, object], predictions: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
                 unlabelled: Sequence[str] = (), interactive: bool | None = None, n: int = 4,
                 only_unlabelled: bool = True):
    """Browse test faces (notebook 02): image, true labels and each variant's prediction side by side.

    ``sources``: test set name -> ``Source``; ``predictions``: variant label -> source -> task -> array (one row
    per face; :func:`variant_predictions`). ``unlabelled``: AUs no training source labels; the filter keeps only
    faces on which one of them is truly active (:func:`unlabelled_active`). Interactive: a test-set dropdown,
    the filter checkbox and a face slider. Fallback: :class:`Figures`, one gallery of the first ``n`` faces per
    test set (filtered when ``only_unlabelled`` and the set has such faces)."""
    sources = dict(sources)
    data = {name: (np.asarray(src.images), src.table.reset_index(drop=True)) for name, src in sources.items()}
    preds = {name: {label: p[name] for label, p in predictions.items()} for name in sources}

    def chosen(name: str, only: bool) -> np.ndarray:
        table = data[name][1]
        return np.flatnonzero(unlabelled_active(table, unlabelled)) if only else np.arange(len(table))

    if not use_widgets(interactive):
        figs = []
        for name in sources:
            index = chosen(name, only_unlabelled)
            only = only_unlabelled and len(index) > 0
            index = (index if only else chosen(name, False))[:n]
            what = "faces with an unlabelled AU active" if only else "first faces"
            figs.append(_face_gallery(data[name][0], data[name][1], index, preds[name], f"{name} test: {what}"))
        return Figures(figs)
    w = _ipywidgets()
    source = w.Dropdown(options=list(sources), description="test set")
    only = w.Checkbox(value=False, description="only faces where an AU no source labels is active", indent=False,
                      layout=w.Layout(width="auto"))
    face = w.IntSlider(value=0, min=0, max=0, description="face", continuous_update=False)
    image, text = w.Image(format="png"), w.HTML()
    updating = _Updating()

    def render(*_) -> None:
        if updating.active:
            return
        index = chosen(source.value, only.value)
        if not len(index):
            image.value, text.value = b"", "<i>no face of this test set matches the filter</i>"
            return
        images, table = data[source.value]
        i = int(index[min(face.value, len(index) - 1)])
        image.value = _image_png(images[i])
        text.value = f"{len(index)} faces; " + _face_html(table, i, preds[source.value])

    def on_filter(*_) -> None:
        updating.restart(face, len(chosen(source.value, only.value)))
        render()

    source.observe(on_filter, names="value")
    only.observe(on_filter, names="value")
    face.observe(render, names="value")
    on_filter()
    return w.VBox([w.HBox([source, only]), face, w.HBox([image, text])])


# ---------------------------------------------------------------------------------------------- 05: compound faces
def compound_scores(au_probs: Sequence[float], rel: Relatedness, scorings: Sequence[str] | None = None) -> pd.DataFrame:
    """Scores of ONE face's AU probabilities against every class of ``rel`` under each scoring rule
    (``zeroshot.zero_shot_scores``): classes x rules."""
    from . import zeroshot

    p = np.asarray(au_probs, dtype=float)[None]
    profiles = rel.table.to_numpy(dtype=float)
    return pd.DataFrame({s: zeroshot.zero_shot_scores(p, profiles, s)[0] for s in (scorings or zeroshot.SCORINGS)},
                        index=list(rel.classes))


def _compound_figure(au_probs: np.ndarray, rel: Relatedness, true_class: str, title: str) -> Figure:
    """Top: the face's AU probabilities; below: each class's AU set, its cells coloured by those probabilities."""
    profiles = rel.table.to_numpy(dtype=float)
    k, c = len(rel.attributes), len(rel.classes)
    fig, axes = plots.subplots(2, 1, figsize=(8.0, 2.0 + 0.3 * c), layout="constrained",
                               gridspec_kw={"height_ratios": [1.2, 0.3 * c]}, sharex=True)
    top, grid = axes[0, 0], axes[1, 0]
    top.bar(np.arange(k), au_probs, color="C1")
    top.set_ylim(0, 1)
    top.set_ylabel("p(AU)")
    top.set_title(title)
    shown = np.where(profiles > 0, au_probs[None, :], np.nan)
    image = grid.imshow(shown, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    rows, cols = np.nonzero(profiles > 0)
    for r, j in zip(rows, cols):
        grid.text(j, r, f"{au_probs[j]:.1f}", ha="center", va="center", fontsize=8,
                  color="black" if au_probs[j] > 0.5 else "white")
    grid.set_yticks(np.arange(c), [f"▶ {n}" if n == true_class else n for n in rel.classes], fontsize=9)
    grid.set_xticks(np.arange(k), list(rel.attributes), rotation=90, fontsize=9)
    grid.grid(False)
    grid.set_title("each class's AU set, coloured by the face's p(AU) (▶ the true class)", fontsize=9)
    fig.colorbar(image, ax=list(axes[:, 0]), shrink=0.6, label="p(AU)")
    return fig


def _compound_label(rel: Relatedness, labels: np.ndarray, i: int) -> str:
    return rel.classes[int(labels[i])]


def _scores_marked(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores rounded, with each rule's winner marked."""
    out = scores.round(3).astype(str)
    for col in scores:
        out.loc[scores[col].idxmax(), col] += " ◀"
    return out


def compound_explorer(au_probs: np.ndarray, rel: Relatedness, labels: Sequence[int], interactive: bool | None = None,
                      n_classes: int = 3):
    """Zero-shot on compound faces (notebook 05): pick a compound class and one of its test faces; see the
    trained network's AU probabilities against each class's AU set (``rel``, the compound table) and the score
    of every class under each rule of ``zeroshot.zero_shot_scores`` (the winner marked ◀). ``au_probs``:
    ``(N, K)``; ``labels``: class codes (rows of ``rel``). Fallback: :class:`Views` with the figure and the
    score table for the first face of the first ``n_classes`` classes present."""
    au_probs, labels = np.asarray(au_probs, dtype=float), np.asarray(labels, dtype=int)
    if au_probs.ndim != 2 or len(au_probs) != len(labels) or au_probs.shape[1] != len(rel.attributes):
        raise ValueError(f"au_probs must be (N, {len(rel.attributes)}) with N = {len(labels)} labels, "
                         f"got {au_probs.shape}")
    present = [c for c in range(len(rel.classes)) if (labels == c).any()]
    if not present:
        raise ValueError("compound_explorer: no faces")

    def title(i: int) -> str:
        return f"face #{i}, true class {_compound_label(rel, labels, i)}"

    if not use_widgets(interactive):
        views = []
        for c in present[:n_classes]:
            i = int(np.flatnonzero(labels == c)[0])
            views += [_compound_figure(au_probs[i], rel, rel.classes[c], title(i)),
                      _scores_marked(compound_scores(au_probs[i], rel)).rename_axis(title(i))]
        return Views(views)
    w = _ipywidgets()
    cls = w.Dropdown(options=[(rel.classes[c], c) for c in present], description="class")
    face = w.IntSlider(value=0, min=0, max=0, description="face", continuous_update=False)
    image, table = w.Image(format="png"), w.HTML()
    updating = _Updating()

    def render(*_) -> None:
        if updating.active:
            return
        i = int(np.flatnonzero(labels == cls.value)[face.value])
        image.value = _png(_compound_figure(au_probs[i], rel, rel.classes[cls.value], title(i)))
        table.value = f"<b>{html.escape(title(i))}</b>{_scores_marked(compound_scores(au_probs[i], rel)).to_html()}"

    def on_class(*_) -> None:
        updating.restart(face, int((labels == cls.value).sum()))
        render()

    cls.observe(on_class, names="value")
    face.observe(render, names="value")
    on_class()
    return w.VBox([w.HBox([cls, face]), w.HBox([image, table])])
