"""The Study contract (fbhelpers.study, fbhelpers.studies): every builder, twin or real, fills ``label_groups``,
``roles`` and the two relatedness tables the same way, ``study_for`` picks the builder from the profile, the
comparison's scores use the typed groups, and ``record_comparison`` records a comparison in one call."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbhelpers import datasets, experiments, profiles, recording, studies, synthetic
from fbhelpers.relatedness import estimate
from fbhelpers.source import annotation_coverage
from fbhelpers.study import LabelGroups, Roles, Study, label_groups_of
from fbhelpers.tasks import AUS

SMALL_ID = dict(n_identities=6, images_per_identity=4, attr_images_per_identity=3, coann_images_per_identity=2,
                test_images_per_identity=2, size=32)
SMALL_SP = dict(n_species=6, images_per_species=4, attr_images_per_species=3, coann_images_per_species=2,
                test_images_per_species=2, size=32, n_attributes=24)


@pytest.fixture(scope="module")
def twins() -> dict[str, Study]:
    return {"paper": synthetic.affect_study("paper", preset="scarce_au", size=24, n_scale=0.05, seed=1),
            "pair": synthetic.affect_study("pair", preset="scarce_au", size=24, n_scale=0.05, seed=1),
            "identity": synthetic.identity_study(**SMALL_ID, preset="scarce_attr", seed=2),
            "species": synthetic.species_study(**SMALL_SP, preset="scarce_attr", seed=2)}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Study]:
    root = datasets.make_fixture_root(tmp_path_factory.mktemp("data"))
    cache = tmp_path_factory.mktemp("cache")
    kw = dict(size=16, cache=cache, progress=False)
    return {"affect": datasets.affect_study(root, hide=["AU7"], **kw),
            "identity": datasets.identity_study(root, hide=["Eyeglasses"], **kw),
            "species": datasets.species_study(root, **kw)}


def _check_contract(study: Study) -> None:
    """Roles name sources that label what the role says; label groups are what the training splits label."""
    class_task, attr_task = (study.tasks[0], study.tasks[1])
    train = annotation_coverage(study.split("train"), study.tasks)
    test = annotation_coverage(study.split("test"), study.tasks)
    if study.roles.class_source is not None:
        assert train.loc[study.roles.class_source, class_task.name] > 0
    if study.roles.attr_source is not None:
        assert train.loc[study.roles.attr_source, list(attr_task.labels)].max() > 0
    if study.roles.full_source is not None:   # its test split labels every task
        assert all(test.loc[study.roles.full_source, list(t.columns)].max() > 0 for t in study.tasks)
    groups, seen = study.groups(attr_task.name), label_groups_of(study.sources, study.tasks)[attr_task.name]
    assert set(groups.labelled) <= set(seen.labelled) and set(seen.unlabelled) <= set(groups.unlabelled)
    assert sorted(groups.labelled + groups.unlabelled, key=attr_task.labels.index) == list(attr_task.labels)


def test_twins_fill_the_contract(twins):
    for study in twins.values():
        _check_contract(study)
    assert twins["paper"].roles == Roles("affectnet_like", "emotionet_like", "affwild2_like")
    assert twins["pair"].roles == Roles("expr_source", "au_source", None)
    assert twins["identity"].roles == Roles("identity", "attributes", "coannotated")
    assert twins["species"].roles == Roles("species", "attributes", "coannotated")
    assert twins["paper"].groups("au").unlabelled == ("AU7", "AU10", "AU14", "AU23", "AU24")
    assert twins["identity"].groups("attr").unlabelled == tuple(twins["identity"].info["attributes_unlabelled"])
    for name in ("paper", "pair", "species"):   # unlabelled = no training label at all
        assert twins[name].label_groups == label_groups_of(twins[name].sources, twins[name].tasks)
    ids = twins["identity"]   # unlabelled = labelled by the co-annotated set only (one image per identity)
    train = annotation_coverage(ids.split("train"), ids.tasks[1:])
    assert (train.loc["attributes", list(ids.groups("attr").unlabelled)] == 0).all()
    assert (train.loc["coannotated", list(ids.groups("attr").unlabelled)] > 0).all()


def test_real_studies_fill_the_same_contract(real):
    for study in real.values():
        _check_contract(study)
        assert study.label_groups == label_groups_of(study.sources, study.tasks)
        assert study.true_relatedness is None and study.relatedness is study.couplings[0].relatedness
    assert real["affect"].roles == Roles("affectnet", "emotionet", "affwild2")
    assert "AU7" in real["affect"].groups("au").unlabelled
    assert real["identity"].groups("attr").unlabelled == ("Eyeglasses",)
    assert real["species"].roles == Roles("cub", "cub", "cub")


def test_true_relatedness_beside_the_couplings_table(twins):
    face = twins["paper"]
    assert face.relatedness is face.couplings[0].relatedness and face.relatedness.name == "du2014_basic"
    generator = synthetic.au_probabilities(face.relatedness)
    np.testing.assert_array_equal(face.true_relatedness.table.to_numpy(), generator.to_numpy())
    assert not np.allclose(face.true_relatedness.table.to_numpy(), face.relatedness.table.to_numpy())
    estimated = synthetic.identity_study(**SMALL_ID, relatedness="estimated")
    assert estimated.relatedness is estimated.couplings[0].relatedness
    assert estimated.relatedness.name == "synthetic_identity_estimated"
    assert estimated.true_relatedness.name == "synthetic_identity_truth"
    birds = twins["species"]
    assert birds.relatedness is birds.true_relatedness is birds.couplings[0].relatedness


def test_study_refuses_roles_and_groups_it_does_not_have(twins):
    study = twins["pair"]
    with pytest.raises(ValueError, match=r"roles.full_source = 'affwild2_like' is not a source"):
        dataclasses.replace(study, roles=Roles(full_source="affwild2_like"))
    with pytest.raises(ValueError, match=r"label_groups\['au'\] names labels \['AU99'\]"):
        dataclasses.replace(study, label_groups={"au": LabelGroups(("AU1",), ("AU99",))})
    with pytest.raises(ValueError, match="label_groups names task 'attr'"):
        dataclasses.replace(study, label_groups={"attr": LabelGroups((), ())})
    with pytest.raises(KeyError, match="no label groups for task 'expr'"):
        study.groups("expr")


def test_only_keeps_the_sources_that_label_the_tasks(twins):
    study = twins["paper"]
    au = study.only(["au"])
    assert [t.name for t in au.tasks] == ["au"] and au.couplings == []
    assert list(au.sources) == ["emotionet_like", "disfa_like", "affwild2_like"]   # affectnet_like has no AU
    assert au.roles == Roles(None, "emotionet_like", "affwild2_like")
    assert au.label_groups == {"au": study.groups("au")} and au.relatedness is study.relatedness


def test_comparison_groups_come_from_the_typed_label_groups(twins):
    study = twins["paper"]
    assert experiments._label_groups(study) == {"au": {"labelled": study.groups("au").labelled,
                                                       "unlabelled": study.groups("au").unlabelled}}
    # the info keys alone no longer make groups: nothing is parsed out of key names
    bare = dataclasses.replace(study, label_groups={})
    assert "unlabelled_aus" in bare.info and experiments._label_groups(bare) == {}
    scores = pd.DataFrame({"source": "s", "task": "au", "metric": ["f1_AU1", "f1_AU7", "f1_AU10", "auc_AU7"],
                           "value": [0.8, 0.2, 0.4, 0.6]})
    rows = experiments._group_rows(scores, experiments._label_groups(study)).set_index("metric")["value"]
    assert rows["mean_f1_unlabelled"] == pytest.approx(0.3) and rows["mean_f1_labelled"] == pytest.approx(0.8)
    assert rows["mean_auc_unlabelled"] == pytest.approx(0.6)


def _cfg(notebook: str, **overrides) -> dict:
    return {**profiles.resolve(notebook, "smoke", **overrides), "notebook": profiles.notebook_key(notebook),
            "seed": 4}


def test_study_for_builds_the_profiles_twin(twins):
    got = studies.study_for(_cfg("04", n_classes=3, image_size=32), twin=dict(n_attributes=8, preset="scarce_attr"))
    ref = synthetic.species_study(n_species=3, n_attributes=8, size=32, preset="scarce_attr", seed=4)
    assert list(got.sources) == list(ref.sources) and got.roles == ref.roles
    for name in ref.sources:
        pd.testing.assert_frame_equal(got.sources[name].table, ref.sources[name].table)
        np.testing.assert_array_equal(got.sources[name].images, ref.sources[name].images)
    face = studies.study_for(_cfg("02", n_scale=0.05, image_size=24), twin=dict(regime="pair"))
    assert list(face.sources) == ["expr_source", "au_source"] and face.info["n_scale"] == 0.05
    assert face.info["seed"] == 4 and face.info["size"] == 24
    ids = studies.study_for(_cfg("03", n_classes=3, image_size=32))
    assert ids.tasks[0].name == "identity" and len(ids.tasks[0].labels) == 3
    with pytest.raises(ValueError, match="unknown case study 'faces'"):
        studies.study_for(_cfg("00"), case="faces")
    assert synthetic.affect_study is synthetic.face_study


def test_study_for_builds_the_real_study_from_the_data_root(tmp_path, monkeypatch):
    root = datasets.make_fixture_root(tmp_path / "data", names=("affectnet", "emotionet", "rafdb_compound"))
    monkeypatch.setenv("FBHELPERS_CACHE", str(tmp_path / "cache"))
    cfg = {**_cfg("05", image_size=16, n_scale=1.0), "data": "real"}
    study = studies.study_for(cfg, root, real=dict(hide=["AU7"], progress=False))
    assert list(study.sources) == ["affectnet", "emotionet"]      # the notebook's face databases, not RAF-DB
    assert study.roles == Roles("affectnet", "emotionet", None) and "AU7" in study.groups("au").unlabelled
    compound = studies.compound_test_for(cfg, root, n=0, relatedness=None)
    assert compound.name == "rafdb_compound" and (compound.table["split"] == "test").all()
    with pytest.raises(FileNotFoundError, match="disfa"):
        studies.study_for({**_cfg("00"), "data": "real"}, root)


def test_relatedness_check_compares_with_the_truth_or_on_held_out_rows(twins, real):
    check = studies.relatedness_check(twins["identity"])
    assert check.split == "train" and check.reference is twins["identity"].true_relatedness
    rows = pd.concat([s.table for s in twins["identity"].split("train").values()])
    direct = estimate(rows, "identity", list(twins["identity"].tasks[1].labels),
                      class_labels=list(twins["identity"].tasks[0].labels))
    assert check.comparison.summary == pytest.approx(float((direct.table - check.reference.table).abs().mean().mean()))
    celeba = studies.relatedness_check(real["identity"])     # R estimated on the training split: check on test
    assert celeba.split == "test" and celeba.reference is real["identity"].relatedness
    cub = studies.relatedness_check(real["species"])         # CUB's shipped table: check the training estimate
    assert cub.split == "train" and cub.reference.counts is None


def test_coannotated_rows_of_the_twin_and_of_aff_wild2(tmp_path):
    twin = studies.coannotated_for(_cfg("01", n_scale=0.1, image_size=24))
    assert twin.name == "Aff-Wild2-like" and twin.aus == [a for a in AUS if a in synthetic.AU_SETS["abaw"]]
    assert twin.table["expr"].notna().all() and (twin.table["split"] == "train").all()
    assert twin.truth.name == "generator p(AU | expr)" and twin.observed.name == "generator through the annotations"
    reference, draws, sizes = twin.curve(twin.truth, [10, 10_000])
    assert reference is twin.truth and sizes == [10, 10_000] and len(draws(7, 0)) == 7   # fresh labels, any n
    root = datasets.make_fixture_root(tmp_path / "data", names=("affwild2",))
    real = studies.coannotated_for({**_cfg("01"), "data": "real"}, root)
    assert real.truth is None and real.observed is None and real.name == "Aff-Wild2"
    assert real.table[real.aus].notna().any(axis=1).all() and real.table["expr"].notna().all()
    half = len(real.table) // 2
    reference, draws, sizes = real.curve(twin.truth, [1, half, half + 1])   # scored against the estimate given
    assert half > 1 and reference is twin.truth and sizes == [1, half]      # subsamples of at most half the rows
    pd.testing.assert_frame_equal(draws, real.table[["expr", *real.aus]])


def test_object_tables_of_the_twins_and_of_celeba_and_cub(tmp_path):
    twin = studies.object_tables_for(_cfg("01"), n_identities=4, images_per_identity=3, n_species=3)
    assert list(twin.tables) == ["identity twin", "species twin"] and not twin.estimated
    assert twin.identity is twin.tables["identity twin"] and len(twin.pool) == 4 * 3
    root = datasets.make_fixture_root(tmp_path / "data", names=("affwild2", "celeba", "cub"))
    real = studies.object_tables_for({**_cfg("01"), "data": "real"}, root, n_identities=3)
    assert list(real.tables) == ["CelebA", "CUB-200-2011"] and real.estimated
    assert real.n_identities == len(real.identity.classes) <= 3
    assert real.images_per_identity == len(real.pool) // real.n_identities
    bare = datasets.make_fixture_root(tmp_path / "bare", names=("affwild2",))
    assert studies.object_tables_for({**_cfg("01"), "data": "real"}, bare) == studies.ObjectTables(
        {}, None, None, 40, 20, True)


def _results() -> pd.DataFrame:
    rows = []
    for seed, bump in ((0, 0.0), (1, 0.02)):
        for variant, acc, f1 in (("st", 0.50, 0.40), ("mt", 0.55, 0.38), ("mt_dm", 0.60, 0.44)):
            rows += [(variant, seed, "s", "expr", "accuracy", acc + bump), (variant, seed, "s", "au", "mean_f1", f1)]
    return pd.DataFrame(rows, columns=["variant", "seed", "source", "task", "metric", "value"])


def test_record_comparison_records_every_number_in_one_call(tmp_path):
    recording.configure(tmp_path)
    columns = {"expr_accuracy": ("expr", "accuracy"), "au_mean_f1": ("au", "mean_f1")}
    tables = experiments.record_comparison(_results(), columns, scores=("accuracy", "mean_f1"), prefix="x_")
    got = recording.load_metrics(tmp_path)
    assert got["x_expr_accuracy"] == {"st": 0.51, "mt": 0.56, "mt_dm": 0.61}
    assert got["x_expr_accuracy_gain"] == {"st": -0.05, "mt_dm": 0.05}
    # Δm of mt_dm, seed 0: mean(0.6 / 0.5 - 1, 0.44 / 0.4 - 1) = 0.15; seed 1: mean(0.62 / 0.52 - 1, 0.1)
    seed1 = (0.62 / 0.52 - 1 + 0.1) / 2
    assert got["x_delta_m"]["mt_dm"] == pytest.approx(round((0.15 + seed1) / 2, 4))
    assert got["x_n_negative_transfer"] == {"mt": 1, "mt_dm": 0}      # mt's AU F1 0.38 < ST's 0.40
    assert got["x_n_negative_beyond_spread"] == {"mt": 1, "mt_dm": 0}
    assert set(got) == {f"x_{n}" for n in experiments.comparison_records(_results(), columns)} | {
        "x_delta_m", "x_delta_m_sd", "x_n_negative_transfer", "x_n_negative_beyond_spread"}
    assert tables.counts.loc["mt", "negative"] == 1 and tables.delta.loc["mt_dm", "mean"] == pytest.approx(
        (0.15 + seed1) / 2)
    recording.configure(tmp_path / "typed")
    experiments.record_comparison(experiments.Comparison(_results(), {}), columns, scores=("accuracy", "mean_f1"),
                                  prefix="x_")
    assert recording.load_metrics(tmp_path / "typed") == got        # a Comparison records as its results frame
    recording.configure(tmp_path / "mt_only")
    plain = experiments.record_comparison(_results().query("variant != 'st'"), columns)
    assert plain.delta is None and "delta_m" not in recording.load_metrics(tmp_path / "mt_only")


def test_class_attribute_columns_name_the_class_task(twins):
    assert list(experiments.class_attribute_columns(twins["species"])) == [
        "species_accuracy", "attr_mean_f1", "attr_mean_accuracy", "attr_f1_labelled", "attr_f1_unlabelled"]
    assert experiments.class_attribute_columns(twins["identity"])["identity_accuracy"] == ("identity", "accuracy")


def test_own_faces_for_renders_twin_faces_or_takes_the_users(tmp_path):
    twin = studies.own_faces_for(_cfg("05", image_size=24), "", tmp_path / "faces", n=6)
    assert twin.labelled and len(pd.read_csv(twin.path)) == 6
    mine = studies.own_faces_for({**_cfg("05"), "data": "real"}, tmp_path / "mine", tmp_path / "x", n=6)
    assert mine == studies.OwnFaces(tmp_path / "mine", False) and not (tmp_path / "x").exists()
    assert studies.own_faces_for({**_cfg("05"), "data": "real"}, "", tmp_path / "x", n=6).path is None


def test_label_groups_split_keeps_the_task_order():
    groups = LabelGroups.split(AUS[:4], ["AU4", "AU1"])
    assert groups == LabelGroups(("AU1", "AU4"), ("AU2", "AU5"))
