"""fbhelpers.widgets: the auto switch, the static fallback and headless construction of the widgets."""
import matplotlib

matplotlib.use("Agg")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fbhelpers import display, plots, widgets  # noqa: E402
from fbhelpers.relatedness import Relatedness  # noqa: E402
from fbhelpers.source import Source  # noqa: E402
from fbhelpers.tasks import AU, EXPR, VA  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")


@pytest.fixture
def rels():
    a = Relatedness(pd.DataFrame([[1.0, 0.0], [0.2, 0.8]], index=["c1", "c2"], columns=["x", "y"]), name="prior",
                    uncertain=("c2",))
    b = Relatedness(pd.DataFrame([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], index=["c1", "c2", "c3"],
                                 columns=["x", "y"]), name="estimated")
    return {"prior": a, "estimated": b}


@pytest.fixture
def samples():
    n = 5
    images = np.arange(n * 8 * 8 * 3, dtype=np.uint8).reshape(n, 8, 8, 3)
    table = pd.DataFrame({"split": "test", "source": "twin",
                          "expr": pd.array([4, 0, None, 5, 1], dtype="Int64")})
    for au in AU.labels:
        table[au] = [1.0 if au in ("AU6", "AU12") and i == 0 else 0.0 for i in range(n)]
    table.loc[1, "AU1"] = np.nan
    table["valence"] = [0.5, -0.25, np.nan, 0.0, 0.1]
    table["arousal"] = [0.1, 0.2, np.nan, 0.0, 0.1]
    probs = np.full((n, 7), 0.05)
    probs[:, 4] = 0.7
    preds = {"expr": probs, "au": np.where(np.isin(AU.labels, ["AU12"]), 0.9, 0.1)[None].repeat(n, 0)}
    return images, table, preds


def test_use_widgets_switch(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(display.HEADLESS_ENV, raising=False)
    assert widgets.use_widgets(False) is False
    assert widgets.use_widgets(True) is True
    assert widgets.use_widgets(None) is False  # no live kernel under pytest
    import IPython

    class Shell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: Shell())
    assert widgets.use_widgets(None) is True
    monkeypatch.setenv("CI", "true")
    assert widgets.use_widgets(None) is False
    monkeypatch.setenv("CI", "0")
    monkeypatch.setenv(display.HEADLESS_ENV, "1")
    assert widgets.use_widgets(None) is False
    monkeypatch.setenv(display.HEADLESS_ENV, "0")
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # ipywidgets not installed
    assert widgets.use_widgets(None) is False
    with pytest.raises(ImportError, match="ipywidgets"):
        widgets.use_widgets(True)


def test_relatedness_explorer_fallback_one_heatmap_per_table(rels, monkeypatch):
    out = widgets.relatedness_explorer(rels, interactive=False)
    assert isinstance(out, widgets.Figures) and len(out) == 2
    assert all(isinstance(f, Figure) for f in out)
    assert out[0].axes[0].get_title() == "prior  (* uncertain: 1)"
    assert out[1].axes[0].get_title() == "estimated"
    assert [t.get_text() for t in out[0].axes[0].get_yticklabels()] == ["c1", "c2 *"]
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", shown.append)
    out._ipython_display_()
    assert shown == list(out)


def test_relatedness_explorer_widgets_headless(rels):
    box = widgets.relatedness_explorer(list(rels.values()), interactive=True)
    assert isinstance(box, ipywidgets.VBox)
    (table, cls), image, info = box.children[0].children, box.children[1], box.children[2]
    assert list(table.options) == ["prior", "estimated"]
    assert list(cls.options) == [widgets.ALL_CLASSES, "c1", "c2"]
    heat = image.value
    assert heat[:4] == b"\x89PNG"
    assert "uncertain: c2" in info.value
    cls.value = "c2"
    assert image.value[:4] == b"\x89PNG" and image.value != heat
    table.value = "estimated"
    assert list(cls.options) == [widgets.ALL_CLASSES, "c1", "c2", "c3"] and cls.value == "c2"
    assert "estimated" in info.value
    table.value = "prior"
    cls.value = widgets.ALL_CLASSES
    table.value = "estimated"
    cls.value = "c3"
    table.value = "prior"
    assert cls.value == widgets.ALL_CLASSES  # c3 is not in the prior


