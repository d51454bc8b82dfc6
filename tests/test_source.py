"""fbhelpers.source.annotation_coverage: the per-source label map of a multi-source study (P0 §4, P1 §4)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbhelpers.source import annotation_coverage
from fbhelpers.tasks import AU, EXPR, VA
from helpers import blank_source


def test_coverage_fractions_per_source_and_label():
    n = 4
    nan = np.full(n, np.nan)
    expr = blank_source("expr", pd.DataFrame({"expr": pd.array([0, 1, None, 3], dtype="Int64"),
                                              **{a: nan for a in AU.labels}, "valence": [0.1, 0.2, 0.3, np.nan],
                                              "arousal": [0.0, 0.1, np.nan, np.nan]}))
    aus = blank_source("aus", pd.DataFrame({"expr": pd.array([None] * n, dtype="Int64"),
                                            **{a: (np.ones(n) if a in ("AU1", "AU2") else nan) for a in AU.labels},
                                            "valence": nan, "arousal": nan}))
    cov = annotation_coverage({"expr": expr, "aus": aus}, (EXPR, AU, VA))
    assert list(cov.index) == ["expr", "aus"] and cov.shape == (2, 1 + 17 + 2)
    assert cov.loc["expr", "expr"] == pytest.approx(0.75)
    assert cov.loc["expr", "valence"] == pytest.approx(0.75) and cov.loc["expr", "arousal"] == pytest.approx(0.5)
    assert cov.loc["aus", "AU1"] == pytest.approx(1.0) and cov.loc["aus", "AU4"] == pytest.approx(0.0)
    assert cov.loc["aus", "expr"] == pytest.approx(0.0)
    assert list(cov.columns[cov.max() == 0]) == [a for a in AU.labels if a not in ("AU1", "AU2")]
    broken = blank_source("broken", pd.DataFrame({"expr": pd.array([1], dtype="Int64"),
                                                  **{a: [1.0] for a in AU.labels}}))
    with pytest.raises(KeyError, match=r"'broken'.*\['valence', 'arousal'\]"):
        annotation_coverage({"broken": broken}, (EXPR, AU, VA))
