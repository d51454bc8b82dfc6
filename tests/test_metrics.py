"""fbhelpers.metrics: agreement with scikit-learn, hand-computed CCC / Δm, NaN and mask handling."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from fbhelpers import metrics as M
from fbhelpers.tasks import AU, EXPR, VA, Task


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- ccc
def test_ccc_perfect_and_known_values():
    x = np.array([0.1, -0.4, 0.7, 0.3])
    assert M.ccc(x, x) == pytest.approx(1.0)
    # means 2 and 3, population variances 2/3, cov 2/3 -> 2*(2/3) / (2/3 + 2/3 + 1) = 4/7
    assert M.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert M.ccc([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_ccc_ignores_nan_and_mask():
    t = np.array([1, 2, np.nan, 3, 100])
    p = np.array([2, 3, 50, 4, -7])
    assert M.ccc(t, p, mask=[True, True, True, True, False]) == pytest.approx(4 / 7)
    assert np.isnan(M.ccc([np.nan, np.nan], [1.0, 2.0]))
    assert np.isnan(M.ccc([1.0, 1.0], [1.0, 1.0]))  # undefined: both constant and equal


def test_ccc_errors():
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        M.ccc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        M.ccc([1, 2], [1, np.inf])


# ---------------------------------------------------------------- multilabel
def test_f1_per_label_matches_sklearn(rng):
    t = (rng.random((200, 6)) < 0.3).astype(float)
    p = (rng.random((200, 6)) < 0.4).astype(float)
    ref = f1_score(t, p, average=None, zero_division=0)
    np.testing.assert_allclose(M.f1_per_label(t, p), ref)
    assert M.mean_f1(t, p) == pytest.approx(ref.mean())


def test_f1_per_label_mask_and_nan(rng):
    t = (rng.random((150, 4)) < 0.4).astype(float)
    p = (rng.random((150, 4)) < 0.4).astype(float)
    mask = rng.random((150, 4)) < 0.6
    mask[:, 3] = False  # column 3 never annotated
    t_nan = t.copy()
    t_nan[~mask] = np.nan
    expected = [f1_score(t[mask[:, j], j], p[mask[:, j], j], zero_division=0) for j in range(3)]
    for got in (M.f1_per_label(t, p, mask), M.f1_per_label(t_nan, p)):
        np.testing.assert_allclose(got[:3], expected)
        assert np.isnan(got[3])
    assert M.mean_f1(t_nan, p) == pytest.approx(np.mean(expected))


def test_absent_label_is_left_out_of_the_mean_and_counted():
    # AU "b" is annotated but never positive in this test set: its F1 would be 0 whatever the model predicts
    # (0/0 with zero_division=0, or 0 from a false positive), so it is NaN, outside the mean, and counted.
    t = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=float)
    for p_b in ([0, 0, 0, 0], [1, 0, 0, 0]):
        p = np.stack([[1, 0, 1, 1], p_b], 1).astype(float)
        f1 = M.f1_per_label(t, p)
        assert f1[0] == pytest.approx(0.8) and np.isnan(f1[1])
        assert M.mean_f1(t, p) == pytest.approx(0.8)
    assert M.absent_labels(t) == 1
    assert M.absent_labels(t, mask=np.array([[True, False]] * 4)) == 0  # never annotated: not absent, unannotated
    s = M.score_task(Task("au2", "multilabel", ("a", "b")), t, np.stack([[.9, .1, .9, .9], [.9, .1, .1, .1]], 1))
    assert (s["mean_f1"], s["n_absent"]) == (pytest.approx(0.8), 1.0)
    assert np.isnan(s["f1_b"])


def test_macro_f1_over_all_classes_with_n_classes():
    # 4 classes, class 3 in neither y_true nor y_pred: without n_classes the mean runs over the 3 present
    t, p = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])
    present = f1_score(t, p, average="macro")
    assert M.macro_f1(t, p) == pytest.approx(present)
    assert M.macro_f1(t, p, n_classes=4) == pytest.approx(present * 3 / 4)
    assert M.macro_f1(t, p, n_classes=4) == pytest.approx(f1_score(t, p, labels=[0, 1, 2, 3], average="macro",
                                                                   zero_division=0))
    task = Task("c4", "multiclass", ("a", "b", "c", "d"))
    assert M.score_task(task, t, np.eye(4)[p])["macro_f1"] == pytest.approx(present * 3 / 4)


def test_auc_per_label_matches_sklearn_and_skips_one_class_columns(rng):
    t = (rng.random((120, 4)) < 0.3).astype(float)
    score = t * 0.3 + rng.random((120, 4))
    mask = rng.random((120, 4)) < 0.7
    t[:, 3] = 1.0  # one class only: AUC undefined
    got = M.auc_per_label(t, score, mask)
    expected = [roc_auc_score(t[mask[:, j], j], score[mask[:, j], j]) for j in range(3)]
    np.testing.assert_allclose(got[:3], expected)
    assert np.isnan(got[3])
    perfect = M.auc_per_label(np.array([[0.0], [1.0], [1.0]]), np.array([[0.2], [0.3], [0.9]]))
    assert perfect[0] == pytest.approx(1.0)


def test_f1_rejects_probabilities():
    with pytest.raises(ValueError, match=r"0/1.*0\.7"):
        M.f1_per_label(np.ones((2, 1)), np.array([[0.7], [1.0]]))


def test_attribute_mean_accuracy(rng):
    t = (rng.random((100, 5)) < 0.5).astype(float)
    p = (rng.random((100, 5)) < 0.5).astype(float)
    mask = rng.random((100, 5)) < 0.7
    expected = np.mean([accuracy_score(t[mask[:, j], j], p[mask[:, j], j]) for j in range(5)])
    assert M.attribute_mean_accuracy(t, p, mask) == pytest.approx(expected)
    assert M.attribute_mean_accuracy(t, p) == pytest.approx((t == p).mean(axis=0).mean())


# ---------------------------------------------------------------- multiclass
def test_class_metrics_match_sklearn(rng):
    t = rng.integers(0, 7, 300)
    p = np.where(rng.random(300) < 0.5, t, rng.integers(0, 7, 300))
    assert M.accuracy(t, p) == pytest.approx(accuracy_score(t, p))
    assert M.macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro"))
    assert M.uar(t, p) == pytest.approx(balanced_accuracy_score(t, p))
    assert M.uar(t, p) != pytest.approx(M.accuracy(t, p))


def test_class_metrics_mask_and_nan():
    t = np.array([0, 1, 1, 2, np.nan])
    p = np.array([0, 1, 0, 0, 2])
    # labelled: t=[0,1,1,2], p=[0,1,0,0]: accuracy 2/4; recalls 1, 1/2, 0 -> UAR 1/2
    assert M.accuracy(t, p) == pytest.approx(0.5)
    assert M.uar(t, p) == pytest.approx(0.5)
    assert M.accuracy([0, 1, 1], [0, 0, 1], mask=[True, False, True]) == pytest.approx(1.0)
    assert np.isnan(M.accuracy([np.nan], [0]))
    with pytest.raises(ValueError, match=r"1\.5"):
        M.accuracy([0, 1.5], [0, 1])


# ---------------------------------------------------------------- delta_m
def test_delta_m_hand_computed():
    mt = {"acc": 0.8, "err": 0.1}
    st = {"acc": 0.5, "err": 0.2}
    # (0.8-0.5)/0.5 = 0.6 ; lower is better: -(0.1-0.2)/0.2 = 0.5 -> mean 0.55
    assert M.delta_m(mt, st, {"err": False}) == pytest.approx(0.55)
    # all higher-is-better: (0.6 + (-0.5)) / 2
    assert M.delta_m(mt, st) == pytest.approx(0.05)
    assert M.delta_m({"f1": 0.4}, {"f1": 0.5}) == pytest.approx(-0.2)


def test_delta_m_errors():
    with pytest.raises(ValueError, match="only in st: \\['b'\\]"):
        M.delta_m({"a": 1.0}, {"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="'a' is not finite"):
        M.delta_m({"a": np.nan}, {"a": 0.5})


@pytest.mark.parametrize("mt,st,expected", [
    (0.10, -0.05, 1.5),     # negative baseline: an improvement stays positive (the ratio gave -3.0)
    (-0.05, 0.10, -1.5),    # a baseline at the floor (0.1): the ratio
    (-0.05, 0.0999, -1.499),  # just below it: divided by the floor, continuous
    (0.30, 0.002, 2.98),    # near-zero baseline: the ratio gave 149
    (0.05, 0.0, 0.5),       # zero baseline: defined
    (0.60, 0.40, 0.5),      # positive baseline above the floor: Maninis et al. / LibMTL, unchanged
])
def test_delta_m_rule_for_negative_or_near_zero_baselines(mt, st, expected):
    assert M.delta_m({"ccc": mt}, {"ccc": st}) == pytest.approx(expected)
    assert M.delta_m({"err": mt}, {"err": st}, {"err": False}) == pytest.approx(-expected)
    with pytest.raises(ValueError, match="floor"):
        M.delta_m({"ccc": mt}, {"ccc": st}, floor=0.0)
    with pytest.raises(ValueError, match="typo"):
        M.delta_m({"a": 1.0}, {"a": 2.0}, {"typo": False})


# ---------------------------------------------------------------- score_task
def test_score_task_multiclass(rng):
    t = rng.integers(0, 7, 120).astype(float)
    logits = rng.normal(size=(120, 7))
    logits[np.arange(60), t[:60].astype(int)] += 5.0
    t[-10:] = np.nan
    s = M.score_task(EXPR, t, logits)
    assert set(s) == {"accuracy", "macro_f1", "uar"}
    keep = ~np.isnan(t)
    tt, pp = t[keep].astype(int), logits[keep].argmax(1)
    assert s["accuracy"] == pytest.approx(accuracy_score(tt, pp))
    assert s["macro_f1"] == pytest.approx(f1_score(tt, pp, average="macro"))
    assert s["uar"] == pytest.approx(balanced_accuracy_score(tt, pp))
    with pytest.raises(ValueError, match=r"0\.\.6.*\[7\.0\]"):
        M.score_task(EXPR, np.array([0, 7]), np.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        M.score_task(EXPR, np.array([0, 1]), np.zeros((2, 6)))


def test_score_task_multilabel(rng):
    t = (rng.random((80, 17)) < 0.3).astype(float)
    prob = rng.random((80, 17))
    mask = np.ones_like(t, dtype=bool)
    mask[:, 5] = False
    s = M.score_task(AU, t, prob, mask=mask)
    assert set(s) == ({"mean_f1", "mean_accuracy", "mean_auc", "n_absent"} | {f"f1_{a}" for a in AU.labels}
                      | {f"auc_{a}" for a in AU.labels})
    assert s["auc_AU1"] == pytest.approx(roc_auc_score(t[:, 0], prob[:, 0]))
    assert np.isnan(s["auc_AU7"])
    binary = (prob >= 0.5).astype(float)
    assert s["f1_AU1"] == pytest.approx(f1_score(t[:, 0], binary[:, 0], zero_division=0))
    assert np.isnan(s["f1_AU7"])  # column 5 = AU7 unannotated
    others = [s[f"f1_{a}"] for i, a in enumerate(AU.labels) if i != 5]
    assert s["mean_f1"] == pytest.approx(np.mean(others))
    assert s["mean_accuracy"] == pytest.approx(np.delete((t == binary).mean(0), 5).mean())
    with pytest.raises(ValueError, match="sigmoid"):
        M.score_task(AU, t, prob * 4 - 2)


def test_score_task_regression(rng):
    t = rng.uniform(-1, 1, (50, 2))
    p = np.clip(t + rng.normal(0, 0.3, (50, 2)), -1, 1)
    t[:5, 1] = np.nan
    s = M.score_task(VA, t, p)
    assert set(s) == {"ccc_valence", "ccc_arousal", "mean_ccc"}
    assert s["ccc_valence"] == pytest.approx(M.ccc(t[:, 0], p[:, 0]))
    assert s["ccc_arousal"] == pytest.approx(M.ccc(t[5:, 1], p[5:, 1]))
    assert s["mean_ccc"] == pytest.approx((s["ccc_valence"] + s["ccc_arousal"]) / 2)
    assert all(isinstance(v, float) for v in s.values())
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        M.score_task(VA, t, p[:, :1])
