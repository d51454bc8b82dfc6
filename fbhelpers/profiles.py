"""Run profiles: one flat dict of settings per notebook per profile, and the notebooks' set-up cell.

docs/design.md#profiles: every notebook reads one parameter ``PROFILE``:

- ``smoke``: CI; synthetic data, tiny sizes; a whole notebook well under a minute on 2 CPU cores.
- ``demo``: the default main job; synthetic twins sized to show the method's effects on a CPU in minutes.
- ``paper``: real datasets from the data root, paper-like sizes and backbones (P1 §5, P2 §5), GPU.

Settings (the same keys for every notebook, so one ``-p KEY VALUE`` applies across the suite):

- ``data``: "synthetic" (a twin from ``fbhelpers.synthetic``) or "real" (loaders under the data root).
- ``image_size``: side in pixels of the (square) images fed to the network.
- ``n_scale``: multiplier on sample counts: synthetic -> the twin's default sizes, real -> fraction of each
  dataset used (1.0 = all).
- ``steps``: optimisation steps per trained model. ``eval_every``: steps between evaluations (0 = at the end only).
- ``quota``: images per source in each multi-source batch (batch size = quota x number of sources).
- ``n_seeds``: repetitions per configuration (seeds ``SEED, SEED+1, ...``; docs/method.md#seeds-and-spread: keep
  every result over several seeds). ``backbone``: a name of ``fbhelpers.models.BACKBONES``.
- ``device``: preferred device when the notebook's ``DEVICE`` parameter is "auto": "cpu", "cuda" or "auto".
- ``backbone_kw``: keyword arguments of the backbone factory (e.g. ``{"widths": [16, 32, 64, 128]}`` for a
  narrower cnn4 on a CPU; {} = the backbone's defaults).
- ``ablation``: the reconstructed-choice variants notebook 02 runs beside the defaults (names of
  ``fbhelpers.experiments.ABLATIONS``; docs/method.md#coupling-terms).
- ``n_classes``: classes of a class + attribute study (identities, species; P1 §5 / P2 §5): the size of a
  synthetic twin, or the first ``n_classes`` classes of a real dataset (0 = all of them).

Values are first guesses **[choice]**; each notebook's author tunes its own rows.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

from . import train
from .experiments import ABLATIONS
from .files import write_json_atomic
from .paths import DATASETS, ENV_DATA_ROOT, NOTEBOOKS, data_root, notebook_key  # noqa: F401 (profiles.X too)
from .recording import configure

# notebook 02's ablations: the papers' reconstructed [choice]s, presets of the flat coann/dm fields (its smoke
# references record them); a preset of a coupling term beyond the papers selects it through ``couplings`` (e.g.
# mt_dm_js, Jensen–Shannon) and is run by benchmarks/compare_coupling.py instead
_ALL_ABLATIONS = [name for name, preset in ABLATIONS.items() if "couplings" not in preset]
_BASE: dict[str, dict[str, Any]] = {
    "smoke": dict(data="synthetic", image_size=24, n_scale=0.1, steps=30, eval_every=0, quota=8, n_seeds=1,
                  backbone="cnn4", device="cpu", backbone_kw={}, n_classes=8, ablation=_ALL_ABLATIONS),
    "demo": dict(data="synthetic", image_size=48, n_scale=1.0, steps=400, eval_every=100, quota=32, n_seeds=2,
                 backbone="cnn4", device="auto", backbone_kw={}, n_classes=20, ablation=_ALL_ABLATIONS),
    "paper": dict(data="real", image_size=112, n_scale=1.0, steps=20000, eval_every=1000, quota=64, n_seeds=1,
                  backbone="vgg16", device="auto", backbone_kw={}, n_classes=0, ablation=_ALL_ABLATIONS),
}
# The faces of notebooks 00 and 02 on a CPU: a narrow cnn4 that keeps a 3 x 3 layout before the heads (the
# localised AUs need it; see benchmarks/compare_coupling.py) and 600 steps, the shortest run in which the
# expression head is good enough for distribution matching to show on the unlabelled AUs.
_FACES_CPU = dict(steps=600, eval_every=0, backbone_kw={"widths": [8, 16, 32, 64], "pool": 3})
_SLIM_OBJECTS = {"widths": [16, 32, 64, 128]}
_PER_NOTEBOOK: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "00": dict(backbone_kw={"widths": [4, 8, 16, 16], "pool": 3}),
        "01": dict(image_size=48),
        "02": dict(backbone_kw={"widths": [4, 8, 16, 16], "pool": 3}),
        "03": dict(image_size=32, steps=12, quota=4, backbone_kw={"widths": [8, 16, 32, 32]}),
        "04": dict(image_size=32, steps=12, quota=4, backbone_kw={"widths": [8, 16, 32, 32]}),
        "05": dict(image_size=48, steps=40),
    },
    # three seeds wherever a notebook compares trained networks (docs/method.md#seeds-and-spread: every claim with its
    # spread)
    "demo": {
        "00": dict(_FACES_CPU, n_seeds=3),
        "01": dict(n_seeds=1),
        "02": dict(_FACES_CPU, n_seeds=3, ablation=["mt_dm_sum", "mt_coann_hard", "mt_dm_kl"]),
        "03": dict(image_size=32, steps=200, quota=16, eval_every=0, n_classes=10, n_seeds=3,
                    backbone_kw=_SLIM_OBJECTS),
        "04": dict(image_size=32, steps=200, quota=16, eval_every=0, n_classes=10, n_seeds=3,
                    backbone_kw=_SLIM_OBJECTS),
        "05": dict(_FACES_CPU, n_scale=0.5, n_seeds=3),
    },
    "paper": {
        "03": dict(backbone="resnet50"),
        "04": dict(backbone="resnet50", image_size=224),
    },
}

#: profile -> notebook stem -> settings (flat dicts).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    profile: {stem: {**base, **_PER_NOTEBOOK[profile].get(key, {})} for key, stem in NOTEBOOKS.items()}
    for profile, base in _BASE.items()
}


def _check_type(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or isinstance(default, str):
        ok = isinstance(value, type(default))
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ValueError(f"setting {key!r}: expected {type(default).__name__} like {default!r}, got {value!r}")
    return value


def resolve(notebook: str, profile: str, **overrides: Any) -> dict[str, Any]:
    """Settings of ``notebook`` ("02" or its stem) under ``profile``, with ``overrides`` of single keys.

    KeyError naming an unknown profile / notebook / key and the valid ones; ValueError for a value of the wrong
    type. docs/design.md#profiles ("other parameters override single values").
    """
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; valid: {sorted(PROFILES)}")
    settings = dict(PROFILES[profile][notebook_key(notebook)])
    for key, value in overrides.items():
        if key not in settings:
            raise KeyError(f"unknown setting {key!r} for notebook {notebook!r}; valid: {sorted(settings)}")
        settings[key] = _check_type(key, value, settings[key])
    return settings


def resolve_device(device: str | None, preferred: str = "auto") -> str:
    """A concrete torch device string: ``device`` unless None/"auto", then ``preferred``; "auto" -> "cuda" when
    available, else "cpu" **[choice: MPS only when asked for by name]**. ValueError for a malformed name or CUDA
    asked for and absent (``train.resolve_device``)."""
    import torch

    choice = preferred if device in (None, "", "auto") else str(device)
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    train.resolve_device(choice)
    return choice


def setup(
    PROFILE: str = "demo",
    SEED: int = 0,
    DEVICE: str | None = "auto",
    OUTPUT_DIR: str | os.PathLike | None = None,
    *,
    notebook: str,
    **overrides: Any,
) -> dict[str, Any]:
    """The cell after the parameters cell: resolve ``notebook``'s settings for ``PROFILE`` (+ ``overrides``),
    seed random/numpy/torch with ``SEED``, point ``record()`` at ``OUTPUT_DIR`` and resolve ``DEVICE``.

    Returns the settings plus ``profile``, ``notebook``, ``seed``, ``seeds`` (``[SEED, ..., SEED+n_seeds-1]``),
    ``device`` (concrete) and ``output_dir``; also written to ``<output_dir>/config.json``. docs/design.md#profiles.
    """
    settings = resolve(notebook, PROFILE, **overrides)
    out = configure(OUTPUT_DIR, seed=int(SEED))
    device = resolve_device(DEVICE, settings["device"])
    if PROFILE == "paper" and device == "cpu":
        warnings.warn("profile 'paper' on a CPU: expect hours; pass DEVICE='cuda' on a GPU machine", stacklevel=2)
    config = {
        **settings,
        "profile": PROFILE,
        "notebook": notebook_key(notebook),
        "seed": int(SEED),
        "seeds": [int(SEED) + i for i in range(settings["n_seeds"])],
        "device": device,
        "output_dir": str(out),
    }
    write_json_atomic(out / "config.json", config)
    return config
