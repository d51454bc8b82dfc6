"""Synthetic twins of case study ii (identity + attributes) and beyond faces (species + attributes)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fbhelpers.losses import Coupling
from fbhelpers.relatedness import Relatedness
from fbhelpers.synthetic import objects
from fbhelpers.synthetic.objects import (
    IDENTITY_ATTRIBUTES, SPECIES_ATTRIBUTES, SPECIES_GROUPS, identity_study, species_study,
)

SMALL_ID = dict(n_identities=6, images_per_identity=4, attr_images_per_identity=3, coann_images_per_identity=2,
                test_images_per_identity=2, size=32)
SMALL_SP = dict(n_species=6, images_per_species=4, attr_images_per_species=3, coann_images_per_species=2,
                test_images_per_species=2, size=32)


@pytest.fixture(scope="module")
def ids():
    return identity_study(**SMALL_ID, seed=3)


@pytest.fixture(scope="module")
def birds():
    return species_study(**SMALL_SP, seed=3)


def test_deterministic_for_a_seed():
    for build, kw in ((identity_study, SMALL_ID), (species_study, SMALL_SP)):
        a, b, c = build(**kw, seed=5), build(**kw, seed=5), build(**kw, seed=6)
        for name in a.sources:
            assert np.array_equal(a.sources[name].images, b.sources[name].images)
            pd.testing.assert_frame_equal(a.sources[name].table, b.sources[name].table)
            pd.testing.assert_frame_equal(a.truth[name], b.truth[name])
        pd.testing.assert_frame_equal(a.relatedness.table, b.relatedness.table)
        assert not np.array_equal(a.sources[name].images, c.sources[name].images)
        assert not a.relatedness.table.equals(c.relatedness.table)


@pytest.mark.parametrize("size", [32, 48, 64])
def test_images_uint8_of_the_requested_size(size):
    study = identity_study(**{**SMALL_ID, "size": size})
    for src in study.sources.values():
        assert src.images.dtype == np.uint8
        assert src.images.shape == (len(src), size, size, 3)
        assert src.images.std() > 20  # not blank


@pytest.mark.parametrize("which", ["identity", "species"])
def test_table_layout_and_masks(which, ids, birds):
    study, cls = (ids, "identity") if which == "identity" else (birds, "species")
    attrs = list(study.tasks[1].labels)
    assert [t.name for t in study.tasks] == [cls, "attr"]
    known = list(study.info["attributes_labelled"])
    unknown = list(study.info["attributes_unlabelled"])
    assert sorted(known + unknown) == sorted(attrs) and len(known) == round(0.5 * len(attrs))
    assert set(study.sources) == {cls, "attributes", "coannotated"}
    coann_attrs = attrs if which == "identity" else known  # the identity twin's co-annotated source labels all
    expected = {cls: (True, []), "attributes": (False, known), "coannotated": (True, coann_attrs)}
    for name, src in study.sources.items():
        table, truth = src.table, study.truth[name]
        assert list(table.columns) == ["split", "source", cls, *attrs]
        assert str(table[cls].dtype) == "Int64" and str(truth[cls].dtype) == "Int64"
        assert all(table[a].dtype == np.float64 for a in attrs)
        assert set(table["split"]) == {"train", "val", "test"} and (table["source"] == name).all()
        assert len(table) == len(src.images) == len(truth)
        # the truth is complete and agrees with every label the source shows
        assert not truth[[cls, *attrs]].isna().any().any()
        shown = table[attrs].notna().to_numpy()
        assert np.array_equal(table[attrs].to_numpy()[shown], truth[attrs].to_numpy()[shown])
        assert (table[cls].dropna() == truth[cls][table[cls].notna()]).all()
        test, train = table[table["split"] == "test"], table[table["split"] != "test"]  # val is labelled like train
        assert int((table["split"] == "val").sum()) == len(range(0, int((table["split"] == "train").sum()), 10))
        assert not test.isna().any().any()  # test splits are fully labelled
        has_class, labelled = expected[name]
        assert train[cls].notna().all() if has_class else train[cls].isna().all()
        assert train[labelled].notna().all().all()
        assert train[[a for a in attrs if a not in labelled]].isna().all().all()
        assert sorted(test[cls].unique()) == list(range(len(study.tasks[0].labels)))


def test_study_relatedness_and_coupling(ids, birds):
    for study, cls, name in ((ids, "identity", "synthetic_identity_truth"),
                             (birds, "species", "synthetic_species_truth")):
        r = study.relatedness
        assert isinstance(r, Relatedness) and r.name == name
        assert r.classes == study.tasks[0].labels and r.attributes == study.tasks[1].labels
        assert ((r.table.to_numpy() >= 0) & (r.table.to_numpy() <= 1)).all()
        (coupling,) = study.couplings
        assert isinstance(coupling, Coupling)
        assert (coupling.class_task, coupling.attr_task) == (cls, "attr") and coupling.relatedness is r
        assert 0 < study.info["bayes_accuracy_latent"] <= 1
    for group, values in SPECIES_GROUPS.items():  # a group's values are exclusive: each row sums to one
        cols = [f"{group}::{v}" for v in values]
        assert birds.relatedness.table[cols].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-9)


def test_estimated_relatedness_uses_coannotated_training_rows():
    study = identity_study(**SMALL_ID, relatedness="estimated")
    r = study.couplings[0].relatedness
    assert r.name == "synthetic_identity_estimated" and r.ci_low is not None
    rows = study.sources["coannotated"].table
    assert r.counts.sum() == (rows["split"] == "train").sum()
    assert r.table.shape == study.relatedness.table.shape


def test_identity_label_fraction_and_presets():
    study = identity_study(**SMALL_ID, identity_label_fraction=0.5)
    table = study.sources["identity"].table
    covered = [study.tasks[0].labels.index(c) for c in study.info["identities_labelled"]]
    assert len(covered) == 3
    assert sorted(table.loc[table["split"] == "train", "identity"].unique()) == sorted(covered)
    assert table.loc[table["split"] == "test", "identity"].nunique() == 6
    full = identity_study(**SMALL_ID, preset="full")
    assert full.info["attributes_unlabelled"] == ()
    scarce = species_study(**{**SMALL_SP, "attr_images_per_species": None}, preset="scarce_attr")
    assert len(scarce.info["attributes_labelled"]) == round(0.25 * len(SPECIES_ATTRIBUTES))
    assert scarce.info["sizes"]["attributes"]["train"] == 6 * 5
    assert len(identity_study(**SMALL_ID, n_attributes=10).tasks[1].labels) == 10
    picked = species_study(**SMALL_SP, n_attributes=20).tasks[1].labels
    assert len(picked) == 20 and len({a.split("::")[0] for a in picked}) == len(SPECIES_GROUPS)


@pytest.mark.parametrize("which", ["identity", "species"])
def test_attribute_frequencies_match_the_truth(which):
    if which == "identity":
        study = identity_study(n_identities=4, images_per_identity=0, attr_images_per_identity=0,
                               coann_images_per_identity=500, test_images_per_identity=1, size=32, seed=1)
    else:
        study = species_study(n_species=3, images_per_species=0, attr_images_per_species=0,
                              coann_images_per_species=500, test_images_per_species=1, size=32, seed=1)
    cls = study.tasks[0].name
    truth = study.truth["coannotated"]
    observed = truth.groupby(cls)[list(study.tasks[1].labels)].mean()
    observed.index = [study.tasks[0].labels[i] for i in observed.index]
    p = study.relatedness.table.loc[observed.index]
    n = truth.groupby(cls).size().to_numpy()[:, None]
    bound = 4.5 * np.sqrt(p.to_numpy() * (1 - p.to_numpy()) / n) + 2 / n  # ~4.5 sigma, plus 2 counts
    assert (np.abs(observed.to_numpy() - p.to_numpy()) <= bound).all()


def test_every_attribute_is_rendered_visibly():
    rng = np.random.default_rng(0)
    faces = objects._face_model(8, rng, 0.6)
    labels = np.arange(8)
    attrs, looks = faces.sample(labels, rng)
    hair = [IDENTITY_ATTRIBUTES.index(a) for a in objects.HAIR_COLOURS]

    def render(a):
        params = objects._face_params(a, looks, np.random.default_rng(1), nuisance=0.0)
        return objects._render(objects._draw_face, params, len(a), 48, np.random.default_rng(2)).astype(int)

    base = render(attrs)
    for j, name in enumerate(IDENTITY_ATTRIBUTES):
        flipped = attrs.copy()
        if j in hair:  # switch every face to this hair colour from another one
            flipped[:, hair] = 0
            flipped[:, j] = 1
            changed = attrs[:, j] == 0
        else:
            flipped[:, j] = 1 - flipped[:, j]
            changed = np.ones(len(attrs), bool)
        moved = (np.abs(render(flipped) - base).sum(axis=3) > 30).sum(axis=(1, 2))[changed]
        # visible on most faces (a moustache can hide in a beard of the same colour, sideburns in long hair)
        assert (moved >= 4).mean() >= 0.5, f"{name} changes only {moved} pixels"

    birds = objects._bird_model(6, rng, 0.6)
    attrs, looks = birds.sample(np.arange(6), rng)

    def render_bird(a):
        params = objects._bird_params(a, looks, np.random.default_rng(1), nuisance=0.0)
        return objects._render(objects._draw_bird, params, len(a), 48, np.random.default_rng(2)).astype(int)

    base = render_bird(attrs)
    start = 0
    for group, values in SPECIES_GROUPS.items():
        cols = np.arange(start, start + len(values))
        start += len(values)
        moved = []
        for v in range(len(values)):
            other = attrs.copy()
            other[:, cols] = 0
            other[:, cols[v]] = 1
            diff = (np.abs(render_bird(other) - base).sum(axis=3) > 30).sum(axis=(1, 2))
            moved.append(diff[attrs[:, cols[v]] == 0])
        moved = np.concatenate(moved)
        assert (moved >= 3).mean() >= 0.75, f"{group}: value changes move only {moved} pixels"


def test_two_hundred_species_scale_quickly():
    start = time.perf_counter()
    study = species_study(n_species=200, images_per_species=2, attr_images_per_species=1,
                          coann_images_per_species=1, test_images_per_species=1, size=32)
    elapsed = time.perf_counter() - start
    assert study.relatedness.table.shape == (200, len(SPECIES_ATTRIBUTES))
    assert len(SPECIES_ATTRIBUTES) >= 100
    assert sum(len(s) for s in study.sources.values()) == 200 * (2 + 1 + 1 + 3) + (400 + 200 + 200) // 10  # + val
    assert elapsed < 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(images_per_identity=-1), "images_per_identity.*-1"),
    (dict(test_images_per_identity=0), "test_images_per_identity.*0"),
    (dict(n_identities=1), "n_identities.*1"),
    (dict(size=16), "size.*16"),
    (dict(size=200), "size.*200"),
    (dict(attr_label_fraction=1.5), "attr_label_fraction.*1.5"),
    (dict(identity_label_fraction=-0.1), "identity_label_fraction.*-0.1"),
    (dict(preset="tiny"), "preset 'tiny'"),
    (dict(relatedness="prior"), "relatedness.*'prior'"),
    (dict(n_attributes=99), "n_attributes.*99"),
    (dict(look_jitter=0), "look_jitter.*0"),
    (dict(relatedness="estimated", coann_images_per_identity=0), "coann_images_per_identity is 0"),
])
def test_identity_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        identity_study(**{**SMALL_ID, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_species=-3), "n_species.*-3"),
    (dict(attr_images_per_species=-2), "attr_images_per_species.*-2"),
    (dict(attr_label_fraction=2), "attr_label_fraction.*2"),
    (dict(preset="huge"), "preset 'huge'"),
    (dict(n_attributes=0), "n_attributes.*0"),
    (dict(nuisance=-1.0), "nuisance.*-1.0"),
])
def test_species_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        species_study(**{**SMALL_SP, **kwargs})
