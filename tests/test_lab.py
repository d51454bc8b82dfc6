"""`make lab`: JupyterLab starts on 127.0.0.1 in notebooks/, lists the suite and runs the project's kernel."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
from lab_server import free_port, serving, throwaway_dirs

ROOT = Path(__file__).resolve().parents[1]


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
    port, token = free_port(), "fbhelpers-test-token"
    args = f"--no-browser --port={port} --IdentityProvider.token={token} --ServerApp.port_retries=0"
    command = ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}", f"PYTHON={sys.executable}"]
    with serving(command, port, token, {**os.environ, **throwaway_dirs(tmp_path)}, tmp_path / "lab.log",
                 cwd=ROOT) as base:
        yield base, token


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
