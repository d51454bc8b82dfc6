"""The frame / AU database loaders on their official layouts: Aff-Wild2 (ABAW3+, FG 2020 and MTL files), EmotioNet,
DISFA and BP4D. Each test writes the fixture (or a tiny hand-written file in the exact layout) into tmp_path and
checks values after the mapping, the skipped counts, the splits, and that every bad input names file, line, value.
"""
from __future__ import annotations

import csv
import re
import sys

import numpy as np
import pandas as pd
import pytest

from fbhelpers.datasets import affwild2, bp4d, common, disfa, emotionet
from fbhelpers.datasets.common import DataFormatError
from fbhelpers.tasks import AUS, EXPRESSIONS


def _write(path, lines):
    common.write_text(path, lines)
    return path


def _images(folder, rels):
    for i, rel in enumerate(rels):
        common.write_image(folder / rel, i, (8, 8))


# --- Aff-Wild2 -----------------------------------------------------------------------------------------------------

ABAW_EXPR = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
ABAW_AU = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"


def _abaw_video(root, video, va=None, expr=None, au=None, split="Train_Set", frames=()):
    """One video's per-task files in the ABAW3+ layout (only the tasks given) and images for ``frames``."""
    for rel, header, rows in (("VA_Estimation_Challenge", "valence,arousal", va),
                              ("EXPR_Recognition_Challenge", ABAW_EXPR, expr), ("AU_Detection_Challenge", ABAW_AU, au)):
        if rows is not None:
            _write(root / rel / split / f"{video}.txt", [header, *rows])
    _images(root, [f"cropped_aligned/{video}/{i:05d}.jpg" for i in frames])


def test_affwild2_expression_codes_are_the_canonical_order():
    assert [affwild2.CODES[i] for i in range(7)] == list(EXPRESSIONS)
    assert [name.lower() for name in affwild2.EXPR_HEADER] == list(EXPRESSIONS)
    assert affwild2.EXPRESSIONS_8[:7] == EXPRESSIONS and affwild2.EXPRESSIONS_8[7] == "other"


def test_affwild2_row_i_is_frame_i_and_three_task_files_merge(tmp_path):
    au_row = "1,0,0,0,1,0,0,0,0,0,0,1"
    _abaw_video(tmp_path, "vid", va=["0.25,-0.5", "-5,-5", "0.1,0.9", "-0.3,0.4"], expr=["4", "7", "-1", "1"],
                au=[au_row, au_row, "-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1", au_row], frames=(1, 2, 4))
    table = affwild2.load(tmp_path).set_index("frame")
    assert list(table.index) == [1, 2, 4]                    # frame 3: no image
    assert table.loc[1, "path"] == "cropped_aligned/vid/00001.jpg"
    assert table.loc[1, "valence"] == pytest.approx(0.25) and table.loc[1, "arousal"] == pytest.approx(-0.5)
    assert table.loc[1, "expr"] == EXPRESSIONS.index("happiness")
    assert table.loc[4, "expr"] == EXPRESSIONS.index("anger")
    assert pd.isna(table.loc[2, "expr"]) and np.isnan(table.loc[2, "valence"])     # Other -> missing, VA -5 -> NaN
    assert table.loc[2, "AU1"] == 1.0 and table.loc[2, "AU26"] == 1.0 and table.loc[2, "AU2"] == 0.0
    assert table.loc[4, "valence"] == pytest.approx(-0.3) and table.loc[4, "AU7"] == 1.0
    assert np.isnan(table.loc[1, "AU5"]) and np.isnan(table.loc[1, "AU20"])     # not annotated in ABAW3+
    assert set(table["split"]) == {"train"} and set(table["video"]) == {"vid"}
    assert table.attrs["skipped"] == {"no image file": 1}
    assert table.attrs["skipped_detail"]["no image per video"] == {"vid": 1}
    assert table.attrs["skipped_detail"]["expression Other set missing"] == 1


