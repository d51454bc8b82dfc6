"""The run report: the claims table of fbhelpers.claims decided on hand-written metrics, and summary.md /
summary.html built from a hand-made suite result (no notebook is executed here)."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fbhelpers import claims  # noqa: E402
from fbhelpers import report as suite_report  # noqa: E402  (the fixture below is "report")

CLAIMS_TIER = Path(__file__).with_name("test_claims.py")
# Notebook 00's records in the demo run (three seeds).
QUICKSTART = {
    "au_f1_unlabelled": {"mt": 0.2104, "mt_dm": 0.2913}, "au_f1_unlabelled_sd": {"mt": 0.0436, "mt_dm": 0.02},
    "au_f1_unlabelled_gain": {"mt_dm": 0.0809}, "au_f1_unlabelled_gain_min": {"mt_dm": 0.0514},
    "au_auc_unlabelled_gain_min": {"mt_dm": 0.1602},
}


def _claim(name: str) -> claims.Claim:
    return next(c for c in claims.CLAIMS if c.name == name)


def _with(metrics: dict, path: str, value) -> dict:
    """A copy of ``metrics`` with the dotted ``path`` set to ``value``."""
    name, key = path.split(".")
    return {**metrics, name: {**metrics[name], key: value}}


def test_every_claim_is_a_claims_tier_test_and_names_a_notebook():
    tests = set(re.findall(r"^def (test_\w+)\(", CLAIMS_TIER.read_text(), flags=re.M))
    assert {c.name for c in claims.CLAIMS} == tests
    assert all(re.fullmatch(r"\d\d_\w+", c.notebook) and c.question.endswith("?") for c in claims.CLAIMS)


def test_claim_holds_fails_is_na_and_says_one_seed():
    claim = _claim("test_dm_teaches_the_aus_no_source_labels")
    held = claims.decide(claim, QUICKSTART)
    assert (held.holds, held.one_seed) == (claims.HOLDS, False)
    assert held.measured == "0.291 ± 0.020 (gain +0.081, worst seed +0.051)"
    worse = claims.decide(claim, _with(QUICKSTART, "au_f1_unlabelled_gain_min.mt_dm", 0.01))
    assert worse.holds == claims.FAILS
    assert claims.decide(claim, {}).holds == claims.NOT_AVAILABLE and claims.decide(claim, None).measured == "n/a"
    no_auc = {k: v for k, v in QUICKSTART.items() if k != "au_auc_unlabelled_gain_min"}
    assert claims.decide(claim, no_auc).holds == claims.NOT_AVAILABLE      # a number the rule needs is missing
    one_seed = claims.decide(claim, _with(QUICKSTART, "au_f1_unlabelled_sd.mt_dm", None))
    assert (one_seed.holds, one_seed.one_seed, one_seed.measured) == (claims.HOLDS, True, "0.291 (gain +0.081)")


def test_a_bound_can_be_another_recorded_number():
    claim = _claim("test_zero_shot_compounds_from_the_au_head")
    assert claims.decide(claim, {"zero_shot_mean_accuracy": 0.38, "zero_shot_chance": 0.0909}).holds == claims.HOLDS
    assert claims.decide(claim, {"zero_shot_mean_accuracy": 0.15, "zero_shot_chance": 0.0909}).holds == claims.FAILS
    assert claims.decide(claim, {"zero_shot_mean_accuracy": 0.38}).holds == claims.NOT_AVAILABLE
    assert claims.decide(claim, {"zero_shot_mean_accuracy": 0.38}).one_seed is False   # no spread to miss


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(0.5, 0.5))
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture
def report(tmp_path):
    """summary.md / summary.html of a hand-made result: 00_quickstart with its metrics and one of its two key figures,
    01_relatedness_study failed without any number, and no executed notebook to export."""
    out = tmp_path / "run"
    figure = _png(out / "00_quickstart" / "comparison.png")
    other = _png(out / "00_quickstart" / "gallery.png")
    quick = suite_report.NotebookResult("00_quickstart", out / "00_quickstart.ipynb", out / "00_quickstart", 1.0,
                                        QUICKSTART, [figure, other])
    failed = suite_report.NotebookResult("01_relatedness_study", out / "01_relatedness_study.ipynb",
                                         out / "01_relatedness_study", 0.5, {}, [],
                                         suite_report.NotebookError(3, "x = 1", "ValueError", "boom"))
    result = suite_report.SuiteResult("demo", out, [quick, failed])
    for nb in result.notebooks:
        suite_report.export_html(nb)
    suite_report.write_summary(result)
    return result, figure


def test_summary_opens_with_the_claims_table_and_inlines_key_figures(report):
    result, _ = report
    md = result.summary_md.read_text()
    table = "| notebook | question | claim | measured (with spread) | holds? |"
    assert md.index(table) < md.index("## Notebooks") < md.index("## 00_quickstart") < md.index("| metric | value |")
    row = next(line for line in md.splitlines() if line.startswith("| 00_quickstart | Does distribution"))
    assert row.endswith("| yes |") and "`au_f1_unlabelled.mt_dm` 0.291 ± 0.020" in row
    relatedness = next(line for line in md.splitlines() if line.startswith("| 01_relatedness_study | Does"))
    assert relatedness.endswith("| n/a |")
    assert len([line for line in md.splitlines() if line.startswith("| 0") and line.count("|") == 6]) == 7
    assert "![comparison](00_quickstart/comparison.png)" in md
    assert "![per_au_f1]" not in md and "![gallery]" not in md     # missing key figure skipped, others only linked
    assert md.count("not exported: FileNotFoundError") == 2       # a failed export is reported, nothing raised


def test_summary_html_embeds_the_table_and_figures(report):
    result, figure = report
    page = result.summary_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<th>holds?</th>" in page and "<td>yes</td>" in page
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [figure.read_bytes()]
    assert '<img src="00_quickstart/' not in page                    # no image left to a relative path


def test_one_seed_run_says_so_in_the_table(tmp_path):
    metrics = _with(QUICKSTART, "au_f1_unlabelled_sd.mt_dm", None)
    result = suite_report.SuiteResult("smoke", tmp_path, [suite_report.NotebookResult(
        "00_quickstart", tmp_path / "00_quickstart.ipynb", tmp_path / "00_quickstart", 1.0, metrics, [])])
    assert any(line.endswith("| yes (1 seed) |") for line in suite_report.claims_lines(result))
