"""The coupling comparison: table, Δm, negative transfer and paired differences on known numbers; a tiny run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fbhelpers.train import evaluate
from fbhelpers.experiments import (
    compare_coupling, comparison_table, delta_m_table, largest_first_quota, negative_transfer, paired_difference,
    transfer_counts,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def fake_results() -> pd.DataFrame:
    rows = []
    values = {"st": (0.80, 0.50), "mt": (0.78, 0.52), "mt_dm": (0.82, 0.70)}
    for variant, (acc, f1) in values.items():
        for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
            rows += [(variant, seed, "affect", "expr", "accuracy", acc + jitter),
                     (variant, seed, "aus", "au", "mean_f1", f1 + 2 * jitter),
                     (variant, seed, "aus", "au", "f1_AU1", 0.3)]
    return pd.DataFrame(rows, columns=["variant", "seed", "source", "task", "metric", "value"])


def test_table_delta_m_and_negative_transfer():
    r = fake_results()
    table = comparison_table(r)
    assert list(table.columns) == ["st", "mt", "mt_dm"]
    assert table.loc[("aus", "au", "mean_f1"), "mt_dm"] == "0.700 ± 0.020"
    assert ("aus", "au", "f1_AU1") not in table.index
    dm = delta_m_table(r)
    assert dm.loc["mt_dm", "mean"] == pytest.approx(np.mean([(0.82 - 0.80) / 0.80, (0.70 - 0.50) / 0.50]), rel=1e-2)
    assert dm.loc["mt", "std"] == pytest.approx(0.0, abs=1e-3)
    counts = transfer_counts(negative_transfer(r))
    assert counts.to_dict("index") == {"mt": {"negative": 1, "beyond_spread": 1, "of": 2},
                                       "mt_dm": {"negative": 0, "beyond_spread": 0, "of": 2}}
    nt = negative_transfer(r).set_index(["variant", "task"])
    assert bool(nt.loc[("mt", "expr"), "negative"]) and bool(nt.loc[("mt", "expr"), "beyond_spread"])
    assert not nt.loc[("mt_dm", "au"), "negative"] and nt.loc[("mt_dm", "au"), "gap"] == pytest.approx(0.2)
    assert dm["n_floored"].tolist() == [0, 0]
    # a VA CCC near zero in ST is divided by the floor (0.1), and counted
    va = pd.DataFrame([(v, seed, "affect", "va", "mean_ccc", x) for seed in (0, 1, 2)
                       for v, x in (("st", -0.02), ("mt", 0.30), ("mt_dm", 0.40))], columns=r.columns)
    dm_va = delta_m_table(pd.concat([r, va], ignore_index=True))
    assert dm_va.loc["mt_dm", "mean"] == pytest.approx(
        np.mean([(0.82 - 0.80) / 0.80, (0.70 - 0.50) / 0.50, 0.42 / 0.1]), rel=1e-2)
    assert dm_va["n_floored"].tolist() == [3, 3]
    assert delta_m_table(pd.concat([r, va], ignore_index=True), floor=0.01).loc["mt_dm", "mean"] == pytest.approx(
        np.mean([(0.82 - 0.80) / 0.80, (0.70 - 0.50) / 0.50, 0.42 / 0.01]), rel=1e-2)
    diff = paired_difference(r, "mt_dm", "mt", "mean_f1")
    assert diff["mean_diff"].iloc[0] == pytest.approx(0.18) and diff["std_diff"].iloc[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="mt_both"):
        paired_difference(r, "mt_both", "mt", "mean_f1")


def test_tiny_comparison_runs_every_variant():
    from fbhelpers.study import LabelGroups, Study
    from helpers import block_study

    _, sources, couplings, _ = block_study(n=60)
    from fbhelpers.tasks import FACE_TASKS

    study = Study(sources, FACE_TASKS, couplings, None,
                  label_groups={"au": LabelGroups(labelled=("AU1", "AU2"), unlabelled=("AU4",))})
    comparison = compare_coupling(study, seeds=(0,), steps=3, quota=4, backbone_kw={"widths": (4, 4, 4, 4)},
                                  progress=False, augment=False)
    r = comparison.results
    assert list(dict.fromkeys(r["variant"])) == ["st", "mt", "mt_coann", "mt_dm", "mt_both"]
    assert r["value"].dtype == np.float64  # an ST model without AU groups once turned it into objects
    per = r.groupby("variant").apply(lambda g: set(zip(g["source"], g["task"])), include_groups=False)
    assert all(v == {("affect", "expr"), ("affect", "va"), ("aus", "au")} for v in per)
    assert {"mean_f1_labelled", "mean_f1_unlabelled"} <= set(r["metric"])
    assert set(r.attrs["seconds"]) == {(v, 0) for v in ("st", "mt", "mt_coann", "mt_dm", "mt_both")}
    assert set(comparison.runs) == {("st", 0, t) for t in ("expr", "au", "va")} | {
        (v, 0, "expr+au+va") for v in ("mt", "mt_coann", "mt_dm", "mt_both")}
    assert comparison.models == {}  # networks are kept only when asked for
    dm = comparison.runs[("mt_dm", 0, "expr+au+va")]
    assert list(dm.history["step"]) == [1, 2, 3] and dm.model is None
    pd.testing.assert_frame_equal(dm.scores[r.columns].reset_index(drop=True),
                                  r[r["variant"] == "mt_dm"].reset_index(drop=True), check_dtype=False)
    with pytest.raises(TypeError, match=r"unknown training settings \['stepz'\]; TrainConfig takes \[.*'steps'"):
        compare_coupling(study, variants=("mt",), stepz=3)
    with pytest.raises(ValueError, match=r"unknown variants \['mt_x'\]"):
        compare_coupling(study, variants=("mt_x",))


def test_overview_means_over_test_sets_then_seeds_and_label_scores():
    from fbhelpers.experiments import comparison_records, label_scores, overview, paired_summary, per_seed

    r = fake_results()
    extra = r[r["metric"] == "accuracy"].assign(source="other", value=lambda f: f["value"] - 0.1)
    r = pd.concat([r, extra], ignore_index=True)
    ov = overview(r, std=True)
    assert list(ov.index) == ["st", "mt", "mt_dm"]
    assert ov.loc["mt_dm", "expr_accuracy"] == pytest.approx(0.82 - 0.05)
    assert ov.loc["st", "au_mean_f1"] == pytest.approx(0.50)
    assert ov.loc["st", "au_mean_f1_std"] == pytest.approx(0.02)
    assert np.isnan(ov.loc["mt", "va_mean_ccc"])
    seeds = per_seed(r)
    gain = seeds.loc["mt_dm", "expr_accuracy"] - seeds.loc["mt", "expr_accuracy"]  # paired by seed
    assert gain.tolist() == pytest.approx([0.04, 0.04, 0.04])
    assert seeds.loc[("mt", 2), "au_mean_f1"] == pytest.approx(0.54)
    paired = paired_summary(r, "mt")
    assert list(paired.index) == ["st", "mt_dm"]
    assert paired.loc["mt_dm", ("expr_accuracy", "mean")] == pytest.approx(0.04)
    assert paired.loc["mt_dm", ("au_mean_f1", "min")] == pytest.approx(0.18)
    assert paired.loc["st", ("expr_accuracy", "std")] == pytest.approx(0.0, abs=1e-12)
    records = comparison_records(r, {"expr_accuracy": ("expr", "accuracy")})
    assert records["expr_accuracy"]["mt_dm"] == pytest.approx(0.77)
    assert records["expr_accuracy_sd"]["mt"] == pytest.approx(0.01)
    assert records["expr_accuracy_gain"] == {"st": pytest.approx(0.02), "mt_dm": pytest.approx(0.04)}
    assert set(records) == {"expr_accuracy", "expr_accuracy_sd", "expr_accuracy_gain", "expr_accuracy_gain_min"}
    with pytest.raises(ValueError, match="baseline 'mt_both'"):
        paired_summary(r, "mt_both")
    with pytest.raises(ValueError, match=r"'mt_dm' has seeds \[0, 1\] but the baseline 'mt' has \[0, 1, 2\]"):
        paired_summary(r[~((r["variant"] == "mt_dm") & (r["seed"] == 2))], "mt")
    f1 = label_scores(r, "mt")
    assert f1.to_dict() == {"AU1": pytest.approx(0.3)}
    with pytest.raises(ValueError, match="'mt_both'"):
        label_scores(r, "mt_both")


def test_fit_variant_reproduces_the_comparison_run_and_keeps_model_and_history():
    from fbhelpers.experiments import ABLATIONS, VARIANTS, fit_variant
    from fbhelpers.losses import LossConfig
    from fbhelpers.study import LabelGroups, Study
    from fbhelpers.tasks import FACE_TASKS
    from helpers import block_study

    for config in {**VARIANTS, **ABLATIONS}.values():
        LossConfig(**config)  # every named variant is a valid loss configuration
    _, sources, couplings, _ = block_study(n=60)
    study = Study(sources, FACE_TASKS, couplings, None,
                  label_groups={"au": LabelGroups(labelled=("AU1", "AU2"), unlabelled=("AU4",))})
    kw = dict(steps=4, quota=4, backbone_kw={"widths": (4, 4, 4, 4)}, augment=False, device="cpu")
    ref = compare_coupling(study, variants=("mt_dm_sum",), seeds=(1,), configs=ABLATIONS, progress=False,
                           **kw).results
    run = fit_variant(study, "mt_dm_sum", 1, configs=ABLATIONS, eval_every=2, **kw)
    assert list(run.history["step"]) == [1, 2, 3, 4]
    assert run.history["eval/aus/au/mean_f1"].notna().sum() == 2
    pd.testing.assert_frame_equal(run.scores.reset_index(drop=True), ref.reset_index(drop=True),
                                  check_exact=False, rtol=1e-6)
    assert run.model.tasks == FACE_TASKS
    with pytest.raises(ValueError, match="'st'"):
        fit_variant(study, "st")


def test_class_attribute_study_groups_and_histories():
    """Case study ii / "beyond faces" (P2 §5): a class task + a multi-label attribute task run through the same
    comparison; the attribute groups come from ``attributes_labelled`` / ``attributes_unlabelled``; every trained
    model's history is handed back when asked for."""
    from fbhelpers.synthetic import identity_study

    study = identity_study(n_identities=3, n_attributes=6, images_per_identity=4, attr_images_per_identity=4,
                           coann_images_per_identity=1, test_images_per_identity=2, size=32, seed=0)
    comparison = compare_coupling(study, variants=("st", "mt_dm"), seeds=(0,), steps=2, quota=2,
                                  backbone_kw={"widths": (4, 4, 4, 4)}, progress=False, augment=False,
                                  keep_models=True)
    r, histories, models = comparison.results, comparison.histories, comparison.models
    assert set(histories) == {("st", 0, "identity"), ("st", 0, "attr"), ("mt_dm", 0, "identity+attr")}
    assert set(models) == set(histories)
    kept = evaluate(models[("mt_dm", 0, "identity+attr")], study, split="test", device="cpu")
    scored = r[(r["variant"] == "mt_dm") & (r["metric"] == "accuracy")].set_index("source")["value"]
    assert kept[kept["metric"] == "accuracy"].set_index("source")["value"].to_dict() == pytest.approx(
        scored.to_dict(), abs=1e-9)
    assert list(histories[("mt_dm", 0, "identity+attr")]["step"]) == [1, 2]
    assert "dm" in histories[("mt_dm", 0, "identity+attr")].columns
    groups = r[r["metric"].str.startswith("mean_f1_")]
    assert set(groups["metric"]) == {"mean_f1_labelled", "mean_f1_unlabelled"}
    assert set(r.loc[r["task"] == "identity", "metric"]) >= {"accuracy", "macro_f1"}
    assert len(study.info["attributes_labelled"]) == 3
    f1 = r[(r["variant"] == "mt_dm") & (r["source"] == "coannotated") & (r["task"] == "attr")].set_index("metric")
    labelled = [f1.loc[f"f1_{a}", "value"] for a in study.info["attributes_labelled"]]
    assert f1.loc["mean_f1_labelled", "value"] == pytest.approx(np.nanmean(labelled))
    aucs = [f1.loc[f"auc_{a}", "value"] for a in study.info["attributes_unlabelled"]]
    assert f1.loc["mean_auc_unlabelled", "value"] == pytest.approx(np.nanmean(aucs))


def test_largest_first_quota():
    sources = {"big": list(range(600)), "a": list(range(30)), "b": list(range(15))}
    assert largest_first_quota(sources, 32) == {"big": 32, "a": 8, "b": 8}
    assert largest_first_quota(sources, 4) == {"big": 4, "a": 2, "b": 2}
    assert largest_first_quota(sources, 32, small=5) == {"big": 32, "a": 5, "b": 5}