def test_affwild2_frame_with_every_sentinel_is_counted_not_kept(tmp_path):
    _abaw_video(tmp_path, "v", va=["-5,-5", "0.5,0.5"], expr=["-1", "-1"],
                au=["-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1"] * 2, frames=(1, 2))
    table = affwild2.load(tmp_path)
    assert table["frame"].tolist() == [2]
    assert table.attrs["skipped"] == {"no label (all sentinels)": 1}


def test_affwild2_abaw_fixture_counts_splits_and_left_right(tmp_path):
    affwild2.write_fixture(tmp_path)
    table = affwild2.load(tmp_path)
    assert table.attrs["layout"] == "abaw"
    assert table.attrs["skipped"] == {"no label (all sentinels)": 2, "no image file": 4}
    assert table.attrs["skipped_detail"]["no image per video"] == {"1-30-1280x720": 2, "2-30-640x360": 1,
                                                                   "10-60-1280x720_right": 1}
    assert table.attrs["overlap_videos"] == ["video5"]
    videos = table.groupby("split")["video"].unique()
    assert {"1-30-1280x720", "10-60-1280x720_left", "10-60-1280x720_right", "video5"} == set(videos["train"])
    assert {"2-30-640x360", "video34", "video5"} == set(videos["val"])
    right = table[table["video"] == "10-60-1280x720_right"]
    assert right["frame"].tolist() == list(range(1, 10))
    assert right["path"].str.startswith("cropped_aligned/10-60-1280x720_right/").all()
    five = table[table["video"] == "video5"]
    train, val = five[five["split"] == "train"], five[five["split"] == "val"]
    assert train["AU1"].isna().all() and val["valence"].isna().all() and val["AU7"].notna().all()
    assert table.loc[table["frame"] == 5, "valence"].isna().all()          # the VA sentinel frame of every file
    assert (table.groupby("split").size() >= 8).all() and table["expr"].nunique() == 7


def test_affwild2_overlap_val_merges_a_video_into_val(tmp_path):
    affwild2.write_fixture(tmp_path)
    keep = affwild2.load(tmp_path)
    moved = affwild2.load(tmp_path, overlap="val")
    five = moved[moved["video"] == "video5"].set_index("frame")
    assert set(five["split"]) == {"val"} and five.index.is_unique
    assert five[["valence", "AU1"]].notna().all(axis=1).sum() >= 7     # VA (train file) and AU (val file) on one row
    assert (moved["split"] == "train").sum() == (keep["split"] == "train").sum() - (
        (keep["video"] == "video5") & (keep["split"] == "train")).sum()


def test_affwild2_other_keep_gives_code_7(tmp_path):
    affwild2.write_fixture(tmp_path)
    table = affwild2.load(tmp_path, other="keep")
    assert table.attrs["expr_labels"] == affwild2.EXPRESSIONS_8
    assert table.attrs["skipped_detail"]["expression Other set missing"] == 0
    every = affwild2.load(tmp_path, other="keep", check_images=False)
    assert (every["expr"] == 7).sum() == affwild2.load(tmp_path).attrs["skipped_detail"]["expression Other set missing"]
    assert (every["expr"] == 7).sum() == 6 and (table["expr"] == 7).sum() == 5        # one has no image


def test_affwild2_fg2020_layout(tmp_path):
    affwild2.write_fixture(tmp_path, layout="fg2020")
    assert (tmp_path / "annotations" / "AU_Set" / "Validation_Set" / "video5.txt").is_file()
    table = affwild2.load(tmp_path)
    assert table.attrs["layout"] == "fg2020"
    assert table["AU20"].notna().any() and table["AU7"].isna().all() and table["AU26"].isna().all()
    assert table["expr"].max() == 6 and table.attrs["skipped"]["no image file"] == 4
    first = (tmp_path / "annotations/VA_Set/Training_Set/1-30-1280x720.txt").read_text().splitlines()
    row = table[(table["video"] == "1-30-1280x720") & (table["frame"] == 2)].iloc[0]
    assert [row["valence"], row["arousal"]] == pytest.approx([float(v) for v in first[2].split(",")])


