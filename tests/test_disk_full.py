"""A full disk (ENOSPC) or a file over the size limit (EFBIG): checkpoint, model-file, cache and report writes raise
an error naming the file, its folder, the bytes needed (when known) and free; the partial file is removed and the
file already there is unchanged. EFBIG is real: a subprocess under ``RLIMIT_FSIZE`` (Python ignores SIGXFSZ, so
the write fails with EFBIG); ENOSPC is simulated by a write that raises it, or by a small ``shutil.disk_usage``."""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fbhelpers import checkpoints, models
from fbhelpers.__main__ import main
from fbhelpers.datasets.cache import build_cache
from fbhelpers.files import atomic_path
from fbhelpers.models import MultiHeadNet
from fbhelpers.tasks import Task

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = (Task("expr", "multiclass", ("neutral", "happiness", "surprise")),)
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EFBIG = "file too large (over the file system's or the process's file size limit, see `ulimit -f`)"
KEPT = "nothing half-written was left, files already there are unchanged"
FREE = r"(\d[\d,.]* (bytes|KiB|MiB|GiB)) free"


def _net() -> MultiHeadNet:
    torch.manual_seed(0)
    return MultiHeadNet(TASKS, "cnn4", widths=(4, 4, 4, 4))


def _limited(script: str, limit: int, *args: str) -> subprocess.CompletedProcess:
    """``script`` run by Python under a file size limit of ``limit`` bytes (the limit is set after the imports of
    the script's first line, so that writing bytecode caches cannot trip it)."""
    first, rest = textwrap.dedent(script).strip().split("\n", 1)
    code = f"{first}\nimport resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n{rest}"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------- the one place
def test_atomic_write_on_a_full_disk_names_the_folder_and_keeps_the_file_already_there(tmp_path):
    target = tmp_path / "out" / "report.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("first\n")
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("half of the sec")
            raise ENOSPC
    assert info.value.errno == errno.ENOSPC
    assert re.fullmatch(rf"cannot write {re.escape(str(target))}: no space left on the device \(folder "
                        rf"{re.escape(str(target.parent))}: size needed unknown, {FREE}\); {KEPT}", str(info.value))
    assert _only(target.parent) == ["report.csv"] and target.read_text() == "first\n"


def test_predict_report_on_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    path = models.save(_net(), tmp_path / "model.pt", input_size=(12, 10))
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(tmp_path / "face.png")
    out = tmp_path / "preds" / "p.csv"

    def full_disk(frame, target, **kwargs):
        Path(target).write_text("path,expr\n")
        raise ENOSPC

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert main(["predict", str(path), "--images", str(tmp_path / "face.png"), "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}: no space left on the device \(folder "
                        rf"{re.escape(str(out.parent))}: size needed unknown, {FREE}\); {KEPT}", err), err
    assert _only(out.parent) == []


# ----------------------------------------------------------------------------------------------- model files
def test_model_file_save_on_a_full_disk_keeps_the_old_model_file(tmp_path, monkeypatch):
    net = _net()
    path = models.save(net, tmp_path / "model.pt", input_size=(12, 10), run="first")
    needed = sum(v.untyped_storage().nbytes() for v in net.state_dict().values())

    def full_disk(obj, target):  # an open file (or a path)
        with open(target, "wb") if isinstance(target, (str, os.PathLike)) else target as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise ENOSPC

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=rf"^cannot write {re.escape(str(path))}: no space left on the device \(folder "
                                      rf"{re.escape(str(tmp_path))}: at least [\d.,]+ KiB needed, {FREE}\)"):
        models.save(net, path, input_size=(12, 10), run="second")
    monkeypatch.undo()
    assert _only(tmp_path) == ["model.pt"] and models.load(path).metadata == {"run": "first"}
    assert needed > 1024


def test_model_file_save_checks_free_space_first(tmp_path, monkeypatch):
    net = _net()
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(OSError, match=r"no space left on the device \(folder .*: at least [\d.,]+ KiB needed, "
                                      r"1,000 bytes free\)"):
        models.save(net, tmp_path / "model.pt", input_size=(12, 10))
    assert _only(tmp_path) == []


