"""environment.yml (conda users) must name the same packages at the same versions as requirements.txt (pip)."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirement {line!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def test_requirements_are_pinned_and_torch_exact():
    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_section) == 1, "environment.yml needs exactly one pip: section"
    conda_pins = _pins(pip_section[0]["pip"])
    pip_pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert conda_pins == pip_pins
    assert "-e ." in pip_section[0]["pip"]