def test_affwild2_layout_detection_order_option_and_subfolder(tmp_path):
    affwild2.write_fixture(tmp_path / "both", layout="fg2020")
    affwild2.write_fixture(tmp_path / "both", layout="abaw")
    assert affwild2.load(tmp_path / "both").attrs["layout"] == "abaw"
    assert affwild2.load(tmp_path / "both", layout="fg2020").attrs["layout"] == "fg2020"
    inner = tmp_path / "sub" / "6th ABAW Annotations"
    affwild2.write_fixture(inner)
    (inner / "cropped_aligned").rename(tmp_path / "sub" / "cropped_aligned")
    table = affwild2.load(tmp_path / "sub")
    assert table.attrs["layout"] == "abaw" and table.attrs["skipped"]["no image file"] == 4
    assert len(affwild2.load(tmp_path / "sub", annotations="6th ABAW Annotations")) == len(table)


def test_affwild2_mtl_file(tmp_path):
    affwild2.write_fixture(tmp_path, layout="mtl")
    lines = (tmp_path / "training_set_annotations.txt").read_text().splitlines()
    assert lines[0] == "image,valence,arousal,expression,aus"
    table = affwild2.load(tmp_path)
    assert table.attrs["layout"] == "mtl" and set(table["split"]) == {"train", "val"}
    image, v, a, e, *aus = lines[2].split(",")
    row = table[table["path"] == f"cropped_aligned/{image}"].iloc[0]
    assert row["video"] == image.split("/")[0] and row["frame"] == 2
    assert [row["valence"], row["arousal"]] == pytest.approx([float(v), float(a)])
    assert row["expr"] == int(e) and [row[c] for c in affwild2.AUS_ABAW] == [float(x) for x in aus]
    assert table.attrs["skipped"] == {"no label (all sentinels)": 1, "no image file": 4}


def test_affwild2_mtl_named_header_and_file_names(tmp_path):
    _write(tmp_path / "train.txt", ["image,valence,arousal,expression,AU1,AU12",
                                    "a_left/00003.jpg,0.5,-5,6,1,-1", "a_left/00004.jpg,-5,-5,-1,-1,-1"])
    _images(tmp_path, ["cropped_aligned/a_left/00003.jpg", "cropped_aligned/a_left/00004.jpg"])
    table = affwild2.load(tmp_path, layout="mtl", mtl_files={"train": "train.txt"})
    assert len(table) == 1 and table.attrs["skipped"] == {"no label (all sentinels)": 1}
    row = table.iloc[0]
    assert row["frame"] == 3 and row["expr"] == EXPRESSIONS.index("surprise") and row["AU1"] == 1.0
    assert np.isnan(row["arousal"]) and np.isnan(row["AU12"]) and np.isnan(row["AU2"])


@pytest.mark.parametrize("task, rows, line, problem, value", [
    ("va", ["0.5,0.5", "3.0,0.1"], 3, r"valence outside \[-1, 1\]", "3.0"),
    ("va", ["0.5,0.5,0.1"], 2, "expected 2 fields, got 3", "0.5,0.5,0.1"),
    ("va", ["0.5,abc"], 2, "arousal is not a number", "abc"),
    ("expr", ["1", "8"], 3, "expression code outside", "8.0"),
    ("au", ["1,0,0,0,1,0,0,0,0,0,0,2"], 2, "AU26 value outside", "2.0"),
])
def test_affwild2_bad_values_name_file_line_value(tmp_path, task, rows, line, problem, value):
    _abaw_video(tmp_path, "bad", **{task: rows})
    path = {"va": "VA_Estimation_Challenge", "expr": "EXPR_Recognition_Challenge", "au": "AU_Detection_Challenge"}[task]
    where = rf"{path}/Train_Set/bad\.txt, line {line}: "
    with pytest.raises(DataFormatError, match=rf"{where}{problem}.*{re.escape(value)}"):
        affwild2.load(tmp_path)


