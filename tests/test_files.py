"""fbhelpers.files: every file fbhelpers writes appears whole or not at all; stored settings compare equal."""
import os

import numpy as np
import pytest

from fbhelpers.files import atomic_path, plain_data


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_plain_data_is_what_a_weights_only_round_trip_gives():
    value = {"widths": (8, np.int64(16)), 3: {"lr": np.float32(0.5), "names": ("a", "b")}, "none": None}
    assert plain_data(value) == {"widths": [8, 16], "3": {"lr": 0.5, "names": ["a", "b"]}, "none": None}
    assert type(plain_data(value)["widths"][1]) is int
