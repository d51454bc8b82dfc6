"""Bad input that real users have, fed to the dataset loaders and ``check-data``: a blank line inside an Aff-Wild2
per-frame file, duplicate images and near-duplicate class names in a generic CSV, symlink loops, FIFOs and folders
in an image listing, annotation files that are not UTF-8, cut CUB name files, paths that leave the dataset folder,
unexpected EmotioNet values and non-integer RAF-DB labels. Each case ends in an error naming the file, the line and
the value, or in a documented skip with a count; never in a silent drop, a shifted label or a bare traceback."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fbhelpers import datasets
from fbhelpers.__main__ import main
from fbhelpers.datasets import affectnet, affwild2, bp4d, celeba, common, cub, emotionet, generic, rafdb
from fbhelpers.datasets.common import DataFormatError

LOGGER = "fbhelpers.datasets"


def at(path: Path, line: int | None) -> str:
    """The start of a DataFormatError message naming ``path`` and ``line`` (a regex)."""
    return re.escape(f"{Path(path).resolve()}, line {line}: " if line is not None else f"{Path(path).resolve()}: ")


def csv_root(folder: Path, rows: list[str], header: str = "image,class,split,collar",
             images: tuple[str, ...] = ()) -> Path:
    """A generic class + attribute database: ``labels.csv`` with ``rows`` and the ``images`` written."""
    common.write_text(folder / "labels.csv", [header, *rows])
    for i, rel in enumerate(images):
        common.write_image(folder / rel, i, (8, 8))
    return folder


# --- Aff-Wild2: a blank line inside a per-frame file --------------------------------------------------------------

def abaw_va(root: Path, rows: list[str]) -> Path:
    path = root / "VA_Estimation_Challenge" / "Train_Set" / "v1.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("valence,arousal\n" + "".join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize("rows, line", [
    (["0.1,0.1", "0.2,0.2", "", "0.4,0.4", "0.5,0.5"], 4),     # between frames 2 and 3
    (["", "0.1,0.1", "0.2,0.2"], 2),                           # right after the header
    (["0.1,0.1", "   ", "0.3,0.3"], 3),                        # blanks only
])
def test_affwild2_blank_line_between_frames_is_an_error_naming_file_and_line(tmp_path, rows, line):
    path = abaw_va(tmp_path, rows)
    with pytest.raises(DataFormatError, match=at(path, line) + "blank line between frame rows"):
        affwild2.load(tmp_path, check_images=False)


def test_affwild2_blank_lines_after_the_last_frame_change_nothing(tmp_path):
    abaw_va(tmp_path, ["0.1,0.1", "0.2,0.2", "0.3,0.3", "", ""])
    table = affwild2.load(tmp_path, check_images=False)
    assert table["frame"].tolist() == [1, 2, 3]
    assert table["valence"].tolist() == pytest.approx([0.1, 0.2, 0.3])


# --- generic CSV: duplicates and near-duplicate class names -------------------------------------------------------

@pytest.mark.parametrize("rows, line, first, splits", [
    (["images/a.jpg,coat,train,1", "images/b.jpg,coat,train,0", "images/a.jpg,coat,train,1"], 4, 2, ""),
    (["images/a.jpg,coat,train,1", "images/b.jpg,coat,train,0", "images/a.jpg,coat,test,1"], 4, 2,
     r" \(split 'train' there, 'test' here\)"),                                  # leakage across splits
    (["images/a.jpg,coat,train,1", "./images/x/../a.jpg,dress,test,0"], 3, 2,
     r" \(split 'train' there, 'test' here\)"),                                  # the same file, spelled otherwise
])
def test_generic_image_listed_twice_is_an_error_naming_both_lines(tmp_path, rows, line, first, splits):
    root = csv_root(tmp_path, rows, images=("images/a.jpg", "images/b.jpg"))
    with pytest.raises(DataFormatError, match=at(root / "labels.csv", line)
                       + f"image already listed on line {first}{splits}: list each image once"):
        generic.load(root)


def test_generic_image_twice_without_split_column_is_an_error_too(tmp_path):
    root = csv_root(tmp_path, ["images/a.jpg,coat,1", "images/a.jpg,coat,1"], header="image,class,collar",
                    images=("images/a.jpg",))
    with pytest.raises(DataFormatError, match=at(root / "labels.csv", 3) + "image already listed on line 2"):
        generic.load(root)


def test_generic_near_duplicate_classes_stay_apart_and_are_warned_once(tmp_path, caplog):
    rows = ["images/a.jpg,Coat,train,1", "images/b.jpg,coat ,train,0", "images/c.jpg,coat,test,1",
            "images/d.jpg,long  dress,test,0", "images/e.jpg,Long dress,train,1", "images/f.jpg,shirt,train,1"]
    root = csv_root(tmp_path, rows, images=tuple(f"images/{c}.jpg" for c in "abcdef"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table = generic.load(root)
    assert table.attrs["class_labels"] == ["Coat", "Long dress", "coat", "long  dress", "shirt"]
    assert table["category"].tolist() == [0, 2, 2, 3, 1, 4]
    assert table.attrs["near_duplicate_classes"] == [["Coat", "coat"], ["Long dress", "long  dress"]]
    warned = [r.getMessage() for r in caplog.records if "differ only in case or spacing" in r.getMessage()]
    assert len(warned) == 1 and "'Coat' / 'coat'; 'Long dress' / 'long  dress'" in warned[0]
    assert str(root / "labels.csv") in warned[0]


# --- image listings: link loops, unreadable folders, FIFOs and folders named like images --------------------------

def test_a_symlink_loop_no_row_names_leaves_the_loader_unchanged(tmp_path):
    root = csv_root(tmp_path, ["images/a.jpg,coat,train,1", "images/b.jpg,dress,test,0"],
                    images=("images/a.jpg", "images/b.jpg"))
    before = generic.load(root)
    (root / "images" / "loop.jpg").symlink_to("loop.jpg")
    after = generic.load(root)
    assert after.equals(before) and after.attrs["skipped"] == {}


def test_a_symlink_loop_a_row_names_is_skipped_and_counted(tmp_path, caplog):
    root = csv_root(tmp_path, ["images/a.jpg,coat,train,1", "images/loop.jpg,dress,test,0"],
                    images=("images/a.jpg",))
    (root / "images" / "loop.jpg").symlink_to("loop.jpg")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table = generic.load(root)
    assert table["path"].tolist() == ["images/a.jpg"]
    assert table.attrs["skipped"] == {"unreadable entry": 1}
    assert any("1 rows skipped, unreadable entry (a link loop" in r.getMessage() and "'images/loop.jpg'"
               in r.getMessage() for r in caplog.records)


def test_an_unreadable_folder_is_skipped_and_counted(tmp_path, monkeypatch):
    root = csv_root(tmp_path, ["images/a.jpg,coat,train,1", "locked/b.jpg,dress,test,0", "locked/c.jpg,coat,test,1"],
                    images=("images/a.jpg", "locked/b.jpg", "locked/c.jpg"))
    scandir = os.scandir

    def no_permission(path):                    # the tests run as root, which chmod cannot lock out
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_permission)
    table = generic.load(root)
    assert table["path"].tolist() == ["images/a.jpg"]
    assert table.attrs["skipped"] == {"unreadable entry": 2}


def test_fifo_and_folder_named_like_images_are_skipped_with_a_count(tmp_path):
    root = csv_root(tmp_path, ["images/a.jpg,coat,train,1", "images/pipe.jpg,dress,test,0",
                               "images/dir.jpg,coat,test,1", "images/gone.jpg,coat,train,0"],
                    images=("images/a.jpg",))
    os.mkfifo(root / "images" / "pipe.jpg")
    (root / "images" / "dir.jpg").mkdir()
    table = generic.load(root)
    assert table["path"].tolist() == ["images/a.jpg"]
    assert table.attrs["skipped"] == {"not a regular file": 2, "no image file": 1}


def test_check_data_prints_every_row_when_one_loader_fails(tmp_path, capsys, monkeypatch):
    root = datasets.make_fixture_root(tmp_path / "data", names=("celeba", "cub", "rafdb_basic"))
    (root / "CUB_200_2011" / "images" / cub.FIXTURE_CLASSES[0] / "loop.jpg").symlink_to("loop.jpg")  # a link loop

    def broken(folder, **options):
        raise RuntimeError("disk went away")

    monkeypatch.setitem(datasets.LOADERS, "celeba", datasets.Loader("celeba", broken, celeba.write_fixture, "CelebA"))
    assert main(["check-data", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^celeba\s+error", out, re.M) and "RuntimeError: disk went away" in out
    assert re.search(r"^cub\s+found\s.*: 24 label rows read .*, 24 kept", out, re.M)
    assert re.search(r"^rafdb_basic\s+found", out, re.M) and "2/" in out and "datasets found" in out
    assert main(["check-data", "--data-root", str(root), "--strict"]) == 1


# --- text encoding ---------------------------------------------------------------------------------------------------

def reencode(path: Path, encoding: str) -> None:
    path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))


@pytest.mark.parametrize("name, rel", [
    ("rafdb_basic", rafdb.LABELS),                                              # whitespace rows (text_rows)
    ("affectnet", f"{affectnet.LISTS}/training.csv"),                           # csv module
    ("celeba", celeba.ATTR_FILE),                                               # count + header lines
    ("affwild2", "VA_Estimation_Challenge/Train_Set/video5.txt"),               # per-frame header
    ("bp4d", f"{bp4d.OCC}/F001_T1.csv"),
    ("emotionet", emotionet.FIXTURE_FILE),
    ("cad", "labels.csv"),
    ("cub", "classes.txt"),
])
def test_utf16_annotation_file_is_an_error_naming_file_line_and_bytes(tmp_path, name, rel):
    entry = datasets.loader(name)
    folder = tmp_path / entry.folder
    entry.write_fixture(folder)
    reencode(folder / rel, "utf-16")
    with pytest.raises(DataFormatError, match=at(folder / rel, 1) + r"not UTF-8 text but UTF-16 \(\"Unicode text\"\): "
                       r"re-save the file as UTF-8.*\(value b'\\xff'\)"):
        entry.load(folder)


def test_cp1252_csv_is_an_error_naming_the_line_and_byte(tmp_path):
    root = csv_root(tmp_path, ["images/a.jpg,coat,train,1", "images/b.jpg,robe décolletée,test,0"],
                    images=("images/a.jpg", "images/b.jpg"))
    reencode(root / "labels.csv", "cp1252")
    with pytest.raises(DataFormatError, match=at(root / "labels.csv", 3) + r"not UTF-8 text but another encoding "
                       r"\(e\.g\. cp1252 / Latin-1 from Excel\): re-save the file as UTF-8 .*\(value b'\\xe9'\)"):
        generic.load(root)


def test_utf8_with_bom_still_reads_like_without(tmp_path):
    root = csv_root(tmp_path, ["images/a.jpg,robe décolletée,train,1"], images=("images/a.jpg",))
    plain = generic.load(root)
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (root / "labels.csv").read_bytes())
    assert generic.load(root).equals(plain) and plain.attrs["class_labels"] == ["robe décolletée"]


# --- CUB: cut or short name files -------------------------------------------------------------------------------------

def cub_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "CUB_200_2011"
    cub.write_fixture(folder)
    return folder


def cut_last_line(path: Path, keep: int) -> None:
    """``path`` cut ``keep`` characters into its last line, as an interrupted copy leaves it."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][:keep]]))


