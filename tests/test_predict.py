"""fbhelpers.inference.predict_table and ``python -m fbhelpers predict``: a saved model's predictions on image files
(folder, glob, CSV, list), in the documented columns, equal to train.predict; unreadable files are counted skips."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fbhelpers import inference, models, train
from fbhelpers.__main__ import main
from fbhelpers.batching import decode_image
from fbhelpers.relatedness import Relatedness, prior
from fbhelpers.synthetic import make_faces
from fbhelpers.tasks import Task
from helpers import tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = (Task("expr", "multiclass", ("neutral", "happiness", "surprise")),
         Task("au", "multilabel", ("AU1", "AU6", "AU12")),
         Task("va", "regression", ("valence", "arousal")))
# Zero-shot classes over some of the AUs, in another order than the task's (P1 §4.6).
COMPOUND = Relatedness(pd.DataFrame({"AU12": [1.0, 1.0], "AU6": [1.0, 0.0]}, index=["beaming", "smirking"]),
                       name="toy compound")
THRESHOLDS = np.array([0.1, 0.6, 0.3])
SIZE = (24, 20)  # H, W: not square, so a swapped size would show
COLUMNS = ["path", "expr", "expr_neutral", "expr_happiness", "expr_surprise", "au_AU1", "au_AU6", "au_AU12",
           "au_AU1_on", "au_AU6_on", "au_AU12_on", "va_valence", "va_arousal", "compound", "compound_score"]
NAMES = ["a0.png", "a1.png", "a2.jpg", "a5.png", "sub/b3.png", "sub/b4.JPEG"]  # sorted path order


def _model(in_channels: int = 3) -> models.MultiHeadNet:
    net = tiny_net(TASKS, in_channels=in_channels, pool=2).eval()
    with torch.no_grad():
        net.heads["au"].weight.mul_(5)  # AU probabilities spread over (0, 1), on both sides of the thresholds
    return net


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    faces, _ = make_faces(6, size=40, seed=0)
    folder = root / "faces"
    (folder / "sub").mkdir(parents=True)
    for name, face in zip(["a0.png", "a1.png", "a2.jpg", "sub/b3.png", "sub/b4.JPEG"], faces):
        Image.fromarray(face).save(folder / name, format="JPEG" if Path(name).suffix.lower() == ".jpg" or
                                   name.endswith(".JPEG") else "PNG")
    Image.fromarray(faces[5]).convert("L").resize((30, 36)).save(folder / "a5.png")  # grey, another size
    (folder / "notes.txt").write_text("not listed: no image suffix")
    model = models.save(_model(), root / "model.pt", input_size=SIZE, tables={"compound": COMPOUND},
                        thresholds={"au": THRESHOLDS})
    files = [folder / n for n in NAMES]
    net = models.load(model)
    expected = train.predict(net, np.stack([decode_image(f, SIZE, "RGB") for f in files]), device="cpu")
    return {"root": root, "folder": folder, "model": model, "files": files, "net": net, "expected": expected}


def _check_values(frame: pd.DataFrame, expected: dict[str, np.ndarray], rows: list[int]) -> None:
    """Every column of ``frame`` against train.predict's outputs of the images ``rows``, exactly."""
    expr, au, va = (expected[k][rows] for k in ("expr", "au", "va"))
    np.testing.assert_array_equal(frame[COLUMNS[2:5]].to_numpy(np.float32), expr)
    assert list(frame["expr"]) == [TASKS[0].labels[i] for i in expr.argmax(axis=1)]
    np.testing.assert_array_equal(frame[COLUMNS[5:8]].to_numpy(np.float32), au)
    np.testing.assert_array_equal(frame[COLUMNS[8:11]].to_numpy(), (au >= THRESHOLDS).astype(int))
    np.testing.assert_array_equal(frame[COLUMNS[11:13]].to_numpy(np.float32), va)
    au6, au12 = np.clip(au[:, 1:].astype(float), 1e-6, 1 - 1e-6).T  # zero_shot_scores clips at eps = 1e-6
    scores = np.stack([(au6 + au12) / 2, au12], axis=1)  # mean scoring: sum_j R[c, j] p_j / sum_j R[c, j]
    assert list(frame["compound"]) == [["beaming", "smirking"][i] for i in scores.argmax(axis=1)]
    np.testing.assert_allclose(frame["compound_score"].to_numpy(), scores.max(axis=1), rtol=1e-12)