def test_sample_browser_fallback_grid_with_labels_and_predictions(samples):
    images, table, preds = samples
    (fig,) = widgets.sample_browser(images, table, preds, interactive=False, n=4, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert visible[0].get_title() == "#0 twin test"
    caption = visible[0].get_xlabel().split("\n")
    assert caption == ["expr: happiness → happiness (0.70)", "au: AU6, AU12 → AU12", "va: +0.50, +0.10"]
    assert visible[1].get_xlabel().split("\n")[1] == "au: none (1 unlabelled) → AU12"
    assert visible[2].get_xlabel().split("\n")[0] == "expr: — → happiness (0.70)"
    assert visible[0].get_images()[0].get_array().shape == (8, 8, 3)


def test_sample_browser_accepts_source_and_grey_images(samples):
    images, table, _ = samples
    grey = images[..., :1]
    (fig,) = widgets.sample_browser(Source("twin", table, grey), tasks=[EXPR], interactive=False)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5
    assert visible[3].get_xlabel() == "expr: sadness"


def test_sample_browser_widgets_headless(samples):
    images, table, preds = samples
    box = widgets.sample_browser(images, table, {"expr": np.array([4, 0, 0, 5, 1])}, tasks=[EXPR, VA],
                                 interactive=True)
    slider, (image, text) = box.children[0], box.children[1].children
    assert slider.max == 4
    assert image.value[:4] == b"\x89PNG"
    assert "#0 twin test" in text.value and "happiness" in text.value and "+0.50, +0.10" in text.value
    slider.value = 1
    assert "#1" in text.value and "neutral" in text.value and "-0.25" in text.value


def test_sample_browser_errors(samples):
    images, table, preds = samples
    with pytest.raises(KeyError, match="'species'"):
        widgets.sample_browser(images, table, {"species": preds["expr"]}, interactive=False)
    with pytest.raises(ValueError, match="4 rows"):
        widgets.sample_browser(images, table, {"expr": preds["expr"][:4]}, interactive=False)
    with pytest.raises(ValueError, match="5 table rows"):
        widgets.sample_browser(images[:3], table, interactive=False)


# ---------------------------------------------------------------------------------------------- notebook 00: DM
@pytest.fixture
def du_tables():
    from fbhelpers import relatedness

    return {"DU": relatedness.prior("du2014_basic"), "binary": relatedness.prior("du2014_basic", weights="binary")}


def test_dm_terms_q_is_p_times_r_and_losses(du_tables):
    rel = du_tables["DU"]
    p = widgets._renormalise([0, 2, 1, 0, 1, 0, 0])
    assert np.allclose(p, [0, 0.5, 0.25, 0, 0.25, 0, 0])
    terms = widgets.dm_terms(p, rel, np.full(17, 0.5), "mean")
    assert np.allclose(terms["q"], p @ rel.table.to_numpy())
    assert terms["DM class → AU (mean)"] == pytest.approx(np.log(2), abs=1e-6)
    total = widgets.dm_terms(p, rel, np.full(17, 0.5), "sum")["DM class → AU (sum)"]
    assert total == pytest.approx(17 * np.log(2), abs=1e-5)
    # co-annotation targets R[anger] for the face labelled anger: the head equal to that row gives its entropy
    row = rel.table.loc["anger"].to_numpy()
    soft = widgets.dm_terms(p, rel, row, "mean")["co-annotation soft"]
    r = np.clip(row, 1e-6, 1 - 1e-6)
    assert soft == pytest.approx(float(np.mean(-(r * np.log(r) + (1 - r) * np.log(1 - r)))), abs=1e-4)
    assert widgets.dm_terms(widgets._renormalise([0] * 7), rel, row)["q"] == pytest.approx(
        np.full(7, 1 / 7) @ rel.table.to_numpy())


def test_dm_explorer_fallback_figure_and_losses(du_tables):
    out = widgets.dm_explorer(du_tables, interactive=False)
    assert isinstance(out, widgets.Views) and len(out) == 2
    fig, loss = out
    ax = fig.axes[0]
    heights = np.array([b.get_height() for b in ax.patches])
    q = np.full(7, 1 / 7) @ du_tables["DU"].table.to_numpy()
    assert np.allclose(heights[:17], q) and np.allclose(heights[17:34], 0.5)
    assert loss.loc["DM class → AU (mean)", "loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert list(loss.index) == ["DM class → AU (mean)", "co-annotation soft", "co-annotation hard"]
    assert fig.get_size_inches()[0] <= 10


def test_dm_explorer_widgets_respond(du_tables):
    box = widgets.dm_explorer(du_tables, interactive=True)
    sliders = box.children[0].children[0].children
    table, head, reduction, info = box.children[0].children[1].children
    image = box.children[1]
    assert len(sliders) == 7 and image.value[:4] == b"\x89PNG"
    before, text = image.value, info.value
    assert "DM class → AU (mean)" in text and "0.6931" in text
    sliders[4].value = 1.0  # happiness up: q and the figure change
    assert image.value != before and info.value != text
    reduction.value = "sum"
    assert "DM class → AU (sum)" in info.value
    fig_before, text = image.value, info.value
    head.value = widgets.DM_HEADS[1]
    assert image.value != fig_before and info.value != text
    fig_before = image.value
    table.value = "binary"
    assert image.value != fig_before


# ---------------------------------------------------------------------------------------------- notebook 02: faces
@pytest.fixture
def browser(samples):
    images, table, preds = samples
    table = table.copy()
    table["AU10"] = [0.0, 1.0, np.nan, 1.0, 0.0]
    table["AU24"] = [0.0, 0.0, 0.0, 0.0, 1.0]
    src = Source("twin", table, images)
    variants = {"ST": {"twin": {"expr": preds["expr"]}},
                "MT": {"twin": {"expr": preds["expr"], "au": preds["au"]}},
                "MT + DM": {"twin": {"expr": preds["expr"][::-1], "au": 1 - preds["au"]}}}
    return {"twin": src}, variants


def test_unlabelled_active_selects_exactly_those_faces(browser):
    sources, _ = browser
    table = sources["twin"].table
    assert widgets.unlabelled_active(table, ["AU10", "AU24"]).tolist() == [False, True, False, True, True]
    assert widgets.unlabelled_active(table, ["AU24"]).tolist() == [False, False, False, False, True]
    assert not widgets.unlabelled_active(table, []).any()


def test_face_browser_fallback_gallery_with_three_predictions(browser):
    sources, preds = browser
    (fig,) = widgets.face_browser(sources, preds, ["AU10", "AU24"], interactive=False, n=4)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["#1 twin test", "#3 twin test", "#4 twin test"]
    caption = visible[0].get_xlabel().split("\n")
    assert caption[:4] == ["expr label: neutral", "  ST: happiness (0.70)", "  MT: happiness (0.70)",
                           "  MT + DM: happiness (0.70)"]
    assert "  ST: —" in caption and any(line.startswith("  MT + DM: AU1") for line in caption)
    (fig,) = widgets.face_browser(sources, preds, ["AU10"], interactive=False, only_unlabelled=False, n=2)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["#0 twin test", "#1 twin test"]


def test_face_browser_widgets_filter_and_slider(browser):
    sources, preds = browser
    box = widgets.face_browser(sources, preds, ["AU10", "AU24"], interactive=True)
    (_, only), face, (image, text) = box.children[0].children, box.children[1], box.children[2].children
    assert face.max == 4 and "#0 twin test" in text.value and "<th>MT + DM</th>" in text.value
    first = image.value
    face.value = 2
    assert "#2 twin test" in text.value and image.value != first
    only.value = True
    assert face.max == 2 and face.value == 0 and "#1 twin test" in text.value and "3 faces" in text.value
    face.value = 2
    assert "#4 twin test" in text.value


def test_variant_predictions_merges_st_networks():
    from helpers import blank_source, tiny_net

    src = blank_source("twin", pd.DataFrame({"split": "test", "expr": pd.array([0, 1], dtype="Int64")}), size=16,
                       channels=3)
    nets = {("st", 0, "expr"): tiny_net((EXPR,)), ("st", 0, "au"): tiny_net((AU,)),
            ("mt", 0, "expr+au+va"): tiny_net(), ("mt", 1, "expr+au+va"): tiny_net(seed=1)}
    out = widgets.variant_predictions(nets, {"twin": src}, seed=0, variants={"st": "ST", "mt": "MT"}, device="cpu")
    assert sorted(out["ST"]["twin"]) == ["au", "expr"] and sorted(out["MT"]["twin"]) == ["au", "expr", "va"]
    assert out["ST"]["twin"]["au"].shape == (2, 17)
    with pytest.raises(KeyError, match="mt_dm"):
        widgets.variant_predictions(nets, {"twin": src}, seed=0, variants={"mt_dm": "MT + DM"}, device="cpu")


# ---------------------------------------------------------------------------------------------- notebook 05: compound
@pytest.fixture
def compound():
    from fbhelpers import relatedness, zeroshot
    from fbhelpers.tasks import AUS

    rel = relatedness.prior("du2014_compound").align(zeroshot.RAFDB_COMPOUND, AUS)
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 2, 2, 2])
    probs = rng.uniform(0.01, 0.99, size=(len(labels), 17))
    return rel, probs, labels