def test_cub_cut_class_name_is_an_error_naming_file_line_and_name(tmp_path):
    folder = cub_fixture(tmp_path)
    cut_last_line(folder / "classes.txt", len("4 004.Groov"))
    with pytest.raises(DataFormatError, match=at(folder / "classes.txt", 4) + "class name differs from its image "
                       r"folder '004.Groove_billed_Ani' in images.txt: cut short\? \(value '004.Groov'\)"):
        cub.load(folder)


def test_cub_cut_attribute_name_is_an_error_naming_file_line_and_name(tmp_path):
    folder = cub_fixture(tmp_path)
    cut_last_line(tmp_path / "attributes.txt", len("12 has_upperpar"))
    with pytest.raises(DataFormatError, match=at(tmp_path / "attributes.txt", 12) + r"attribute name must read "
                       r"has_<part>::<value>: cut short\? \(value 'has_upperpar'\)"):
        cub.load(folder)
    with pytest.raises(DataFormatError, match=r"has_upperpar"):
        cub.relatedness(folder)


@pytest.mark.parametrize("rel, keep, what, line, value", [
    ("classes.txt", 3, "3 class names, but attributes/class_attribute_labels_continuous.txt has 4 rows "
     r"\(the release: 200\)", 3, "003.Sooty_Albatross"),
    ("../attributes.txt", 11, "11 attribute names, but attributes/class_attribute_labels_continuous.txt has 12 "
     r"columns \(the release: 312\)", 11, "has_upperparts_color::iridescent"),
])
def test_cub_short_name_file_is_an_error_naming_the_count(tmp_path, rel, keep, what, line, value):
    folder = cub_fixture(tmp_path)
    path = folder / rel
    path.write_text("\n".join(path.read_text().splitlines()[:keep]) + "\n")
    with pytest.raises(DataFormatError, match=at(path, line) + what + rf": cut short\? \(value '{value}'\)"):
        cub.load(folder)


