import numpy as np
import pandas as pd
import pytest

from fbhelpers.zeroshot import (
    RAFDB_COMPOUND, few_shot_curve, few_shot_predict, few_shot_split, indistinguishable, zero_shot_predict,
    zero_shot_scores, zero_shot_table,
)

PROFILES = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


def test_mean_and_geometric_scores_by_hand():
    p = np.array([[0.9, 0.5, 0.1]])
    mean = zero_shot_scores(p, PROFILES, "mean")
    assert mean[0] == pytest.approx([(0.9 + 0.5) / 2, (0.9 + 0.1) / 2])
    geo = zero_shot_scores(p, PROFILES, "geometric")
    assert geo[0] == pytest.approx([np.sqrt(0.9 * 0.5), np.sqrt(0.9 * 0.1)])


def test_loglik_rewards_absent_attributes():
    # a subset profile (AU4, AU10) against a superset (AU4, AU10, AU17): only the absent AU17 separates them
    profiles = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    p = np.array([[0.9, 0.9, 0.05], [0.9, 0.9, 0.95]])
    assert zero_shot_predict(p, profiles, "loglik").tolist() == [0, 1]
    # the weighted mean barely separates the second sample: 0.917 vs 0.900
    assert zero_shot_scores(p, profiles, "mean")[1] == pytest.approx([0.9, 2.75 / 3])


def test_zero_shot_errors():
    with pytest.raises(ValueError, match="share K"):
        zero_shot_scores(np.zeros((2, 4)), PROFILES)
    with pytest.raises(ValueError, match="scoring"):
        zero_shot_scores(np.zeros((2, 3)), PROFILES, "median")
    with pytest.raises(ValueError, match="empty rows: \\[1\\]"):
        zero_shot_scores(np.zeros((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]))


def test_few_shot_split_sizes_and_disjoint():
    labels = np.repeat([0, 1, 2], 10)
    support, query = few_shot_split(labels, k=3, seed=1)
    assert np.bincount(labels[support]).tolist() == [3, 3, 3]
    assert len(np.intersect1d(support, query)) == 0 and len(support) + len(query) == 30
    with pytest.raises(ValueError, match="class 0 has 10 samples"):
        few_shot_split(labels, k=10)


@pytest.mark.parametrize("method", ["prototype", "logistic"])
def test_few_shot_separates_clusters(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(size=(120, 16))
    support, query = few_shot_split(y, k=5, seed=0)
    pred = few_shot_predict(x[support], y[support], x[query], method=method)
    assert (pred == y[query]).mean() > 0.95


def test_rafdb_compound_classes_are_du_rows():
    from fbhelpers.relatedness import prior

    assert len(RAFDB_COMPOUND) == 11
    assert set(RAFDB_COMPOUND) <= set(prior("du2014_compound").classes)
    assert RAFDB_COMPOUND[0] == "happily_surprised" and RAFDB_COMPOUND[-1] == "disgustedly_surprised"


def test_zero_shot_table_by_hand():
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[0.9, 0.9, 0.1], [0.8, 0.7, 0.0], [0.9, 0.1, 0.9], [0.7, 0.2, 0.8]])
    swapped = perfect[:, [0, 2, 1]]  # every sample now looks like the other class
    table = zero_shot_table({"good": perfect, "bad": swapped}, labels, PROFILES, scorings=("mean", "loglik"))
    assert table[["method", "scoring"]].values.tolist() == [["good", "mean"], ["good", "loglik"],
                                                            ["bad", "mean"], ["bad", "loglik"]]
    assert table["accuracy"].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert table["uar"].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert table["macro_f1"].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert table["chance"].tolist() == pytest.approx([0.5] * 4)
    single = zero_shot_table(perfect, labels, PROFILES)
    assert single["method"].unique().tolist() == ["attributes"] and len(single) == 3
    with pytest.raises(ValueError, match=r"attr_probs\['x'\] has 3 rows but labels has 4"):
        zero_shot_table({"x": perfect[:3]}, labels, PROFILES)


def test_few_shot_curve_grid_and_informative_features():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    good = rng.normal(size=(4, 8))[y] * 3 + rng.normal(size=(100, 8))
    noise = rng.normal(size=(100, 8))
    curve = few_shot_curve({"good": good, "noise": noise}, y, ks=(1, 5), repeats=2)
    assert list(curve.columns) == ["extractor", "probe", "k", "repeat", "accuracy", "macro_f1", "uar"]
    assert len(curve) == 2 * 2 * 2 * 2
    mean = curve.groupby(["extractor", "k"])["accuracy"].mean()
    assert mean["good", 5] > 0.9 and mean["noise", 5] < 0.5
    again = few_shot_curve({"good": good, "noise": noise}, y, ks=(1, 5), repeats=2)
    pd.testing.assert_frame_equal(curve, again)
    with pytest.raises(ValueError, match="N = 100"):
        few_shot_curve({"bad": good[:50]}, y)
    with pytest.raises(ValueError, match="unknown probes"):
        few_shot_curve({"good": good}, y, methods=("knn",))


def test_identical_profiles_are_reported_and_warned():
    from fbhelpers.relatedness import prior

    table = prior("du2014_compound").table
    assert indistinguishable(table) == [("sadly_disgusted", "appalled", "hatred")]
    assert indistinguishable(table.loc[list(RAFDB_COMPOUND)]) == []
    p = np.full((2, table.shape[1]), 0.5)
    with pytest.warns(UserWarning, match=r"sadly_disgusted', 'appalled', 'hatred'"):
        zero_shot_predict(p, table)
    with pytest.warns(UserWarning, match="identical profiles"):
        zero_shot_table(p, np.array([0, 1]), table, scorings=("mean",))
    rows = table.index.get_indexer(["sadly_disgusted", "appalled", "hatred"])
    p[:, table.columns.get_indexer(["AU4", "AU10"])] = 0.99
    with pytest.warns(UserWarning):
        assert zero_shot_predict(p, table).tolist() == [rows[0]] * 2  # always the first of the group
    assert indistinguishable(PROFILES, names=["x", "y"]) == []
    assert indistinguishable(np.array([[1.0, 0], [1.0, 0]])) == [(0, 1)]
