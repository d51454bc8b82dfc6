"""`make lab`: JupyterLab starts on 127.0.0.1 in notebooks/, lists the suite and runs the project's kernel."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, method: str = "GET") -> dict | list:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _execute(ws_base: str, token: str, kernel_id: str, code: str) -> str:
    """Run ``code`` in a kernel through the server's websocket (as JupyterLab does); its stdout."""
    import uuid

    import websocket   # websocket-client, a dependency of jupyter_server

    ws = websocket.create_connection(f"{ws_base}/api/kernels/{kernel_id}/channels?token={token}", timeout=60)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                                       "session": uuid.uuid4().hex, "version": "5.3"},
                            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                            "content": {"code": code, "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False}}))
        text = []
        while True:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                text.append(msg["content"]["text"])
            elif kind == "error":
                pytest.fail(f"kernel error: {msg['content']['ename']}: {msg['content']['evalue']}")
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(text)
    finally:
        ws.close()


@pytest.fixture
def lab(tmp_path):
    """``make lab`` with a throwaway token, port and Jupyter config / runtime / settings folders."""
    port, token = _free_port(), "fbhelpers-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    args = f"--no-browser --port={port} --IdentityProvider.token={token} --ServerApp.port_retries=0"
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}", f"PYTHON={sys.executable}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"make lab exited with {proc.returncode}:\n{proc.stdout.read()}")
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_make_lab_serves_the_notebooks_with_the_project_kernel(lab):
    base, token = lab
    contents = _get(f"{base}/api/contents?token={token}")
    names = sorted(item["name"] for item in contents["content"])
    assert [n for n in names if n.endswith(".ipynb")] == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    specs = _get(f"{base}/api/kernelspecs?token={token}")
    argv = specs["kernelspecs"]["python3"]["spec"]["argv"]
    assert Path(argv[0]).parent == ROOT / ".venv" / "bin"   # the project's interpreter
    kernel = _get(f"{base}/api/kernels?token={token}", method="POST")
    assert kernel["name"] == "python3"
    out = _execute(base.replace("http", "ws", 1), token, kernel["id"], "import sys, fbhelpers; print(sys.prefix)")
    assert Path(out.strip()) == ROOT / ".venv"   # the kernel runs in .venv and imports fbhelpers
    with pytest.raises(urllib.error.HTTPError, match="403"):   # the token is required
        _get(f"{base}/api/contents")
