"""DDP: the same ``fit`` under torchrun with 2 CPU processes (gloo) keeps the replicas identical and learns."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

WORKER = '''
import os, sys
import torch
import torch.distributed as dist
from fbhelpers.tasks import FACE_TASKS
from fbhelpers.train import fit
from helpers import block_study

if __name__ == "__main__":
    out = sys.argv[1]
    model, sources, couplings, cfg = block_study()
    history = fit(model, sources, FACE_TASKS, couplings, cfg, steps=30, quota=8, lr=3e-3, progress=True,
                  augment={"flip": False}, history_csv=os.path.join(out, "history.csv"),
                  checkpoint_dir=os.path.join(out, "ckpt"), checkpoint_every=10)
    assert not dist.is_initialized()  # fit opened and closed the process group itself
    rank = os.environ["RANK"]
    torch.save({k: v for k, v in model.named_parameters()}, os.path.join(out, f"params{rank}.pt"))
    history.to_csv(os.path.join(out, f"local{rank}.csv"), index=False)
'''


def test_two_cpu_processes_stay_identical_and_learn(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(WORKER)
    here = Path(__file__).parent  # the repository (fbhelpers) and tests/ (helpers)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)]), "OMP_NUM_THREADS": "1"}
    env.pop("CI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a hung rendezvous: end the launcher and its workers (own session)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    p0 = torch.load(tmp_path / "params0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params1.pt", weights_only=True)
    assert p0.keys() == p1.keys() and all(torch.equal(p0[k], p1[k]) for k in p0)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["step"]) == list(range(1, 31))
    assert history["total"].tail(5).mean() < 0.8 * history["total"].head(5).mean()
    # losses are averaged over the ranks, so both ranks log the same numbers; only rank 0 writes files
    local1 = pd.read_csv(tmp_path / "local1.csv")
    assert local1["total"].to_numpy() == pytest.approx(history["total"].to_numpy())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["history.csv", "last.pt"]
    # one progress bar, rank 0's: tqdm draws a bar's 0 % state once when it opens (its 100 % state may be drawn
    # twice, by the last update and by close)
    assert stderr.count("fit:   0%") == 1
