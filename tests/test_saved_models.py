"""fbhelpers.models model files: save / load rebuild the exact network with its tables, thresholds and metadata;
foreign, tampered and mismatched files are refused with the path named; a fit checkpoint becomes a model file."""
import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fbhelpers import checkpoints, models, train
from fbhelpers.losses import LossConfig
from fbhelpers.__main__ import main
from fbhelpers.models import BACKBONES, MultiHeadNet
from fbhelpers.relatedness import prior
from fbhelpers.study import Coupling
from fbhelpers.synthetic import face_study
from fbhelpers.tasks import FACE_TASKS
from helpers import tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny options of the built-in backbones; a backbone not listed is tested with its defaults.
OPTIONS = {
    "cnn4": dict(widths=(4, 8, 8, 6), pool=2, head_inputs={"expr": "au"}, dropout=0.3),
    "vgg16": dict(fc_width=8, fc_dropout=0.2, pool_size=2),
    "resnet18": dict(in_channels=1, mean=0.45, std=0.3),
    "resnet50": dict(),
}
SIZE = 32


def _net(name: str, seed: int = 0) -> MultiHeadNet:
    """A network whose weights and BatchNorm statistics are not those of a fresh one."""
    torch.manual_seed(seed)
    options = {"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3), **OPTIONS.get(name, {})}
    net = MultiHeadNet(FACE_TASKS, name, **options)
    with torch.no_grad():
        net.train()(torch.rand(4, net.in_channels, SIZE, SIZE))  # moves the running statistics
    return net.eval()


def _outputs(net: MultiHeadNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out, feats = net(x, return_features=True)
    return {**out, "features": feats}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_saved_model_gives_bit_identical_outputs(tmp_path, name):
    net = _net(name)
    path = models.save(net, tmp_path / "model.pt", input_size=SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no .tmp left
    torch.manual_seed(1)  # the rebuilt network starts from other random weights
    loaded = models.load(path)
    assert not loaded.training
    assert loaded.spec() == net.spec()
    x = torch.rand(3, net.in_channels, SIZE, SIZE)
    expected, got = _outputs(net, x), _outputs(loaded, x)
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_tables_thresholds_metadata_and_input_size_round_trip(tmp_path):
    net = _net("cnn4")
    basic = prior("du2014_basic")
    shuffled = basic.align(basic.classes[::-1], basic.attributes[::-1])  # stored in the tasks' label orders
    values = torch.rand(7, 17)
    thresholds = np.linspace(0.2, 0.8, 17)
    path = models.save(
        net, tmp_path / "m.pt", input_size=(32, 24), couplings=[Coupling("expr", "au", shuffled),
                                                                  Coupling("expr", "au", values)],
        tables={"compound": prior("du2014_compound")}, thresholds={"au": thresholds},
        profile="paper", seed=np.int64(3), scores={"au/mean_f1": np.float32(0.25), "runs": (1, 2)}, note=None)
    loaded = models.load(path)
    assert loaded.input_size == (32, 24)
    assert [(c.class_task, c.attr_task) for c in loaded.couplings] == [("expr", "au"), ("expr", "au")]
    first, second = (c.relatedness for c in loaded.couplings)
    pd.testing.assert_frame_equal(first.table, basic.table)
    assert first.name == "du2014_basic"
    np.testing.assert_array_equal(second.table.to_numpy(), values.double().numpy())
    compound = loaded.tables["compound"]
    original = prior("du2014_compound")
    pd.testing.assert_frame_equal(compound.table, original.table)
    assert (compound.name, compound.citation, compound.uncertain, compound.notes) == (
        original.name, original.citation, original.uncertain, original.notes)
    assert list(loaded.thresholds) == ["au"]
    np.testing.assert_array_equal(loaded.thresholds["au"], thresholds)
    assert loaded.metadata == {"profile": "paper", "seed": 3, "scores": {"au/mean_f1": 0.25, "runs": [1, 2]},
                               "note": None}
    assert type(loaded.metadata["seed"]) is int
    # a loaded model saves again with its own attributes; thresholds default to 0.5
    again = models.load(models.save(loaded, tmp_path / "again.pt"))
    assert again.input_size == (32, 24) and len(again.couplings) == 2 and list(again.tables) == ["compound"]
    np.testing.assert_array_equal(again.thresholds["au"], thresholds)
    assert again.metadata == {}
    plain = models.load(models.save(net, tmp_path / "plain.pt", input_size=24))
    assert plain.input_size == (24, 24) and plain.couplings == [] and plain.tables == {}
    np.testing.assert_array_equal(plain.thresholds["au"], np.full(17, 0.5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(bad={"ok": 1, "obj": object()}), r"metadata 'bad\.obj': object"),
    (dict(where=Path("/tmp")), r"metadata 'where': PosixPath|metadata 'where': WindowsPath"),
    (dict(thresholds={"expr": 0.5}), r"thresholds: 'expr' is not a multilabel task"),
    (dict(thresholds={"au": [0.5, 0.5]}), r"thresholds\['au'\] must be one number or 17 numbers"),
    (dict(thresholds={"au": 1.5}), r"thresholds\['au'\] must be one number or 17 numbers in \[0, 1\]"),
    (dict(couplings=[Coupling("expr", "pose", prior("du2014_basic"))]), r"'pose' is not a multilabel task"),
    (dict(couplings=[Coupling("expr", "au", torch.rand(7, 5))]), r"relatedness has shape \(7, 5\)"),
    (dict(couplings=[{"class_task": "expr", "attr_task": "au"}]), r"lacks the keys \['classes'"),
    (dict(tables={"compound": "du2014_compound"}), r"tables\['compound'\]: expected a Relatedness"),
    (dict(input_size=(32, 0)), r"input_size must be a positive int or a pair"),
    (dict(input_size=None), r"give input_size"),
])
def test_save_refuses_what_a_model_file_cannot_hold(tmp_path, kwargs, match):
    net = tiny_net()
    with pytest.raises(ValueError, match=match):
        models.save(net, tmp_path / "m.pt", **{"input_size": 32, **kwargs})
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic(tmp_path, monkeypatch):
    net = tiny_net()
    path = models.save(net, tmp_path / "m.pt", input_size=32, run="first")

    def broken_save(obj, target):  # target: the open temporary file
        target.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(models.modelfile.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        models.save(net, path, input_size=32, run="second")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert models.load(path).metadata == {"run": "first"}


CALLS: list[str] = []


def _mark() -> None:
    CALLS.append("unpickled")


class Payload:
    """What a tampered file might carry: unpickling it would call ``_mark``."""

    def __reduce__(self):
        return _mark, ()


def _record(tmp_path: Path) -> dict:
    net = tiny_net()
    return torch.load(models.save(net, tmp_path / "good.pt", input_size=32), weights_only=True)


def _write(tmp_path: Path, case: str) -> Path:
    record = _record(tmp_path)
    path = tmp_path / f"{case}.pt"
    if case == "version":
        torch.save({**record, "format_version": 2}, path)
    elif case == "missing_key":
        torch.save({k: v for k, v in record.items() if k != "thresholds"}, path)
    elif case == "tampered":
        torch.save({**record, "metadata": {"x": Payload()}}, path)
    elif case == "state_dict":
        torch.save(record["state_dict"], path)
    elif case == "checkpoint":
        torch.save({"step": 3, "model": record["state_dict"], "optimizer": {}}, path)
    elif case == "text":
        path.write_text("not a model\n")
    elif case == "spec_mismatch":
        spec = {**record["spec"], "backbone_options": {"widths": [4, 4, 4, 8], "pool": 1}}
        torch.save({**record, "spec": spec}, path)
    elif case == "bad_spec":
        torch.save({**record, "spec": {**record["spec"], "backbone": "vgg19"}}, path)
    elif case == "malformed":
        torch.save({**record, "couplings": [{"class_task": "expr"}]}, path)
    return path


@pytest.mark.parametrize("case, match", [
    ("version", r"has 'format_version' 2; this fbhelpers reads version 1"),
    ("missing_key", r"lacks the keys \['thresholds'\]"),
    ("tampered", r"is not an fbhelpers file: it pickles test_saved_models\._mark, which weights_only loading refuses"),
    ("state_dict", r"is not an fbhelpers model file: no 'format': 'fbhelpers-model' marker \(a plain state dict"),
    ("checkpoint", r"no 'format': 'fbhelpers-model' marker \(a train\.fit checkpoint: export it first with "
                   r"`python -m fbhelpers export-model "),
    ("text", r"is not an fbhelpers file: torch\.load\(weights_only=True\) cannot read it"),
    ("spec_mismatch", r"parameter 'backbone\.features\.12\.weight' has shape \(4, 4, 3, 3\) in the file "
                      r"but \(8, 4, 3, 3\) in the model"),
    ("bad_spec", r"unknown backbone 'vgg19'"),
    ("malformed", r"is malformed: KeyError"),
])
def test_load_refuses_foreign_files_naming_them(tmp_path, case, match):
    path = _write(tmp_path, case)
    with pytest.raises(ValueError, match=re.escape(f"model file {str(path)!r}") + ".*" + match) as info:
        models.load(path)
    assert "\n" not in str(info.value)
    assert CALLS == []  # nothing in a tampered file ever runs


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"model file {str(tmp_path / 'none.pt')!r} not found")):
        models.load(tmp_path / "none.pt")


def _fit_checkpoint(path: Path, net: MultiHeadNet, **override) -> Path:
    """A checkpoint laid out as train.fit writes it (last.pt), with the keys describing the model."""
    coupling = {"class_task": "expr", "attr_task": "au", "classes": list(FACE_TASKS[0].labels),
                "attributes": list(FACE_TASKS[1].labels), "values": torch.rand(7, 17).tolist()}
    state = {"step": 7, "model": net.state_dict(), "optimizer": {}, "scheduler": {}, "sampler": {}, "rng": {},
             "config": {"steps": 7, "seed": 5, "lr": 0.001, "optimizer": "adamw", "schedule": "cosine",
                        "quota": {"a": 4}, "sources": {"a": 10}, "tasks": ["expr", "au", "va"]},
             "history": {"columns": [], "rows": []},
             "model_spec": net.spec(), "input_size": [SIZE, SIZE], "couplings": [coupling], **override}
    torch.save(state, path)
    return path


def test_save_from_checkpoint(tmp_path):
    net = _net("cnn4")
    ckpt = _fit_checkpoint(tmp_path / "last.pt", net)
    path = models.save_from_checkpoint(ckpt, tmp_path / "model.pt", profile="demo")
    loaded = models.load(path)
    x = torch.rand(2, 3, SIZE, SIZE)
    for key, value in _outputs(net, x).items():
        assert torch.equal(_outputs(loaded, x)[key], value), key
    assert loaded.input_size == (SIZE, SIZE)
    stored = torch.load(ckpt, weights_only=True)["couplings"][0]
    np.testing.assert_array_equal(loaded.couplings[0].relatedness.table.to_numpy(), np.array(stored["values"]))
    assert loaded.metadata == {"profile": "demo", "checkpoint_step": 7, "training": {
        "steps": 7, "seed": 5, "lr": 0.001, "optimizer": "adamw", "schedule": "cosine"}}
    old = _fit_checkpoint(tmp_path / "old.pt", net, model_spec=None)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {str(old)!r} lacks ['model_spec']")):
        models.save_from_checkpoint(old, tmp_path / "x.pt")
    wrong = _fit_checkpoint(tmp_path / "wrong.pt", net, model_spec={**net.spec(), "tasks": net.spec()["tasks"][:2]})
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {str(wrong)!r} does not match the model") +
                       r".*unexpected keys \['heads\.va\.weight'"):
        models.save_from_checkpoint(wrong, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_save_from_a_real_fit_checkpoint(tmp_path):
    study = face_study(regime="paper", preset="scarce_au", size=24, seed=0)
    net = tiny_net(study.tasks, pool=2)
    train.fit(net, study, loss_config=LossConfig(dm="class_to_attr"), steps=2, quota=2, checkpoint_dir=tmp_path,
              progress=False, device="cpu")
    loaded = models.load(models.save_from_checkpoint(tmp_path / checkpoints.CHECKPOINT, tmp_path / "model.pt"))
    assert loaded.input_size == (24, 24) and loaded.metadata["checkpoint_step"] == 2
    assert loaded.metadata["training"] == {"steps": 2, "seed": 0, "lr": 0.001, "optimizer": "adamw",
                                           "schedule": "cosine"}
    x = torch.rand(2, 3, 24, 24)
    for key, value in _outputs(net.eval(), x).items():
        assert torch.equal(_outputs(loaded, x)[key], value), key
    assert [(c.class_task, c.attr_task) for c in loaded.couplings] == [("expr", "au")]
    expr, au = (next(t for t in study.tasks if t.name == n) for n in ("expr", "au"))
    trained = study.couplings[0].relatedness.align(expr.labels, au.labels).table.to_numpy()
    np.testing.assert_array_equal(loaded.couplings[0].relatedness.table.to_numpy(),
                                  trained.astype(np.float32).astype(float))  # fit keeps R in float32


def test_export_model_command(tmp_path, capsys):
    net = _net("cnn4")
    ckpt = _fit_checkpoint(tmp_path / "last.pt", net)
    out = tmp_path / "exported" / "model.pt"
    assert main(["export-model", str(ckpt), str(out), "--meta", "profile", "paper", "--meta", "seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out}: cnn4, tasks expr, au, va, input 32x32, 1 couplings "
                                               f"(from {ckpt})")
    assert models.load(out).metadata["profile"] == "paper" and models.load(out).metadata["seed"] == 3
    assert main(["export-model", str(tmp_path / "none.pt"), str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint {str(tmp_path / 'none.pt')!r} not found"


def _imports(module: str) -> set[str]:
    """The fbhelpers modules (and names) that ``fbhelpers/<module>.py`` (or the package) imports, by last name."""
    path = Path(models.__file__).parent.parent / module
    files = sorted(path.glob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    names = set()
    for node in (n for f in files for n in ast.walk(ast.parse(f.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.module not in (None, "fbhelpers"):
            names.add(node.module.split(".")[-1])
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names |= {a.name.split(".")[-1] for a in node.names}
    return names


def test_models_imports_only_lower_modules():
    higher = {"train", "experiments", "runner", "inference", "profiles", "widgets", "plots"}
    assert _imports("models") & higher == set()
    assert {"models", "train"} <= _imports("inference")


def test_a_checkpoint_of_a_selecting_run_exports_the_selected_weights(tmp_path):
    study = face_study(regime="pair", size=24, n_scale=0.2, seed=0)
    net = tiny_net(study.tasks, pool=2)
    history = train.fit(net, study, steps=6, quota=4, checkpoint_dir=tmp_path, progress=False, device="cpu",
                        val_split="val", select="expr/accuracy", select_mode="min", eval_every=1, lr=0.05)
    best = history.attrs["best_step"]
    assert best < 6  # with select_mode="min" and lr 0.05 an early step is chosen: last and best differ
    x = torch.rand(2, 3, 24, 24)
    for name in (checkpoints.CHECKPOINT, checkpoints.BEST):
        loaded = models.load(models.save_from_checkpoint(tmp_path / name, tmp_path / f"from_{name}"))
        assert loaded.metadata["checkpoint_step"] == best
        for key, value in _outputs(net.eval(), x).items():  # fit left the selected weights in net
            assert torch.equal(_outputs(loaded, x)[key], value), (name, key)