def test_affwild2_bad_headers_and_fg2020_other(tmp_path):
    _write(tmp_path / "a/VA_Estimation_Challenge/Train_Set/v.txt", ["arousal,valence", "0,0"])
    with pytest.raises(DataFormatError, match=r"v\.txt, line 1: VA header must be valence,arousal.*arousal,valence"):
        affwild2.load(tmp_path / "a")
    _write(tmp_path / "b/AU_Detection_Challenge/Train_Set/v.txt", ["AU1,Smile", "0,1"])
    with pytest.raises(DataFormatError, match=r"v\.txt, line 1: AU header names.*'Smile'"):
        affwild2.load(tmp_path / "b")
    fg = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"
    _write(tmp_path / "c/annotations/EXPR_Set/Training_Set/v.txt", [fg, "0", "7"])
    with pytest.raises(DataFormatError, match=r"v\.txt, line 3: expression code outside \[-1, 0, 1, .*, 6\].*7"):
        affwild2.load(tmp_path / "c")
    _write(tmp_path / "d/training_set_annotations.txt", ["image,valence,arousal,expression,aus",
                                                         "v/frame1.png,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"])
    with pytest.raises(DataFormatError, match=r"training_set_annotations\.txt, line 2: image must be.*frame1\.png"):
        affwild2.load(tmp_path / "d")
    _write(tmp_path / "e/VA_Estimation_Challenge/Train_Set/v.txt", [""])
    with pytest.raises(DataFormatError, match=r"v\.txt, line 1: empty first line"):
        affwild2.load(tmp_path / "e")


def test_affwild2_missing_files_and_wrong_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no Aff-Wild2 annotations.*VA_Estimation_Challenge.*'Aff-Wild2'"):
        affwild2.load(tmp_path / "empty")
    affwild2.write_fixture(tmp_path / "DATA" / "Aff-Wild2")
    with pytest.raises(FileNotFoundError, match=rf"under {re.escape(str(tmp_path / 'DATA' / 'Aff-Wild2'))}: pass that"):
        affwild2.load(tmp_path / "DATA")
    with pytest.raises(FileNotFoundError, match="training_set_annotations.txt"):
        affwild2.load(tmp_path / "DATA" / "Aff-Wild2", layout="mtl")
    (tmp_path / "nosplit" / "AU_Detection_Challenge").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"AU_Detection_Challenge has none of the split folders"):
        affwild2.load(tmp_path / "nosplit")
    with pytest.raises(ValueError, match="layout must be one of"):
        affwild2.load(tmp_path / "DATA" / "Aff-Wild2", layout="abaw3")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        affwild2.load(tmp_path / "nowhere")


def test_affwild2_check_images_false_keeps_frames_without_image(tmp_path):
    affwild2.write_fixture(tmp_path)
    table = affwild2.load(tmp_path, check_images=False)
    assert "no image file" not in table.attrs["skipped"]
    assert len(table) == len(affwild2.load(tmp_path)) + 4


# --- DISFA -----------------------------------------------------------------------------------------------------------

def test_disfa_fixture_folds_paths_and_counts(tmp_path):
    disfa.write_fixture(tmp_path)
    table = disfa.load(tmp_path)
    assert table.attrs["aus"] == [f"AU{k}" for k in disfa.AUS]
    assert set(table.loc[table["split"] == "test", "subject"]) == {"SN001", "SN002"}          # part 1
    assert set(table.loc[table["split"] == "train", "subject"]) == {"SN013", "SN003", "SN004"}
    assert table.attrs["skipped"] == {"no image file": 3}
    assert table.attrs["skipped_detail"]["no image per subject"] == {"SN002": 1, "SN003": 2}
    first = table[(table["subject"] == "SN001") & (table["frame"] == 1)].iloc[0]
    assert first["path"] == "img/SN001/0.png"                                 # label frame 1 = image index 0
    lines = (tmp_path / "ActionUnit_Labels/SN001/SN001_au12.txt").read_text().split()
    assert first["AU12"] == float(int(lines[0].split(",")[1]) >= 2)
    assert table[["AU7", "AU10", "AU14", "AU23", "AU24"]].isna().all().all()   # not annotated in DISFA
    for fold, subjects in ((1, {"SN013"}), (2, {"SN003", "SN004"})):
        other = disfa.load(tmp_path, fold=fold)
        assert set(other.loc[other["split"] == "test", "subject"]) == subjects