def test_cub_class_name_without_its_number_is_an_error(tmp_path):
    folder = cub_fixture(tmp_path)
    path = folder / "classes.txt"
    path.write_text(path.read_text().replace("2 002.Laysan_Albatross", "2 Laysan_Albatross"))
    with pytest.raises(DataFormatError, match=at(path, 2) + r"class name must read 002.Name: cut short\? "
                       r"\(value 'Laysan_Albatross'\)"):
        cub.load(folder)


# --- paths that leave the dataset folder --------------------------------------------------------------------------

def test_paths_leaving_the_folder_are_skipped_counted_and_listed(tmp_path, caplog):
    outside = tmp_path / "secret.jpg"
    common.write_image(outside, 7, (8, 8))
    root = tmp_path / "CAD"
    rows = ["images/a.jpg,coat,train,1", "../secret.jpg,coat,train,1", f"{outside},dress,test,0",
            "images/../../other.jpg,dress,test,1", "images/link.jpg,coat,test,0"]
    csv_root(root, rows, images=("images/a.jpg",))
    (root / "images" / "link.jpg").symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table = generic.load(root)
    assert table["path"].tolist() == ["images/a.jpg", "images/link.jpg"]   # a link the user made is followed
    assert table.attrs["skipped"] == {"path outside the dataset folder": 3}
    warned = [r.getMessage() for r in caplog.records if "allow_outside_root=True" in r.getMessage()]
    assert len(warned) == 1 and "3 rows skipped, path outside the dataset folder" in warned[0]
    assert f"'../secret.jpg', '{outside}', 'images/../../other.jpg'" in warned[0]
    assert generic.load(root, check_images=False).attrs["skipped"] == {"path outside the dataset folder": 3}
    kept = generic.load(root, allow_outside_root=True)               # other.jpg does not exist
    assert kept["path"].tolist() == [r.split(",")[0] for r in rows if "other" not in r]
    assert kept.attrs["skipped"] == {"no image file": 1}


