"""Shared fixtures."""
from pathlib import Path

import pytest
import torch

from fbhelpers import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a small shared
    CPU two threads spin-wait and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory) -> runner.SuiteResult:
    """The whole notebook suite run once in the ``smoke`` profile (summary.md / .html, notebooks exported to HTML);
    shared by the notebook regression tests and the browser tier's report check."""
    return runner.run_suite("smoke", out=tmp_path_factory.mktemp("smoke"), notebooks_dir=ROOT / "notebooks",
                            progress=False, jobs=0)
