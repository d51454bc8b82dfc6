"""Shared fixtures, and the test tiers (docs/testing.md#tiers).

Every test gets exactly one tier marker: its own (``pytestmark = pytest.mark.browser``, ``@pytest.mark.claims``)
if it has one, else the one ``FILE_TIERS`` / ``TEST_TIERS`` below give it, else ``unit``. ``make test-fast`` runs
``-m unit``; ``tests/test_tiers.py`` checks the whole collection (one tier each, every entry below names a test).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

TIERS = ("unit", "notebooks", "browser", "claims", "ddp", "slow")
# Whole files outside the unit tier.
FILE_TIERS = {
    "test_notebooks.py": "notebooks",
    "test_browser.py": "browser",
    "test_claims.py": "claims",
    "test_ddp.py": "ddp",
}
# Single tests (file::function, every parameter of it): a notebook run outside test_notebooks.py, and the unit-level
# tests measured at over ~5 s on a 2-core CPU (docs/testing.md#time-per-tier).
TEST_TIERS = {
    "test_datasets_studies.py::test_every_notebook_runs_its_paper_profile_on_the_fixture_root": "notebooks",
    "test_train.py::test_resume_after_sigkill_matches_uninterrupted_run": "slow",            # 44 s
    "test_readme.py::test_model_example_trains_selects_saves_and_predicts": "slow",          # 27 s
    "test_bench.py::test_cli_tiny_runs_pipeline_gpu_step_scale_and_writes_the_csv": "slow",  # 27 s
    "test_benchmarks.py::test_bench_cache_builds_and_measures_memory": "slow",               # 20 s
    "test_tiers.py::test_every_collected_test_has_exactly_one_tier": "slow",                 # 15 s
    "test_readme.py::test_readme_api_example_runs": "slow",                                  # 12 s
    "test_runner.py::test_suite_runs_notebooks_in_parallel_workers": "slow",                 # 9 s
    "test_lab.py::test_make_lab_serves_the_notebooks_with_the_project_kernel": "slow",       # 7.5 s
    # 7 s:
    "test_runner.py::test_a_kernel_that_never_started_is_retried_once_and_a_dead_worker_is_a_failure": "slow",
    "test_benchmarks.py::test_learnability_runs_and_scores": "slow",                         # 6 s
    "test_cache.py::test_resume_after_sigkill_gives_the_bytes_of_an_uninterrupted_build": "slow",  # 5.4 s
    "test_disk_full.py::test_fit_checkpoint_over_the_file_size_limit_is_a_clear_error": "slow",   # 13 s
}


def tier_of(item: pytest.Item) -> str | None:
    """The tier ``FILE_TIERS`` / ``TEST_TIERS`` give a collected test (None: no entry)."""
    file = Path(str(item.path)).name
    return TEST_TIERS.get(f"{file}::{getattr(item, 'originalname', item.name)}", FILE_TIERS.get(file))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(marker.name in TIERS for marker in item.iter_markers()):
            item.add_marker(getattr(pytest.mark, tier_of(item) or "unit"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a small shared
    CPU two threads spin-wait and run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory):
    """The whole notebook suite run once in the ``smoke`` profile (summary.md / .html, notebooks exported to HTML);
    shared by the notebook regression tests and the browser tier's report check."""
    from fbhelpers import runner

    return runner.run_suite("smoke", out=tmp_path_factory.mktemp("smoke"), notebooks_dir=ROOT / "notebooks",
                            progress=False, jobs=0)
