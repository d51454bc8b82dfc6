"""Seaborn / matplotlib figures used by the notebooks (docs/method.md#relatedness,
docs/method.md#zero-shot-and-few-shot, docs/method.md#measuring-the-claims).

Every function returns a :class:`matplotlib.figure.Figure` and works headless (Agg). Figures a function creates
itself are never registered with pyplot (built as ``matplotlib.figure.Figure``), so a notebook shows each one exactly
once (as the cell's value or via ``display(fig)``) and loops do not pile up open figures; where a function takes
``ax``, it draws into that axes and returns its figure untouched. :func:`save` writes a PNG.
Paper references: P0 = arXiv 1910.11111, P1 = arXiv 2105.03790, P2 = arXiv 2401.01219, DU = Du et al. PNAS 2014.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.metrics import confusion_matrix

from .metrics import ccc
from .relatedness import Comparison, Relatedness, compare

DPI = 120
MAX_ANNOT = (20, 30)  # (classes, attributes) up to which heatmap cells are annotated
MAX_TICKS = 40  # tick labels per heatmap axis before subsampling
MAX_LABEL = 30  # characters of a tick label before it is shortened with "…"
UNCERTAIN_MARK = " *"
MAX_WIDTH = 9.6  # inches: JupyterLab's ~1,000 px output column at 100 dpi, less the saved figure's 0.1 in padding
_NON_LOSS = ("step", "lr", "images_per_s", "epoch", "time")


def style() -> None:
    """The one theme of every figure: ``sns.set_theme(context="notebook", style="whitegrid")``."""
    sns.set_theme(context="notebook", style="whitegrid")


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG at ``dpi``; parent folders are created and ``.png`` is appended unless ``path`` already
    ends with it. Returns the path written."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path


_GRID_KW = ("sharex", "sharey", "width_ratios", "height_ratios", "subplot_kw", "gridspec_kw")
# pyplot's backend loaded once, as pyplot does at its first figure (matplotlib is pinned): in a notebook this is the
# inline backend, which registers how a Figure is shown; our figures themselves never pass through pyplot, so none
# can be shown half-built or twice, e.g. by a widget callback running beside a cell
plt._get_backend_mod()


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8),
             **kw) -> tuple[Figure, np.ndarray]:
    """A styled figure with a 2-D array of axes (as ``plt.subplots(..., squeeze=False)``), never registered with
    pyplot (see the module docstring): no backend tracks or shows it, not even one made in a widget callback."""
    style()
    grid = {k: kw.pop(k) for k in _GRID_KW if k in kw}
    fig = Figure(figsize=figsize, **kw)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **grid)


def _one(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        style()
        return ax.figure, ax
    fig, axes = subplots(figsize=figsize)
    return fig, axes[0, 0]


def _finish(fig: Figure, own: bool) -> Figure:
    if own:
        fig.tight_layout()
    return fig


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"


def _xticks(ax: Axes, positions, labels: Sequence[str], fontsize: float | None = None) -> None:
    """x tick labels, horizontal when the longest fits between two ticks (estimated from the axes width and
    the font size), vertical otherwise."""
    ax.set_xticks(positions, labels, fontsize=fontsize)
    size = ax.get_xticklabels()[0].get_fontsize() if labels else 10.0
    x0, x1 = ax.get_xlim()
    inches = ax.get_position().width * ax.figure.get_figwidth()
    spacing = inches * (positions[1] - positions[0]) / abs(x1 - x0) if len(positions) > 1 else inches
    text = max((len(x) for x in labels), default=0) * 0.6 * size / 72
    if text > 0.85 * spacing:
        plt.setp(ax.get_xticklabels(), rotation=90)


def _rotate(ax: Axes, labels: Sequence[str], limit: int = 8) -> None:
    """Rotate x tick labels when there are many or long ones."""
    if len(labels) > limit or max((len(str(x)) for x in labels), default=0) * len(labels) > 60:
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")


# ---------------------------------------------------------------------------------------------- relatedness
def _tick_labels(names: Sequence[str], marked: Sequence[str] = ()) -> tuple[list[float], list[str]]:
    """Tick positions (cell centres) and labels, subsampled to at most ``MAX_TICKS``; marked names get '*'."""
    step = max(1, math.ceil(len(names) / MAX_TICKS))
    idx = range(0, len(names), step)
    return [i + 0.5 for i in idx], [f"{_short(names[i])}{UNCERTAIN_MARK if names[i] in marked else ''}"
                                    for i in idx]


def _heatmap(frame: pd.DataFrame, ax: Axes, *, annot: bool, cmap: str, vmin: float, vmax: float,
             marked: Sequence[str] = (), cbar_label: str = "") -> None:
    rows, cols = frame.shape
    show = annot and rows <= MAX_ANNOT[0] and cols <= MAX_ANNOT[1]
    text = np.where(frame.to_numpy() == 0, "", np.char.mod("%.2f", frame.to_numpy())) if show else False
    sns.heatmap(frame, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, annot=text, fmt="",
                annot_kws={"fontsize": 7 if cols > 12 else 8}, linewidths=0.4 if show else 0, linecolor="white",
                cbar_kws={"label": cbar_label, "shrink": 0.8}, xticklabels=False, yticklabels=False)
    xt, xl = _tick_labels([str(c) for c in frame.columns])
    yt, yl = _tick_labels([str(c) for c in frame.index], marked)
    small = 8 if max(rows, cols) > 20 else 9
    _xticks(ax, xt, xl, fontsize=small)
    ax.set_yticks(yt, yl, rotation=0, fontsize=small)
    ax.set_xlabel(frame.columns.name or "attribute")
    ax.set_ylabel(frame.index.name or "class")
    ax.grid(False)


def _heat_size(rows: int, cols: int) -> tuple[float, float]:
    return min(MAX_WIDTH, 2.8 + 0.42 * cols), min(12.0, 1.6 + 0.36 * rows)


def _uncertain_note(rel: Relatedness) -> str:
    return f"  (* uncertain: {len(rel.uncertain)})" if rel.uncertain else ""


def relatedness_heatmap(rel: Relatedness, ax: Axes | None = None, annot: bool = True, title: str | None = None,
                        cmap: str = "Blues", figsize: tuple[float, float] | None = None) -> Figure:
    """Heatmap of p(attribute | class) (docs/method.md#relatedness; the expression -> AU tables of DU Table 1 /
    P1 §3-4, or CUB's 200 x 312 class-attribute table of P2). Cells carry 2-decimal values (exact zeros left blank) when
    ``annot`` and the table is at most ``MAX_ANNOT`` = 20 x 30; larger tables get no annotations and at most
    ``MAX_TICKS`` tick labels per axis. Rows in ``rel.uncertain`` are marked with ``*`` in their tick label and
    counted after the title (default ``rel.name``)."""
    own = ax is None
    fig, ax = _one(ax, figsize or _heat_size(*rel.table.shape))
    _heatmap(rel.table, ax, annot=annot, cmap=cmap, vmin=0.0, vmax=1.0, marked=rel.uncertain,
             cbar_label="p(attribute | class)")
    ax.set_title(f"{title or rel.name}{_uncertain_note(rel)}")
    return _finish(fig, own)


def relatedness_comparison(a: Relatedness, b: Relatedness, comparison: Comparison | None = None,
                           layout: str = "auto", annot: bool = True) -> Figure:
    """``a``, ``b`` and their difference a − b (diverging colours centred at 0) on the shared classes and
    attributes: the data-driven vs prior relatedness study of P1 §4. The difference panel's title carries the
    mean absolute difference (and the coverage of b by a's intervals when a has them). ``layout``: ``"row"``
    (side by side), ``"column"`` (stacked) or ``"auto"`` **[choice]**: stacked when the three panels side by side
    would be wider than 10 in (JupyterLab's ~1,000 px output column at 100 dpi), so that annotations stay legible
    at the notebook's width."""
    comp = comparison if comparison is not None else compare(a, b)
    classes, attrs = list(comp.classes), list(comp.attributes)
    if layout not in ("auto", "row", "column"):
        raise ValueError(f"layout must be 'auto', 'row' or 'column', got {layout!r}")
    w, h = _heat_size(len(classes), len(attrs))
    stacked = layout == "column" or (layout == "auto" and 3 * w > 10.0)
    shape, size = ((3, 1), (w, min(3 * h, 24.0))) if stacked else ((1, 3), (min(3 * w, 24.0), h))
    fig, axes = subplots(*shape, figsize=size)
    axes = axes.ravel()
    for ax, rel in zip(axes, (a, b)):
        _heatmap(rel.table.loc[classes, attrs], ax, annot=annot, cmap="Blues", vmin=0.0, vmax=1.0,
                 marked=rel.uncertain, cbar_label="p(attribute | class)")
        ax.set_title(f"{rel.name}{_uncertain_note(rel)}")
    diff = comp.difference
    lim = max(0.05, float(np.abs(diff.to_numpy()).max()))
    _heatmap(diff, axes[2], annot=annot, cmap="RdBu_r", vmin=-lim, vmax=lim, cbar_label="difference")
    cover = f", coverage {comp.coverage:.0%}" if comp.coverage is not None else ""
    axes[2].set_title(f"{a.name} − {b.name}: mean |diff| = {comp.summary:.3f}{cover}")
    return _finish(fig, True)


def estimate_with_ci(rel: Relatedness, classes: Sequence[str] | None = None,
                     attributes: Sequence[str] | None = None, reference: Relatedness | None = None,
                     ncols: int = 2, figsize: tuple[float, float] | None = None) -> Figure:
    """Point estimates of p(attribute | class) with their interval as error bars, one panel per class (the
    data-driven relatedness of P1 §4 with its uncertainty). ``reference`` (e.g. the DU prior) is overlaid as
    red crosses where it has the class and attribute. Classes default to all, attributes to all."""
    classes = list(rel.classes if classes is None else classes)
    attributes = list(rel.attributes if attributes is None else attributes)
    for names, known, what in ((classes, rel.classes, "class"), (attributes, rel.attributes, "attribute")):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise KeyError(f"{what} {unknown[0]!r} is not in {rel.name!r}; it has {list(known)}")
    if not classes or not attributes:
        raise ValueError("estimate_with_ci needs at least one class and one attribute")
    ncols = max(1, min(ncols, len(classes)))
    nrows = math.ceil(len(classes) / ncols)
    width = min(MAX_WIDTH / ncols, 1.5 + 0.32 * len(attributes))
    fig, axes = subplots(nrows, ncols, figsize=figsize or (width * ncols, 2.6 * nrows), sharey=True)
    x = np.arange(len(attributes))
    for k, ax in enumerate(axes.ravel()):
        if k >= len(classes):
            ax.set_visible(False)
            continue
        cls = classes[k]
        est = rel.table.loc[cls, attributes].to_numpy()
        if rel.ci_low is not None:
            lo = rel.ci_low.loc[cls, attributes].to_numpy()
            hi = rel.ci_high.loc[cls, attributes].to_numpy()
            ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", ms=4, capsize=2, lw=1, color="C0",
                        label=f"{rel.name} (interval)")
        else:
            ax.plot(x, est, "o", ms=4, color="C0", label=rel.name)
        if reference is not None and cls in reference.classes:
            shared = [i for i, a in enumerate(attributes) if a in reference.attributes]
            ax.plot(x[shared], reference.table.loc[cls, [attributes[i] for i in shared]].to_numpy(), "x",
                    color="C3", ms=6, mew=1.5, label=reference.name)
        n = f" (n = {int(rel.counts[cls])})" if rel.counts is not None else ""
        ax.set_title(f"{cls}{UNCERTAIN_MARK if cls in rel.uncertain else ''}{n}", fontsize=11)
        ax.set_ylim(-0.05, 1.05)
        step = max(1, math.ceil(len(attributes) / MAX_TICKS))
        _xticks(ax, x[::step], [_short(a) for a in attributes[::step]], fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("p(attr | class)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncols=len(labels), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


_AU_NAME = re.compile(r"AU(\d+)")


def attribute_order(lists: Sequence[Sequence[str]]) -> list[str]:
    """The union of several tables' attribute names in one canonical order: AU names (``AU<k>``) by their
    number, so that an AU only some tables have sits in place rather than after AU26; other names in the first
    table's order, a name the first table lacks placed right after the name that precedes it in its own table."""
    merged: list[str] = []
    for names in lists:
        after = -1
        for name in names:
            if name in merged:
                after = merged.index(name)
            else:
                merged.insert(after + 1, name)
                after += 1
    if merged and all(_AU_NAME.fullmatch(str(n)) for n in merged):
        merged.sort(key=lambda n: int(_AU_NAME.fullmatch(str(n)).group(1)))
    return merged


def relatedness_profile(rels: Relatedness | Sequence[Relatedness], cls: str, ax: Axes | None = None,
                        title: str | None = None, figsize: tuple[float, float] | None = None,
                        labels: Sequence[str] | None = None, colors: Sequence | None = None,
                        selected: int | None = None) -> Figure:
    """One class row, p(attribute | ``cls``), as bars, one bar colour per table (e.g. prior vs estimate of P1 §4),
    with interval error bars where a table has them. Attributes are the union over tables in
    :func:`attribute_order` (AUs by number); a table that lacks an attribute has no bar there. ``labels``: the
    legend label of each table (default its ``name``); ``colors``: each table's bar colour (default C0, C1, ...
    in the order given), so that a caller can keep a table's colour fixed whatever else is shown; ``selected``:
    the index of a table whose bars get a black edge. Tables without ``cls`` are skipped."""
    rels = [rels] if isinstance(rels, Relatedness) else list(rels)
    labels = [r.name for r in rels] if labels is None else list(labels)
    colors = [f"C{k % 10}" for k in range(len(rels))] if colors is None else list(colors)
    if len(labels) != len(rels) or len(colors) != len(rels):
        raise ValueError(f"{len(rels)} tables but {len(labels)} labels and {len(colors)} colours")
    keep = [k for k, r in enumerate(rels) if cls in r.classes]
    if not keep:
        raise KeyError(f"class {cls!r} is in none of the tables")
    attrs = attribute_order([rels[k].attributes for k in keep])
    own = ax is None
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH, 2.5 + 0.4 * len(attrs) * max(1, len(keep) / 2)), 3.8))
    width = 0.8 / len(keep)
    x = np.arange(len(attrs))
    for slot, k in enumerate(keep):
        rel = rels[k]
        have = [i for i, a in enumerate(attrs) if a in rel.attributes]
        names = [attrs[i] for i in have]
        est = rel.table.loc[cls, names].to_numpy()
        err = None
        if rel.ci_low is not None:
            err = [est - rel.ci_low.loc[cls, names].to_numpy(), rel.ci_high.loc[cls, names].to_numpy() - est]
        edge = {"edgecolor": "black", "linewidth": 1.2} if k == selected else {}
        ax.bar(x[have] - 0.4 + width * (slot + 0.5), est, width, yerr=err, capsize=2, color=colors[k],
               label=f"{labels[k]}{UNCERTAIN_MARK if cls in rel.uncertain else ''}", error_kw={"lw": 0.8}, **edge)
    step = max(1, math.ceil(len(attrs) / MAX_TICKS))
    _xticks(ax, x[::step], [_short(a) for a in attrs[::step]])
    ax.set_xlim(-0.6, len(attrs) - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"p(attribute | {cls})")
    ax.set_title(title or f"relatedness profile of {cls!r}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _finish(fig, own)


# ---------------------------------------------------------------------------------------------- results
def convergence_curve(df: pd.DataFrame, x: str = "n", y: str = "error", hue: str | None = None,
                      ax: Axes | None = None, logx: bool | None = None, title: str | None = None,
                      errorbar: str | tuple = "sd", figsize: tuple[float, float] = (6.4, 4.2)) -> Figure:
    """Mean of ``y`` against ``x`` with a band over repeats (``errorbar="sd"`` **[choice]**: ± one standard
    deviation, deterministic), one line per ``hue``: e.g. how many co-annotated samples the data-driven
    relatedness of P1 §4 needs. ``logx=None``: log x axis when x is positive and spans >= 20x."""
    missing = [c for c in (x, y, hue) if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the frame; it has {list(df.columns)}")
    own = ax is None
    fig, ax = _one(ax, figsize)
    sns.lineplot(data=df, x=x, y=y, hue=hue, ax=ax, errorbar=errorbar, marker="o",
                 palette="deep" if hue is not None else None)
    xs = pd.to_numeric(df[x], errors="coerce")
    if logx if logx is not None else bool((xs > 0).all() and xs.max() >= 20 * xs.min()):
        ax.set_xscale("log")
    if hue is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or f"{y} vs {x}")
    return _finish(fig, own)


def _reference_segments(ax: Axes, ticks: Sequence, reference: float | Mapping, label: str,
                        panel: object = None) -> None:
    """Dashed reference level(s): one line across the axes (a number) or one segment per x category (a
    mapping keyed by category, or by (panel, category))."""
    if isinstance(reference, (Mapping, pd.Series)):
        first = True
        for i, cat in enumerate(ticks):
            value = reference.get((panel, cat), reference.get(cat)) if panel is not None else reference.get(cat)
            if value is None or not np.isfinite(value):
                continue
            ax.hlines(value, i - 0.45, i + 0.45, colors="black", linestyles="--", lw=1.4,
                      label=label if first else None, zorder=5)
            first = False
    else:
        ax.axhline(float(reference), color="black", ls="--", lw=1.4, label=label, zorder=5)


def comparison_bars(results: pd.DataFrame, metric: str | Mapping[str, str], hue: str = "variant", x: str = "task",
                    col: str | None = "source", reference: float | Mapping | None = None,
                    reference_label: str = "best ST", order: Sequence[str] | None = None,
                    hue_order: Sequence[str] | None = None, annotate: bool = False, title: str | None = None,
                    figsize: tuple[float, float] | None = None) -> Figure:
    """Grouped bars of mean ± std over seeds, from a tidy frame (variant, seed, source, task, metric, value):
    the ST vs MT vs MT + coupling comparison of docs/method.md#measuring-the-claims (the negative-transfer tables of P0
    §5 / P1 §4).

    ``metric``: one metric name, or task -> metric (e.g. ``{"expr": "accuracy", "au": "mean_f1",
    "va": "mean_ccc"}``; the x labels then name the metric). ``col``: one panel per value of that column when it
    has several (every test set); None = pool. ``reference``: a dashed level, a number or a mapping keyed by
    x value (or (col value, x value)), e.g. the best ST score per task. ``annotate`` writes the means on the bars.
    Panels wrap into rows so that the figure is at most ``MAX_WIDTH`` wide (JupyterLab's output column); the legend
    sits under them.
    """
    need = [c for c in (hue, x, "metric", "value") if c not in results.columns]
    if need:
        raise KeyError(f"columns {need} not in the results; it has {list(results.columns)}")
    if isinstance(metric, Mapping):
        keep = pd.Series(False, index=results.index)
        for task, m in metric.items():
            keep |= (results[x] == task) & (results["metric"] == m)
        ylabel = "score"
    else:
        keep = results["metric"] == metric
        ylabel = metric
    data = results[keep]
    if data.empty:
        raise ValueError(f"no rows for metric {metric!r}; metrics present: {sorted(results['metric'].unique())}")
    panels = [None]
    if col is not None and col in data.columns and data[col].nunique() > 1:
        panels = list(dict.fromkeys(data[col]))
    order = list(order) if order is not None else list(dict.fromkeys(data[x]))
    hue_order = list(hue_order) if hue_order is not None else list(dict.fromkeys(data[hue]))
    per_group = max(1.0, 0.22 * len(hue_order))
    panel_width = max(3.0, 0.8 + per_group * len(order))
    ncols = max(1, min(len(panels), int(MAX_WIDTH // panel_width)))  # panels wrap into rows of at most MAX_WIDTH
    nrows = math.ceil(len(panels) / ncols)
    size = figsize or (min(MAX_WIDTH, max(4.5, panel_width * ncols + 0.6)), 3.8 * nrows + 0.6)
    fig, axes = subplots(nrows, ncols, figsize=size, sharey=True)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.ravel(), panels):
        sub = data if panel is None else data[data[col] == panel]
        sns.barplot(data=sub, x=x, y="value", hue=hue, order=order, hue_order=hue_order, errorbar="sd",
                    capsize=0.1, err_kws={"linewidth": 1.2}, palette="deep", ax=ax)
        if annotate:
            for container in ax.containers:
                ax.bar_label(container, fmt="%.2f", fontsize=8, label_type="center", color="white")
        if reference is not None:
            _reference_segments(ax, order, reference, reference_label, panel)
        if isinstance(metric, Mapping):
            ax.set_xticks(range(len(order)), [f"{t}\n({metric.get(t, '?')})" for t in order])
        else:
            _rotate(ax, order)
        ax.set_title(f"{col} = {panel}" if panel is not None else (title or ylabel))
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if panels != [None] and title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=min(len(labels), 6),
               frameon=False, title=hue)  # under the panels, so that it adds no width
    return fig


def _checked_highlight(highlight: Sequence[str] | None, labels) -> list[str]:
    """``highlight`` as a list; KeyError naming the names that are not among ``labels``."""
    highlight = list(highlight or [])
    unknown = [h for h in highlight if h not in labels]
    if unknown:
        raise KeyError(f"highlight names {unknown} are not among the labels {list(labels)}")
    return highlight


def per_label_bars(values: Mapping[str, float] | pd.Series, highlight: Sequence[str] | None = None,
                   title: str = "F1 per label", ylabel: str = "F1", ax: Axes | None = None,
                   highlight_label: str = "no training labels", other_label: str = "with training labels",
                   figsize: tuple[float, float] | None = None) -> Figure:
    """One bar per label (e.g. per-AU F1, docs/method.md#metrics), labels in ``highlight`` in a second colour with a
    legend: the AUs that no training set annotates and that are learnt only through the coupling (P0 §5 /
    P1 §4). A dashed line marks the mean over labels with a value; NaN labels are written as n/a."""
    series = pd.Series(values, dtype="float64")
    if series.empty:
        raise ValueError("per_label_bars needs at least one value")
    highlight = _checked_highlight(highlight, series.index)
    own = ax is None
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH, 2.5 + 0.42 * len(series)), 4.0))
    labels = [str(i) for i in series.index]
    colors = ["C1" if lab in highlight else "C0" for lab in series.index]
    x = np.arange(len(series))
    ax.bar(x, series.fillna(0).to_numpy(), color=colors, width=0.7)
    for i in np.flatnonzero(series.isna().to_numpy()):
        ax.text(i, 0.01, "n/a", ha="center", va="bottom", fontsize=9, color="dimgray")
    handles = [Patch(color="C0", label=other_label)]
    if highlight:
        handles.append(Patch(color="C1", label=highlight_label))
    if series.notna().any():
        mean = float(series.mean())
        handles.append(ax.axhline(mean, color="black", ls="--", lw=1.2, label=f"mean = {mean:.3f}"))
    ax.set_xlim(-0.6, len(series) - 0.4)
    _xticks(ax, x, labels, fontsize=9 if len(labels) > 30 else None)
    top = float(series.max()) if series.notna().any() else 1.0
    ax.set_ylim(min(0.0, float(series.min()) if series.notna().any() else 0.0), max(1.0, top) * 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(handles=handles, loc="upper left", ncols=len(handles), frameon=False, fontsize=9)
    return _finish(fig, own)


def confusion(y_true, y_pred, labels: Sequence[str], normalize: bool = True, ax: Axes | None = None,
              title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """Confusion matrix heatmap (rows = true, columns = predicted; docs/method.md#metrics: expression / compound results
    of P1 §4). ``y_pred``: class codes ``(N,)`` or scores ``(N, C)`` (argmax); NaN true labels are skipped.
    ``normalize``: each row divided by its count (recall on the diagonal); the title carries accuracy and UAR."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if p.ndim == 2:
        p = p.argmax(axis=1).astype(float)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true (N,) and y_pred (N,) or (N, C) must match, got {t.shape} and {p.shape}")
    keep = ~np.isnan(t)
    t, p = t[keep].astype(int), p[keep].astype(int)
    k = len(labels)
    codes = np.concatenate([t, p])
    bad = np.unique(codes[(codes < 0) | (codes >= k)])
    if bad.size:
        raise ValueError(f"class codes {bad[:5].tolist()} are outside 0..{k - 1} for labels {list(labels)}")
    counts = confusion_matrix(t, p, labels=np.arange(k))
    acc = float(np.trace(counts) / max(counts.sum(), 1))
    rows = counts.sum(axis=1, keepdims=True)
    recall = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    uar = float(recall.diagonal()[rows.ravel() > 0].mean()) if (rows > 0).any() else float("nan")
    frame = pd.DataFrame(recall if normalize else counts, index=list(labels), columns=list(labels))
    own = ax is None
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH, 2.5 + 0.55 * k), min(MAX_WIDTH, 2.0 + 0.5 * k)))
    sns.heatmap(frame, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, annot=k <= 20,
                fmt=".2f" if normalize else "d", annot_kws={"fontsize": 8 if k > 10 else 9}, square=True,
                cbar_kws={"label": "fraction of true class" if normalize else "count", "shrink": 0.8})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    plt.setp(ax.get_yticklabels(), rotation=0)
    ax.set_title(title or f"confusion (accuracy {acc:.3f}, UAR {uar:.3f})")
    return _finish(fig, own)


def va_scatter(true, pred, labels: Sequence[str] = ("valence", "arousal"),
               figsize: tuple[float, float] = (9.0, 4.4)) -> Figure:
    """True vs predicted valence and arousal, one panel each with the CCC in its title, the identity line and
    limits [-1, 1] (the VA results of P0 §5 / P1 §4). ``true`` / ``pred``: ``(N, 2)``; NaN true rows skipped."""
    t = np.asarray(true, dtype=float)
    p = np.asarray(pred, dtype=float)
    if t.ndim != 2 or t.shape != p.shape or t.shape[1] != len(labels):
        raise ValueError(f"true and pred must both be (N, {len(labels)}), got {t.shape} and {p.shape}")
    fig, axes = subplots(1, len(labels), figsize=figsize)
    alpha = float(np.clip(30.0 / max(len(t), 1) ** 0.5, 0.08, 0.8))
    for j, (ax, name) in enumerate(zip(axes.ravel(), labels)):
        keep = ~np.isnan(t[:, j])
        ax.scatter(t[keep, j], p[keep, j], s=10, alpha=alpha, color="C0", edgecolors="none")
        ax.plot([-1, 1], [-1, 1], color="black", ls="--", lw=1, label="identity")
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(f"{name}: CCC = {ccc(t[:, j], p[:, j]):.3f}  (n = {int(keep.sum())})")
    return _finish(fig, True)


def history(history_df: pd.DataFrame, terms: Sequence[str] | None = None, x: str = "step", logy: bool = False,
            smooth: int = 1, metrics: bool | Sequence[str] = True, ax: Axes | None = None,
            title: str = "training loss", figsize: tuple[float, float] | None = None) -> Figure:
    """Training curves from ``train.fit``'s history (P0 / P1 training). ``terms`` default: every numeric
    column that is not ``x``, ``lr``, ``images_per_s`` or an ``eval/...`` column (so ``total``, ``expr``, ``au``,
    ``dm`` ... or ``loss/...`` names). ``smooth`` > 1: rolling mean over that many rows, drawn over the faint raw
    curve. ``metrics``: a second panel (below the loss) with the ``eval/...`` columns (True = all of them, or a
    list; only when ``ax`` is None)."""
    if x not in history_df.columns:
        raise KeyError(f"column {x!r} not in the history; it has {list(history_df.columns)}")
    numeric = [c for c in history_df.columns if pd.api.types.is_numeric_dtype(history_df[c])]
    if terms is None:
        terms = [c for c in numeric if c != x and c not in _NON_LOSS and not str(c).startswith("eval/")]
    terms = list(terms)
    unknown = [t for t in terms if t not in history_df.columns]
    if unknown:
        raise KeyError(f"terms {unknown} not in the history; it has {list(history_df.columns)}")
    if not terms:
        raise ValueError(f"no loss columns to plot in {list(history_df.columns)}")
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    evals = [c for c in history_df.columns if str(c).startswith("eval/")] if metrics is True else list(metrics or [])
    evals = [] if ax is not None else [c for c in evals if history_df[c].notna().any()]
    own = ax is None
    if own:
        fig, axes = subplots(2 if evals else 1, 1, figsize=figsize or ((7.5, 7.6) if evals else (7.5, 4.2)))
        ax = axes[0, 0]
    else:
        style()
        fig = ax.figure
    colors = iter(f"C{k % 10}" for k in range(len(terms)))
    for term in terms:
        part = history_df[[x, term]].dropna()
        color = "black" if term == "total" else next(colors)
        if smooth > 1:
            ax.plot(part[x], part[term], color=color, alpha=0.25, lw=0.8)
            ax.plot(part[x], part[term].rolling(smooth, min_periods=1).mean(), color=color, lw=1.8, label=term)
        else:
            ax.plot(part[x], part[term], color=color, lw=1.8 if term == "total" else 1.4, label=term)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("loss" + (" (log)" if logy else ""))
    ax.set_title(title + (f" (rolling mean of {smooth})" if smooth > 1 else ""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    if evals:
        ax2 = axes[1, 0]
        for k, col in enumerate(evals):
            part = history_df[[x, col]].dropna()
            ax2.plot(part[x], part[col], marker="o", ms=3, color=f"C{k % 10}", label=col[len("eval/"):])
        ax2.set_xlabel(x)
        ax2.set_ylabel("score")
        ax2.set_title("evaluation during training")
        ax2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    return _finish(fig, own)


def zero_shot_bars(df: pd.DataFrame, chance: float | Mapping[str, float] | None = None,
                   metrics: Sequence[str] = ("accuracy", "macro_f1", "uar"), ax: Axes | None = None,
                   title: str = "zero-shot compound expressions", figsize: tuple[float, float] | None = None) -> Figure:
    """Accuracy, macro-F1 and UAR per method against chance (docs/method.md#zero-shot-and-few-shot; the zero-shot
    compound expression results of P1 §4). ``df``: tidy (``method``, ``metric``, ``value``, optionally ``seed``; bars =
    mean ± std) or wide (a ``method`` column or index, one column per metric). ``chance``: a number (e.g. 1 / #classes)
    or metric -> value, drawn dashed; None takes a ``chance`` column of ``df`` when there is one."""
    frame = df.reset_index() if "method" not in df.columns and df.index.name == "method" else df
    if "method" not in frame.columns:
        raise KeyError(f"zero_shot_bars needs a 'method' column or index; columns are {list(df.columns)}")
    if chance is None and "chance" in frame.columns:
        chance = float(frame["chance"].dropna().iloc[0])
    if {"metric", "value"} <= set(frame.columns):
        tidy = frame[["method", "metric", "value"]]
    else:
        present = [m for m in metrics if m in frame.columns]
        tidy = frame.melt(id_vars="method", value_vars=present, var_name="metric", value_name="value")
    tidy = tidy[tidy["metric"].isin(metrics)]
    if tidy.empty:
        raise ValueError(f"no rows for metrics {list(metrics)} in the frame (columns {list(df.columns)})")
    order = [m for m in metrics if m in set(tidy["metric"])]
    methods = list(dict.fromkeys(tidy["method"]))
    own = ax is None
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH - 2.6, 3.0 + 0.45 * len(methods) * len(order)), 4.2))  # + legend
    sns.barplot(data=tidy, x="metric", y="value", hue="method", order=order, hue_order=methods, errorbar="sd",
                capsize=0.1, err_kws={"linewidth": 1.2}, palette="deep", ax=ax)
    if chance is not None:
        label = f"chance = {chance:.3f}" if not isinstance(chance, Mapping) else "chance"
        _reference_segments(ax, order, chance, label)
    ax.set_ylim(0, max(1.0, float(tidy["value"].max()) * 1.1))
    ax.set_xlabel("")
    ax.set_ylabel("score")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="method")
    return _finish(fig, own)


def _sample_caption(row: pd.Series, tasks: Sequence) -> str:
    """One line per task: class name, active labels (``AU`` prefixes dropped) or ``v +0.31 a -0.12``."""
    lines = []
    for task in tasks:
        if task.kind == "multiclass":
            code = row[task.name]
            lines.append("–" if pd.isna(code) else _short(task.labels[int(code)]))
        elif task.kind == "multilabel":
            values = row[list(task.labels)]
            if values.isna().all():
                lines.append(f"{task.name}: –")
                continue
            on = [lab[2:] if lab.startswith("AU") else lab[:6] for lab in task.labels if values[lab] > 0.5]
            prefix = "AU " if all(lab.startswith("AU") for lab in task.labels) else ""
            shown = "+".join(on[:6]) + ("+…" if len(on) > 6 else "")
            lines.append(prefix + (shown or "none"))
        else:
            parts = [f"{lab[0]} {row[lab]:+.2f}" for lab in task.labels if not pd.isna(row[lab])]
            if parts:
                lines.append(" ".join(parts))
    return "\n".join(lines)


def gallery(images: np.ndarray, table: pd.DataFrame, tasks: Sequence | None = None, n: int = 16, ncols: int = 8,
            title: str | None = None) -> Figure:
    """A grid of the first ``n`` images with their labels under each (the canonical table's columns).

    ``images``: uint8 (N, H, W, C), C = 1 or 3, row i of ``table`` (positional) describes ``images[i]``.
    ``tasks``: which labels to caption (default: the face tasks whose columns ``table`` has): a class name for
    multiclass tasks, the active labels for multilabel ones (``AU 1+2+25``; ``–`` = not annotated) and the values
    of regression ones. Used to inspect the synthetic twins (docs/method.md#synthetic-twins) and real sources alike.
    """
    from .tasks import FACE_TASKS

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, C) with C in (1, 3), got shape {images.shape}")
    if len(images) != len(table):
        raise ValueError(f"{len(images)} images but {len(table)} table rows")
    if n < 1 or ncols < 1:
        raise ValueError(f"n and ncols must be >= 1, got n={n!r}, ncols={ncols!r}")
    if tasks is None:
        tasks = [t for t in FACE_TASKS if all(c in table.columns for c in t.columns)]
    missing = [c for t in tasks for c in t.columns if c not in table.columns]
    if missing:
        raise KeyError(f"table lacks the label columns {missing}")
    n = min(n, len(images))
    ncols = min(ncols, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    rows = table.reset_index(drop=True)
    side = min(1.6, MAX_WIDTH / ncols)  # at most MAX_WIDTH wide: 8 columns of 1.2 in
    fig, axes = subplots(nrows, ncols, figsize=(side * ncols, (side + 0.3 * len(tasks)) * nrows))
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        image = images[k]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                  vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(_sample_caption(rows.iloc[k], tasks), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _mark_ticks(labels, highlight: Sequence[str], color: str = "C1") -> None:
    """Colour (and embolden) the tick labels of the names in ``highlight`` (as shown: long names are shortened)."""
    shown = {_short(name) for name in highlight}
    for tick in labels:
        if tick.get_text() in shown:
            tick.set_color(color)
            tick.set_fontweight("bold")


def annotation_coverage(coverage: pd.DataFrame, highlight: Sequence[str] | None = None, ax: Axes | None = None,
                        title: str = "which labels each training source carries",
                        figsize: tuple[float, float] | None = None) -> Figure:
    """Heatmap of the fraction of each source's rows annotated per label (``source.annotation_coverage``): the
    multi-source annotation map of P0 §4 / P1 §4 (each database labels its own tasks and AU subset). Blank cells
    = never annotated; labels in ``highlight`` (e.g. the AUs no source annotates) get orange bold tick labels."""
    frame = coverage.astype("float64")
    if frame.empty:
        raise ValueError("annotation_coverage needs at least one source and one label")
    highlight = _checked_highlight(highlight, frame.columns)
    own = ax is None
    labels = max(len(_short(str(c))) for c in frame.columns)   # the x tick labels stand upright under the map
    height = 1.2 + 0.45 * frame.shape[0] + 0.08 * labels
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH, 3.5 + 0.5 * frame.shape[1]), height))
    _heatmap(frame, ax, annot=True, cmap="Greens", vmin=0.0, vmax=1.0, cbar_label="fraction annotated")
    ax.set_xlabel(frame.columns.name or "label")
    ax.set_ylabel(frame.index.name or "source")
    _mark_ticks(ax.get_xticklabels(), highlight)
    ax.set_title(title + (f"  (orange: {len(highlight)} labels without any training label)" if highlight else ""))
    return _finish(fig, own)


def distribution_match(q, p, labels: Sequence[str], truth=None, highlight: Sequence[str] | None = None,
                       ax: Axes | None = None, title: str = "distribution matching on one face",
                       figsize: tuple[float, float] | None = None) -> Figure:
    """Paired bars per attribute: the target the class head implies, q_j = Σ_c p(c|x) R[c, j], next to the
    attribute head's own p_j = sigmoid(logit_j), for ONE sample (P0 §3.2 / P1 §3.2 distribution matching,
    class -> attributes; docs/method.md#distribution-matching-class-to-attributes). DM pulls each orange bar towards its
    blue partner. ``truth``: the sample's true 0/1 labels, drawn as black markers at the active ones; ``highlight``:
    labels without training labels (orange bold tick labels)."""
    q = np.asarray(q, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if q.shape != p.shape or len(q) != len(labels):
        raise ValueError(f"q, p and labels must have the same length, got {q.shape}, {p.shape}, {len(labels)}")
    own = ax is None
    fig, ax = _one(ax, figsize or (min(MAX_WIDTH - 2.4, 2.5 + 0.45 * len(labels)), 3.6))  # + the legend
    x = np.arange(len(labels))
    ax.bar(x - 0.2, q, width=0.4, color="C0", label="q = softmax(class) @ R  (target)")
    ax.bar(x + 0.2, p, width=0.4, color="C1", label="p = sigmoid(attribute head)")
    if truth is not None:
        t = np.asarray(truth, dtype=float).ravel()
        if t.shape != q.shape:
            raise ValueError(f"truth must have {len(q)} values, got shape {t.shape}")
        on = np.flatnonzero(t > 0.5)
        ax.scatter(on, np.full(len(on), 1.04), marker="v", color="black", s=28, label="truly active", zorder=5)
    ax.set_xticks(x, [str(lab) for lab in labels])
    _rotate(ax, labels, limit=20)
    _mark_ticks(ax.get_xticklabels(), list(highlight or []))
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("probability")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    return _finish(fig, own)
