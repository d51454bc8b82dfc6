"""JupyterLab as the tests start it (``tests/test_lab.py`` through ``make lab``, ``tests/test_browser.py``
directly): a free port on 127.0.0.1, throwaway Jupyter folders, its output in a log file, stopped with its whole
process group."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throwaway_dirs(tmp: Path) -> dict[str, str]:
    """Jupyter's config, runtime, settings and workspace folders under ``tmp`` (as environment variables)."""
    return {"JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def serving(command: Sequence[str], port: int, token: str, env: Mapping[str, str], log: Path,
            cwd: Path | None = None) -> Iterator[str]:
    """Run ``command`` (a JupyterLab on 127.0.0.1:``port``) for the block; yields its base URL once
    ``/api/status`` answers (60 s at most, else the test fails with the end of ``log``)."""
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        pytest.fail(f"{' '.join(command[:3])} exited with {proc.returncode}:\n{_tail(log)}")
                    time.sleep(0.5)
            else:
                pytest.fail(f"JupyterLab did not answer within 60 s:\n{_tail(log)}")
            yield base
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
