"""fbhelpers.widgets: the auto switch, the static fallback and headless construction of the widgets."""
import matplotlib

matplotlib.use("Agg")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fbhelpers import display, widgets  # noqa: E402
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
