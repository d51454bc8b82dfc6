"""SynthFaces (fbhelpers.synthetic.faces / regimes): determinism, AU locality, label statistics, regimes, errors."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from fbhelpers.plots import gallery
from fbhelpers.relatedness import Relatedness, prior
from fbhelpers.synthetic import (
    AU_REGIONS, AU_SETS, PRESETS, REGIMES, FaceConfig, au_probabilities, bayes_ceiling, compound_test_set,
    face_study, make_faces, region_mask, render_faces, sample_labels, sample_nuisance, source_specs,
)
from fbhelpers.tasks import AUS, EXPRESSIONS, FACE_TASKS, VA_LABELS

LABEL_COLUMNS = ["expr", *AUS, *VA_LABELS]


def test_same_seed_same_study_other_seed_differs():
    a = face_study("pair", "default", size=48, n_scale=0.02, seed=3)
    b = face_study("pair", "default", size=48, n_scale=0.02, seed=3)
    c = face_study("pair", "default", size=48, n_scale=0.02, seed=4)
    for name in a.sources:
        assert np.array_equal(a.sources[name].images, b.sources[name].images)
        pd.testing.assert_frame_equal(a.sources[name].table, b.sources[name].table)
        pd.testing.assert_frame_equal(a.truth[name], b.truth[name])
        assert not np.array_equal(a.sources[name].images, c.sources[name].images)


def test_rendering_is_batch_independent_and_sized():
    images, truth = make_faces(20, size=56, seed=1)
    again, _ = make_faces(20, size=56, seed=1)
    assert images.shape == (20, 56, 56, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again)
    nuisance = sample_nuisance(20, seed=1)
    whole = render_faces(truth, nuisance, 56)
    one_by_one = np.concatenate([render_faces(truth.iloc[[i]], nuisance.iloc[[i]], 56) for i in range(20)])
    assert np.array_equal(whole, one_by_one)
    grey = render_faces(truth, nuisance, 48, channels=1)
    assert grey.shape == (20, 48, 48, 1)


def test_each_au_changes_pixels_only_inside_its_region_and_weak_aus_show():
    n, size = 24, 64
    cfg = FaceConfig(occlusion=0.0)
    labels = sample_labels(n, seed=7)
    nuisance = sample_nuisance(n, cfg, seed=7)
    others = labels[[f"i_{a}" for a in AUS]].to_numpy()
    for j, au in enumerate(AUS):
        on, weak, off = others.copy(), others.copy(), others.copy()
        on[:, j], weak[:, j], off[:, j] = 1.0, cfg.intensity_min, 0.0
        base = render_faces(off, nuisance, size).astype(int)
        changed = np.any(render_faces(on, nuisance, size) != base, axis=-1)
        inside = region_mask(au, nuisance, size)
        assert not (changed & ~inside).any(), f"{au} changed pixels outside {AU_REGIONS[au]}"
        assert changed.sum(axis=(1, 2)).min() >= 4, f"{au} at full intensity barely visible"
        # the weakest active intensity still moves pixels visibly (>= 8 grey levels somewhere) on every face
        weak_diff = np.abs(render_faces(weak, nuisance, size).astype(int) - base).max(axis=(1, 2, 3))
        assert weak_diff.min() >= 8, f"{au} at intensity {cfg.intensity_min} invisible on some face"


def test_weakest_au_is_visible_at_48_px():
    """At the smallest size the notebooks use, each AU at the lowest intensity moves enough pixels to be learnt."""
    n, size = 60, 48
    nuisance = sample_nuisance(n, FaceConfig(occlusion=0.0, noise_sd=(0.0, 0.0)), seed=3)
    base = render_faces(np.zeros((n, len(AUS))), nuisance, size).astype(int)
    for j, au in enumerate(AUS):
        weak = np.zeros((n, len(AUS)))
        weak[:, j] = FaceConfig().intensity_min
        diff = np.abs(render_faces(weak, nuisance, size).astype(int) - base).mean(axis=-1)
        assert (diff > 8).sum(axis=(1, 2)).mean() >= 10, f"{au} at the lowest intensity moves too few pixels"


def test_label_statistics_match_the_generating_table():
    n = 20_000
    cfg = FaceConfig(expr_noise=0.1)
    labels = sample_labels(n, config=cfg, seed=11)
    codes = labels["expr"].to_numpy(dtype=int)
    counts = np.bincount(codes, minlength=7)
    z_class = (counts - n / 7) / np.sqrt(n * (1 / 7) * (6 / 7))
    assert np.abs(z_class).max() < 4.5
    p = au_probabilities(None, cfg.au_miss, cfg.au_spont).to_numpy()
    active = labels[list(AUS)].to_numpy()
    for c in range(7):
        rows = active[codes == c]
        z = (rows.sum(axis=0) - len(rows) * p[c]) / np.sqrt(len(rows) * p[c] * (1 - p[c]))
        assert np.abs(z).max() < 4.5, f"class {EXPRESSIONS[c]}: AU rates off the table, z = {z.round(1)}"
    flipped = (labels["expr_obs"] != labels["expr"]).mean()
    assert abs(flipped - 0.1) < 4.5 * np.sqrt(0.1 * 0.9 / n)
    inten = labels[[f"i_{a}" for a in AUS]].to_numpy()
    assert np.array_equal(inten > 0, active > 0)
    assert inten[inten > 0].min() >= cfg.intensity_min and inten.max() <= 1.0
    va = labels[list(VA_LABELS)].to_numpy()
    assert np.abs(va).max() <= 1.0
    happy, sad = codes == EXPRESSIONS.index("happiness"), codes == EXPRESSIONS.index("sadness")
    assert va[happy, 0].mean() > 0.3 and va[sad, 0].mean() < -0.3  # valence follows the circumplex


def test_bayes_ceiling_exact_mc_and_limits():
    exact = bayes_ceiling()
    assert 1 / 7 < exact <= 1.0
    assert exact == pytest.approx(0.869, abs=0.005)  # the documented default
    assert bayes_ceiling(method="mc", n_mc=100_000, seed=1) == pytest.approx(exact, abs=0.01)
    assert bayes_ceiling(au_miss=0.0, au_spont=0.0) == pytest.approx(1.0)  # DU sets are separable (METHOD §7)
    noisy = bayes_ceiling(expr_noise=0.1)
    assert noisy == pytest.approx(exact * 0.9 + (1 - exact) * 0.1 / 6)
    # the Bayes rule applied to sampled AUs reaches the ceiling
    labels = sample_labels(20_000, seed=5)
    p = au_probabilities().to_numpy()
    a = labels[list(AUS)].to_numpy()
    loglik = a @ np.log(p).T + (1 - a) @ np.log(1 - p).T
    acc = np.mean(loglik.argmax(axis=1) == labels["expr"].to_numpy(dtype=int))
    assert acc == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20_000))


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("preset", PRESETS)
def test_regime_sources_and_masks(regime, preset):
    study = face_study(regime, preset, size=32, n_scale=0.02, seed=0)
    specs = {s.name: s for s in source_specs(regime, preset)}
    assert list(study.sources) == list(specs)
    assert study.tasks == FACE_TASKS
    assert study.couplings[0].class_task == "expr" and study.couplings[0].attr_task == "au"
    assert study.relatedness.classes == EXPRESSIONS and study.relatedness.attributes == AUS
    for name, src in study.sources.items():
        spec, table, truth = specs[name], src.table, study.truth[name]
        assert list(table.columns) == ["split", "source", *LABEL_COLUMNS]
        assert table["expr"].dtype == "Int64" and set(table["split"]) <= {"train", "val", "test"}
        assert len(src.images) == len(table) == len(truth)
        n_val = int((table["split"] == "val").sum())
        assert n_val == int((table["split"] == "train").sum()) // 10
        test, train = table[table["split"] == "test"], table[table["split"] != "test"]  # val is labelled like train
        assert not test[LABEL_COLUMNS].isna().any().any(), f"{name}: test split not fully labelled"
        assert (test["expr"].to_numpy(dtype=int) == truth.loc[test.index, "expr"].to_numpy(dtype=int)).all()
        for au in AUS:
            labelled = "au" in spec.tasks and (spec.aus is None or au in spec.aus)
            assert train[au].notna().all() if labelled else train[au].isna().all(), f"{name} {au}"
        for va in VA_LABELS:
            assert train[va].notna().all() if "va" in spec.tasks else train[va].isna().all()
        if "expr" not in spec.tasks:
            assert train["expr"].isna().all()
        else:
            kept = spec.expr_classes or EXPRESSIONS
            assert set(EXPRESSIONS[c] for c in train["expr"].dropna()) <= set(kept)
    info = study.info
    assert sorted(info["labelled_aus"] + info["unlabelled_aus"], key=AUS.index) == list(AUS)
    assert 1 / 7 < info["bayes_ceiling"] <= 1
    assert info["sizes"] == {n: {split: int((s.table.split == split).sum()) for split in ("train", "val", "test")}
                             for n, s in study.sources.items()}
    unlabelled = {("paper", "scarce_au"): ["AU7", "AU10", "AU14", "AU23", "AU24"],
                  ("pair", "scarce_au"): [a for a in AUS if a not in AU_SETS["abaw2020"]]}
    assert info["unlabelled_aus"] == unlabelled.get((regime, preset), [])
    assert info["unlabelled_classes"] == (["disgust", "fear"] if preset == "scarce_expr" else [])


def test_label_noise_and_imbalance_knobs():
    study = face_study("pair", "full", size=32, n_scale=0.5, seed=2, expr_noise=0.3, au_noise=0.0, imbalance=1.0,
                       sources={"au_source": {"n_train": 10, "n_test": 5}})
    assert study.info["sizes"]["au_source"] == {"train": 5, "val": 0, "test": 2}  # overrides, then n_scale
    table, truth = study.sources["expr_source"].table, study.truth["expr_source"]
    train = (table["split"] == "train").to_numpy()
    wrong = (table["expr"][train].to_numpy(dtype=int) != truth["expr"][train].to_numpy(dtype=int)).mean()
    assert wrong == pytest.approx(0.3, abs=0.06)
    assert (table.loc[train, list(AUS)].to_numpy() == truth.loc[train, list(AUS)].to_numpy()).all()
    share = np.bincount(truth["expr"][train].to_numpy(dtype=int), minlength=7) / train.sum()
    assert share[EXPRESSIONS.index("happiness")] > 0.3 and share[EXPRESSIONS.index("disgust")] < 0.05


def test_compound_test_set_uses_the_compound_table():
    rel = prior("du2014_compound")
    src = compound_test_set(3000, size=32, seed=0)
    codes = src.table["compound"].to_numpy(dtype=int)
    assert src.images.shape == (3000, 32, 32, 3) and set(src.table["split"]) == {"test"}
    assert src.table["expr"].isna().all() and codes.max() < len(rel.classes)
    p = au_probabilities(rel, classes=None).to_numpy()
    rates = np.array([src.table[list(AUS)].to_numpy()[codes == c].mean(axis=0) for c in range(len(p))])
    assert np.abs(rates - p).max() < 0.15


def test_custom_tables_are_accepted_and_validated():
    table = prior("du2014_basic").table[["AU1", "AU4", "AU12"]]
    study = face_study("pair", "default", size=32, n_scale=0.01, relatedness=Relatedness(table, name="small"))
    assert study.relatedness.table["AU26"].eq(0).all()  # absent AUs filled with 0
    with pytest.raises(ValueError, match="AU99"):
        sample_labels(5, relatedness=Relatedness(table.rename(columns={"AU1": "AU99"}), name="bad"))
    with pytest.raises(ValueError, match="missing .*neutral"):
        face_study(relatedness=prior("du2014_compound"), n_scale=0.01)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"regime": "paperz"}, ValueError, "'paperz'.*paper, pair"),
    ({"preset": "tiny"}, ValueError, "'tiny'.*default, scarce_au, scarce_expr, full"),
    ({"n_scale": -1}, ValueError, "n_scale"),
    ({"size": 8}, ValueError, "size"),
    ({"channels": 2}, ValueError, "channels"),
    ({"sources": {"disfa_like": {"n_train": -5}}}, ValueError, "n_train.*-5"),
    ({"sources": {"disfa_like": {"aus": ("AU1", "AU3")}}}, ValueError, "AU3"),
    ({"sources": {"nope": {}}}, ValueError, "nope"),
    ({"sources": {"disfa_like": {"colour": 1}}}, ValueError, "colour"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        face_study(**{"n_scale": 0.01, **kwargs})


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="-3"):
        sample_labels(-3)
    with pytest.raises(ValueError, match="au_miss"):
        FaceConfig(au_miss=1.5)
    with pytest.raises(ValueError, match="shape"):
        render_faces(np.zeros((2, 5)), sample_nuisance(2), 32)
    with pytest.raises(KeyError, match="AU3"):
        region_mask("AU3", sample_nuisance(1))
    with pytest.raises(ValueError, match="method"):
        bayes_ceiling(method="guess")


def test_gallery_captions_labels():
    study = face_study("pair", "scarce_au", size=32, n_scale=0.01, seed=0)
    src = study.sources["au_source"]
    fig = gallery(src.images, src.table, n=4, ncols=2, title="au source")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    first = shown[0].get_title()
    assert first.startswith("–") if pd.isna(src.table["expr"].iloc[0]) else first
    assert "AU " in first
    with pytest.raises(ValueError, match="rows"):
        gallery(src.images[:2], src.table, n=2)