def test_an_image_folder_linked_to_another_disk_is_read(tmp_path):
    disk = csv_root(tmp_path / "disk", [], images=("images/a.jpg", "images/b.jpg"))
    root = csv_root(tmp_path / "CAD", ["images/a.jpg,coat,train,1", "images/b.jpg,dress,test,0"])
    (root / "images").symlink_to(disk / "images", target_is_directory=True)
    table = generic.load(root)
    assert table["path"].tolist() == ["images/a.jpg", "images/b.jpg"]
    assert table.attrs["skipped"] == {}


def test_every_loader_follows_an_image_linked_from_another_disk(tmp_path):
    """Links are the user's own layout (an image folder or a file on another disk): followed, not refused."""
    outside = tmp_path / "elsewhere.jpg"
    common.write_image(outside, 3, (8, 8))
    for name in ("affectnet", "rafdb_basic", "celeba", "cub", "emotionet", "affwild2", "disfa", "bp4d"):
        entry = datasets.loader(name)
        folder = tmp_path / entry.folder
        entry.write_fixture(folder)
        before = entry.load(folder)
        victim = folder / before["path"].iloc[0]
        victim.unlink()
        victim.symlink_to(outside)
        after = entry.load(folder)
        assert len(after) == len(before), name
        assert "path outside the dataset folder" not in after.attrs["skipped"], name


