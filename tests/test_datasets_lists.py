"""The list-file loaders (AffectNet, RAF-DB basic / compound, CelebA, CUB-200-2011, generic class + attribute CSV)
on their format-faithful fixtures and on tiny hand-written files: code mappings, sentinels, skip counts, splits,
the awkward cases of the real files, and every bad-input error naming the file, the line and the value."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fbhelpers.datasets import affectnet, celeba, common, cub, generic, rafdb
from fbhelpers.datasets.common import DataFormatError
from fbhelpers.tasks import EXPRESSIONS
from fbhelpers.zeroshot import RAFDB_COMPOUND


def at(path: Path, line: int | None, value: str) -> str:
    """A ``match`` pattern for a DataFormatError naming ``path`` (resolved), ``line`` and ``value`` (a regex)."""
    where = re.escape(f"{Path(path).resolve()}, line {line}: " if line is not None else f"{Path(path).resolve()}: ")
    return where + r".*\(value " + value + r"\)"


def code(name: str) -> int:
    return EXPRESSIONS.index(name)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = ",".join(affectnet.HEADER)


def affectnet_lists(folder: Path, train: list[str], val: list[str] | None = None) -> Path:
    """Hand-written training.csv / validation.csv; rows are "<path>,<expression>,<valence>,<arousal>"."""
    def row(text: str) -> str:
        name, expr, val_, aro = text.split(",")
        return f'{name},3,4,50,52,"1.5;2.5;3.5;4.5",{expr},{val_},{aro}'
    for rel, rows in (("training.csv", train), ("validation.csv", val or ["v/0.jpg,0,0.1,0.2"])):
        write(folder / affectnet.LISTS / rel, "\n".join([AFFECTNET_HEADER, *map(row, rows)]) + "\n")
    return folder


def test_affectnet_maps_every_code_to_the_canonical_order(tmp_path):
    rows = [f"a/{c}.jpg,{c},0.5,-0.25" for c in range(7)]
    table = affectnet.load(affectnet_lists(tmp_path, rows), check_images=False)
    train = table[table["split"] == "train"].set_index("path")
    expected = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger"}
    for c, name in expected.items():
        assert train.loc[f"{affectnet.IMAGES}/a/{c}.jpg", "expr"] == code(name)
    assert train["valence"].tolist() == pytest.approx([0.5] * 7) and train["arousal"].tolist() == pytest.approx(
        [-0.25] * 7)
    assert train[["box_x", "box_y", "box_w", "box_h"]].iloc[0].tolist() == pytest.approx([3, 4, 50, 52])
    assert table.loc[table["split"] == "test", "path"].tolist() == [f"{affectnet.IMAGES}/v/0.jpg"]
    assert list(table.columns[:4]) == ["path", "split", "source", "expr"] and (table["source"] == "affectnet").all()
    assert train[list(common.LABEL_COLUMNS[1:-2])].isna().all().all()        # AffectNet has no AU labels


def test_affectnet_sentinels_contempt_and_unlabelled_codes(tmp_path):
    rows = ["a/neutral.jpg,0,-2,-2", "a/happy.jpg,1,0.3,-2", "a/contempt.jpg,7,-0.4,0.6", "a/none.jpg,8,-2,-2",
            "a/none2.jpg,8,-2,-2", "a/uncertain.jpg,9,-2,-2", "a/noface.jpg,10,-2,-2"]
    root = affectnet_lists(tmp_path, rows)
    table = affectnet.load(root, check_images=False)
    assert table.attrs["skipped"] == {"contempt (code 7, classes=7)": 1, "none (code 8)": 2,
                                      "uncertain (code 9)": 1, "no-face (code 10)": 1}
    rows_ = table.set_index("path")
    assert np.isnan(rows_.loc[f"{affectnet.IMAGES}/a/neutral.jpg", "valence"])
    assert rows_.loc[f"{affectnet.IMAGES}/a/happy.jpg", "valence"] == pytest.approx(0.3)
    assert np.isnan(rows_.loc[f"{affectnet.IMAGES}/a/happy.jpg", "arousal"])
    eight = affectnet.load(root, classes=8, check_images=False).set_index("path")
    assert affectnet.EXPRESSIONS_8 == (*EXPRESSIONS, "contempt")
    assert eight.loc[f"{affectnet.IMAGES}/a/contempt.jpg", "expr"] == affectnet.EXPRESSIONS_8.index("contempt") == 7
    assert eight.attrs["expr_labels"] == affectnet.EXPRESSIONS_8 and "contempt (code 7, classes=7)" not in \
        eight.attrs["skipped"]
    kept = affectnet.load(root, unlabelled="keep", check_images=False).set_index("path")
    assert kept.loc[[f"{affectnet.IMAGES}/a/{n}.jpg" for n in ("none", "uncertain", "noface")], "expr"].isna().all()
    assert kept.attrs["skipped"] == {"contempt (code 7, classes=7)": 1}


def test_affectnet_fixture_counts_splits_and_face_boxes(tmp_path):
    affectnet.write_fixture(tmp_path / "AffectNet", seed=3)
    table = affectnet.load(tmp_path / "AffectNet")
    assert table.attrs["skipped"] == {"contempt (code 7, classes=7)": 3, "none (code 8)": 2, "uncertain (code 9)": 1,
                                      "no-face (code 10)": 1, "no image file": 1}
    assert table["split"].value_counts().to_dict() == {"train": 20, "test": 14}
    for split in ("train", "test"):
        assert set(table.loc[table["split"] == split, "expr"]) == set(range(7))
    assert table["valence"].isna().any() and table["valence"].notna().sum() > 20
    assert ((table["box_x"] + table["box_w"] <= 64) & (table["box_y"] + table["box_h"] <= 64)).all()
    with Image.open(tmp_path / "AffectNet" / table["path"].iloc[0]) as img:
        assert img.size == (64, 64)
    text = (tmp_path / "AffectNet" / affectnet.LISTS / "training.csv").read_text()
    assert text.startswith(AFFECTNET_HEADER + "\n") and ',"' in text and ",-2,-2\n" in text
    again = tmp_path / "again"
    affectnet.write_fixture(again, seed=3)
    assert (again / affectnet.LISTS / "training.csv").read_text() == text


@pytest.mark.parametrize("row, line, value", [
    ("a/x.jpg,11,0.1,0.1", 3, "'11'"),                  # expression code out of range
    ("a/x.jpg,-1,0.1,0.1", 3, "'-1'"),
    ("a/x.jpg,2,3.0,0.1", 3, "'3.0'"),                   # VA outside [-1, 1] and not -2
    ("a/x.jpg,2,0.1,-1.5", 3, "'-1.5'"),
    ("a/x.jpg,2,abc,0.1", 3, "'abc'"),                   # not a number
])
def test_affectnet_bad_values_name_file_line_value(tmp_path, row, line, value):
    root = affectnet_lists(tmp_path, ["a/ok.jpg,1,0.1,0.1", row])
    with pytest.raises(DataFormatError, match=at(root / affectnet.LISTS / "training.csv", line, value)):
        affectnet.load(root, check_images=False)


def test_affectnet_malformed_rows_header_box_missing_file_and_wrong_root(tmp_path):
    root = affectnet_lists(tmp_path / "AffectNet", ["a/ok.jpg,1,0.1,0.1"])
    train = root / affectnet.LISTS / "training.csv"
    train.write_text(train.read_text() + "a/short.jpg,1,2,3,4,0,0.1\n")
    with pytest.raises(DataFormatError, match=at(train, 3, "'a/short.jpg,1,2,3,4,0,0.1'")):
        affectnet.load(root, check_images=False)
    train.write_text(AFFECTNET_HEADER.replace("valence", "val") + "\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{train.resolve()}, line 1: header must be")):
        affectnet.load(root, check_images=False)
    train.write_text(AFFECTNET_HEADER + '\na/box.jpg,3,4,0,52,"1;2",1,0.1,0.1\n')
    with pytest.raises(DataFormatError, match=at(train, 2, "'0x52'")):
        affectnet.load(root, check_images=False)
    with pytest.raises(FileNotFoundError, match=r"pass that folder as root") as err:
        affectnet.load(tmp_path)                                       # the parent of AffectNet/
    assert str(root.resolve()) in str(err.value)
    (root / affectnet.LISTS / "validation.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation\.csv"):
        affectnet.load(root)
    with pytest.raises(ValueError, match="classes must be 7 or 8"):
        affectnet.load(root, classes=6)
    with pytest.raises(ValueError, match="unlabelled must be"):
        affectnet.load(root, unlabelled="nan")


# ----------------------------------------------------------------------------------------------------- RAF-DB

def test_rafdb_basic_maps_labels_and_splits_by_prefix(tmp_path):
    lines = [f"train_{i:05d}.jpg {i}" for i in range(1, 8)] + ["test_0001.jpg 7"]
    write(tmp_path / rafdb.LABELS, "\n".join(lines) + "\n")
    table = rafdb.load_basic(tmp_path, check_images=False).set_index("path")
    expected = {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"}
    for label, name in expected.items():
        assert table.loc[f"Image/aligned/train_{label:05d}_aligned.jpg", "expr"] == code(name)
    assert table.loc["Image/aligned/test_0001_aligned.jpg", "split"] == "test"
    assert (table["split"] == "train").sum() == 7 and (table["source"] == "rafdb_basic").all()


def test_rafdb_compound_codes_follow_zeroshot_order(tmp_path):
    raf_order = ("happily surprised", "happily disgusted", "sadly fearful", "sadly angry", "sadly surprised",
                 "sadly disgusted", "fearfully angry", "fearfully surprised", "angrily surprised",
                 "angrily disgusted", "disgustedly surprised")                   # RAF-DB's 1-based label order
    assert tuple(n.replace("_", " ") for n in RAFDB_COMPOUND) == raf_order
    write(tmp_path / rafdb.LABELS, "".join(f"test_{i:04d}.jpg {i}\r\n" for i in range(11, 0, -1)))   # CRLF too
    table = rafdb.load_compound(tmp_path, check_images=False)
    assert list(table.columns) == ["path", "split", "source", "compound"] and str(table["compound"].dtype) == "Int64"
    by_path = table.set_index("path")["compound"]
    for label in range(1, 12):
        assert RAFDB_COMPOUND[by_path[f"Image/aligned/test_{label:04d}_aligned.jpg"]].replace("_", " ") == \
            raf_order[label - 1]
    assert table.attrs["compound_labels"] == RAFDB_COMPOUND


def test_rafdb_fixtures_counts_and_classes_in_both_splits(tmp_path):
    rafdb.write_basic_fixture(tmp_path / "basic", seed=1)
    basic = rafdb.load_basic(tmp_path / "basic")
    assert basic.attrs["skipped"] == {"no image file": 1}
    assert basic["split"].value_counts().to_dict() == {"train": 20, "test": 14}
    assert set(basic.loc[basic["split"] == "test", "expr"]) == set(range(7))
    lines = (tmp_path / "basic" / rafdb.LABELS).read_text().splitlines()
    assert lines[0].startswith("train_00001.jpg ") and lines[-1].startswith("test_0014.jpg ")
    rafdb.write_compound_fixture(tmp_path / "compound", seed=1)
    compound = rafdb.load_compound(tmp_path / "compound")
    assert compound.attrs["skipped"] == {}
    assert compound["split"].value_counts().to_dict() == {"test": 33, "train": 22}
    for split in ("train", "test"):
        assert set(compound.loc[compound["split"] == split, "compound"]) == set(range(11))


@pytest.mark.parametrize("loader, text, line, value", [
    (rafdb.load_basic, "train_00001.jpg 1\nval_0001.jpg 2\n", 2, "'val_0001.jpg'"),     # unknown split prefix
    (rafdb.load_basic, "train_00001.jpg 1\ntrain_00002.jpg 8\n", 2, "'8'"),            # basic label 1..7
    (rafdb.load_basic, "train_00001.jpg 0\n", 1, "'0'"),
    (rafdb.load_basic, "train_00001.jpg x\n", 1, "'x'"),
    (rafdb.load_compound, "test_0001.jpg 12\n", 1, "'12'"),                            # compound label 1..11
    (rafdb.load_basic, "train_00001.jpg 1\ntrain_00002.jpg\n", 2, "'train_00002.jpg'"),  # malformed line
    (rafdb.load_basic, "train_00001.jpg 1\ntrain_00002.jpg 3 4\n", 2, "'train_00002.jpg 3 4'"),
    (rafdb.load_basic, "train_00001.jpg 1\ntrain_00001.jpg 3\n", 2, "'train_00001.jpg'"),  # listed twice
])
def test_rafdb_bad_lines_name_file_line_value(tmp_path, loader, text, line, value):
    path = write(tmp_path / rafdb.LABELS, text)
    with pytest.raises(DataFormatError, match=at(path, line, value)):
        loader(tmp_path, check_images=False)


def test_rafdb_missing_file_and_parent_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"list_patition_label\.txt"):
        rafdb.load_basic(tmp_path)
    rafdb.write_basic_fixture(tmp_path / "RAF-DB" / "basic")
    rafdb.write_compound_fixture(tmp_path / "RAF-DB" / "compound")
    for loader, subset in ((rafdb.load_basic, "basic"), (rafdb.load_compound, "compound")):
        expected = re.escape(str((tmp_path / "RAF-DB" / subset).resolve())) + ": pass that folder as root"
        with pytest.raises(FileNotFoundError, match=expected):
            loader(tmp_path / "RAF-DB")


# ----------------------------------------------------------------------------------------------------- CelebA

def celeba_files(folder: Path, rows: list[tuple[str, str, int, int]], count: int | None = None) -> Path:
    """Hand-written CelebA lists; rows: (name, attribute values as text, identity, partition)."""
    header = [str(len(rows) if count is None else count), " ".join(celeba.ATTRIBUTES) + " "]
    write(folder / celeba.ATTR_FILE, "\n".join([*header, *(f"{n} {v}" for n, v, _, _ in rows)]) + "\n")
    write(folder / celeba.IDENTITY_FILE, "".join(f"{n} {i}\n" for n, _, i, _ in rows))
    write(folder / celeba.PARTITION_FILE, "".join(f"{n} {p}\n" for n, _, _, p in rows))
    return folder


def values(first: int, second: int) -> str:
    """40 attribute values in the official spacing: "-1" after one space, " 1" after two."""
    vals = [first, second] + [-1] * 38
    return " ".join(f"{v:>2d}" for v in vals)


def test_celeba_maps_attributes_identities_and_partitions(tmp_path):
    assert len(celeba.ATTRIBUTES) == 40 and celeba.ATTRIBUTES[0] == "5_o_Clock_Shadow" and \
        celeba.ATTRIBUTES[-1] == "Young"
    root = celeba_files(tmp_path, [("000001.jpg", values(-1, 1), 2880, 0), ("000002.jpg", values(1, -1), 17, 1),
                                   ("000003.jpg", values(1, 1), 2880, 2)])
    assert "000001.jpg -1  1 -1" in (root / celeba.ATTR_FILE).read_text()              # double spaces parsed
    table = celeba.load(root, check_images=False).set_index("path")
    first, second = (f"{celeba.IMAGES}/00000{i}.jpg" for i in (1, 2))
    assert table.loc[first, "5_o_Clock_Shadow"] == 0.0 and table.loc[first, "Arched_Eyebrows"] == 1.0
    assert table.loc[second, "5_o_Clock_Shadow"] == 1.0 and table.loc[second, "Young"] == 0.0
    assert table["split"].tolist() == ["train", "val", "test"]
    assert table["identity"].tolist() == [1, 0, 1] and table["identity_id"].tolist() == [2880, 17, 2880]
    assert table.attrs["identity_labels"] == ["17", "2880"]
    assert list(table.columns[2:4]) == ["identity", "5_o_Clock_Shadow"] and str(table["identity"].dtype) == "Int64"


def test_celeba_fixture_top_identities_and_missing_images(tmp_path):
    celeba.write_fixture(tmp_path / "CelebA", seed=2)
    table = celeba.load(tmp_path / "CelebA")
    assert table.attrs["skipped"] == {"no image file": 1}
    assert table["split"].value_counts().to_dict() == {"train": 14, "test": 10, "val": 5}
    assert table.attrs["identity_labels"] == ["2880", "2937", "4990", "8692", "10101", "11500"]
    by_split = {s: set(table.loc[table["split"] == s, "identity"]) for s in ("train", "val", "test")}
    assert by_split == {"train": {0, 1, 2}, "val": {3}, "test": {4, 5}}       # identities disjoint, as in CelebA
    top = celeba.load(tmp_path / "CelebA", top_identities=4)   # 2937 (6), then 2880, 8692, 10101 (5 each): ties
    # go to the smaller number
    assert top.attrs["identity_labels"] == ["2880", "2937", "8692", "10101"]
    assert top.attrs["skipped"] == {"no image file": 1, "identity outside the top 4": 8}
    assert sorted(top["identity"].unique()) == [0, 1, 2, 3] and len(top) == len(table) - 8
    again = celeba.top_identities(table, 4)                  # the same table from the loaded one, no re-read
    assert again.equals(top) and again.attrs["skipped"] == top.attrs["skipped"]
    assert again.attrs["identity_labels"] == top.attrs["identity_labels"]
    with pytest.raises(ValueError, match="top_identities"):
        celeba.load(tmp_path / "CelebA", top_identities=0)


def test_celeba_rows_missing_from_identity_or_partition_are_counted(tmp_path):
    root = celeba_files(tmp_path, [(f"00000{i}.jpg", values(1, 1), 5, 0) for i in range(1, 5)])
    write(root / celeba.IDENTITY_FILE, "000001.jpg 5\n000002.jpg 5\n000003.jpg 5\n")
    write(root / celeba.PARTITION_FILE, "000001.jpg 0\n000002.jpg 0\n000004.jpg 0\n")
    table = celeba.load(root, check_images=False)
    assert len(table) == 2
    assert table.attrs["skipped"] == {"not in identity_CelebA.txt": 1, "not in list_eval_partition.txt": 1}


def test_celeba_bad_input_names_file_line_value(tmp_path):
    good = [("000001.jpg", values(1, -1), 3, 0), ("000002.jpg", values(-1, -1), 4, 2)]
    root = celeba_files(tmp_path / "CelebA", good, count=3)
    attr = root / celeba.ATTR_FILE
    with pytest.raises(DataFormatError, match=at(attr, 1, "3")):
        celeba.load(root, check_images=False)
    celeba_files(root, [("000001.jpg", values(1, -1), 3, 0), ("000002.jpg", values(-1, 0), 4, 2)])
    with pytest.raises(DataFormatError, match=at(attr, 4, "'0'")) as err:
        celeba.load(root, check_images=False)
    assert "Arched_Eyebrows" in str(err.value)
    celeba_files(root, [("000001.jpg", values(1, -1) + " 1", 3, 0)])
    with pytest.raises(DataFormatError, match=at(attr, 3, "'000001.jpg .*'")):
        celeba.load(root, check_images=False)
    celeba_files(root, good)
    attr.write_text(attr.read_text().replace("Eyeglasses", "Glasses"))
    with pytest.raises(DataFormatError, match=at(attr, 2, "'Glasses'")):
        celeba.load(root, check_images=False)
    celeba_files(root, good)
    write(root / celeba.PARTITION_FILE, "000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(DataFormatError, match=at(root / celeba.PARTITION_FILE, 2, r".*3(\.0)?\)?")):
        celeba.load(root, check_images=False)
    write(root / celeba.PARTITION_FILE, "000001.jpg 0\n000002.jpg 2\n")
    write(root / celeba.IDENTITY_FILE, "000001.jpg 3\n000002.jpg x\n")
    with pytest.raises(DataFormatError, match=at(root / celeba.IDENTITY_FILE, 2, "'x'")):
        celeba.load(root, check_images=False)
    with pytest.raises(FileNotFoundError, match=r"pass that folder as root"):
        celeba.load(tmp_path)
    (root / celeba.IDENTITY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"identity_CelebA\.txt"):
        celeba.load(root)


# -------------------------------------------------------------------------------------------------------- CUB

def tiny_cub(folder: Path, labels: str | None = None, attributes_inside: bool = False) -> Path:
    """CUB_200_2011 with 2 classes, 3 attributes, 3 images (image 1 of class 2, test); attributes.txt one level up
    unless ``attributes_inside``."""
    write(folder / "images.txt", "1 002.B/b_1.jpg\n2 001.A/a_1.jpg\n3 001.A/a_2.jpg\n")
    write(folder / "image_class_labels.txt", "1 2\n2 1\n3 1\n")
    write(folder / "classes.txt", "1 001.A\n2 002.B\n")
    write(folder / "train_test_split.txt", "1 0\n2 1\n3 1\n")
    write(folder / ("attributes/attributes.txt" if attributes_inside else "../attributes.txt"),
          "1 has_bill_shape::dagger\n2 has_wing_color::blue\n3 has_size::small_(5_-_9_in)\n")
    write(folder / cub.CONTINUOUS, "10.0 50.5 0.0\n100.0 0.0 33.333333\n")
    write(folder / cub.IMAGE_LABELS, labels if labels is not None else (
        "1 1 1 4 3.5\n1 2 0 1 2.0\n1 3 1 3 1.25\n"
        "2 1 0 2 4.0\n2 2 1 1 0.5 0 0\n2 3 0 4 9.0\n"        # one line with extra trailing fields
        "3 1 1 4 2.0\n3 3 0 1 1.0\n"))                      # (3, 2) has no line
    return folder


def test_cub_species_split_attributes_and_not_visible(tmp_path):
    root = tiny_cub(tmp_path / "CUB_200_2011")
    table = cub.load(root, check_images=False)
    assert table["path"].tolist() == ["images/002.B/b_1.jpg", "images/001.A/a_1.jpg", "images/001.A/a_2.jpg"]
    assert table["species"].tolist() == [1, 0, 0] and table["split"].tolist() == ["test", "train", "train"]
    assert table.attrs["species_labels"] == ["001.A", "002.B"]
    names = ["has_bill_shape::dagger", "has_wing_color::blue", "has_size::small_(5_-_9_in)"]
    assert list(table.columns[3:7]) == ["species", *names] and table.attrs["attributes"] == names
    got = table[names].to_numpy()
    nan = np.nan
    assert got == pytest.approx(np.array([[1, nan, 1], [0, nan, 0], [1, nan, nan]]), nan_ok=True)
    kept = cub.load(root, not_visible="keep", check_images=False)[names].to_numpy()
    assert kept == pytest.approx(np.array([[1, 0, 1], [0, 1, 0], [1, nan, 0]]), nan_ok=True)
    inside = tiny_cub(tmp_path / "other" / "CUB_200_2011", attributes_inside=True)
    assert cub.load(inside, check_images=False)[names].shape == (3, 3)
    with pytest.raises(ValueError, match="not_visible"):
        cub.load(root, not_visible="drop")


def test_cub_relatedness_is_the_continuous_table_over_100(tmp_path):
    root = tiny_cub(tmp_path / "CUB_200_2011")
    rel = cub.relatedness(root)
    assert rel.classes == ("001.A", "002.B")
    assert rel.attributes == ("has_bill_shape::dagger", "has_wing_color::blue", "has_size::small_(5_-_9_in)")
    assert rel.table.to_numpy() == pytest.approx(np.array([[0.1, 0.505, 0.0], [1.0, 0.0, 0.33333333]]))
    assert "class_attribute_labels_continuous.txt" in rel.provenance and "Wah" in rel.citation


def test_cub_fixture_layout_and_counts(tmp_path):
    cub.write_fixture(tmp_path / "CUB_200_2011", seed=4)
    assert (tmp_path / "attributes.txt").is_file()
    assert not (tmp_path / "CUB_200_2011" / "attributes" / "attributes.txt").exists()
    labels = (tmp_path / "CUB_200_2011" / cub.IMAGE_LABELS).read_text().splitlines()
    assert {len(line.split()) for line in labels} == {5, 7}
    table = cub.load(tmp_path / "CUB_200_2011")
    assert table["split"].value_counts().to_dict() == {"train": 16, "test": 8}
    for split in ("train", "test"):
        assert set(table.loc[table["split"] == split, "species"]) == set(range(4))
    attributes = list(cub.relatedness(tmp_path / "CUB_200_2011").attributes)
    assert attributes == list(cub.FIXTURE_ATTRIBUTES) and table.attrs["attributes"] == attributes
    values_ = table[attributes].to_numpy()
    assert np.isnan(values_).any() and set(np.unique(values_[~np.isnan(values_)])) == {0.0, 1.0}
    (tmp_path / "CUB_200_2011" / table["path"].iloc[0]).unlink()
    assert cub.load(tmp_path / "CUB_200_2011").attrs["skipped"] == {"no image file": 1}


@pytest.mark.parametrize("labels, line, value", [
    ("1 1 2 4 1.0\n", 1, r".*2(\.0)?\)?"),                  # is_present must be 0/1
    ("1 1 1 4 1.0\n1 2 1 5 1.0\n", 2, r".*5(\.0)?\)?"),     # certainty 1..4
    ("1 1 1 4 1.0\n1 4 1 4 1.0\n", 2, "4"),                # attribute id outside 1..3
    ("1 1 1 4 1.0\n9 1 1 4 1.0\n", 2, "9"),                # image id not in images.txt
    ("1 1 1 4 1.0\n1 2 1\n", 2, "'1 2 1'"),                # fewer than 4 fields
    ("1 1 x 4 1.0\n", 1, "'x'"),
])
def test_cub_bad_attribute_lines_name_file_line_value(tmp_path, labels, line, value):
    root = tiny_cub(tmp_path / "CUB_200_2011", labels)
    with pytest.raises(DataFormatError, match=at(root / cub.IMAGE_LABELS, line, value)):
        cub.load(root, check_images=False)


def test_cub_bad_tables_missing_files_and_wrong_root(tmp_path):
    root = tiny_cub(tmp_path / "CUB_200_2011")
    write(root / cub.CONTINUOUS, "10.0 50.5 0.0\n100.0 101.0 33.3\n")
    with pytest.raises(DataFormatError, match=at(root / cub.CONTINUOUS, 2, "'101.0'")):
        cub.relatedness(root)
    write(root / cub.CONTINUOUS, "10.0 50.5 0.0\n")
    with pytest.raises(DataFormatError, match=at(root / cub.CONTINUOUS, None, "1")):
        cub.relatedness(root)
    write(root / cub.CONTINUOUS, "10.0 50.5\n")
    with pytest.raises(DataFormatError, match=at(root / cub.CONTINUOUS, 1, "'10.0 50.5'")):
        cub.relatedness(root)
    write(root / "image_class_labels.txt", "1 2\n2 3\n3 1\n")
    with pytest.raises(DataFormatError, match=at(root / "image_class_labels.txt", 2, r".*3(\.0)?\)?")):
        cub.load(root, check_images=False)
    write(root / "image_class_labels.txt", "1 2\n2 1\n")
    with pytest.raises(DataFormatError, match=re.escape(str((root / "image_class_labels.txt").resolve())) +
                       r": no line for image id .*\(value 3\)"):
        cub.load(root, check_images=False)
    write(root / "image_class_labels.txt", "1 2\n2 1\n3 1\n")
    write(root / "train_test_split.txt", "1 0\n2 1\n3 2\n")
    with pytest.raises(DataFormatError, match=at(root / "train_test_split.txt", 3, r".*2(\.0)?\)?")):
        cub.load(root, check_images=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(root.resolve())) + ": pass that folder as root"):
        cub.load(tmp_path)
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"attributes\.txt is in neither .*attributes/attributes\.txt"):
        cub.load(root)
    (root / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classes\.txt"):
        cub.load(root)


# ---------------------------------------------------------------------------------------------------- generic

def test_generic_csv_classes_attributes_and_splits(tmp_path):
    write(tmp_path / "labels.csv", "image,class,split,collar,floral\n"
                                   "images/1.jpg,shirt,train,1,0\nimages/2.jpg,dress,test,0,\n"
                                   "images/3.jpg,coat,val,,1\nimages/4.jpg,,train,1,1\n")
    table = generic.load(tmp_path, check_images=False)
    assert table.attrs["class_labels"] == ["coat", "dress", "shirt"] and table.attrs["attributes"] == ["collar",
                                                                                                       "floral"]
    assert list(table.columns[:6]) == ["path", "split", "source", "category", "collar", "floral"]
    assert table["category"].tolist()[:3] == [2, 1, 0] and pd.isna(table["category"].iloc[3])
    assert table["split"].tolist() == ["train", "test", "val", "train"]
    assert table[["collar", "floral"]].to_numpy() == pytest.approx(
        np.array([[1, 0], [0, np.nan], [np.nan, 1], [1, 1]]), nan_ok=True)
    only = generic.load(tmp_path, attributes=["floral"], class_name="garment", source="cad", check_images=False)
    assert list(only.columns) == ["path", "split", "source", "garment", "floral"] and (only["source"] == "cad").all()


def test_generic_seeded_split_without_split_column(tmp_path):
    write(tmp_path / "data.csv", "file,label,a\n" + "".join(f"im/{i}.png,c{i % 3},{i % 2}\n" for i in range(40)))
    table = generic.load(tmp_path, csv="data.csv", image_column="file", class_column="label", seed=5,
                         fractions={"train": 0.5, "val": 0.25, "test": 0.25}, check_images=False)
    paths = [f"im/{i}.png" for i in range(40)]
    expected = common.seeded_split(paths, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=5)
    assert table["split"].tolist() == list(expected) and set(expected) == {"train", "val", "test"}
    default = generic.load(tmp_path, csv="data.csv", image_column="file", class_column="label", check_images=False)
    assert set(default["split"]) == {"train", "test"} and table.attrs["attributes"] == ["a"]


def test_generic_fixture_and_missing_images(tmp_path):
    generic.write_fixture(tmp_path / "CAD", seed=0)
    table = generic.load(tmp_path / "CAD")
    assert table.attrs["class_labels"] == list(generic.FIXTURE_CLASSES) and (table["source"] == "CAD").all()
    assert table["split"].value_counts().to_dict() == {"train": 12, "test": 9}
    assert table["category"].isna().sum() == 1 and table[list(generic.FIXTURE_ATTRIBUTES)].isna().any().any()
    for split in ("train", "test"):
        assert set(table.loc[table["split"] == split, "category"].dropna()) == {0, 1, 2}
    (tmp_path / "CAD" / "images" / "0002.jpg").unlink()
    assert generic.load(tmp_path / "CAD").attrs["skipped"] == {"no image file": 1}


@pytest.mark.parametrize("text, line, value", [
    ("image,class,a\nx.jpg,c,1\ny.jpg,c,2\n", 3, "'2'"),             # attribute must be 0/1/empty
    ("image,class,a\nx.jpg,c,yes\n", 2, "'yes'"),
    ("image,class,split,a\nx.jpg,c,dev,1\n", 2, "'dev'"),             # split must be train/val/test
    ("image,class,a\nx.jpg,c,1\ny.jpg,c\n", 3, "'y.jpg,c'"),          # malformed line
    ("image,class,a\n,c,1\n", 2, "''"),                              # empty image path
    ("img,class,a\nx.jpg,c,1\n", 1, "'img,class,a'"),                 # the image column is missing
])
def test_generic_bad_input_names_file_line_value(tmp_path, text, line, value):
    path = write(tmp_path / "labels.csv", text)
    with pytest.raises(DataFormatError, match=at(path, line, value)):
        generic.load(tmp_path, check_images=False)


def test_generic_missing_file_and_wrong_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        generic.load(tmp_path)
    generic.write_fixture(tmp_path / "S-ADD")
    with pytest.raises(FileNotFoundError, match=re.escape(str((tmp_path / "S-ADD").resolve())) + ": pass that"):
        generic.load(tmp_path)
