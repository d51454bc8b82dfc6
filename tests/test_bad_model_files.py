"""Broken or misplaced model files: non-finite weights refused by ``models.load`` (naming the tensors) and by
``export-model``; ``predict`` refuses non-finite outputs row by row instead of writing a table of "neutral"; a
checkpoint given to ``predict`` says how to export it; a model file given to ``export-model`` says what it is."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fbhelpers import inference, models, train
from fbhelpers.__main__ import main
from fbhelpers.models import MultiHeadNet
from fbhelpers.synthetic import face_study
from fbhelpers.tasks import Task

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = (Task("expr", "multiclass", ("neutral", "happiness", "surprise")), Task("va", "regression", ("valence",)))
SIZE = (12, 10)


def _net() -> MultiHeadNet:
    torch.manual_seed(0)
    return MultiHeadNet(TASKS, "cnn4", widths=(4, 4, 4, 4)).eval()


def _poisoned(n: int) -> tuple[MultiHeadNet, list[str]]:
    """A network whose first ``n`` floating-point tensors hold a NaN (odd ones an infinity); their names."""
    net = _net()
    names = [k for k, v in net.state_dict().items() if v.is_floating_point()][:n]
    state = net.state_dict()
    with torch.no_grad():
        for i, name in enumerate(names):
            state[name].view(-1)[0] = float("inf") if i % 2 else float("nan")
    return net, names


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    return folder


def _error(argv: list[str], capsys) -> str:
    assert main([*argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_load_refuses_non_finite_weights_naming_the_first_tensors_and_the_count(tmp_path):
    net, names = _poisoned(7)
    path = models.save(net, tmp_path / "nan.pt", input_size=SIZE)
    n_tensors = len(net.state_dict())
    with pytest.raises(ValueError) as info:
        models.load(path)
    assert str(info.value) == (
        f"model file {str(path)!r} has NaN or infinite weights in 7 of its {n_tensors} tensors: "
        f"{', '.join(names[:5])}, ... (a training run that diverged?); the model would predict nothing meaningful")
    one, [name] = _poisoned(1)
    models.save(one, tmp_path / "one.pt", input_size=SIZE)
    with pytest.raises(ValueError, match=rf"in 1 of its {n_tensors} tensors: {re.escape(name)} \(a training run"):
        models.load(tmp_path / "one.pt")


def test_predict_command_refuses_a_model_file_with_nan_weights(tmp_path, images, capsys):
    net, names = _poisoned(2)
    path = models.save(net, tmp_path / "nan.pt", input_size=SIZE)
    out = tmp_path / "p.csv"
    err = _error(["predict", str(path), "--images", str(images), "--out", str(out), "--no-progress"], capsys)
    assert err.startswith(f"error: model file {str(path)!r} has NaN or infinite weights in 2 of its")
    assert names[0] in err and not out.exists()


def test_predict_table_refuses_non_finite_outputs_naming_the_rows(images):
    net = _net()
    net.input_size = SIZE
    forward = net.forward

    def bright_rows_nan(x: torch.Tensor, return_features: bool = False):  # one image's outputs overflow
        out = forward(x)
        out["expr"][x.mean(dim=(1, 2, 3)) > 0.9] = float("nan")  # x: pixels in [0, 1]
        return out

    net.forward = bright_rows_nan
    Image.fromarray(np.full((*SIZE, 3), 250, np.uint8)).save(images / "f1.png")
    with pytest.raises(ValueError) as info:
        inference.predict_table(net, images, batch_size=2, progress=False)
    assert str(info.value) == (
        f"the model's outputs are NaN or infinite for 1 of the last 2 of 2 images read, e.g. "
        f"[{str(images / 'f1.png')!r}]: its weights are broken (a training run that diverged?); no predictions "
        f"returned")
    net, _ = _poisoned(1)
    net.input_size = SIZE
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for 2 of the last 2 of 2 images read"):
        inference.predict_table(net, images, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real train.fit run folder with last.pt and best.pt."""
    folder = tmp_path_factory.mktemp("run")
    study = face_study(regime="paper", preset="scarce_au", size=24, seed=0)
    torch.manual_seed(0)
    net = MultiHeadNet(study.tasks, "cnn4", widths=(4, 4, 4, 4), pool=2)
    train.fit(net, study, steps=2, quota=2, checkpoint_dir=folder, progress=False, device="cpu",
              select="expr/accuracy", eval_every=1, val_split="val")
    return folder


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_predict_on_a_checkpoint_says_how_to_export_it(run, name, images, tmp_path, capsys):
    checkpoint = run / name
    err = _error(["predict", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "p.csv")], capsys)
    assert err == (f"error: model file {str(checkpoint)!r} is not an fbhelpers model file: no 'format': "
                   f"'fbhelpers-model' marker (a train.fit checkpoint: export it first with `python -m fbhelpers "
                   f"export-model {checkpoint} model.pt` or models.save_from_checkpoint, then use model.pt)")
    assert main(["export-model", str(checkpoint), str(tmp_path / "model.pt")]) == 0  # the hint works
    assert models.load(tmp_path / "model.pt").input_size == (24, 24)


def test_export_model_on_a_model_file_says_it_is_one(tmp_path, capsys):
    path = models.save(_net(), tmp_path / "model.pt", input_size=SIZE)
    err = _error(["export-model", str(path), str(tmp_path / "again.pt")], capsys)
    assert err == (f"error: checkpoint {str(path)!r} is already a model file (models.save, export-model): predict "
                   f"with it or load it with models.load; export-model converts train.fit checkpoints (last.pt, "
                   f"best.pt)")
    assert not (tmp_path / "again.pt").exists()


def test_export_model_refuses_a_checkpoint_with_non_finite_weights(run, tmp_path, capsys):
    state = torch.load(run / "last.pt", weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    for weights in (state["model"], state["best"]["model"]):  # the last and the best step's
        weights[name].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    err = _error(["export-model", str(tmp_path / "diverged.pt"), str(tmp_path / "model.pt")], capsys)
    assert err.startswith(f"error: checkpoint {str(tmp_path / 'diverged.pt')!r} has NaN or infinite weights in 1 "
                          f"of its")
    assert name in err and not (tmp_path / "model.pt").exists()
