"""The test tiers (docs/testing.md#tiers): every collected test carries exactly one registered tier marker, and every
entry of conftest's ``FILE_TIERS`` / ``TEST_TIERS`` names a test that exists (a renamed slow test would otherwise
fall back to the unit tier unnoticed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

from conftest import FILE_TIERS, ROOT, TEST_TIERS, TIERS

PLUGIN = '''
import json, os

def pytest_collection_finish(session):
    tiers = os.environ["FB_TIERS"].split(",")
    rows = {item.nodeid: [m.name for m in item.iter_markers() if m.name in tiers] for item in session.items}
    with open(os.environ["FB_TIERS_OUT"], "w") as f:
        json.dump(rows, f)
'''


def test_every_collected_test_has_exactly_one_tier(tmp_path):
    (tmp_path / "tier_dump.py").write_text(PLUGIN)
    out = tmp_path / "tiers.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "FB_TIERS": ",".join(TIERS), "FB_TIERS_OUT": str(out)}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers",
                           "-p", "no:cacheprovider", "-p", "tier_dump", "tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) > 500  # the whole suite, not one file
    wrong = {node: tiers for node, tiers in rows.items() if len(tiers) != 1}
    assert not wrong, f"tests without exactly one tier marker of {TIERS}: {wrong}"
    files = {node.split("::")[0].rsplit("/", 1)[-1] for node in rows}
    tests = {f"{node.split('::')[0].rsplit('/', 1)[-1]}::{node.split('::')[-1].split('[')[0]}" for node in rows}
    assert sorted(set(FILE_TIERS) - files) == [] and sorted(set(TEST_TIERS) - tests) == []
    for key, tier in TEST_TIERS.items():
        assert all(t == [tier] for n, t in rows.items() if n.endswith(key) or f"{key}[" in n), key
    counts = {tier: sum(t == [tier] for t in rows.values()) for tier in TIERS}
    assert all(counts[tier] > 0 for tier in TIERS), counts


def test_tier_tables_name_registered_tiers():
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert set(TIERS) <= {line.split(":")[0] for line in markers}
    assert set(FILE_TIERS.values()) | set(TEST_TIERS.values()) <= set(TIERS) - {"unit"}