def test_compound_scores_equal_zero_shot_scores(compound):
    from fbhelpers import zeroshot

    rel, probs, _ = compound
    table = widgets.compound_scores(probs[3], rel)
    assert list(table.columns) == list(zeroshot.SCORINGS) and list(table.index) == list(rel.classes)
    for s in zeroshot.SCORINGS:
        assert np.allclose(table[s], zeroshot.zero_shot_scores(probs[3:4], rel.table.to_numpy(), s)[0])


def test_compound_explorer_fallback_first_face_per_class(compound):
    rel, probs, labels = compound
    out = widgets.compound_explorer(probs, rel, labels, interactive=False, n_classes=2)
    assert isinstance(out, widgets.Views) and len(out) == 4
    fig, table, fig2, table2 = out
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == f"face #0, true class {rel.classes[0]}"
    assert fig2.axes[0].get_title() == f"face #2, true class {rel.classes[1]}"
    assert np.allclose([b.get_height() for b in fig.axes[0].patches], probs[0])
    best = widgets.compound_scores(probs[2], rel)["mean"].idxmax()
    assert table2.loc[best, "mean"].endswith("◀") and table2.index.name == fig2.axes[0].get_title()
    assert fig.get_size_inches()[0] <= 10


def test_compound_explorer_widgets_respond(compound):
    rel, probs, labels = compound
    box = widgets.compound_explorer(probs, rel, labels, interactive=True)
    (cls, face), (image, table) = box.children[0].children, box.children[1].children
    assert [v for _, v in cls.options] == [0, 1, 2] and face.max == 1
    assert "face #0" in table.value
    before = image.value
    face.value = 1
    assert "face #1" in table.value and image.value != before
    cls.value = 2
    assert face.max == 2 and face.value == 0 and "face #3" in table.value
    expected = widgets.compound_scores(probs[3], rel)["loglik"].round(3)
    assert all(f"{v}" in table.value for v in expected.astype(str))
    face.value = 2
    assert "face #5" in table.value


