"""Figures of fbhelpers.plots on small synthetic inputs: structure, titles and values, headless (Agg)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fbhelpers import plots  # noqa: E402
from fbhelpers.metrics import ccc  # noqa: E402
from fbhelpers.relatedness import Relatedness, compare, estimate  # noqa: E402


@pytest.fixture
def rel():
    table = pd.DataFrame([[1.0, 0.0, 0.25, 0.5], [0.0, 1.0, 0.0, 0.75], [0.5, 0.5, 0.1, 0.0]],
                         index=["a", "b", "c"], columns=["x1", "x2", "x3", "x4"])
    return Relatedness(table, name="prior", uncertain=("b",))


@pytest.fixture
def est():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 300)
    y = (rng.random((300, 4)) < np.array([[0.9, 0.1, 0.3, 0.5], [0.1, 0.9, 0.1, 0.7], [0.5, 0.5, 0.1, 0.1]])[codes])
    frame = pd.DataFrame(y.astype(float), columns=["x1", "x2", "x3", "x4"])
    frame["cls"] = np.array(["a", "b", "c"])[codes]
    return estimate(frame, "cls", ["x1", "x2", "x3", "x4"], class_labels=["a", "b", "c"], name="estimated")


def _heat_axes(fig):
    """Heatmap axes (the ones with a QuadMesh), not colourbars."""
    return [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]


def test_figures_are_detached_from_pyplot(rel):
    plt.close("all")
    fig = plots.relatedness_heatmap(rel)
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == []


def test_heatmap_annotates_small_table_and_marks_uncertain(rel):
    fig = plots.relatedness_heatmap(rel)
    (ax,) = _heat_axes(fig)
    assert len(fig.axes) == 2  # heatmap + colourbar
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b *", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x1", "x2", "x3", "x4"]
    texts = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert texts == sorted(["1.00", "0.25", "0.50", "1.00", "0.75", "0.50", "0.50", "0.10"])  # zeros blank
    assert "prior" in ax.get_title() and "uncertain: 1" in ax.get_title()


def test_heatmap_annot_false_and_custom_title(rel):
    fig = plots.relatedness_heatmap(rel, annot=False, title="DU basic")
    (ax,) = _heat_axes(fig)
    assert [t for t in ax.texts if t.get_text()] == []
    assert ax.get_title().startswith("DU basic")


def test_heatmap_large_table_has_no_annotations_and_subsampled_ticks():
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.random((200, 312)), index=[f"species_{i}" for i in range(200)],
                         columns=[f"has_attribute_number_{j}::with_a_long_value_name" for j in range(312)])
    fig = plots.relatedness_heatmap(Relatedness(table, name="cub"))
    (ax,) = _heat_axes(fig)
    assert len(ax.texts) == 0
    assert 0 < len(ax.get_xticklabels()) <= plots.MAX_TICKS
    assert 0 < len(ax.get_yticklabels()) <= plots.MAX_TICKS
    assert all(len(t.get_text()) <= plots.MAX_LABEL for t in ax.get_xticklabels())
    assert ax.get_yticklabels()[1].get_text() == "species_5"


def test_heatmap_draws_into_given_axes(rel):
    fig, axes = plots.subplots(1, 2)
    out = plots.relatedness_heatmap(rel, ax=axes[0, 1])
    assert out is fig
    assert axes[0, 1].get_title().startswith("prior")


def test_relatedness_comparison_three_panels_with_summary(rel, est):
    comp = compare(est, rel)
    fig = plots.relatedness_comparison(est, rel)
    heat = _heat_axes(fig)
    assert len(heat) == 3
    titles = [ax.get_title() for ax in heat]
    assert titles[0] == "estimated"
    assert titles[1].startswith("prior")
    assert f"{comp.summary:.3f}" in titles[2] and "estimated − prior" in titles[2]
    mesh = heat[2].collections[0]
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)  # diverging scale centred at 0
    assert f"{comp.coverage:.0%}" in titles[2]


def test_relatedness_comparison_layouts(rel, est):
    row = plots.relatedness_comparison(est, rel, layout="row")
    col = plots.relatedness_comparison(est, rel, layout="column")
    assert row.get_figwidth() > row.get_figheight()
    assert col.get_figheight() > col.get_figwidth()
    with pytest.raises(ValueError, match="diagonal"):
        plots.relatedness_comparison(est, rel, layout="diagonal")
    # auto: whatever the table, no wider than JupyterLab's ~1,000 px output column at 100 dpi
    for attrs in (3, 12, 17):
        small = Relatedness(rel.table.iloc[:, :attrs], name="p")
        assert plots.relatedness_comparison(small, small).get_figwidth() <= 10.0


def test_estimate_with_ci_one_panel_per_class(est, rel):
    fig = plots.estimate_with_ci(est, classes=["a", "b"], reference=rel)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2
    assert visible[0].get_title().startswith("a (n = ")
    assert visible[1].get_title().startswith("b")
    bars = visible[0].containers[0]  # errorbar container
    lo, hi = bars.lines[1][0].get_ydata(), bars.lines[1][1].get_ydata()
    assert lo == pytest.approx(est.ci_low.loc["a"].to_numpy())
    assert hi == pytest.approx(est.ci_high.loc["a"].to_numpy())
    marked = plots.estimate_with_ci(rel, classes=["b"])
    assert marked.axes[0].get_title() == "b *"
    with pytest.raises(KeyError, match="'zz'"):
        plots.estimate_with_ci(est, classes=["zz"])


def test_relatedness_profile_bars_per_table(est, rel):
    fig = plots.relatedness_profile([rel, est], "a")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:4] == pytest.approx([1.0, 0.0, 0.25, 0.5])
    assert heights[4:] == pytest.approx(est.table.loc["a"].to_numpy())
    with pytest.raises(KeyError, match="'nope'"):
        plots.relatedness_profile(rel, "nope")


def test_attribute_order_aus_by_number_others_merged_in_place():
    assert plots.attribute_order([["AU1", "AU4", "AU26"], ["AU2", "AU4", "AU9", "AU26"]]) == \
        ["AU1", "AU2", "AU4", "AU9", "AU26"]
    assert plots.attribute_order([["bill", "wing", "tail"], ["bill", "eye", "tail", "leg"]]) == \
        ["bill", "eye", "wing", "tail", "leg"]


def test_relatedness_profile_labels_colours_and_blank_where_missing(rel, est):
    other = Relatedness(rel.table[["x1", "x4"]], name="two")
    fig = plots.relatedness_profile([other, est], "a", labels=["A", "B"], colors=["red", "blue"], selected=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x1", "x2", "x3", "x4"]
    first, second = [c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]
    assert [round(b.get_x() + b.get_width() / 2) for b in first] == [0, 3]  # nothing at x2, x3
    assert matplotlib.colors.to_hex(first[0].get_facecolor()) == "#ff0000"
    assert matplotlib.colors.to_hex(second[0].get_edgecolor()) == "#000000"  # the selected table
    assert matplotlib.colors.to_hex(first[0].get_edgecolor()) != "#000000"
    with pytest.raises(ValueError, match="2 tables but 1 labels"):
        plots.relatedness_profile([other, est], "a", labels=["A"])


def test_convergence_curve_lines_and_log_axis():
    df = pd.DataFrame([(m, n, s, 1 / np.sqrt(n) + 0.01 * s) for m in ("A", "B") for n in (10, 100, 1000)
                       for s in range(3)], columns=["method", "n", "seed", "error"])
    fig = plots.convergence_curve(df, hue="method")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    line = ax.get_lines()[0]
    assert line.get_ydata() == pytest.approx(df[df.method == "A"].groupby("n").error.mean().to_numpy())
    with pytest.raises(KeyError, match="'missing'"):
        plots.convergence_curve(df, y="missing")


@pytest.fixture
def results():
    rows = []
    metric_of = {"expr": "accuracy", "au": "mean_f1"}
    for v, off in (("ST", 0.0), ("MT", -0.05), ("MT+DM", 0.05)):
        for seed in range(3):
            for src in ("s1", "s2"):
                for task, base in (("expr", 0.6), ("au", 0.4)):
                    rows.append((v, seed, src, task, metric_of[task], base + off + 0.01 * seed))
                    rows.append((v, seed, src, task, "other", 0.0))
    return pd.DataFrame(rows, columns=["variant", "seed", "source", "task", "metric", "value"])


def test_comparison_bars_panels_means_and_reference(results):
    metric = {"expr": "accuracy", "au": "mean_f1"}
    best = {"expr": 0.61, "au": 0.41}
    fig = plots.comparison_bars(results, metric, reference=best)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["source = s1", "source = s2"]
    ax = panels[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0)
    assert heights == pytest.approx(sorted([0.61, 0.41, 0.56, 0.36, 0.66, 0.46]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["expr\n(accuracy)", "au\n(mean_f1)"]
    refs = [c for c in ax.collections if c.get_label() == "best ST"]
    assert len(refs) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ST", "MT", "MT+DM", "best ST"]


def test_comparison_bars_single_metric_and_errors(results):
    fig = plots.comparison_bars(results[results.task == "expr"], "accuracy", col=None, reference=0.6,
                                annotate=True)
    ax = fig.axes[0]
    assert ax.get_title() == "accuracy"
    assert sorted(t.get_text() for t in ax.texts) == ["0.56", "0.61", "0.66"]
    with pytest.raises(ValueError, match="'uar'"):
        plots.comparison_bars(results, "uar")


def test_per_label_bars_highlight_legend_and_nan():
    values = pd.Series({"AU1": 0.5, "AU2": 0.7, "AU4": np.nan, "AU9": 0.3})
    fig = plots.per_label_bars(values, highlight=["AU9"], title="per-AU F1")
    ax = fig.axes[0]
    colors = [p.get_facecolor() for p in ax.patches]
    assert colors[0] == colors[1] and colors[3] != colors[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["with training labels", "no training labels", "mean = 0.500"]
    assert "n/a" in [t.get_text() for t in ax.texts]
    assert ax.get_title() == "per-AU F1"
    with pytest.raises(KeyError, match="AU99"):
        plots.per_label_bars(values, highlight=["AU99"])


def test_confusion_normalised_rows_and_title():
    y_true = np.array([0, 0, 1, 1, 2, 2, np.nan])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0, 0]]
    fig = plots.confusion(y_true, scores, ["n", "h", "s"])
    ax = fig.axes[0]
    values = np.array([float(t.get_text()) for t in ax.texts]).reshape(3, 3)
    assert values.sum(axis=1) == pytest.approx([1, 1, 1])
    assert values.diagonal() == pytest.approx([0.5, 1.0, 0.5])
    assert "accuracy 0.667" in ax.get_title() and "UAR 0.667" in ax.get_title()
    counts = plots.confusion(y_true, scores.argmax(1), ["n", "h", "s"], normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts][:3] == ["1", "1", "0"]
    with pytest.raises(ValueError, match=r"\[5\]"):
        plots.confusion([0, 5], [0, 0], ["n", "h", "s"])


def test_va_scatter_titles_carry_ccc():
    rng = np.random.default_rng(2)
    true = rng.uniform(-1, 1, (200, 2))
    pred = 0.8 * true + rng.normal(0, 0.1, true.shape)
    true[0, 1] = np.nan
    fig = plots.va_scatter(true, pred)
    assert len(fig.axes) == 2
    for j, (ax, name) in enumerate(zip(fig.axes, ("valence", "arousal"))):
        assert ax.get_title().startswith(f"{name}: CCC = {ccc(true[:, j], pred[:, j]):.3f}")
        assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-1.0, 1.0)
    assert "(n = 199)" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="N, 2"):
        plots.va_scatter(true[:, :1], pred[:, :1])


@pytest.fixture
def hist():
    steps = np.arange(1, 51)
    return pd.DataFrame({"step": steps, "total": 2.0 / steps, "expr": 1.0 / steps, "loss/au": 0.5 / steps,
                         "lr": 1e-3, "images_per_s": 100.0,
                         "eval/s1/expr/accuracy": np.where(steps % 25 == 0, 0.5, np.nan)})


def test_history_default_terms_smoothing_and_eval_panel(hist):
    fig = plots.history(hist, smooth=5, logy=True)
    ax, ax2 = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["total", "expr", "loss/au"]
    assert len(ax.get_lines()) == 6  # raw + smoothed per term
    assert ax.get_lines()[1].get_ydata()[4] == pytest.approx(np.mean(2.0 / np.arange(1, 6)))
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["s1/expr/accuracy"]
    assert ax2.get_lines()[0].get_xdata().tolist() == [25, 50]


def test_history_explicit_terms_and_errors(hist):
    fig = plots.history(hist, terms=["expr"], metrics=False)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 1
    with pytest.raises(KeyError, match="'nope'"):
        plots.history(hist, terms=["nope"])
    with pytest.raises(ValueError, match="smooth"):
        plots.history(hist, smooth=0)


def test_zero_shot_bars_tidy_and_wide_with_chance():
    tidy = pd.DataFrame([(m, s, k, v) for m, v in (("mean", 0.3), ("loglik", 0.4)) for s in range(2)
                         for k in ("accuracy", "macro_f1", "uar")], columns=["method", "seed", "metric", "value"])
    fig = plots.zero_shot_bars(tidy, chance=1 / 11)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["accuracy", "macro_f1", "uar"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["mean", "loglik", "chance = 0.091"]
    (chance,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]
    assert chance.get_linestyle() == "--" and chance.get_ydata()[0] == pytest.approx(1 / 11)
    wide = pd.DataFrame({"method": ["mean", "loglik"], "accuracy": [0.3, 0.4], "uar": [0.2, 0.3],
                         "chance": [0.1, 0.1]})
    ax = plots.zero_shot_bars(wide).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["accuracy", "uar"]
    assert sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0) == [0.2, 0.3, 0.3, 0.4]
    assert "chance = 0.100" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_save_writes_png_and_creates_folders(rel, tmp_path):
    path = plots.save(plots.relatedness_heatmap(rel), tmp_path / "deep" / "er" / "heat")
    assert path == tmp_path / "deep" / "er" / "heat.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert plots.save(plots.relatedness_heatmap(rel), tmp_path / "h.pdf").name == "h.pdf.png"


def test_annotation_coverage_heatmap_marks_unlabelled_columns():
    cov = pd.DataFrame([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], index=["a", "b"], columns=["expr", "AU1", "AU2"])
    fig = plots.annotation_coverage(cov, highlight=["AU2"])
    ax = fig.axes[0]
    assert "1 labels without any training label" in ax.get_title()
    marked = [t.get_text() for t in ax.get_xticklabels() if t.get_color() == "C1"]
    assert marked == ["AU2"]
    with pytest.raises(KeyError, match="AU9"):
        plots.annotation_coverage(cov, highlight=["AU9"])
    long = "has_bill_shape::curved_(up_or_down)"                  # shortened on the axis, still marked
    fig = plots.annotation_coverage(cov.rename(columns={"AU2": long}), highlight=[long])
    marked = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_color() == "C1"]
    assert marked == [plots._short(long)] and marked[0] != long


def test_distribution_match_pairs_bars_and_marks_truth():
    q, p = np.array([0.9, 0.2, 0.5]), np.array([0.1, 0.3, 0.5])
    fig = plots.distribution_match(q, p, ["AU1", "AU2", "AU4"], truth=[1, 0, 1], highlight=["AU2"], title="one")
    ax = fig.axes[0]
    heights = sorted(round(r.get_height(), 3) for r in ax.patches)
    assert heights == sorted([0.9, 0.2, 0.5, 0.1, 0.3, 0.5])
    assert ax.collections[0].get_offsets()[:, 0].tolist() == [0, 2]
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_color() == "C1"] == ["AU2"]
    with pytest.raises(ValueError, match="same length"):
        plots.distribution_match(q, p[:2], ["AU1", "AU2", "AU4"])


# ---------------------------------------------------------------------------------------------- legibility
OUTPUT_PX = 1000  # JupyterLab's output column, about 1,000 px wide
SCREEN_DPI = 100  # a figure at 100 dpi fills it at 10 in
MIN_TEXT_PX = 9
NOT_FIGURES = {"style", "save", "subplots", "attribute_order"}


def shown_size(fig):
    """(width in inches as saved and shown inline: the tight bounding box plus 0.1 in padding per side, the
    smallest font size in points of any text actually drawn), from a draw with a recording renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig) if not isinstance(fig.canvas, FigureCanvasAgg) else fig.canvas
    renderer = canvas.get_renderer()
    sizes, draw_text = [], renderer.draw_text

    def recording(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if str(s).strip():
            sizes.append(prop.get_size_in_points())
        return draw_text(gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    renderer.draw_text = recording
    try:
        fig.draw(renderer)
        width = fig.get_tightbbox(renderer).width + 2 * 0.1
    finally:
        del renderer.draw_text
    return width, min(sizes)


def legibility_problem(name: str, fig) -> str | None:
    """None when ``fig`` fits JupyterLab's ~1,000 px column (at most 10 in at 100 dpi), or when wider its smallest
    text stays >= 9 px once scaled down to 1,000 px (pt x dpi / 72 x 1000 / width_px)."""
    width, smallest = shown_size(fig)
    width_px = width * SCREEN_DPI
    scaled = smallest * SCREEN_DPI / 72 * OUTPUT_PX / width_px
    if width_px <= OUTPUT_PX or scaled >= MIN_TEXT_PX:
        return None
    return (f"{name}: {width:.1f} in wide ({width_px:.0f} px at {SCREEN_DPI} dpi), smallest text {smallest:g} pt "
            f"= {scaled:.1f} px at {OUTPUT_PX} px")


def _relatedness(classes, attrs, name, seed=0, ci=False):
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.random((len(classes), len(attrs))).round(2), index=classes, columns=attrs)
    extra = {"ci_low": (table * 0.8), "ci_high": (table * 1.1).clip(upper=1.0)} if ci else {}
    return Relatedness(table, name=name, **extra)


def _legibility_cases():
    """Every public figure function on inputs the size of the notebooks' (demo / paper): DU's 7 x 17 table, the
    40-identity and the 200-species tables, 02's four test sets x five variants, 04's 56 attributes, ..."""
    from fbhelpers.relatedness import prior
    from fbhelpers.tasks import AUS, EXPRESSIONS

    rng = np.random.default_rng(0)
    du, compound = prior("du2014_basic"), prior("du2014_compound")
    est = _relatedness(EXPRESSIONS, AUS[:12], "estimate (Aff-Wild2-like)", ci=True)
    ids = [f"id{i}" for i in range(40)]
    attrs40 = [f"attribute_{j}" for j in range(40)]
    cub = _relatedness([f"{i:03d}.Some_Bird_Species" for i in range(200)],
                       [f"has_part_color::colour_{j}" for j in range(312)], "CUB-200-2011")
    sources = ("affectnet_like", "emotionet_like", "disfa_like", "affwild2_like")
    tidy = pd.DataFrame([(v, s, src, task, m, rng.random()) for v in ("st", "mt", "mt_coann", "mt_dm", "mt_both")
                         for s in range(3) for src in sources
                         for task, m in (("expr", "accuracy"), ("au", "mean_f1"), ("va", "mean_ccc"))],
                        columns=["variant", "seed", "source", "task", "metric", "value"])
    metric = {"expr": "accuracy", "au": "mean_f1", "va": "mean_ccc"}
    hist = pd.DataFrame({"step": np.arange(50), "total": rng.random(50), "expr": rng.random(50),
                         "au": rng.random(50), "va": rng.random(50), "dm": rng.random(50),
                         "eval/affectnet_like/expr/accuracy": np.where(np.arange(50) % 10 == 0, 0.5, np.nan),
                         "eval/disfa_like/au/mean_f1": np.where(np.arange(50) % 10 == 0, 0.3, np.nan)})
    curve = pd.DataFrame([(f"Beta({a}, {a})", n, r, 1 / np.sqrt(n) + 0.01 * r) for a in (1, 0.5)
                          for n in (25, 100, 400, 1600) for r in range(3)], columns=["prior", "n", "repeat", "error"])
    zs = pd.DataFrame([(m, k, rng.random()) for m in ("mean", "geometric", "loglik", "oracle (true AUs)")
                       for k in ("accuracy", "macro_f1", "uar")], columns=["method", "metric", "value"])
    coverage = pd.DataFrame(rng.random((4, 19)).round(2), index=["affectnet_like", "emotionet_like", "disfa_like",
                                                                  "affwild2_like"], columns=["expr", *AUS, "VA"])
    cov56 = pd.DataFrame(rng.random((3, 56)), index=["species", "attributes", "coannotated"],
                         columns=[f"has_wing_color::colour_{j}" for j in range(56)])
    images = rng.integers(0, 255, (16, 48, 48, 3), dtype=np.uint8)
    table = pd.DataFrame({"expr": rng.integers(0, 7, 16), **{a: rng.integers(0, 2, 16).astype(float) for a in AUS},
                          "valence": rng.uniform(-1, 1, 16), "arousal": rng.uniform(-1, 1, 16)})
    va = rng.uniform(-1, 1, (200, 2))
    return {
        "relatedness_heatmap DU 7 x 17": lambda: plots.relatedness_heatmap(du),
        "relatedness_heatmap DU compound": lambda: plots.relatedness_heatmap(compound),
        "relatedness_heatmap 40 identities": lambda: plots.relatedness_heatmap(_relatedness(ids, attrs40, "ids")),
        "relatedness_heatmap CUB 200 x 312": lambda: plots.relatedness_heatmap(cub, annot=False),
        "relatedness_comparison 7 x 12": lambda: plots.relatedness_comparison(est, du),
        "relatedness_comparison 40 identities": lambda: plots.relatedness_comparison(
            _relatedness(ids, attrs40, "identity estimate"), _relatedness(ids, attrs40, "identity truth", 1),
            annot=False),
        "estimate_with_ci 7 classes": lambda: plots.estimate_with_ci(est, reference=du, ncols=2),
        "relatedness_profile 4 tables": lambda: plots.relatedness_profile([du, est, compound, du], "anger"),
        "convergence_curve": lambda: plots.convergence_curve(curve, x="n", y="error", hue="prior"),
        "comparison_bars 4 test sets x 5 variants": lambda: plots.comparison_bars(tidy, metric),
        "comparison_bars pooled, annotated": lambda: plots.comparison_bars(tidy, metric, col=None, annotate=True),
        "per_label_bars 17 AUs": lambda: plots.per_label_bars(pd.Series(rng.random(17), index=AUS),
                                                              highlight=AUS[:5]),
        "per_label_bars 56 attributes": lambda: plots.per_label_bars(pd.Series(rng.random(56), index=cov56.columns)),
        "confusion 7 classes": lambda: plots.confusion(rng.integers(0, 7, 300), rng.random((300, 7)), EXPRESSIONS),
        "confusion 11 compound classes": lambda: plots.confusion(rng.integers(0, 11, 300), rng.integers(0, 11, 300),
                                                                 list(compound.classes)[:11]),
        "va_scatter": lambda: plots.va_scatter(va, va + 0.1),
        "history with evaluation": lambda: plots.history(hist, smooth=5),
        "history": lambda: plots.history(hist, metrics=False),
        "zero_shot_bars": lambda: plots.zero_shot_bars(zs, chance=1 / 11),
        "gallery 16 x 8 columns": lambda: plots.gallery(images, table, n=16, ncols=8),
        "annotation_coverage 4 sources x 19": lambda: plots.annotation_coverage(coverage, highlight=AUS[:3]),
        "annotation_coverage 56 attributes": lambda: plots.annotation_coverage(cov56),
        "distribution_match 17 AUs": lambda: plots.distribution_match(rng.random(17), rng.random(17), AUS,
                                                                      truth=rng.integers(0, 2, 17), highlight=AUS[:3]),
    }


def test_every_figure_function_has_a_legibility_case():
    import inspect

    public = {name for name, f in vars(plots).items() if inspect.isfunction(f) and not name.startswith("_")
              and f.__module__ == plots.__name__} - NOT_FIGURES
    covered = {case.split()[0] for case in _legibility_cases()}
    assert public - covered == set(), "add a representative case to _legibility_cases"


@pytest.mark.parametrize("case", list(_legibility_cases()))
def test_figures_legible_at_jupyterlab_width(case):
    """No figure wider than 1,000 px at 100 dpi unless its smallest text stays >= 9 px scaled down to 1,000 px."""
    fig = _legibility_cases()[case]()
    assert legibility_problem(case, fig) is None, legibility_problem(case, fig)


def test_legibility_check_catches_a_wide_small_figure():
    fig, axes = plots.subplots(1, 4, figsize=(25, 4))
    assert legibility_problem("wide", fig) is not None  # 10 pt ticks at 25 in: about 4 px
    fig, _ = plots.subplots(1, 1, figsize=(9.5, 4))
    assert legibility_problem("narrow", fig) is None