def test_disfa_threshold_aus_from_file_names_and_image_pattern(tmp_path):
    _write(tmp_path / "ActionUnit_Labels/SN005/SN005_au1.txt", [f"{i},{i - 1}" for i in range(1, 7)])
    _write(tmp_path / "ActionUnit_Labels/SN005/SN005_au9.txt", [f"{i},{6 - i}" for i in range(1, 6)])
    _images(tmp_path, [f"SN005/frame{i:05d}.jpg" for i in range(1, 7)])
    pattern = "{subject}/frame{frame:05d}.jpg"
    table = disfa.load(tmp_path, images=pattern)
    assert table.attrs["aus"] == ["AU1", "AU9"] and table["AU2"].isna().all()
    assert table["path"].tolist() == [f"SN005/frame{i:05d}.jpg" for i in range(1, 7)]
    assert table["AU1"].tolist() == [0, 0, 1, 1, 1, 1]                       # intensity 0..5, >= 2
    assert table["AU9"].tolist()[:5] == [1, 1, 1, 1, 0] and np.isnan(table["AU9"].iloc[5])   # frame 6 not in au9
    assert disfa.load(tmp_path, images=pattern, threshold=4)["AU1"].tolist() == [0, 0, 0, 0, 1, 1]
    assert set(table["split"]) == {"train"}                                    # SN005 is in part 3
    assert set(disfa.load(tmp_path, images=pattern, fold=2)["split"]) == {"test"}
    with pytest.raises(ValueError, match="threshold"):
        disfa.load(tmp_path, threshold=6)
    with pytest.raises(ValueError, match="images pattern"):
        disfa.load(tmp_path, images="{person}/{frame}.jpg")


def test_disfa_folds_option_and_errors(tmp_path):
    _write(tmp_path / "ActionUnit_Labels/SN099/SN099_au1.txt", ["1,0", "2,3"])
    with pytest.raises(ValueError, match=r"\['SN099'\] are in none of the 3 folds; pass folds="):
        disfa.load(tmp_path)
    table = disfa.load(tmp_path, folds=[["SN099"], ["SN001"]], fold=0, check_images=False)
    assert set(table["split"]) == {"test"} and table["AU1"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"fold must be in 0\.\.2"):
        disfa.load(tmp_path, fold=3)


@pytest.mark.parametrize("lines, line, problem, value", [
    (["1,0", "2,6"], 2, r"intensity outside \[0, 1, 2, 3, 4, 5\]", "6.0"),
    (["1,0", "2,-1"], 2, "intensity outside", "-1.0"),
    (["1,0", "2;3"], 2, "expected 2 fields, got 1", "2;3"),
    (["1,0", "x,3"], 2, "frame is not a number", "x"),
    (["1,0", "2,2.5"], 2, "intensity outside", "2.5"),
    (["1,0", "1,3"], 2, "frame listed twice", "1"),
    (["0,1"], 1, "frame must be an integer >= 1", "0"),
])
def test_disfa_bad_lines_name_file_line_value(tmp_path, lines, line, problem, value):
    _write(tmp_path / "ActionUnit_Labels/SN001/SN001_au4.txt", lines)
    with pytest.raises(DataFormatError, match=rf"SN001_au4\.txt, line {line}: {problem}.*{re.escape(value)}"):
        disfa.load(tmp_path)


def test_disfa_missing_files_and_wrong_root(tmp_path):
    (tmp_path / "DISFA").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks \['ActionUnit_Labels'\].*usually named 'DISFA'"):
        disfa.load(tmp_path / "DISFA")
    disfa.write_fixture(tmp_path / "DATA" / "DISFA")
    with pytest.raises(FileNotFoundError, match=rf"under {re.escape(str(tmp_path / 'DATA' / 'DISFA'))}: pass that"):
        disfa.load(tmp_path / "DATA")
    (tmp_path / "x/ActionUnit_Labels/SN001").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"SN001 holds no <SN>_au<k>\.txt"):
        disfa.load(tmp_path / "x")
    _write(tmp_path / "y/ActionUnit_Labels/SN001/SN002_au1.txt", ["1,0"])
    with pytest.raises(DataFormatError, match=r"SN002_au1\.txt: file name must start with .*SN001"):
        disfa.load(tmp_path / "y")


