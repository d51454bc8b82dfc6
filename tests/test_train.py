"""Trainer: masks reach the losses, a tiny fit learns every task, killed-and-resumed runs match, clear failures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fbhelpers.batching import MultiSourceLoader, to_float
from fbhelpers.checkpoints import load_checkpoint
from fbhelpers.losses import LossConfig, combined_loss, masked_bce
from fbhelpers.models import MultiHeadNet
from fbhelpers.tasks import FACE_TASKS
from fbhelpers.train import evaluate, fit, predict
from helpers import block_source, block_study

pytestmark = pytest.mark.usefixtures("one_thread")


# The trainer run of the kill-and-resume test, as a script (tests/ on its PYTHONPATH for helpers): block_study's
# model and sources, trained through SlowNet, which can sleep in forward so a checkpoint is written before the kill.
TINY = '''
import os, sys, time
import torch
from fbhelpers.models import MultiHeadNet
from fbhelpers.tasks import FACE_TASKS
from helpers import block_study


class SlowNet(MultiHeadNet):
    def forward(self, x, return_features=False):
        time.sleep(float(os.environ.get("FB_SLOW", "0")))
        return super().forward(x, return_features)


if __name__ == "__main__":
    ckpt, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model, sources, couplings, cfg = block_study()
    slow = SlowNet(FACE_TASKS, "cnn4", widths=(8, 16, 16, 32))
    slow.load_state_dict(model.state_dict())
    from fbhelpers.train import fit
    fit(slow, sources, FACE_TASKS, couplings, cfg, steps=steps, quota=8, checkpoint_dir=ckpt,
        checkpoint_every=3, resume=True, progress=False, augment={"flip": False})
    torch.save(slow.state_dict(), out)
'''


@pytest.fixture(scope="module")
def tiny_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny_fit.py"
    path.write_text(TINY)
    return path


def test_masks_reach_the_losses():
    model, sources, couplings, _ = block_study()
    loader = MultiSourceLoader.from_sources(sources, FACE_TASKS, {"affect": 6, "aus": 4})
    batch = loader.next_batch()
    torch.manual_seed(1)
    out = {k: torch.randn(10, v) for k, v in (("expr", 7), ("au", 17), ("va", 2))}
    _, terms = combined_loss(out, batch, FACE_TASKS, couplings, LossConfig())
    aus = batch["source"] == 1
    assert not batch["masks"]["au"][~aus].any() and not batch["masks"]["expr"][aus].any()
    only_aus = masked_bce(out["au"][aus], batch["targets"]["au"][aus], batch["masks"]["au"][aus])
    assert float(terms["au"]) == pytest.approx(float(only_aus), rel=1e-6)
    affect_only = MultiSourceLoader.from_sources({"affect": sources["affect"]}, FACE_TASKS, 6).next_batch()
    _, terms = combined_loss({k: v[:6] for k, v in out.items()}, affect_only, FACE_TASKS, couplings, LossConfig())
    assert float(terms["au"]) == 0.0 and float(terms["expr"]) > 0.0


def headline(scores: pd.DataFrame) -> dict[str, float]:
    pick = {"expr": "accuracy", "au": "mean_f1", "va": "mean_ccc"}
    return {t: float(scores.query("task == @t and metric == @m")["value"].iloc[0]) for t, m in pick.items()}


def test_tiny_fit_improves_every_task(tmp_path):
    model, sources, couplings, cfg = block_study()
    before = headline(evaluate(model, sources, FACE_TASKS))
    history = fit(model, sources, FACE_TASKS, couplings, cfg, steps=100, quota=16, lr=3e-3, progress=False,
                  augment={"flip": False}, eval_sources=sources, eval_every=50, history_csv=tmp_path / "h.csv")
    after = headline(evaluate(model, sources, FACE_TASKS))
    assert after["expr"] > before["expr"] + 0.5
    assert after["au"] > before["au"] + 0.3
    assert after["va"] > before["va"] + 0.5
    assert list(history["step"]) == list(range(1, 101))
    assert {"total", "expr", "au", "va", "dm", "lr", "images_per_s"} <= set(history.columns)
    assert history["eval/affect/expr/accuracy"].notna().sum() == 2
    assert history["eval/affect/expr/accuracy"].iloc[-1] == pytest.approx(after["expr"])
    assert pd.read_csv(tmp_path / "h.csv")["total"].to_numpy() == pytest.approx(history["total"].to_numpy())
    preds = predict(model, sources["affect"].rows(np.arange(5)), batch_size=2)
    assert preds["expr"].shape == (5, 7) and preds["expr"].sum(1) == pytest.approx(np.ones(5), rel=1e-5)
    assert preds["au"].shape == (5, 17) and ((preds["au"] >= 0) & (preds["au"] <= 1)).all()
    assert np.abs(preds["va"]).max() <= 1.0


def test_predict_from_a_folder(tmp_path):
    from PIL import Image

    model, sources, _, _ = block_study()
    images = sources["affect"].images[:3]
    for i, im in enumerate(images):
        Image.fromarray(np.kron(im, np.ones((2, 2, 1), np.uint8))).save(tmp_path / f"f{i}.png")
    got = predict(model, tmp_path, size=24)
    want = predict(model, images)
    assert got["expr"].shape == (3, 7) and np.abs(got["expr"] - want["expr"]).max() < 0.2
    with pytest.raises(ValueError, match="size"):
        predict(model, tmp_path)
    model.input_size = (24, 24)  # as models.load sets it
    np.testing.assert_array_equal(predict(model, tmp_path)["expr"], got["expr"])
    table = pd.DataFrame({"path": ["f2.png", "f0.png"]})
    from_table = predict(model, table, size=24, root=tmp_path)
    np.testing.assert_allclose(from_table["expr"], got["expr"][[2, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="'path' column"):
        predict(model, table.rename(columns={"path": "file"}), size=24)
    with pytest.raises(FileNotFoundError, match="f9.png"):
        predict(model, pd.DataFrame({"path": ["f9.png"]}), size=24, root=tmp_path)


def _run(script: Path, ckpt: Path, out: Path, steps: int, slow: float = 0.0) -> subprocess.Popen:
    here = Path(__file__).parent  # the repository (fbhelpers) and tests/ (helpers)
    env = {**os.environ, "FB_SLOW": str(slow), "CI": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    return subprocess.Popen([sys.executable, str(script), str(ckpt), str(out), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_script, tmp_path):
    steps = 12
    killed = _run(tiny_script, tmp_path / "ckpt", tmp_path / "resumed.pt", steps, slow=0.25)
    reference = _run(tiny_script, tmp_path / "ref", tmp_path / "reference.pt", steps)
    deadline = time.time() + 60
    while not (tmp_path / "ckpt" / "last.pt").exists():
        assert killed.poll() is None, killed.communicate()[0].decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    interrupted_at = load_checkpoint(tmp_path / "ckpt" / "last.pt")["step"]
    assert 0 < interrupted_at < steps
    resumed = _run(tiny_script, tmp_path / "ckpt", tmp_path / "resumed.pt", steps)
    for proc in (resumed, reference):
        assert proc.wait(timeout=120) == 0, proc.communicate()[0].decode()
    got = torch.load(tmp_path / "resumed.pt", weights_only=True)
    want = torch.load(tmp_path / "reference.pt", weights_only=True)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    h_got = pd.read_csv(tmp_path / "ckpt" / "history.csv")
    h_want = pd.read_csv(tmp_path / "ref" / "history.csv")
    assert list(h_got["step"]) == list(range(1, steps + 1))
    assert h_got["total"].to_numpy() == pytest.approx(h_want["total"].to_numpy(), rel=1e-6)
    state = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert state["step"] == steps and set(state["rng"]) == {"torch", "cuda", "numpy", "python", "augment"}
    model, sources, couplings, cfg = block_study()
    with pytest.raises(ValueError, match="other settings.*steps"):
        fit(model, sources, FACE_TASKS, couplings, cfg, steps=13, quota=8, checkpoint_dir=tmp_path / "ckpt",
            checkpoint_every=3, resume=True, progress=False)


def test_refuses_bad_sources_before_training():
    model, sources, couplings, cfg = block_study()
    empty = block_source("void", ("expr",), 3, {"train": 6, "test": 2}).rows(np.arange(0))
    with pytest.raises(ValueError, match=r"without rows.*\['void'\]"):
        fit(model, {**sources, "void": empty}, FACE_TASKS, steps=1, progress=False)
    bare = block_source("bare", (), 3, {"train": 6, "test": 2})
    with pytest.raises(ValueError, match=r"\['bare'\] carry no label"):
        fit(model, {**sources, "bare": bare}, FACE_TASKS, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"tasks \['au'\] are labelled by none"):
        fit(model, {"affect": sources["affect"]}, FACE_TASKS, steps=1, progress=False)
    with pytest.raises(ValueError, match="amp=True needs a CUDA"):
        fit(model, sources, FACE_TASKS, steps=1, progress=False, amp=True, device="cpu")


def test_non_finite_loss_names_step_term_and_source():
    _, sources, couplings, _ = block_study()

    class Breaks(MultiHeadNet):
        calls = 0

        def forward(self, x, return_features=False):
            out = super().forward(x)
            Breaks.calls += 1
            if Breaks.calls == 3:
                out["au"] = out["au"] * float("nan")
            return out

    model = Breaks(FACE_TASKS, "cnn4", widths=(8, 8, 8, 8))
    with pytest.raises(FloatingPointError, match=r"step 3: term 'au' = nan.*\['aus'\]"):
        fit(model, sources, FACE_TASKS, steps=5, quota=4, progress=False)


def test_evaluate_is_tidy():
    model, sources, _, _ = block_study()
    scores = evaluate(model, sources, FACE_TASKS)
    assert list(scores.columns) == ["source", "task", "metric", "value"]
    assert set(zip(scores["source"], scores["task"])) == {("affect", "expr"), ("affect", "va"), ("aus", "au")}
    assert len(scores.query("task == 'au'")) == 4 + 2 * 17  # mean_f1, mean_accuracy, mean_auc, n_absent; f1_*, auc_*
    x = to_float(torch.from_numpy(sources["aus"].images[:2]).permute(0, 3, 1, 2).contiguous())
    assert model.eval()(x)["au"].shape == (2, 17)


def test_features_are_the_shared_layers_in_eval_mode():
    from fbhelpers.train import features

    model, sources, _, _ = block_study()
    model.train()
    src = sources["affect"]
    feats = features(model, src, batch_size=7, device="cpu")
    assert feats.shape == (len(src), model.feature_dim) and feats.dtype == np.float32
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        _, ref = model(to_float(torch.from_numpy(src.images[:5]).permute(0, 3, 1, 2)), return_features=True)
    np.testing.assert_allclose(feats[:5], ref.numpy(), rtol=1e-5, atol=1e-6)
    assert features(model, src.images[:0], device="cpu").shape == (0, model.feature_dim)
    with pytest.raises(ValueError, match="uint8 images"):
        features(model, src.images.astype(np.float32), device="cpu")


def test_device_names_are_checked_once_for_every_caller():
    from fbhelpers import profiles
    from fbhelpers.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and profiles.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        for call in (lambda: resolve_device("cuda"), lambda: profiles.resolve_device("cuda")):
            with pytest.raises(ValueError, match=r"device 'cuda': CUDA is not available here \(use 'cpu' or 'auto'\)"):
                call()
        model, sources, _, _ = block_study()
        with pytest.raises(ValueError, match="CUDA is not available"):  # before any training work
            fit(model, sources, FACE_TASKS, steps=1, device="cuda", progress=False)
