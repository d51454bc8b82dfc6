"""Browser tier (marker ``browser``; docs/testing.md#browser): the notebooks as a user steps through them in JupyterLab.

JupyterLab starts on 127.0.0.1 with a throwaway token, config, settings and workspace folders; headless Chromium
(Debian's ``chromium``, driven by the ``playwright`` package through ``executable_path``, no browser download) opens
each notebook prepared in the ``smoke`` profile with ``INTERACTIVE = True`` and runs all cells from the Run menu.
Every notebook must finish without an error or any stderr output. Then every control of every explorer is changed
and changed back: the explorer's output (image bytes and text) must change, and return exactly to its first state.
Last, the HTML report of a smoke run (``summary.html`` and each exported notebook) must show every figure.

Screenshots of each explorer before and after each change, and of the report, go to ``runs/browser/screenshots``
(``FB_BROWSER_RUN`` moves the run folder). Without Chromium or playwright the tier is skipped with the reason;
``FB_BROWSER_REQUIRED=1`` (set by ``.ci/run``) turns that skip into a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lab_server import free_port, serving, throwaway_dirs

from fbhelpers import runner

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob(runner.NOTEBOOK_GLOB))
RUN = Path(os.environ.get("FB_BROWSER_RUN") or ROOT / "runs" / "browser")
SHOTS = RUN / "screenshots"
CHROMIUM = os.environ.get("FB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("FB_BROWSER_REQUIRED") == "1"
TOKEN = "fbhelpers-browser-test"
NOTEBOOK_SECONDS = 300   # one smoke notebook, run all cells (about 10-60 s here)
# Environment a user's JupyterLab does not have: the kernel must show widgets and progress bars as it would for them.
NOT_INHERITED = ("CI", "FB_HEADLESS", "TQDM_DISABLE", "MPLBACKEND", "OUTPUT_DIR", "FB_OUTPUT_DIR")

# The bytes of every image of an element (blob: URLs of ipywidgets' Image, data: URLs of rendered figures) as a
# length and a 32-bit rolling hash, plus its text: what a user sees of an explorer's output.
STATE_JS = """async (area) => {
  const hashes = [];
  for (const img of area.querySelectorAll('.widget-image, img')) {
    if (!img.src) { hashes.push('empty'); continue; }
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let h = 0;
    for (const b of bytes) h = (Math.imul(h, 31) + b) >>> 0;
    hashes.push(bytes.length + ':' + h);
  }
  const text = Array.from(area.querySelectorAll('.widget-html-content, .widget-output'))
    .map(e => e.innerText).join('\\n');
  return {images: hashes, text: text};
}"""


def _unavailable() -> str | None:
    if not CHROMIUM or not Path(CHROMIUM).is_file():
        return f"no Chromium ({CHROMIUM or 'not on PATH'}; Debian: apt-get install -y chromium, or set FB_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401 - only whether it imports
    except ImportError:
        return "the playwright package is not installed (it is in requirements.txt: run make setup)"
    return None


@pytest.fixture(scope="module")
def available():
    reason = _unavailable()
    if reason and REQUIRED:
        pytest.fail(f"browser tier required (FB_BROWSER_REQUIRED=1) but {reason}", pytrace=False)
    if reason:
        pytest.skip(f"browser tier skipped: {reason}")


def _prepare(folder: Path) -> None:
    """The notebooks with the smoke profile and INTERACTIVE = True injected (papermill, not executed)."""
    import papermill

    folder.mkdir(parents=True)
    for notebook in NOTEBOOKS:
        params = {"PROFILE": "smoke", "INTERACTIVE": True, "OUTPUT_DIR": str(RUN / "outputs" / notebook.stem)}
        papermill.execute_notebook(str(notebook), str(folder / notebook.name), parameters=params, prepare_only=True,
                                   kernel_name=runner.KERNEL_NAME, progress_bar=False)


def _lab_environment(tmp: Path) -> dict[str, str]:
    settings = tmp / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Every cell stays in the DOM (no virtual scrolling), so waiting on prompts and outputs sees the whole notebook.
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)   # no "get notified about Jupyter news?" toast over the screenshots
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                          "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return {**env, **throwaway_dirs(tmp)}


@pytest.fixture(scope="module")
def lab(available, tmp_path_factory):
    """JupyterLab on 127.0.0.1 over the prepared notebooks (in RUN/notebooks); yields its base URL."""
    if RUN.exists():
        shutil.rmtree(RUN)
    _prepare(RUN / "notebooks")
    SHOTS.mkdir(parents=True)
    port = free_port()
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
               f"--ServerApp.root_dir={RUN / 'notebooks'}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    env = _lab_environment(tmp_path_factory.mktemp("lab"))
    with serving(command, port, TOKEN, env, RUN / "jupyterlab.log") as base:
        yield base


@pytest.fixture(scope="module")
def chromium(available):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _run_all(page, base: str, name: str) -> None:
    """Open a notebook, wait for its kernel, Run > Run All Cells, wait until every cell has a number."""
    page.goto(f"{base}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    prompts = page.locator(".jp-NotebookPanel:visible .jp-CodeCell .jp-InputArea-prompt")
    for _ in range(3):   # a click that lands while the page still settles opens nothing: try again
        page.locator(".jp-NotebookPanel:visible .jp-NotebookPanel-notebook").click()
        page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
        page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
        page.wait_for_timeout(3000)
        if any(t.strip() != "[ ]:" for t in prompts.all_inner_texts()):
            break
    deadline = time.monotonic() + NOTEBOOK_SECONDS
    while time.monotonic() < deadline:
        texts = prompts.all_inner_texts()
        if texts and all(any(ch.isdigit() for ch in t) and "*" not in t for t in texts):
            return
        errors = [p for p in _problems(page) if p.startswith("error")]
        if errors:   # Run All stops at a failing cell: the later prompts would never get a number
            pytest.fail(f"{name}: a cell failed:\n" + "\n".join(errors))
        page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / f"{name}_timeout.png"))
    pytest.fail(f"{name}: not finished after {NOTEBOOK_SECONDS} s (prompts {prompts.all_inner_texts()})")


def _shut_down_kernels(base: str) -> None:
    """What closing a notebook with "Shut Down Kernel" does: no kernel keeps running into the next notebook."""
    with urllib.request.urlopen(f"{base}/api/kernels?token={TOKEN}", timeout=10) as response:
        kernels = json.loads(response.read())
    for kernel in kernels:
        request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={TOKEN}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def _problems(page) -> list[str]:
    """Error outputs and stderr output of the notebook, as text."""
    found = []
    for kind in ("application/vnd.jupyter.error", "application/vnd.jupyter.stderr"):
        outputs = page.locator(f".jp-OutputArea-output[data-mime-type='{kind}']")
        found += [f"{kind.rsplit('.', 1)[1]}: {text[:500]}" for text in outputs.all_inner_texts()]
    return found


def _logged(page) -> list[str]:
    """What JupyterLab's Log Console holds: output that belongs to no cell, e.g. a widget callback's traceback."""
    page.locator(".lm-MenuBar-itemLabel:text-is('View')").click()
    page.locator(".lm-Menu-itemLabel:text-is('Show Log Console')").click()
    page.wait_for_selector(".jp-LogConsolePanel", timeout=10_000)
    page.wait_for_timeout(500)
    entries = page.locator(".jp-LogConsolePanel .jp-OutputArea-output").all_inner_texts()
    return [f"log console: {text[:500]}" for text in entries if text.strip()]


def _controls(explorer) -> list[tuple[str, object]]:
    """Every control of an explorer, as (kind, locator)."""
    found = []
    for kind, selector in (("dropdown", ".widget-dropdown select"), ("slider", ".widget-slider .noUi-handle"),
                           ("checkbox", ".widget-checkbox input"), ("toggle", ".widget-toggle-buttons")):
        items = explorer.locator(selector)
        found += [(kind, items.nth(i)) for i in range(items.count())]
    return found


def _change(page, kind: str, control, back: bool) -> tuple[str, str]:
    """Change a control one step (``back``: undo that step); (what was done, the label chosen or '')."""
    if kind == "dropdown":
        options = control.locator("option").all_inner_texts()
        chosen = options[0] if back else options[1]
        control.select_option(label=chosen)
        return f"{kind} -> {chosen}", chosen
    if kind == "slider":
        control.focus()
        page.keyboard.press("ArrowLeft" if back else "ArrowRight")
        return f"{kind} {'-' if back else '+'}1 step", ""
    if kind == "checkbox":
        control.click()
        return f"{kind} {'on' if control.is_checked() else 'off'}", ""
    button = control.locator("button").nth(0 if back else 1)
    button.click()
    return f"{kind} -> {button.inner_text()}", button.inner_text()


# What the explorer's text must say after a control changed to ``label`` (beyond "it changed and comes back").
EXPECTED_TEXT = {
    ("00_quickstart", "toggle"): "DM class → AU ({label})",         # the reduction names the DM loss row
    ("02_affect_case_study", "dropdown"): "{label} test",           # the face shown is from the chosen test set
    ("05_zero_few_shot", "dropdown"): "true class {label}",         # a face of the chosen compound class
}


def _state(page, explorer, differs_from=None, equals=None, seconds: float = 20) -> dict:
    """The explorer's state once it settled (two reads 0.5 s apart agree: image and text arrive as separate
    messages), waiting up to ``seconds`` for it to differ from ``differs_from`` or to equal ``equals``."""
    deadline = time.monotonic() + seconds
    state = explorer.evaluate(STATE_JS)
    while True:
        page.wait_for_timeout(500)
        previous, state = state, explorer.evaluate(STATE_JS)
        if state != previous:
            continue
        if differs_from is None and equals is None:
            return state
        if (differs_from is not None and state != differs_from) or (equals is not None and state == equals):
            return state
        if time.monotonic() > deadline:
            return state


def _exercise(page, name: str, index: int, explorer) -> list[str]:
    """Change each control one step and back; problems found, screenshots under SHOTS."""
    explorer.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    explorer.screenshot(path=str(SHOTS / f"{name}_explorer{index}_0_before.png"))
    controls = _controls(explorer)
    problems = [] if controls else [f"explorer {index}: no controls"]
    for step, (kind, control) in enumerate(controls, start=1):
        if kind == "dropdown" and control.locator("option").count() < 2:
            continue
        before = _state(page, explorer)
        if kind == "slider":   # onto the slider's step grid first: one step back then lands where it started
            _change(page, kind, control, back=False)
            before = _state(page, explorer, differs_from=before)
        what, label = _change(page, kind, control, back=False)
        after = _state(page, explorer, differs_from=before)
        explorer.screenshot(path=str(SHOTS / f"{name}_explorer{index}_{step}_{kind}.png"))
        if after == before:
            problems.append(f"explorer {index}: {what}: the output did not change")
        expected = EXPECTED_TEXT.get((name, kind), "").format(label=label)
        if expected and expected not in after["text"]:
            problems.append(f"explorer {index}: {what}: the text does not say {expected!r}")
        _change(page, kind, control, back=True)
        if _state(page, explorer, equals=before) != before:
            problems.append(f"explorer {index}: {what} and back: the output did not return to its state before")
        if kind == "slider":   # and the step onto the grid: the next control starts from the first face
            _change(page, kind, control, back=True)
            _state(page, explorer, differs_from=before)
    return problems


@pytest.mark.parametrize("notebook", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab_and_its_explorers_respond(lab, chromium, notebook):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _run_all(page, lab, notebook)
        problems = _problems(page)
        explorers = page.locator(".jp-OutputArea-output:has(.widget-image)")
        if not explorers.count():
            problems.append("no explorer (an output with an ipywidgets Image) after Run All")
        for index in range(explorers.count()):
            problems += _exercise(page, notebook, index, explorers.nth(index))
        problems += [f"after the explorers: {p}" for p in _problems(page)] + _logged(page)
        page.screenshot(path=str(SHOTS / f"{notebook}_window.png"))
    finally:
        page.close()
        _shut_down_kernels(lab)
    assert not problems, f"{notebook} in JupyterLab:\n  " + "\n  ".join(problems)


def _image_outputs(notebook: Path) -> int:
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    return sum("image/png" in out.get("data", {}) for cell in cells for out in cell.get("outputs", []))


def test_html_report_shows_every_figure(available, chromium, request):
    smoke_suite = request.getfixturevalue("smoke_suite")   # after `available`: no smoke run just to skip
    summary = smoke_suite.summary_html
    pages = [summary] + [nb.html for nb in smoke_suite.notebooks if nb.html]
    assert len(pages) == 1 + len(NOTEBOOKS), f"missing HTML exports: {[nb.html_error for nb in smoke_suite.notebooks]}"
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    broken, counts = [], {}
    RUN.mkdir(parents=True, exist_ok=True)
    try:
        for path in pages:
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.locator("img").evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth])")
            counts[path.name] = len(sizes)
            broken += [f"{path.name}: image {i} did not load" for i, (done, width) in enumerate(sizes)
                       if not done or width == 0]
        page.goto(summary.as_uri())
        page.screenshot(path=str(RUN / "report.png"), full_page=True)
    finally:
        page.close()
    assert not broken, "\n".join(broken)
    assert counts[summary.name] >= len(smoke_suite.notebooks), f"summary.html shows too few figures: {counts}"
    for nb in smoke_suite.notebooks:   # an exported notebook shows every figure its executed copy holds
        assert counts[nb.html.name] >= _image_outputs(nb.executed) > 0, (nb.name, counts)


@pytest.mark.parametrize("required", [False, True])
def test_without_chromium_the_tier_is_skipped_or_fails_when_required(required):
    env = {**os.environ, "FB_CHROMIUM": "/nonexistent/chromium", "FB_BROWSER_REQUIRED": "1" if required else "0"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", __file__,
                           "-k", "01_relatedness"], env=env, capture_output=True, text=True, cwd=ROOT)
    if required:
        assert done.returncode == 1 and "1 error" in done.stdout, done.stdout
        assert "browser tier required (FB_BROWSER_REQUIRED=1) but no Chromium (/nonexistent/chromium" in done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout
        assert "browser tier skipped: no Chromium (/nonexistent/chromium" in done.stdout