# --- EmotioNet values outside the format; RAF-DB labels that are not integers ---------------------------------------

def test_emotionet_unexpected_values_skip_their_rows_counted_and_warned_once(tmp_path, caplog):
    common.write_text(tmp_path / "manual.csv", ["URL,AU1,AU2,AU4", "http://x/a.jpg,1,0,999", "http://x/b.jpg,2,0,1",
                                                "http://x/c.jpg,0,-1,", "http://x/d.jpg,5,2,1",
                                                "http://x/e.jpg,1,1,0.5"])
    for name in "abcde":
        common.write_image(tmp_path / "images" / f"{name}.jpg", ord(name), (8, 8))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        table = emotionet.load(tmp_path, fractions={"train": 1.0, "test": 0.0})
    assert table["path"].tolist() == ["images/a.jpg", "images/c.jpg"]
    assert table["AU1"].tolist() == [1.0, 0.0] and np.isnan(table["AU2"].iloc[1])
    assert table.attrs["skipped"] == {"unexpected AU value": 3}
    assert table.attrs["skipped_detail"]["unexpected AU values"] == {"2": 2, "5": 1, "0.5": 1}
    assert table.attrs["skipped_detail"]["not annotated values"] == {"999": 1, "-1": 1, "empty": 1}
    warned = [r.getMessage() for r in caplog.records if "AU values other than 0, 1" in r.getMessage()]
    assert len(warned) == 1
    assert "3 rows hold AU values other than 0, 1 and the not-annotated 999 / -1 / empty: 2 (x2), 5 (x1), " \
           "0.5 (x1); first on line 3; those rows are skipped" in warned[0]


@pytest.mark.parametrize("loader, text, line, value", [
    (rafdb.load_compound, "train_0001.jpg 1\ntest_0001.jpg 3.0\n", 2, "3.0"),
    (rafdb.load_compound, "test_0001.jpg +3\n", 1, "+3"),
    (rafdb.load_basic, "train_00001.jpg 1e0\n", 1, "1e0"),
    (rafdb.load_basic, "train_00001.jpg \u00b2\n", 1, "\u00b2"),                 # a digit to str.isdigit, not to int
])
def test_rafdb_label_that_is_not_an_integer_is_an_error(tmp_path, loader, text, line, value):
    path = tmp_path / rafdb.LABELS
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(DataFormatError, match=at(path, line) + r"label must be an integer \(digits only\) "
                       rf"\(value '{re.escape(value)}'\)"):
        loader(tmp_path, check_images=False)
