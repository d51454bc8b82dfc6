"""Tests of fbhelpers.relatedness: shipped DU priors, validation, CSV I/O, estimation with CIs, comparison."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import fbhelpers
from fbhelpers.relatedness import (
    PRIORS, Comparison, Relatedness, compare, estimate, estimation_curve, prior, samples_needed, under_label_noise,
)
from fbhelpers.tasks import AU, AUS, EXPR, EXPRESSIONS, attribute_task, classification_task

# DU Table 1: prototypical AUs (weight 1) and observational AUs (fractions); AU11 dropped.
DU_BASIC = {
    "neutral": ([], {}),
    "anger": ([4, 7, 24], {10: 0.26, 17: 0.52, 23: 0.29}),
    "disgust": ([9, 10, 17], {4: 0.31, 24: 0.26}),
    "fear": ([1, 4, 20, 25], {2: 0.57, 5: 0.63, 26: 0.33}),
    "happiness": ([12, 25], {6: 0.51}),
    "sadness": ([4, 15], {1: 0.60, 6: 0.50, 17: 0.67}),
    "surprise": ([1, 2, 25, 26], {5: 0.66}),
}
DU_COMPOUND = {
    "happily_surprised": [1, 2, 12, 25], "happily_disgusted": [10, 12, 25], "sadly_fearful": [1, 4, 20, 25],
    "sadly_angry": [4, 15], "sadly_surprised": [1, 4, 25, 26], "sadly_disgusted": [4, 10],
    "fearfully_angry": [4, 20, 25], "fearfully_surprised": [1, 2, 5, 20, 25],
    "fearfully_disgusted": [1, 4, 10, 20, 25], "angrily_surprised": [4, 25, 26], "angrily_disgusted": [4, 10, 17],
    "disgustedly_surprised": [1, 2, 5, 10], "appalled": [4, 10], "hatred": [4, 10], "awed": [1, 2, 5, 25],
}
UNCERTAIN_ALTERNATIVES = {"sadly_fearful": "AU1 AU4 AU15 AU25", "sadly_angry": "AU4 AU7 AU15",
                          "appalled": "AU4 AU9 AU10", "hatred": "AU4 AU7 AU10"}


def support(rel: Relatedness, cls: str) -> set[str]:
    row = rel.table.loc[cls]
    return set(row.index[row > 0])


def small(values=None, classes=("a", "b"), attrs=("x", "y", "z"), **kw) -> Relatedness:
    values = np.array([[0.1, 0.5, 0.9], [0.0, 1.0, 0.3]]) if values is None else values
    return Relatedness(pd.DataFrame(values, index=list(classes), columns=list(attrs)), name="small", **kw)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- shipped priors

@pytest.mark.parametrize("cls, au, value", [
    ("sadness", "AU17", 0.67), ("fear", "AU5", 0.63), ("anger", "AU24", 1.0), ("happiness", "AU6", 0.51),
    ("disgust", "AU4", 0.31), ("surprise", "AU5", 0.66), ("sadness", "AU1", 0.60), ("anger", "AU17", 0.52),
])
def test_basic_prior_published_entries(cls, au, value):
    assert prior("du2014_basic").table.loc[cls, au] == pytest.approx(value, abs=1e-12)


def test_basic_prior_is_the_whole_du_table():
    rel = prior("du2014_basic", weights="du")
    assert rel.classes == EXPRESSIONS
    assert rel.attributes == AUS
    expected = pd.DataFrame(0.0, index=list(EXPRESSIONS), columns=list(AUS))
    for cls, (proto, obs) in DU_BASIC.items():
        for au in proto:
            expected.loc[cls, f"AU{au}"] = 1.0
        for au, frac in obs.items():
            expected.loc[cls, f"AU{au}"] = frac
    np.testing.assert_allclose(rel.table.to_numpy(), expected.to_numpy(), atol=1e-12)
    assert rel.table.loc["neutral"].sum() == 0.0
    assert rel.uncertain == ()
    assert "AU11" not in rel.attributes and "AU11" in rel.provenance
    assert "PNAS 111(15)" in rel.citation and "Table 1" in rel.citation
    assert "1910.11111" in rel.citation and "2105.03790" in rel.citation
    rel.check(EXPR, AU)


def test_basic_prior_binary_has_same_support():
    du, binary = prior("du2014_basic"), prior("du2014_basic", weights="binary")
    assert set(np.unique(binary.table.to_numpy())) == {0.0, 1.0}
    np.testing.assert_array_equal(binary.table.to_numpy() > 0, du.table.to_numpy() > 0)
    assert binary.table.loc["fear", "AU5"] == 1.0
    assert binary.table.loc["neutral"].sum() == 0.0
    assert int(binary.table.to_numpy().sum()) == sum(len(p) + len(o) for p, o in DU_BASIC.values())


def test_compound_prior_sets_and_uncertain_rows():
    rel = prior("du2014_compound")
    assert rel.classes == tuple(DU_COMPOUND)
    assert rel.attributes == AUS
    assert set(np.unique(rel.table.to_numpy())) == {0.0, 1.0}
    for cls, aus in DU_COMPOUND.items():
        assert support(rel, cls) == {f"AU{a}" for a in aus}, cls
    assert support(rel, "happily_surprised") == {"AU1", "AU2", "AU12", "AU25"}
    assert len(rel.uncertain) == 4
    assert set(rel.uncertain) == set(UNCERTAIN_ALTERNATIVES)
    for cls, alternative in UNCERTAIN_ALTERNATIVES.items():
        assert alternative in rel.notes[cls]
    assert prior("du2014_compound", weights="binary").table.equals(rel.table)


def test_compound_override_by_names_and_by_values():
    rel = prior("du2014_compound", overrides={"sadly_fearful": ["AU1", "AU4", "AU15", "AU25"]})
    assert support(rel, "sadly_fearful") == {"AU1", "AU4", "AU15", "AU25"}
    assert rel.table.loc["sadly_fearful"].sum() == 4.0
    assert "sadly_fearful" not in rel.uncertain and len(rel.uncertain) == 3
    assert "sadly_fearful" in rel.provenance
    assert support(rel, "awed") == {"AU1", "AU2", "AU5", "AU25"}  # other rows untouched
    soft = prior("du2014_basic", overrides={"happiness": {"AU12": 1.0, "AU6": 0.8}})
    assert soft.table.loc["happiness", "AU6"] == 0.8
    assert soft.table.loc["happiness", "AU25"] == 0.0
    assert soft.table.loc["sadness", "AU17"] == 0.67


def test_prior_errors_list_valid_choices():
    with pytest.raises(ValueError, match="du2014_basic, du2014_compound"):
        prior("du2015")
    with pytest.raises(ValueError, match=r"'soft'.*du, binary"):
        prior("du2014_basic", weights="soft")
    with pytest.raises(ValueError, match="'contempt'"):
        prior("du2014_basic", overrides={"contempt": ["AU14"]})
    with pytest.raises(ValueError, match="AU11"):
        prior("du2014_basic", overrides={"sadness": ["AU4", "AU11"]})
    with pytest.raises(ValueError, match=r"'sadness', 'AU4'.*outside \[0, 1\]"):
        prior("du2014_basic", overrides={"sadness": {"AU4": 1.5}})
    with pytest.raises(ValueError, match=r"'sadness': AU4 = 'yes' is not a number"):
        prior("du2014_basic", overrides={"sadness": {"AU4": "yes"}})
    with pytest.raises(ValueError, match=r"list of attribute names or a mapping, got 'AU4'"):
        prior("du2014_basic", overrides={"sadness": "AU4"})


def test_shipped_files_are_package_data():
    data = Path(fbhelpers.__file__).parent / "data"
    patterns = ["data/*.csv", "data/*.yaml", "data/*.md"]
    for name in PRIORS:
        path = data / f"{name}.csv"
        assert path.is_file()
        assert any(fnmatch.fnmatch(f"data/{path.name}", p) for p in patterns)
        assert Relatedness.from_csv(path).table.equals(prior(name).table)
    assert "uncertain" in (data / "du2014_compound.csv").read_text().splitlines()[7]


# ---------------------------------------------------------------- construction and validation

def test_valid_table_properties_and_tensor():
    rel = small(counts=pd.Series({"b": 4, "a": 3}), uncertain=["b"])
    assert rel.classes == ("a", "b") and rel.attributes == ("x", "y", "z")
    assert rel.counts.tolist() == [3, 4]
    t = rel.tensor()
    assert t.dtype == torch.float32 and t.shape == (2, 3) and t.device.type == "cpu"
    assert t[1, 2].item() == pytest.approx(0.3)
    assert rel.tensor(torch.float64)[0, 0].item() == 0.1
    assert "2 classes x 3 attributes" in repr(rel)


@pytest.mark.parametrize("value, message", [
    (1.2, r"\['b', 'y'\] = 1.2 is outside \[0, 1\]"),
    (-0.1, r"\['b', 'y'\] = -0.1 is outside \[0, 1\]"),
    (np.nan, r"\['b', 'y'\] is NaN"),
    ("high", r"\['b', 'y'\] = 'high' is not a number"),
])
def test_bad_values_name_the_entry(value, message):
    values = np.array([[0.1, 0.5, 0.9], [0.0, 0.5, 0.3]], dtype=object)
    values[1, 1] = value
    with pytest.raises(ValueError, match=message):
        small(values)


def test_bad_names_and_metadata():
    with pytest.raises(ValueError, match="duplicate class name 'a'"):
        small(classes=("a", "a"))
    with pytest.raises(ValueError, match="duplicate attribute name 'x'"):
        small(attrs=("x", "y", "x"))
    with pytest.raises(ValueError, match="unknown classes \\['c'\\]"):
        small(uncertain=("c",))
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        small(counts=pd.Series({"a": 3}))
    with pytest.raises(ValueError, match=r"counts\['a'\] = -1"):
        small(counts=pd.Series({"a": -1, "b": 2}))
    lo = pd.DataFrame(0.0, index=["a", "b"], columns=["x", "y", "z"])
    hi = lo + 0.5
    with pytest.raises(ValueError, match="both ci_low and ci_high"):
        small(ci_low=lo)
    with pytest.raises(ValueError, match=r"ci_low\['a', 'x'\] = 0.5 > ci_high = 0.0"):
        small(ci_low=hi, ci_high=lo)
    with pytest.raises(ValueError, match="missing \\['z'\\]"):
        small(ci_low=lo[["x", "y"]], ci_high=hi[["x", "y"]])


def test_check_names_missing_and_extra():
    rel = prior("du2014_basic")
    au8 = attribute_task("au", ["AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU20", "AU27"])
    with pytest.raises(ValueError, match=r"missing from the table \['AU27'\].*extra in the table \['AU5', "):
        rel.check(EXPR, au8)
    expr8 = classification_task("expr", [*EXPRESSIONS, "contempt"])
    with pytest.raises(ValueError, match=r"missing from the table \['contempt'\], extra in the table \[\]"):
        rel.check(expr8, AU)
    with pytest.raises(ValueError, match="different order"):
        rel.check(classification_task("expr", EXPRESSIONS[::-1]), AU)
    with pytest.raises(ValueError, match="is multilabel, expected multiclass"):
        rel.check(AU, AU)


def test_align_reorders_subsets_and_fills():
    rel = prior("du2014_basic")
    sub = rel.align(["surprise", "fear"], ["AU5", "AU1"])
    assert sub.classes == ("surprise", "fear") and sub.attributes == ("AU5", "AU1")
    np.testing.assert_allclose(sub.table.to_numpy(), [[0.66, 1.0], [0.63, 1.0]])
    with pytest.raises(ValueError, match=r"no row for classes \['contempt'\]"):
        rel.align([*EXPRESSIONS, "contempt"], AUS)
    with pytest.raises(ValueError, match=r"no column for attributes \['AU27'\].*fill"):
        rel.align(EXPR, [*AUS, "AU27"])
    filled = small(ci_low=small().table * 0.5, ci_high=small().table * 0 + 1.0).align(["b"], ["w", "x"], fill=0.0)
    assert filled.table.loc["b"].tolist() == [0.0, 0.0]
    assert filled.ci_low.loc["b", "w"] == 0.0 and filled.ci_high.loc["b", "w"] == 1.0
    task_aligned = rel.align(EXPR, AU)
    task_aligned.check(EXPR, AU)
    assert prior("du2014_compound").align(["hatred", "awed"], AUS).uncertain == ("hatred",)


def test_large_table_200_by_312(tmp_path):
    rng = np.random.default_rng(0)
    species = [f"species_{i:03d}" for i in range(200)]
    attrs = [f"has_part::value_{j}" for j in range(312)]
    values = rng.integers(0, 101, size=(200, 312)) / 100
    rel = Relatedness(pd.DataFrame(values, index=species, columns=attrs), name="cub", citation="CUB-200-2011")
    rel.check(classification_task("species", species), attribute_task("attr", attrs))
    assert rel.tensor().shape == (200, 312)
    back = Relatedness.from_csv(rel.to_csv(tmp_path / "cub.csv"))
    np.testing.assert_array_equal(back.table.to_numpy(), values)
    assert back.attributes == tuple(attrs) and back.name == "cub" and back.citation == "CUB-200-2011"
    assert rel.align(species[::-1], attrs[:10]).table.iloc[0, 0] == values[-1, 0]
    self_cmp = compare(rel, back)
    assert self_cmp.summary == 0.0 and float(self_cmp.divergence.abs().max()) < 1e-12


# ---------------------------------------------------------------- CSV files

def test_csv_round_trip_keeps_everything(tmp_path):
    lo = small().table * 0.5
    rel = small(ci_low=lo, ci_high=(lo + 0.5).clip(upper=1.0), counts={"a": 3, "b": 0}, uncertain=("b",),
                notes={"b": "no co-annotated rows"}, citation="made up", provenance="line one\nline two")
    back = Relatedness.from_csv(rel.to_csv(tmp_path / "rt.csv"))
    for attr in ("table", "ci_low", "ci_high"):
        pd.testing.assert_frame_equal(getattr(back, attr), getattr(rel, attr))
    assert back.counts.tolist() == [3, 0]
    assert back.uncertain == ("b",) and back.notes == {"b": "no co-annotated rows"}
    assert (back.name, back.citation, back.provenance) == ("small", "made up", "line one\nline two")


HEADER = "# name: mine\nclass,x,y\n"


@pytest.mark.parametrize("body, message", [
    ("a,0.1,0.2\nb,0.3,abc\n", r"line 4: column 'y': value 'abc' is not a number"),
    ("a,0.1,0.2\nb,0.3,1.5\n", r"line 4: column 'y': value '1.5' is outside \[0, 1\]"),
    ("a,0.1,nan\n", r"line 3: column 'y': value 'nan' is outside"),
    ("a,0.1,\n", r"line 3: column 'y': value '' is not a number"),
    ("a,0.1,0.2,0.3\n", r"line 3: expected 3 fields, got 4"),
    ("a,0.1,0.2\na,0.3,0.4\n", r"line 4: duplicate class 'a'"),
    ("", r"no class rows"),
])
def test_malformed_csv_names_file_line_and_value(tmp_path, body, message):
    path = write(tmp_path, HEADER + body, "bad.csv")
    with pytest.raises(ValueError, match=message) as err:
        Relatedness.from_csv(path)
    assert "bad.csv" in str(err.value)


def test_malformed_csv_headers_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"h.csv: line 1: header must start with 'class', got 'expr'"):
        Relatedness.from_csv(write(tmp_path, "expr,x\na,0.1\n", "h.csv"))
    with pytest.raises(ValueError, match=r"line 1: empty or duplicate column name 'x'"):
        Relatedness.from_csv(write(tmp_path, "class,x,x\na,0.1,0.2\n"))
    with pytest.raises(ValueError, match=r"CI columns .* \['ci_high:x'\]"):
        Relatedness.from_csv(write(tmp_path, "class,x,ci_low:x\na,0.1,0.0\n"))
    with pytest.raises(ValueError, match=r"line 2: column 'count': value '2.5'"):
        Relatedness.from_csv(write(tmp_path, "class,x,count\na,0.1,2.5\n"))
    with pytest.raises(ValueError, match=r"c.csv: no header found"):
        Relatedness.from_csv(write(tmp_path, "# only a comment\n", "c.csv"))
    with pytest.raises(ValueError, match=r"cannot read relatedness file '.*nope.csv'"):
        Relatedness.from_csv(tmp_path / "nope.csv")
    rel = Relatedness.from_csv(write(tmp_path, "class,x\n# a note\na,0.25\n", "plain.csv"))
    assert rel.name == "plain" and rel.table.loc["a", "x"] == 0.25 and rel.provenance == "a note"


# ---------------------------------------------------------------- estimation

def sample(truth: pd.DataFrame, n_per_class: int, rng: np.random.Generator) -> pd.DataFrame:
    codes = np.repeat(np.arange(len(truth)), n_per_class)
    probs = truth.to_numpy()[codes]
    df = pd.DataFrame((rng.random(probs.shape) < probs).astype(float), columns=truth.columns)
    df.insert(0, "cls", pd.array(codes, dtype="Int64"))
    return df


TRUTH = pd.DataFrame([[0.1, 0.5, 0.9, 0.3], [0.7, 0.2, 0.05, 0.6], [0.4, 0.8, 0.5, 0.15]],
                     index=["p", "q", "r"], columns=["u", "v", "w", "x"])


def test_estimate_recovers_known_table():
    df = sample(TRUTH, 4000, np.random.default_rng(1))
    rel = estimate(df, "cls", TRUTH.columns, class_labels=TRUTH.index)
    se = np.sqrt(TRUTH * (1 - TRUTH) / 4000)
    z = ((rel.table - TRUTH) / se).abs()
    assert float(z.to_numpy().max()) < 4.0
    assert rel.counts.tolist() == [4000, 4000, 4000]
    assert rel.uncertain == ()
    assert bool(((rel.ci_low <= rel.table) & (rel.table <= rel.ci_high)).to_numpy().all())
    width = (rel.ci_high - rel.ci_low).to_numpy()
    np.testing.assert_allclose(width, 2 * 1.96 * se.to_numpy(), rtol=0.05)
    named = df.assign(cls=TRUTH.index.to_numpy()[df["cls"].to_numpy(int)])
    pd.testing.assert_frame_equal(estimate(named, "cls", TRUTH.columns).table, rel.table)


def test_estimate_ci_coverage_is_near_nominal():
    rng = np.random.default_rng(2)
    hits = []
    for _ in range(150):
        rel = estimate(sample(TRUTH, 60, rng), "cls", TRUTH.columns, class_labels=TRUTH.index, ci=0.9)
        hits.append(((rel.ci_low <= TRUTH) & (TRUTH <= rel.ci_high)).to_numpy())
    coverage = float(np.mean(hits))
    assert coverage == pytest.approx(0.9, abs=0.03)


def test_estimate_ignores_missing_labels():
    df = pd.DataFrame({
        "expr": pd.array([0, 0, 0, 0, 1, 1, pd.NA, pd.NA], dtype="Int64"),
        "AU1": pd.array([1, 1, None, None, 0, 1, 0, 0], dtype="Float64"),
        "AU2": [np.nan, np.nan, np.nan, np.nan, 1.0, np.nan, 1.0, 1.0],
    })
    rel = estimate(df, "expr", ["AU1", "AU2"], class_labels=["neutral", "anger", "fear"], smoothing=1e-9)
    assert rel.table.loc["neutral", "AU1"] == pytest.approx(1.0, abs=1e-8)  # 2 of 2 labelled, not 2 of 4
    assert rel.table.loc["anger", "AU1"] == pytest.approx(0.5, abs=1e-8)
    assert rel.table.loc["anger", "AU2"] == pytest.approx(1.0, abs=1e-8)  # rows without a class are ignored
    assert rel.table.loc["neutral", "AU2"] == pytest.approx(0.5)  # never labelled: the prior mean
    assert rel.counts.tolist() == [2, 2, 0]
    smoothed = estimate(df, "expr", ["AU1", "AU2"], class_labels=["neutral", "anger", "fear"], smoothing=1.0)
    assert smoothed.table.loc["neutral", "AU1"] == pytest.approx(3 / 4)  # (2 + 1) / (2 + 2)
    assert smoothed.ci_low.loc["neutral", "AU1"] == pytest.approx(stats.beta.ppf(0.025, 3, 1))


def test_estimate_class_without_samples_gets_the_prior():
    df = pd.DataFrame({"expr": pd.array([0, 0, 1], dtype="Int64"), "AU1": [1.0, 0.0, 1.0]})
    rel = estimate(df, "expr", ["AU1"], class_labels=["neutral", "anger", "fear"], smoothing=2.0, ci=0.9)
    assert rel.table.loc["fear", "AU1"] == 0.5
    assert rel.ci_low.loc["fear", "AU1"] == pytest.approx(stats.beta.ppf(0.05, 2, 2))
    assert rel.ci_high.loc["fear", "AU1"] == pytest.approx(stats.beta.ppf(0.95, 2, 2))
    assert rel.counts["fear"] == 0
    assert rel.uncertain == ("fear",)
    assert rel.table.loc["anger", "AU1"] == pytest.approx(3 / 5)


def test_estimate_errors():
    df = pd.DataFrame({"expr": pd.array([0, 3], dtype="Int64"), "AU1": [1.0, 2.0], "name": ["a", "z"]})
    with pytest.raises(ValueError, match="integer codes; pass class_labels"):
        estimate(df, "expr", ["AU1"])
    with pytest.raises(ValueError, match=r"code 3.0 is not in 0..2"):
        estimate(df, "expr", [], class_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class 'z' is not in class_labels"):
        estimate(df, "name", [], class_labels=["a", "b"])
    with pytest.raises(ValueError, match=r"'AU1': value 2.0 is not 0, 1"):
        estimate(df, "name", ["AU1"])
    with pytest.raises(KeyError, match=r"\['AU2'\]"):
        estimate(df, "name", ["AU2"])
    with pytest.raises(ValueError, match="smoothing must be > 0"):
        estimate(df, "name", [], smoothing=0.0)
    with pytest.raises(ValueError, match="ci must be in"):
        estimate(df, "name", [], ci=95)


# ---------------------------------------------------------------- comparison

def test_compare_with_itself_is_zero():
    rel = prior("du2014_basic")
    cmp = compare(rel, rel)
    assert isinstance(cmp, Comparison)
    assert float(cmp.difference.abs().to_numpy().max()) == 0.0
    assert float(cmp.divergence.abs().max()) < 1e-12
    assert cmp.summary == 0.0
    assert cmp.coverage is None
    assert cmp.classes == EXPRESSIONS and cmp.dropped_classes == () and cmp.dropped_attributes == ()


def test_compare_values_overlap_and_coverage():
    a = small(ci_low=small().table.clip(lower=0.05) - 0.05, ci_high=small().table.clip(upper=0.95) + 0.05)
    b_table = pd.DataFrame([[0.2, 0.5], [0.0, 1.0], [0.5, 0.5]], index=["a", "b", "c"], columns=["x", "y"])
    cmp = compare(a, Relatedness(b_table, name="b"))
    assert cmp.classes == ("a", "b") and cmp.attributes == ("x", "y")
    assert cmp.dropped_classes == ("c",) and cmp.dropped_attributes == ("z",)
    np.testing.assert_allclose(cmp.difference.to_numpy(), [[-0.1, 0.0], [0.0, 0.0]], atol=1e-12)
    assert cmp.summary == pytest.approx(0.025)
    kl = 0.1 * np.log(0.1 / 0.2) + 0.9 * np.log(0.9 / 0.8)
    assert cmp.divergence["a"] == pytest.approx(kl / 2)
    assert cmp.coverage == pytest.approx(3 / 4)  # a/x = 0.2 lies outside [0.05, 0.15]
    with pytest.raises(ValueError, match="no shared classes"):
        compare(a, Relatedness(b_table.rename(index=str.upper)))
    with pytest.raises(ValueError, match="no shared attributes"):
        compare(a, Relatedness(b_table.rename(columns=str.upper)))


def test_compare_estimate_with_prior_covers_truth():
    truth = prior("du2014_basic").align(["anger", "sadness"], ["AU10", "AU17", "AU23", "AU1", "AU6"])
    df = sample(truth.table, 500, np.random.default_rng(3))
    est = estimate(df, "cls", truth.attributes, class_labels=truth.classes)
    cmp = compare(est, truth)
    assert cmp.coverage >= 0.9  # 4 of the 10 entries are exact zeros: covered thanks to extend_to_bounds
    zeros = truth.table.to_numpy() == 0
    assert bool((est.ci_low.to_numpy()[zeros] == 0.0).all())
    strict = estimate(df, "cls", truth.attributes, class_labels=truth.classes, extend_to_bounds=False)
    assert bool((strict.ci_low.to_numpy()[zeros] > 0.0).all())
    assert compare(strict, truth).coverage <= 0.6
    assert cmp.summary < 0.03
    assert float(cmp.divergence.max()) < 0.01


# ---------------------------------------------------------------------------------------------- label noise, curves
def test_under_label_noise_by_hand():
    rel = Relatedness(TRUTH)
    assert under_label_noise(rel).table.to_numpy() == pytest.approx(TRUTH.to_numpy())
    # 3 classes, uniform prior, class noise 0.3: p(true = a | annotated a) = 0.7, each other class 0.15
    q = under_label_noise(rel, class_noise=0.3).table
    assert q.loc["p", "u"] == pytest.approx(0.7 * 0.1 + 0.15 * 0.7 + 0.15 * 0.4)
    both = under_label_noise(rel, class_noise=0.3, attr_noise=0.1).table
    assert both.loc["p", "u"] == pytest.approx(q.loc["p", "u"] * 0.9 + (1 - q.loc["p", "u"]) * 0.1)
    # a skewed prior: p(true | annotated) follows Bayes' rule
    skew = under_label_noise(rel, class_noise=0.3, class_prior=[2, 1, 1]).table
    post = np.array([0.7 * 0.5, 0.15 * 0.25, 0.15 * 0.25]) / (0.7 * 0.5 + 0.15 * 0.5)
    assert skew.loc["p", "u"] == pytest.approx(post @ TRUTH["u"].to_numpy())


def test_under_label_noise_matches_noisy_estimate():
    rng = np.random.default_rng(5)
    df = sample(TRUTH, 20000, rng)
    codes = df["cls"].to_numpy(int)
    flip = rng.random(len(df)) < 0.2
    df["cls"] = pd.array(np.where(flip, (codes + rng.integers(1, 3, len(df))) % 3, codes), dtype="Int64")
    attrs = df[list(TRUTH.columns)].to_numpy()
    df[list(TRUTH.columns)] = np.where(rng.random(attrs.shape) < 0.05, 1 - attrs, attrs)
    est = estimate(df, "cls", TRUTH.columns, class_labels=TRUTH.index).table
    expected = under_label_noise(Relatedness(TRUTH), class_noise=0.2, attr_noise=0.05).table
    assert float((est - expected).abs().to_numpy().max()) < 0.015


def test_under_label_noise_errors():
    with pytest.raises(ValueError, match="class_noise must be in"):
        under_label_noise(Relatedness(TRUTH), class_noise=1.5)
    with pytest.raises(ValueError, match="class_prior must be 3"):
        under_label_noise(Relatedness(TRUTH), class_prior=[1, 1])


def test_estimation_curve_error_shrinks_and_covers():
    truth = Relatedness(TRUTH)

    def draw(n, seed):
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, 3, n)
        df = pd.DataFrame((rng.random((n, 4)) < TRUTH.to_numpy()[codes]).astype(float), columns=TRUTH.columns)
        df.insert(0, "cls", pd.array(codes, dtype="Int64"))
        return df

    curve = estimation_curve(truth, draw, sizes=[30, 3000], repeats=20, class_col="cls", ci=0.9)
    assert list(curve.columns) == ["n", "repeat", "error", "max_error", "coverage", "ci_width"]
    assert len(curve) == 40
    means = curve.groupby("n").mean()
    assert means.loc[3000, "error"] < means.loc[30, "error"] / 5
    assert means.loc[3000, "coverage"] == pytest.approx(0.9, abs=0.05)
    assert means.loc[3000, "ci_width"] < means.loc[30, "ci_width"]
    again = estimation_curve(truth, draw, sizes=[30, 3000], repeats=20, class_col="cls", ci=0.9)
    pd.testing.assert_frame_equal(curve, again)
    assert samples_needed(curve, 0.05) == 3000
    assert samples_needed(curve, 1e-9) is None


def test_estimation_curve_from_a_pool_and_errors():
    pool = sample(TRUTH, 50, np.random.default_rng(3))
    curve = estimation_curve(Relatedness(TRUTH), pool, sizes=[150], repeats=3, class_col="cls")
    assert curve["error"].nunique() == 1  # the whole pool every time
    full = estimate(pool, "cls", TRUTH.columns, class_labels=TRUTH.index).table
    assert curve["error"].iloc[0] == pytest.approx(float((full - TRUTH).abs().to_numpy().mean()))
    with pytest.raises(ValueError, match="exceeds the pool of 150"):
        estimation_curve(Relatedness(TRUTH), pool, sizes=[151], class_col="cls")
    with pytest.raises(ValueError, match="sizes must be positive"):
        estimation_curve(Relatedness(TRUTH), pool, sizes=[0], class_col="cls")
    with pytest.raises(KeyError, match="'nope'"):
        samples_needed(curve, column="nope")


def test_matrix_aligns_to_the_heads_label_orders():
    rel = prior("du2014_basic")
    classes, aus = tuple(reversed(EXPRESSIONS)), tuple(reversed(AUS))
    r = rel.matrix(classes, aus)
    assert r.shape == (7, 17) and r.dtype == np.float64
    for i, c in enumerate(classes):
        for j, a in enumerate(aus):
            assert r[i, j] == rel.table.loc[c, a]
    np.testing.assert_array_equal(rel.matrix(EXPR, AU), rel.align(EXPR, AU).table.to_numpy())
    with pytest.raises(ValueError, match="no column for attributes"):
        rel.matrix(EXPR, ("AU99",))
    assert rel.matrix(EXPR, ("AU99",), fill=0.0).sum() == 0.0