@pytest.fixture
def au_tables():
    """Three tables of one class whose AU sets differ: the selected one lacks AU2 and AU9, which others have."""
    def table(aus, name):
        return Relatedness(pd.DataFrame([[0.1 * (i + 1) for i in range(len(aus))]], index=["anger"], columns=aus),
                           name=name)
    return {"DU prior": table(["AU1", "AU4", "AU12", "AU26"], "du2014_basic"),
            "generator truth": table(["AU1", "AU2", "AU4", "AU12", "AU26"], "generator"),
            "estimate": table(["AU1", "AU4", "AU9", "AU12", "AU26"], "estimated")}


def _profile_figures(monkeypatch):
    """The figures the explorer renders, in order (its PNG step records them)."""
    shown = []
    real = widgets._png
    monkeypatch.setattr(widgets, "_png", lambda fig: shown.append(fig) or real(fig))
    return shown


def _bars_by_series(fig):
    """Legend label -> (face colour, {tick label: bar height}) of a relatedness_profile figure."""
    ax = fig.axes[0]
    ticks = {round(t): lab.get_text() for t, lab in zip(ax.get_xticks(), ax.get_xticklabels())}
    out = {}
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]
    for container, label in zip(bars, [t.get_text() for t in ax.get_legend().get_texts()]):
        bars = list(container)
        out[label] = (matplotlib.colors.to_hex(bars[0].get_facecolor()),
                      {ticks[round(b.get_x() + b.get_width() / 2)]: b.get_height() for b in bars})
    return out