# --- BP4D ------------------------------------------------------------------------------------------------------------

def test_bp4d_fixture_folds_and_counts(tmp_path):
    bp4d.write_fixture(tmp_path)
    table = bp4d.load(tmp_path)
    assert table.attrs["skipped"] == {"no AU coded (all 9)": 1, "no image file": 3}
    assert table.attrs["skipped_detail"]["no image per subject"] == {"F001": 1, "F003": 2}
    assert set(table.loc[table["split"] == "test", "subject"]) == {"F001", "M007"}
    assert set(bp4d.load(tmp_path, fold=2).query("split == 'test'")["subject"]) == {"F007", "M015"}
    row = table[(table["subject"] == "M011") & (table["frame"] == 1002)].iloc[0]
    assert row["task"] == "T1" and row["path"] == "img/M011/T1/1002.jpg"
    fields = (tmp_path / "AUCoding/AU_OCC/M011_T1.csv").read_text().splitlines()[2].split(",")
    expected = [np.nan if fields[au] == "9" else float(fields[au]) for au in bp4d.AUS]   # column k = AU k here
    assert [row[f"AU{au}"] for au in bp4d.AUS] == pytest.approx(expected, nan_ok=True)
    assert table[["AU5", "AU9", "AU20", "AU25", "AU26"]].isna().all().all()   # in the file but not kept
    assert (table.groupby("split").size() >= 8).all()


def test_bp4d_mapping_ignores_other_aus_and_reads_header_order(tmp_path):
    header = "0,27,24,23,17,15,14,12,10,7,6,4,2,1,3"
    _write(tmp_path / "AUCoding/AU_OCC/F002_T3.csv", [header, "5,5,1,0,0,0,0,1,0,0,9,0,0,1,2",
                                                      "6,3,9,9,9,9,9,9,9,9,9,9,9,9,0"])
    table = bp4d.load(tmp_path, images="{subject}/{task}/{frame:04d}.jpg", check_images=False)
    assert table.attrs["skipped"] == {"no AU coded (all 9)": 1}
    row = table.iloc[0]
    assert row["path"] == "F002/T3/0005.jpg" and row["frame"] == 5 and row["split"] == "test"
    assert row["AU1"] == 1.0 and row["AU24"] == 1.0 and row["AU12"] == 1.0 and row["AU2"] == 0.0
    assert np.isnan(row["AU6"]) and "AU27" not in table and "AU3" not in table


@pytest.mark.parametrize("rows, line, problem, value", [
    (["1,0,1,0,0,0,0,0,0,0,0,0,2"], 2, "AU24 value outside", "2.0"),
    (["1,0,1,0,0,0,0,0,0,0,0,0,-1"], 2, "AU24 value outside", "-1.0"),
    (["1,0,1,0,0,0,0,0,0,0,0,0"], 2, "expected 13 fields, got 12", "1,0,1"),
    (["1,0,1,0,0,0,0,0,0,0,0,0,0", "x,0,1,0,0,0,0,0,0,0,0,0,0"], 3, "frame is not a number", "x"),
    (["1,0,1,0,0,0,0,0,0,0,0,0,yes"], 2, "AU24 is not a number", "yes"),
])
def test_bp4d_bad_rows_name_file_line_value(tmp_path, rows, line, problem, value):
    header = "0," + ",".join(map(str, bp4d.AUS))
    _write(tmp_path / "AUCoding/AU_OCC/F001_T1.csv", [header, *rows])
    with pytest.raises(DataFormatError, match=rf"F001_T1\.csv, line {line}: {problem}.*{re.escape(value)}"):
        bp4d.load(tmp_path)