def test_predict_command_writes_the_documented_columns(data, tmp_path, capsys):
    out = tmp_path / "out" / "predictions.csv"
    assert main(["predict", str(data["model"]), "--images", str(data["folder"]), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote 6 rows to {out}; skipped 0 unreadable files; "
                                               f"model {data['model']}; device cpu")
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert list(frame["path"]) == [str(f) for f in data["files"]]
    _check_values(frame, data["expected"], list(range(6)))
    on, au = frame[COLUMNS[8:11]].to_numpy(), data["expected"]["au"]
    assert 0 < on.sum() < on.size and ((au >= 0.5) != on).any()  # the saved thresholds, not 0.5, decide here
    assert len(set(frame["compound"])) == 2
    assert [p.name for p in out.parent.iterdir()] == ["predictions.csv"]  # written atomically, no .tmp left


def test_folder_batches_and_recursion(data, monkeypatch):
    sizes = []
    real = train.predict

    def counting(model, images, **kw):
        sizes.append(len(images))
        return real(model, images, **kw)

    monkeypatch.setattr(inference.train, "predict", counting)
    frame = inference.predict_table(data["model"], data["folder"], batch_size=4, device="cpu", progress=False)
    assert sizes == [4, 2]
    assert list(frame.columns) == COLUMNS and frame.attrs == {"skipped": [], "device": "cpu"}
    values = COLUMNS[2:8] + COLUMNS[11:13]  # other batches than the reference's: equal up to float rounding
    reference = np.hstack([data["expected"][k] for k in ("expr", "au", "va")])
    np.testing.assert_allclose(frame[values].to_numpy(np.float32), reference, rtol=1e-5, atol=1e-6)
    top = inference.predict_table(data["net"], data["folder"], recursive=False, device="cpu", progress=False)
    assert list(top["path"]) == [str(f) for f in data["files"][:4]]
    _check_values(top, data["expected"], [0, 1, 2, 3])


def test_glob_csv_table_and_list_inputs(data, tmp_path):
    folder, files, expected = data["folder"], data["files"], data["expected"]
    for pattern, rows in ((folder / "*.png", [0, 1, 3]), (folder / "**" / "*.png", [0, 1, 3, 4])):
        frame = inference.predict_table(data["net"], str(pattern), device="cpu", progress=False)
        assert list(frame["path"]) == [str(files[i]) for i in rows]
        _check_values(frame, expected, rows)
    lists = tmp_path / "lists"
    lists.mkdir()
    listed = [os.path.relpath(files[4], lists), os.path.relpath(files[0], lists), str(files[2])]
    assert listed[0].startswith("..")  # relative to the CSV's folder (not the working directory), and absolute
    pd.DataFrame({"id": [7, 8, 9], "path": listed}).to_csv(lists / "faces.csv", index=False)
    frame = inference.predict_table(data["net"], lists / "faces.csv", device="cpu", progress=False)
    assert list(frame["path"]) == listed
    _check_values(frame, expected, [4, 0, 2])
    table = pd.DataFrame({"path": [str(files[5]), str(files[1])]})
    _check_values(inference.predict_table(data["net"], table, device="cpu", progress=False), expected, [5, 1])
    frame = inference.predict_table(data["net"], [files[3], str(files[0])], device="cpu", progress=False)
    assert list(frame["path"]) == [str(files[3]), str(files[0])]
    _check_values(frame, expected, [3, 0])


@pytest.fixture
def with_bad_files(data, tmp_path):
    folder = tmp_path / "faces"
    shutil.copytree(data["folder"], folder)
    (folder / "broken.png").write_bytes((folder / "a0.png").read_bytes()[:80])  # a truncated image
    (folder / "sub" / "notes.jpg").write_text("a text file named like an image")
    return folder


def test_unreadable_files_are_counted_skips(data, with_bad_files, tmp_path, capsys):
    folder, out = with_bad_files, tmp_path / "p.csv"
    bad = [folder / "broken.png", folder / "sub" / "notes.jpg"]
    assert main(["predict", str(data["model"]), "--images", str(folder), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert re.fullmatch(rf"wrote 6 rows to {re.escape(str(out))}; skipped 2 unreadable files; model .*; device \w+",
                        captured.out.strip())
    assert captured.err.startswith("warning: skipped 2 of 8 files that are not readable images")
    assert all(str(p) in captured.err for p in bad)
    frame = pd.read_csv(out)
    assert list(frame["path"]) == [str(folder / n) for n in NAMES]
    _check_values(frame, data["expected"], list(range(6)))
    with pytest.warns(UserWarning, match="skipped 2 of 8 files"):
        frame = inference.predict_table(data["net"], folder, device="cpu", progress=False)
    assert [s["path"] for s in frame.attrs["skipped"]] == [str(p) for p in bad]
    assert all(s["reason"].startswith(f"cannot decode image {s['path']}: ") for s in frame.attrs["skipped"])
    listed = [bad[1], folder / "a0.png", folder / "missing.png"]
    with pytest.warns(UserWarning, match="skipped 2 of 3 files"):
        frame = inference.predict_table(data["net"], listed, device="cpu", progress=False)
    assert list(frame["path"]) == [str(folder / "a0.png")]
    assert frame.attrs["skipped"][1] == {"path": str(folder / "missing.png"),
                                         "reason": f"image file not found: {folder / 'missing.png'}"}
    assert main(["predict", str(data["model"]), "--images", str(folder), "--out", str(out), "--strict",
                 "--no-progress"]) == 2
    assert re.fullmatch(rf"error: cannot decode image {re.escape(str(bad[0]))}: .*", capsys.readouterr().err.strip())


def _error(argv: list[str], capsys) -> str:
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_clear_errors(data, tmp_path, capsys):
    model, out = str(data["model"]), str(tmp_path / "p.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert _error(["predict", model, "--images", str(empty), "--out", out], capsys) == (
        f"error: no image files (.jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff, .gif, .jfif, .jpe, .ppm, .pgm, .pbm, "
        f".pnm, .tga) under the folder {str(empty)!r}")
    missing = tmp_path / "none.pt"
    assert _error(["predict", str(missing), "--images", str(data["folder"]), "--out", out], capsys) == (
        f"error: model file {str(missing)!r} not found")
    plain = tmp_path / "weights.pt"
    torch.save(_model().state_dict(), plain)
    assert _error(["predict", str(plain), "--images", str(data["folder"]), "--out", out], capsys).startswith(
        f"error: model file {str(plain)!r} is not an fbhelpers model file")
    record = torch.load(data["model"], weights_only=True)
    record["spec"]["tasks"][1]["labels"] = ["AU1", "AU6"]
    torch.save(record, tmp_path / "mismatch.pt")
    assert _error(["predict", str(tmp_path / "mismatch.pt"), "--images", str(data["folder"]), "--out", out],
                  capsys) == (f"error: model file {str(tmp_path / 'mismatch.pt')!r}: parameter 'heads.au.weight' has "
                              f"shape (3, 16) in the file but (2, 16) in the model")
    for images, message in ((tmp_path / "nowhere", "no folder, file or matching glob pattern"),
                            (tmp_path / "*.png", "no file matches the pattern"),
                            (empty / "readme.txt", "none of the 1 listed files is a readable image")):
        assert message in _error(["predict", model, "--images", str(images), "--out", out], capsys)
    pd.DataFrame({"file": ["a0.png"]}).to_csv(tmp_path / "list.csv", index=False)
    assert _error(["predict", model, "--images", str(tmp_path / "list.csv"), "--out", out], capsys) == (
        f"error: CSV file {str(tmp_path / 'list.csv')!r} has no 'path' column (columns: ['file'])")
    assert not Path(out).exists()


def test_grey_model_and_compound_columns_only_with_a_fitting_table(data, tmp_path):
    grey = _model(in_channels=1)
    grey.input_size = SIZE  # an unsaved model works when it knows its input size
    frame = inference.predict_table(grey, data["files"], device="cpu", progress=False)
    assert list(frame.columns) == COLUMNS[:-2]
    expected = train.predict(grey, np.stack([decode_image(f, SIZE, "L") for f in data["files"]]), device="cpu")
    np.testing.assert_array_equal(frame[COLUMNS[5:8]].to_numpy(np.float32), expected["au"])
    np.testing.assert_array_equal(frame[COLUMNS[8:11]].to_numpy(), (expected["au"] >= 0.5).astype(int))
    grey.tables = {"compound": prior("du2014_compound")}  # 17 AUs: not labels of this model's AU task
    with pytest.warns(UserWarning, match="'compound' table .* fits no multilabel task"):
        frame = inference.predict_table(grey, data["files"][:1], device="cpu", progress=False)
    assert list(frame.columns) == COLUMNS[:-2]
    grey.input_size = None
    with pytest.raises(ValueError, match=r"the model has no input_size"):
        inference.predict_table(grey, data["files"], device="cpu", progress=False)


def test_rendered_faces_scored_from_files_equal_evaluate_on_the_same_images(tmp_path, capsys):
    from fbhelpers.source import Source
    from fbhelpers.synthetic import write_faces
    from fbhelpers.tasks import FACE_TASKS

    labels = write_faces(tmp_path / "mine", n=40, size=24, seed=3)
    images, truth = make_faces(40, size=24, seed=3)
    assert all(np.array_equal(np.asarray(Image.open(tmp_path / "mine" / p)), images[i])
               for i, p in enumerate(labels["path"]))
    assert labels["expr"].tolist() == truth["expr"].tolist()
    net = tiny_net(FACE_TASKS, seed=1, pool=2).eval()
    with torch.no_grad():
        net.heads["au"].bias.fill_(0.3)  # some AUs on, so F1 is not 0 everywhere
    path = models.save(net, tmp_path / "model.pt", input_size=24)
    assert main(["predict", str(path), "--images", str(tmp_path / "mine" / "labels.csv"), "--out",
                 str(tmp_path / "p.csv"), "--score", "--no-progress"]) == 0
    printed = dict(re.findall(r"^  (\w+/\w+): ([\d.]+)$", capsys.readouterr().out, re.M))
    table = labels.drop(columns="path").assign(split="test", source="mine")
    reference = train.evaluate(net, {"mine": Source("mine", table, images)}, FACE_TASKS, device="cpu")
    reference = reference.set_index(["task", "metric"])["value"]
    scores = inference.score_predictions(pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "mine" /
                                                                                         "labels.csv"), FACE_TASKS)
    scores = scores.set_index(["task", "metric"])["value"]
    for key in [("expr", "accuracy"), ("expr", "macro_f1"), ("au", "mean_f1"), ("va", "mean_ccc")]:
        assert scores[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
        assert float(printed["/".join(key)]) == pytest.approx(reference[key], abs=6e-5)
    assert 0 < reference["au", "mean_f1"] < 1
    shuffled = pd.read_csv(tmp_path / "mine" / "labels.csv").assign(expr=lambda t: np.roll(t["expr"], 7))
    moved = inference.score_predictions(pd.read_csv(tmp_path / "p.csv"), shuffled, FACE_TASKS)
    assert moved.set_index(["task", "metric"])["value"]["expr", "accuracy"] != scores["expr", "accuracy"]


def test_score_refuses_predictions_without_labels_and_a_folder(tmp_path, data, capsys):
    labels = pd.DataFrame({"path": ["elsewhere.png"], "expr": [1]})
    with pytest.raises(ValueError, match="1 predicted paths have no labels row, e.g. 'x.png'"):
        inference.score_predictions(pd.DataFrame({"path": ["x.png"]}), labels, TASKS)
    assert main(["predict", str(data["model"]), "--images", str(data["folder"]), "--out", str(tmp_path / "p.csv"),
                 "--score"]) == 2
    assert "--score needs --images to be a CSV holding the labels" in capsys.readouterr().err
