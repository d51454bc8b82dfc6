"""The real-data path end to end on the format-faithful fixture root: check-data, the lock file, the study builders
and every notebook's ``paper`` profile through the runner (loaders -> cache -> study -> fit -> evaluate -> record).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbhelpers import datasets, manifest, profiles, runner
from fbhelpers.__main__ import main
from fbhelpers.datasets import studies
from fbhelpers.datasets.cache import CachedImages
from fbhelpers.study import Roles
from fbhelpers.tasks import AUS

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "data_manifest.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return datasets.make_fixture_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_fixture_root_has_every_manifest_dataset_in_its_folder(data_root):
    entries = manifest.load_manifest(MANIFEST)
    assert {e["name"] for e in entries} <= set(datasets.NAMES)
    for entry in entries:
        assert datasets.loader(entry["name"]).folder == entry["root"]
        assert (data_root / entry["root"]).is_dir()


def test_check_data_finds_every_database_with_counts(data_root, capsys):
    assert main(["check-data", "--data-root", str(data_root), "--strict"]) == 0
    out = capsys.readouterr().out
    n = len(manifest.load_manifest(MANIFEST))
    assert f"{n}/{n} datasets found" in out
    frames = datasets.load("affwild2", data_root / "Aff-Wild2")
    no_image = frames.attrs["skipped"]["no image file"]
    assert no_image > 0
    line = re.search(r"^affwild2\s+found\s.*$", out, re.M).group(0)
    read = len(frames) + sum(frames.attrs["skipped"].values())
    assert f"{read:,} label rows read, {len(frames):,} kept, {frames['path'].nunique():,} images" in line
    assert f"{no_image:,} label rows without an image" in line
    assert "used by 00, 01, 02" in line
    assert "paper profile: " + ", ".join(f"{nb} ready" for nb in profiles.DATASETS) in out


def test_check_data_reports_missing_and_incomplete(tmp_path, capsys):
    import shutil

    root = datasets.make_fixture_root(tmp_path / "data", names=("celeba", "cub", "rafdb_basic"))
    (root / "CelebA" / "identity_CelebA.txt").unlink()
    shutil.rmtree(root / "RAF-DB" / "basic" / "Image")          # labels without any image: not usable
    assert main(["check-data", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^celeba\s+incomplete", out, re.M) and str(root / "CelebA" / "identity_CelebA.txt") in out
    assert re.search(r"^affectnet\s+missing", out, re.M) and re.search(r"^cub\s+found", out, re.M)
    assert re.search(r"^rafdb_basic\s+incomplete", out, re.M) and "no image file for any of the 35 label rows" in out
    assert "03_identity_attributes needs celeba" in out and "04_beyond_faces ready" in out
    assert "02_affect_case_study needs affectnet, emotionet, disfa, bp4d, affwild2" in out
    assert main(["check-data", "--data-root", str(root), "--strict"]) == 1


def test_record_then_check_reports_changed_annotation_files(tmp_path, capsys):
    root = datasets.make_fixture_root(tmp_path / "data", names=("rafdb_basic", "cub"))
    assert main(["check-data", "--data-root", str(root), "--record"]) == 0
    lock = json.loads((root / manifest.LOCK).read_text())
    assert "EmoLabel/list_patition_label.txt" in lock["rafdb_basic"]
    assert "../attributes.txt" in lock["cub"] or "attributes/attributes.txt" in lock["cub"]
    capsys.readouterr()
    labels = root / "RAF-DB" / "basic" / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text())  # same bytes: unchanged
    main(["check-data", "--data-root", str(root)])
    assert re.search(r"^rafdb_basic\s+found", capsys.readouterr().out, re.M)
    labels.write_text(labels.read_text().replace(" 1\n", " 2\n", 1))
    main(["check-data", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert re.search(r"^rafdb_basic\s+changed", out, re.M)
    assert "EmoLabel/list_patition_label.txt: changed since --record" in out
    assert re.search(r"^cub\s+found", out, re.M)


def test_affect_study_keeps_each_sources_labels_and_hides_on_request(data_root, cache):
    study = studies.affect_study(data_root, size=24, cache=cache, progress=False)
    assert list(study.sources) == list(studies.FACE_SOURCES)
    for name, src in study.sources.items():
        assert isinstance(src.images, CachedImages) and src.images.shape[1:] == (24, 24, 3)
        assert set(src.table["split"]) <= {"train", "val", "test"}  # Aff-Wild2's official val is the test set here
        assert (src.table["split"] == "test").any(), name
    for name, key in studies.VAL_GROUPS.items():  # val holds whole videos / subjects, carved from training rows
        frames = study.sources[name].table
        loaded = datasets.load(name, data_root / datasets.loader(name).folder, **({"overlap": "val"} if
                               name == "affwild2" else {}))
        sides = frames["split"].groupby(loaded.loc[frames.index, key].to_numpy()).agg(set)
        assert all(not {"train", "val"} <= s for s in sides), (name, sides)
    expr_only = study.sources["affectnet"].table
    assert expr_only["expr"].notna().all() and expr_only[list(AUS)].isna().all().all()
    emotionet = study.sources["emotionet"].table
    assert emotionet["expr"].isna().all() and emotionet[list(AUS)].notna().any().any()
    assert study.info["unlabelled_aus"] == [a for a in AUS if a not in study.info["labelled_aus"]]
    hidden = studies.affect_study(data_root, size=24, cache=cache, hide=["AU7", "AU14"], progress=False)
    assert {"AU7", "AU14"} <= set(hidden.info["unlabelled_aus"])
    assert set(hidden.groups("au").unlabelled) == set(hidden.info["unlabelled_aus"])
    assert hidden.groups("au").labelled == tuple(hidden.info["labelled_aus"])
    assert hidden.roles == Roles(class_source="affectnet", attr_source="emotionet", full_source="affwild2")
    assert hidden.true_relatedness is None and hidden.relatedness is hidden.couplings[0].relatedness
    test = hidden.sources["affwild2"].table
    assert test.loc[test["split"] != "test", "AU7"].isna().all()  # hidden in train and val
    assert test.loc[test["split"] == "test", "AU7"].notna().any()


def test_validation_split_moves_a_seeded_share_of_training_rows():
    paths = [f"v{i // 10}/{i % 10:05d}.jpg" for i in range(2000)]
    table = pd.DataFrame({"path": paths, "split": ["train"] * 1800 + ["test"] * 200})
    out = studies.validation_split(table, 0.2, seed=3)
    val = out["split"] == "val"
    assert val.sum() / 1800 == pytest.approx(0.2, abs=0.03)
    assert (table.loc[val, "split"] == "train").all() and (out["split"] == "test").sum() == 200
    assert out["split"].tolist() == studies.validation_split(table.iloc[::-1], 0.2, seed=3)["split"][::-1].tolist()
    grouped = studies.validation_split(table, 0.2, seed=3, groups=table["path"].str[:-10])
    per_video = grouped[grouped["split"] != "test"].groupby(grouped["path"].str[:-10])["split"].nunique()
    assert (per_video == 1).all() and (grouped["split"] == "val").any()
    classes = table.assign(cls=[f"c{i}" for i in range(2000)])   # one training row per class: none may move
    kept = studies.validation_split(classes, 0.2, seed=3, keep_class="cls")
    assert (kept["split"] != "val").all() and (studies.validation_split(classes, 0.2, seed=3)["split"] == "val").any()
    pairs = table.assign(cls=[f"c{i // 2}" for i in range(2000)])  # two per class: at most one moves
    moved = studies.validation_split(pairs, 0.6, seed=3, keep_class="cls")
    train_left = moved[moved["split"] == "train"].groupby("cls").size()
    assert set(train_left.index) == set(pairs.loc[pairs["split"] == "train", "cls"]) and (moved["split"] == "val").any()
    official = table.assign(split=["train"] * 1700 + ["val"] * 100 + ["test"] * 200)
    assert studies.validation_split(official, 0.2).equals(official)
    assert studies.validation_split(table, 0.0).equals(table)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        studies.validation_split(table, 1.0)


def test_optional_dataset_skipped_required_one_stops(tmp_path, cache, caplog):
    root = datasets.make_fixture_root(tmp_path / "data", names=("affectnet", "emotionet"))
    with caplog.at_level(logging.WARNING, logger="fbhelpers.datasets"):
        study = studies.affect_study(root, size=16, cache=cache, required=["affectnet"], progress=False)
    assert list(study.sources) == ["affectnet", "emotionet"]
    assert study.info["missing"] == ["disfa", "bp4d", "affwild2"]
    assert study.roles == Roles(class_source="affectnet", attr_source="emotionet", full_source=None)
    assert "dataset disfa not found" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"'disfa' is required .*DISFA does not exist.*check-data"):
        studies.affect_study(root, size=16, cache=cache, progress=False)


def test_class_attribute_studies_couple_with_their_tables(data_root, cache):
    birds = studies.species_study(data_root, size=16, cache=cache, hide=["has_bill_shape::"], progress=False)
    shipped = datasets.cub.relatedness(data_root / "CUB_200_2011")
    assert birds.couplings[0].relatedness.table.to_numpy() == pytest.approx(shipped.table.to_numpy())
    hidden = [a for a in shipped.attributes if a.startswith("has_bill_shape::")]
    assert hidden and birds.info["attributes_unlabelled"] == hidden
    faces = studies.identity_study(data_root, size=16, cache=cache, hide=["Eyeglasses"], progress=False)
    train = faces.sources["celeba"].table.query("split == 'train'")
    assert faces.info["attributes_unlabelled"] == ["Eyeglasses"] and train["Eyeglasses"].isna().all()
    assert faces.groups("attr").unlabelled == ("Eyeglasses",) and birds.groups("attr").unlabelled == tuple(hidden)
    assert faces.roles == Roles("celeba", "celeba", "celeba") and birds.roles.full_source == "cub"
    assert faces.true_relatedness is None and birds.true_relatedness is None
    # R was estimated with every training label, before hiding: the Eyeglasses column is not the flat prior 0.5
    assert not np.allclose(faces.relatedness.table["Eyeglasses"].to_numpy(), 0.5)


def test_scale_table_keeps_a_fraction_of_each_split_and_caches_only_those(data_root, tmp_path):
    table = datasets.load("affectnet", data_root / "AffectNet")
    half = studies.scale_table(table, 0.5, seed=1)
    for split in ("train", "test"):
        n = int((table["split"] == split).sum())
        assert int((half["split"] == split).sum()) == max(1, round(n * 0.5))
    assert studies.scale_table(table, 1.0) is table
    cache = tmp_path / "cache"
    study = studies.affect_study(data_root, ["affectnet"], size=16, cache=cache, n_scale=0.5, progress=False)
    assert len(study.sources["affectnet"]) == len(half)
    built = [p for p in cache.iterdir() if p.is_dir()]
    assert len(built) == 1 and len(np.load(built[0] / "images.npy", mmap_mode="r")) == half["path"].nunique()


def test_subsets_of_a_database_share_one_cache(data_root, tmp_path):
    cache = tmp_path / "cache"
    studies.species_study(data_root, size=16, cache=cache, progress=False)
    studies.species_study(data_root, n_species=2, size=16, cache=cache, progress=False)
    studies.identity_study(data_root, size=16, cache=cache, progress=False)
    studies.identity_study(data_root, n_identities=2, size=16, cache=cache, progress=False)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    test = studies.compound_source(data_root, size=16, cache=cache, progress=False)
    every = studies.compound_source(data_root, split=None, size=16, cache=cache, progress=False)
    assert set(test.table["split"]) == {"test"} and len(every) > len(test)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 3


def test_builders_refuse_sources_without_a_test_split_and_typos_in_hide(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "CUB_200_2011", root / "CUB_200_2011")
    shutil.copy(data_root / "attributes.txt", root / "attributes.txt")
    with pytest.raises(KeyError, match=r"has_bil_shape::"):
        studies.species_study(root, size=16, cache=tmp_path / "c", hide=["has_bil_shape::"], progress=False)
    split = root / "CUB_200_2011" / "train_test_split.txt"
    split.write_text("".join(f"{line.split()[0]} 1\n" for line in split.read_text().splitlines()))
    with pytest.raises(ValueError, match=r"sources without rows in a split they need: \{'cub': \['test'\]\}"):
        studies.species_study(root, size=16, cache=tmp_path / "c", progress=False)


PAPER_OVERRIDES = {"steps": 2, "image_size": 24, "quota": 4, "backbone": "cnn4", "eval_every": 0, "n_seeds": 1,
                   "backbone_kw": {"widths": [4, 8, 8, 8], "pool": 3}, "ablation": ["mt_dm_sum"], "device": "cpu"}


def test_every_notebook_runs_its_paper_profile_on_the_fixture_root(data_root, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("FBHELPERS_CACHE", str(cache))
    result = runner.run_suite("paper", out=tmp_path / "runs", notebooks_dir=ROOT / "notebooks", progress=False,
                              params={"DATA_ROOT": str(data_root), "DEVICE": "cpu", **PAPER_OVERRIDES})
    assert [nb.name for nb in result.notebooks] == list(profiles.DATASETS)
    assert result.ok, result.failure_report()
    metrics = {nb.name: runner.flatten_metrics(nb.metrics) for nb in result.notebooks}
    assert metrics["01_relatedness_study"]["n_coannotated"] > 0
    assert 0 <= metrics["02_affect_case_study"]["expr_accuracy.mt_dm"] <= 1
    assert 0 <= metrics["05_zero_few_shot"]["zero_shot_mean_accuracy"] <= 1


def test_within_class_split_puts_every_identity_on_both_sides(data_root):
    import pandas as pd

    table = pd.DataFrame({"path": [f"{i}.jpg" for i in range(23)], "split": "train",
                          "identity": [0] * 10 + [1] * 5 + [2] * 2 + [3] * 1 + [4] * 5})
    out = studies.within_class_split(table, "identity", 0.2, seed=3)
    tests = out[out["split"] == "test"].groupby("identity").size().reindex(range(5), fill_value=0).tolist()
    assert tests == [2, 1, 1, 0, 1]
    assert studies.within_class_split(table, "identity", 0.2, seed=3).equals(out)       # seeded
    shuffled = studies.within_class_split(table.sample(frac=1, random_state=0), "identity", 0.2, seed=3)
    assert shuffled.set_index("path")["split"].sort_index().equals(out.set_index("path")["split"].sort_index())


def test_cli_fixture_root_then_cache_build_that_the_study_reuses(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["make-fixture-root", str(root)]) == 0
    assert f"under {root}" in capsys.readouterr().out
    cache = tmp_path / "cache"
    args = ["cache", "build", "affectnet", "--root", str(root / "AffectNet"), "--size", "16", "--cache", str(cache),
            "--workers", "1", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = datasets.load("affectnet", root / "AffectNet")
    assert out.startswith(f"affectnet: {len(table):,} label rows; {table['path'].nunique()} images")
    folders = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert len(folders) == 1
    study = studies.affect_study(root, ["affectnet"], size=16, cache=cache, progress=False)   # same key: reused
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == folders
    assert len(study.sources["affectnet"]) == len(table)


def test_cli_cache_build_skips_or_stops_at_a_broken_image(tmp_path, capsys):
    root = datasets.make_fixture_root(tmp_path / "data", names=("rafdb_basic",))
    folder = root / "RAF-DB" / "basic"
    broken = sorted((folder / "Image" / "aligned").iterdir())[0]
    broken.write_bytes(b"not a jpeg")
    args = ["cache", "build", "rafdb_basic", "--root", str(folder), "--size", "16", "--workers", "1",
            "--no-progress"]
    assert main(args + ["--cache", str(tmp_path / "c1")]) == 0
    assert "1 failed" in capsys.readouterr().out
    assert main(args + ["--cache", str(tmp_path / "c2"), "--strict"]) == 2
    assert f"cannot decode image {broken}" in capsys.readouterr().err


def test_files_exist_matches_is_file(tmp_path):
    from fbhelpers.datasets.common import files_exist

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.jpg").touch()
    (tmp_path / "v" / "sub").mkdir()
    (tmp_path / "top.jpg").touch()
    paths = ["v/a.jpg", "v/b.jpg", "v/sub", "top.jpg", "gone/a.jpg", "top.jpg/x.jpg"]
    assert files_exist(tmp_path, paths).tolist() == [(tmp_path / p).is_file() for p in paths]
    assert files_exist(tmp_path, paths).tolist() == [True, False, False, True, False, False]
