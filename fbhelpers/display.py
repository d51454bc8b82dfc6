"""Whether anybody is watching: headless runs and progress bars (one rule for every module that shows output).

An executed notebook (papermill, the runner, which sets ``FB_HEADLESS=1`` for its kernels) or a CI job
(``CI``) is *headless*: explorers fall back to static figures and progress bars stay off, so logs and executed
notebooks stay clean. In JupyterLab or a terminal, bars show by default.
"""
from __future__ import annotations

import os

HEADLESS_ENV = "FB_HEADLESS"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def headless() -> bool:
    """True under ``CI`` or ``FB_HEADLESS`` (set to a true value)."""
    return _truthy("CI") or _truthy(HEADLESS_ENV)


def show_progress(progress: bool | None = None) -> bool:
    """Whether to draw a progress bar: ``progress`` when given, else auto (not :func:`headless`)."""
    return bool(progress) if progress is not None else not headless()