def test_bp4d_bad_header_missing_files_and_wrong_root(tmp_path):
    _write(tmp_path / "a/AUCoding/AU_OCC/F001_T1.csv", ["0,1,2,4,6,7,10,12,14,15,17,23", "1,0,0,0,0,0,0,0,0,0,0,0"])
    with pytest.raises(DataFormatError, match=r"F001_T1\.csv, line 1: header lacks the AU columns \[24\]"):
        bp4d.load(tmp_path / "a")
    _write(tmp_path / "b/AUCoding/AU_OCC/F001_T1.csv", ["0,1,AUx", "1,0,0"])
    with pytest.raises(DataFormatError, match=r"line 1: AU number in the header is not a number.*AUx"):
        bp4d.load(tmp_path / "b")
    (tmp_path / "c/AUCoding/AU_OCC").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"AU_OCC holds no <subject>_<task>\.csv"):
        bp4d.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"lacks \['AUCoding/AU_OCC'\]"):
        bp4d.load(tmp_path)
    bp4d.write_fixture(tmp_path / "DATA" / "BP4D")
    with pytest.raises(FileNotFoundError, match=rf"under {re.escape(str(tmp_path / 'DATA' / 'BP4D'))}: pass that"):
        bp4d.load(tmp_path / "DATA")


# --- EmotioNet -------------------------------------------------------------------------------------------------------

def test_emotionet_fixture_mapping_counts_and_split(tmp_path):
    emotionet.write_fixture(tmp_path)
    table = emotionet.load(tmp_path)
    assert table.attrs["skipped"] == {"no AU annotated": 1, "duplicate image": 1, "no image file": 3}
    with open(tmp_path / emotionet.FIXTURE_FILE, newline="") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    missing = {f"AU{h.strip(chr(39)).split()[1]}": sum(r[j] not in ("0", "1") for r in rows)
               for j, h in enumerate(header) if j >= 2}
    assert table.attrs["skipped_detail"]["not annotated per AU"] == {k: v for k, v in missing.items() if v}
    assert table.attrs["skipped_detail"]["not annotated values"] == {
        "999": sum(v == "999" for r in rows for v in r), "-1": sum(v == "-1" for r in rows for v in r)}
    first = table[table["path"] == "images/" + emotionet.fixture_url(0).rsplit("/", 1)[1]].iloc[0]
    for j, h in enumerate(header[2:], start=2):
        au = f"AU{h.strip(chr(39)).split()[1]}"
        assert first[au] == (float(rows[0][j]) if rows[0][j] in ("0", "1") else pytest.approx(np.nan, nan_ok=True))
    assert list(table.columns[-2:]) == ["AU18", "AU43"] and table["AU7"].isna().all()
    assert set(table["split"]) == {"train", "test"} and (table.groupby("split").size() >= 8).all()
    again = emotionet.load(tmp_path)
    assert again["split"].tolist() == table["split"].tolist()
    half = emotionet.load(tmp_path, fractions={"train": 0.5, "test": 0.5}, seed=3)
    assert half["split"].tolist() != table["split"].tolist()


def test_emotionet_tsv_names_compound_and_image_name_options(tmp_path):
    _write(tmp_path / "manual.tsv", ["url\tAU1\tAU02\tfile\tcompound",
                                     "http://x.org/a/b%20c.jpg?s=1\t1\t999\tone.png\thappily surprised",
                                     "http://x.org/d.jpg\t0\t\ttwo.png\t"])
    _images(tmp_path, ["images/b%20c.jpg", "images/d.jpg", "pics/one.png", "pics/two.png", "images/B%20C.JPG"])
    table = emotionet.load(tmp_path, compound_column="compound")
    assert table["path"].tolist() == ["images/b%20c.jpg", "images/d.jpg"]
    assert table["AU1"].tolist() == [1.0, 0.0] and table["AU2"].isna().all()
    assert table["compound"].tolist()[0] == "happily surprised" and pd.isna(table["compound"].iloc[1])
    assert table.attrs["skipped_detail"]["not annotated values"] == {"999": 1, "empty": 1}
    by_column = emotionet.load(tmp_path, images="pics", image_name="file")
    assert by_column["path"].tolist() == ["pics/one.png", "pics/two.png"]
    upper = emotionet.load(tmp_path, image_name=lambda url: url.rsplit("/", 1)[1].split("?")[0].upper())
    assert upper["path"].tolist() == ["images/B%20C.JPG"] and upper.attrs["skipped"] == {"no image file": 1}