def test_relatedness_explorer_profile_keeps_canonical_au_order(au_tables, monkeypatch):
    """An AU only some tables have sits in numeric order (not after AU26); a table lacking it has no bar there."""
    shown = _profile_figures(monkeypatch)
    box = widgets.relatedness_explorer(au_tables, interactive=True)
    table, cls = box.children[0].children
    cls.value = "anger"
    ax = shown[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["AU1", "AU2", "AU4", "AU9", "AU12", "AU26"]
    bars = _bars_by_series(shown[-1])
    assert sorted(bars["DU prior"][1]) == sorted(["AU1", "AU4", "AU12", "AU26"])  # blank at AU2 and AU9
    assert bars["generator truth"][1]["AU2"] == pytest.approx(0.2)
    assert bars["estimate"][1]["AU9"] == pytest.approx(0.3)


def test_relatedness_explorer_legend_uses_dropdown_labels(au_tables, monkeypatch):
    shown = _profile_figures(monkeypatch)
    box = widgets.relatedness_explorer(au_tables, interactive=True)
    table, cls = box.children[0].children
    cls.value = "anger"
    labels = [t.get_text() for t in shown[-1].axes[0].get_legend().get_texts()]
    assert sorted(labels) == sorted(table.options)
    assert "du2014_basic" not in labels


def test_relatedness_explorer_table_colour_fixed_across_selections(au_tables, monkeypatch):
    shown = _profile_figures(monkeypatch)
    box = widgets.relatedness_explorer(au_tables, interactive=True)
    table, cls = box.children[0].children
    cls.value = "anger"
    first = {label: colour for label, (colour, _) in _bars_by_series(shown[-1]).items()}
    assert len(set(first.values())) == 3
    for name in ("generator truth", "estimate", "DU prior"):
        table.value = name
        now = {label: colour for label, (colour, _) in _bars_by_series(shown[-1]).items()}
        assert now == first, f"colours changed when {name!r} was selected"


def test_static_grids_fit_jupyterlab_width(samples, browser):
    """The static fallbacks stay within JupyterLab's ~1,000 px output column (plots.MAX_WIDTH) even when asked
    for six columns (notebooks 03 and 04 do)."""
    images, table, preds = samples
    (grid,) = widgets.sample_browser(images, table, preds, interactive=False, n=5, ncols=6)
    assert grid.get_figwidth() <= plots.MAX_WIDTH
    assert len([ax for ax in grid.axes if ax.get_visible()]) == 5
    sources, predictions = browser
    for fig in widgets.face_browser(sources, predictions, ["AU10"], interactive=False):
        assert fig.get_figwidth() <= plots.MAX_WIDTH