# ----------------------------------------------------------------------------------------------- checkpoints
SAVE_CHECKPOINT = """
import sys, torch; from fbhelpers import checkpoints
try:
    checkpoints.save_checkpoint(sys.argv[1], {"model": {"w": torch.zeros(100_000)}, "step": 2})
except Exception as err:
    print(f"{type(err).__name__}: {err}")
"""


def test_checkpoint_over_the_file_size_limit_names_the_file_and_keeps_the_last_one(tmp_path):
    path = tmp_path / "run" / checkpoints.CHECKPOINT
    checkpoints.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    before = path.read_bytes()
    done = _limited(SAVE_CHECKPOINT, 100_000, str(path))
    assert re.fullmatch(rf"DiskFullError: cannot write {re.escape(str(path))}: {re.escape(EFBIG)} \(folder "
                        rf"{re.escape(str(path.parent))}: at least 390.6 KiB needed, {FREE}\); {KEPT}\n",
                        done.stdout), done.stdout + done.stderr[-2000:]
    assert _only(path.parent) == ["last.pt"] and path.read_bytes() == before


FIT = """
import sys, torch; from fbhelpers import train; from fbhelpers.models import MultiHeadNet; from fbhelpers.synthetic import face_study
study = face_study(regime="paper", preset="scarce_au", size=24, seed=0)
torch.manual_seed(0)
net = MultiHeadNet(study.tasks, "cnn4", widths=(4, 4, 4, 4), pool=2)
try:
    train.fit(net, study, steps=2, quota=2, checkpoint_dir=sys.argv[1], progress=False, device="cpu")
except Exception as err:
    print(f"{type(err).__name__}: {err}")
"""


def test_fit_checkpoint_over_the_file_size_limit_is_a_clear_error(tmp_path):
    done = _limited(FIT, 40_000, str(tmp_path))  # last.pt takes ~80 kB
    last = tmp_path / checkpoints.CHECKPOINT
    assert re.fullmatch(rf"DiskFullError: cannot write {re.escape(str(last))}: {re.escape(EFBIG)} \(folder "
                        rf"{re.escape(str(tmp_path))}: at least [\d.,]+ KiB needed, {FREE}\); {KEPT}\n",
                        done.stdout), done.stdout + done.stderr[-2000:]
    assert "inline_container" not in done.stdout + done.stderr
    assert not last.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------- image cache
def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return [f"{i}.png" for i in range(n)]


BUILD = """
import sys; from fbhelpers.datasets.cache import build_cache
try:
    build_cache(sys.argv[3].split(","), sys.argv[1], 64, sys.argv[2], workers=1, progress=False)
except Exception as err:
    print(f"{type(err).__name__}: {err}")
"""


def test_cache_array_over_the_file_size_limit_names_the_file_and_removes_the_partial_build(tmp_path):
    names = _images(tmp_path / "data", 6)  # 6 x 64 x 64 x 3 = 73,728 bytes
    done = _limited(BUILD, 50_000, str(tmp_path / "data"), str(tmp_path / "cache"), ",".join(names))
    partial = re.escape(str(tmp_path / "cache")) + r"/[0-9a-f]{24}\.partial"
    assert re.fullmatch(rf"DiskFullError: cannot write {partial}/images\.npy: {re.escape(EFBIG)} \(folder "
                        rf"{partial}: at least 72.0 KiB needed, {FREE}\); {KEPT}\n",
                        done.stdout), done.stdout + done.stderr[-2000:]
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]


def test_cache_build_checks_free_space_first(tmp_path, monkeypatch, capsys):
    names = _images(tmp_path / "data", 6)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=50_000))
    with pytest.raises(OSError, match=r"/images\.npy: no space left on the device \(folder .*\.partial: at least "
                                      r"72.0 KiB needed, 48.8 KiB free\)"):
        build_cache(names, tmp_path / "data", 64, tmp_path / "cache", workers=1, progress=False)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]