def test_emotionet_xlsx_without_openpyxl_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "EmotioNet_FACS_aws_2020_24600.xlsx").write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(ImportError, match=r"24600\.xlsx needs openpyxl: pip install openpyxl"):
        emotionet.load(tmp_path)


@pytest.mark.parametrize("lines, line, problem, value", [
    (["URL,'AU 1','AU 2'", "'http://a/x.jpg',1,yes"], 2, "AU2 is not a number", "yes"),
    (["URL,'AU 1','AU 2'", "'http://a/x.jpg',1,0", "'http://a/y.jpg',1"], 3, "expected 3 fields, got 2", "y.jpg"),
    (["link,'AU 1'", "http://a/x.jpg,1"], 1, r"no image URL column", "link"),
    (["URL,smile", "http://a/x.jpg,1"], 1, "no AU column", "URL,smile"),
    (["URL,AU1", "http://a/,1"], 2, "no image file name in this row", "http://a/"),
])
def test_emotionet_bad_rows_name_file_line_value(tmp_path, lines, line, problem, value):
    _write(tmp_path / "labels.csv", lines)
    with pytest.raises(DataFormatError, match=rf"labels\.csv, line {line}: {problem}.*{re.escape(value)}"):
        emotionet.load(tmp_path)


def test_emotionet_missing_files_and_wrong_root(tmp_path):
    (tmp_path / "EmotioNet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no annotation table.*usually named 'EmotioNet'"):
        emotionet.load(tmp_path / "EmotioNet")
    emotionet.write_fixture(tmp_path / "EmotioNet")
    with pytest.raises(FileNotFoundError, match=rf"under {re.escape(str(tmp_path / 'EmotioNet'))}: pass that"):
        emotionet.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"lacks \['other\.xlsx'\]"):
        emotionet.load(tmp_path / "EmotioNet", annotations="other.xlsx")
    _write(tmp_path / "EmotioNet" / "copy.tsv", ["URL\tAU1"])
    with pytest.raises(FileNotFoundError, match=r"several annotation tables.*copy\.tsv.*annotations="):
        emotionet.load(tmp_path / "EmotioNet")
    assert len(emotionet.load(tmp_path / "EmotioNet", annotations=emotionet.FIXTURE_FILE)) > 40


def test_every_fixture_labels_the_aus_it_claims(tmp_path):
    """Each AU a loader reports is positive and negative somewhere (a short training can learn it)."""
    for module, aus in ((disfa, [f"AU{k}" for k in disfa.AUS]), (bp4d, [f"AU{k}" for k in bp4d.AUS]),
                        (emotionet, ["AU1", "AU12", "AU25", "AU18", "AU43"]), (affwild2, list(affwild2.AUS_ABAW))):
        module.write_fixture(tmp_path / module.NAME)
        table = module.load(tmp_path / module.NAME)
        assert all({0.0, 1.0} <= set(table[au].dropna()) for au in aus), module.NAME
        assert set(aus) <= set(AUS) | {"AU18", "AU43"}


def test_emotionet_xlsx_reads_like_the_csv(tmp_path):
    """The manual set is often distributed as .xlsx (openpyxl is pinned): the same rows give the same table,
    numbers stored as Excel numbers included."""
    import openpyxl

    emotionet.write_fixture(tmp_path)
    from_csv = emotionet.load(tmp_path)
    book = openpyxl.Workbook()
    with open(tmp_path / emotionet.FIXTURE_FILE, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            book.active.append(row if i == 0 else row[:2] + [int(v) for v in row[2:]])
    (tmp_path / emotionet.FIXTURE_FILE).unlink()
    book.save(tmp_path / "EmotioNet_FACS_aws_2020_24600.xlsx")
    from_xlsx = emotionet.load(tmp_path)
    assert from_xlsx.equals(from_csv)
    assert from_xlsx.attrs["skipped"] == from_csv.attrs["skipped"]
