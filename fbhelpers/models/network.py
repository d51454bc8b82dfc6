"""The multi-head network (P1 §4, P0 §3): one shared backbone, one head per task, and the spec that rebuilds it."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fbhelpers.files import plain_data
from fbhelpers.relatedness import Relatedness
from fbhelpers.study import Coupling
from fbhelpers.tasks import Task

from .backbones import build_backbone, load_weights

# ----------------------------------------------------------------------------------------------- network
def output_probabilities(kind: str, output: torch.Tensor) -> torch.Tensor:
    """What a :class:`MultiHeadNet` output means for a task of ``kind``: softmax (multiclass), sigmoid
    (multilabel), the values themselves (regression, already in [-1, 1])."""
    if kind == "multiclass":
        return torch.softmax(output, dim=1)
    return torch.sigmoid(output) if kind == "multilabel" else output


REGRESSION_INITS: tuple[str, ...] = ("zeros", "default")


class MultiHeadNet(nn.Module):
    """FaceBehaviorNet-style network (P1 §4, P0 §3): shared backbone -> features ``(B, D)`` -> dropout -> one
    linear head per task (``nn.ModuleDict`` keyed by ``task.name``).

    ``forward(x)`` takes float images ``(B, C, H, W)`` in [0, 1] and returns ``{task.name: (B, n_outputs)}``:
    logits for multiclass / multilabel tasks, ``tanh`` values in [-1, 1] for regression tasks (VA).
    Inputs are normalised inside with fixed per-channel ``mean`` / ``std`` buffers ([choice] 0.5 / 0.25;
    :data:`VGGFACE_MEAN` / :data:`VGGFACE_STD` for VGG-FACE weights). ``pretrained_path`` loads a local state
    dict into the backbone (:func:`load_weights`, strict, renamed by ``pretrained_prefix_map``); extra keyword
    arguments go to the backbone factory. P2 §4: any backbone of :data:`BACKBONES` works.

    ``head_inputs`` [choice, not in P0-P2; default None = every head on the shared features, as FaceBehaviorNet]:
    ``{task: source_task}`` makes ``task``'s head a linear layer over the *probabilities* of ``source_task``'s
    head (sigmoid for multilabel, softmax for multiclass, the values for regression), with the gradient stopped
    there, so ``task`` trains only that small layer and its loss never reaches the shared trunk. For a class
    visible only through its attributes (an expression through its AUs, the SynthFaces story), ``{"expr": "au"}``
    is a 17 x 7 classifier that cannot memorise the faces whose label the AUs leave ambiguous, where a head on
    the features can (``benchmarks/learnability.py``, docs/results.md#synthfaces-learnability). The head's shape depends
    on it, so a saved state dict loads only into a model built with the same ``head_inputs``.

    ``regression_init`` [choice, not in P0-P2; default ``"zeros"``]: how the heads of regression tasks (VA)
    start. ``"zeros"`` sets their weight and bias to 0, so every face starts at the prediction 0 (the centre of
    [-1, 1]); ``"default"`` keeps PyTorch's random ``nn.Linear`` initialisation (the behaviour before the
    zero start). Why: the CCC loss (P1 §3, docs/method.md#valence-and-arousal-ccc-loss) has d(1 - CCC)/d(mean
    prediction) = 4 cov (mu_p - mu_t) / D^2, so while an output's covariance with its target is negative (a random head:
    half the outputs) gradient descent pushes its mean *away* from the target mean, into the flat part of ``tanh``,
    where the gradient vanishes (tanh' < 1e-6 at |z| = 8) and the output never comes back: its CCC stays 0. A zero head
    has covariance 0 at the start, no gradient on its mean, and a first update along the covariance with the
    targets (``benchmarks/va_collapse.py``: 1 of 8 seeds collapsed to VA CCC 0.36 with random heads, none with
    zero heads). The random draws of the other parameters are the same either way (the head is drawn, then
    zeroed). Not part of :meth:`spec`: a loaded model takes its weights from the file.

    What prediction on new images needs is kept in a model file (:func:`save`) and set by :func:`load`:
    ``input_size`` (H, W, None until known), ``couplings``, ``tables``, ``thresholds`` and ``metadata``.
    """

    def __init__(self, tasks: Sequence[Task], backbone: str = "cnn4", in_channels: int = 3, dropout: float = 0.0,
                 pretrained_path: str | os.PathLike | None = None,
                 pretrained_prefix_map: Mapping[str, str | None] | None = None,
                 mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.25,
                 head_inputs: Mapping[str, str] | None = None, regression_init: str = "zeros",
                 **backbone_kw) -> None:
        super().__init__()
        if regression_init not in REGRESSION_INITS:
            raise ValueError(f"regression_init must be one of {REGRESSION_INITS}, got {regression_init!r}")
        tasks = tuple(tasks)
        if not tasks:
            raise ValueError("MultiHeadNet needs at least one task")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names in {names}")
        bad = [n for n in names if not n or "." in n]
        if bad:
            raise ValueError(f"task names must be non-empty and contain no '.', got {bad}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.tasks = tasks
        self.in_channels = int(in_channels)
        self.backbone_name = backbone
        self.backbone_options = dict(backbone_kw)
        self.dropout_p = float(dropout)
        self.backbone = build_backbone(backbone, in_channels, **backbone_kw)
        if pretrained_path is not None:
            load_weights(self.backbone, pretrained_path, strict=True, prefix_map=pretrained_prefix_map)
        self.feature_dim: int = self.backbone.out_dim
        self.register_buffer("mean", self._channel_stat(mean, "mean"))
        self.register_buffer("std", self._channel_stat(std, "std"))
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {std}")
        self.dropout = nn.Dropout(dropout)
        by_name = {t.name: t for t in tasks}
        self.head_inputs: dict[str, str] = dict(head_inputs or {})
        for name, source in self.head_inputs.items():
            if name not in by_name or source not in by_name:
                unknown = [n for n in (name, source) if n not in by_name]
                raise ValueError(f"head_inputs {name!r}: {source!r} names unknown tasks {unknown}; tasks: {names}")
            if source == name or source in self.head_inputs:
                raise ValueError(f"head_inputs {name!r}: {source!r} must be a task whose head reads the shared "
                                 f"features (no self-reference or chain), got {self.head_inputs}")
        self.heads = nn.ModuleDict({t.name: nn.Linear(
            by_name[self.head_inputs[t.name]].n_outputs if t.name in self.head_inputs else self.feature_dim,
            t.n_outputs) for t in tasks})
        if regression_init == "zeros":
            for t in tasks:
                if t.kind == "regression":
                    nn.init.zeros_(self.heads[t.name].weight)
                    nn.init.zeros_(self.heads[t.name].bias)
        self._kinds = {t.name: t.kind for t in tasks}
        self.input_size: tuple[int, int] | None = None
        self.couplings: list[Coupling] = []
        self.tables: dict[str, Relatedness] = {}
        self.thresholds: dict[str, np.ndarray] = {}
        self.metadata: dict[str, Any] = {}

    def spec(self) -> dict[str, Any]:
        """Everything :func:`build` needs to rebuild this network (plain lists, dicts, strings and numbers, so it
        travels inside a ``weights_only`` file): tasks with their labels, backbone name and options, input
        channels, dropout, normalisation and ``head_inputs``. Pretrained weights are not part of it: the saved
        state dict carries them."""
        return {
            "tasks": [{"name": t.name, "kind": t.kind, "labels": list(t.labels)} for t in self.tasks],
            "backbone": self.backbone_name, "backbone_options": plain_data(self.backbone_options),
            "in_channels": self.in_channels, "dropout": self.dropout_p,
            "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
            "head_inputs": dict(self.head_inputs),
        }

    def _channel_stat(self, value: float | Sequence[float], what: str) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if t.numel() not in (1, self.in_channels):
            raise ValueError(f"{what} needs 1 or in_channels={self.in_channels} values, got {t.numel()}")
        return t.expand(self.in_channels).reshape(1, self.in_channels, 1, 1).clone()

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {got}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels (B, C, H, W), got {x.shape[1]} "
                             f"in shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared features ``(B, feature_dim)`` of images in [0, 1] (P1 §4 shared layers; used by few-shot
        probes, docs/method.md#zero-shot-and-few-shot)."""
        self._check(x)
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """``{task.name: (B, n_outputs)}``, plus the features ``(B, D)`` when ``return_features``."""
        feats = self.features(x)
        h = self.dropout(feats)
        out = {name: self._activate(name, head(h)) for name, head in self.heads.items()
               if name not in self.head_inputs}
        for name, source in self.head_inputs.items():
            inputs = output_probabilities(self._kinds[source], out[source]).detach()
            out[name] = self._activate(name, self.heads[name](inputs))
        out = {name: out[name] for name in self.heads}  # the tasks' order
        return (out, feats) if return_features else out

    def _activate(self, name: str, y: torch.Tensor) -> torch.Tensor:
        """A head's output: ``tanh`` for regression tasks, the logits otherwise."""
        return torch.tanh(y) if self._kinds[name] == "regression" else y


SPEC_KEYS: tuple[str, ...] = ("tasks", "backbone", "backbone_options", "in_channels", "dropout", "mean", "std",
                              "head_inputs")


def build(spec: Mapping[str, Any]) -> MultiHeadNet:
    """The (untrained) :class:`MultiHeadNet` described by ``spec`` (:meth:`MultiHeadNet.spec`); ValueError naming the
    missing keys or the bad task entry."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"model spec lacks {missing} (has {sorted(spec)})")
    try:
        tasks = tuple(Task(t["name"], t["kind"], tuple(t["labels"])) for t in spec["tasks"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"model spec: each task needs name, kind and labels, got {spec['tasks']!r}") from err
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["backbone_options"].items()}
    return MultiHeadNet(tasks, spec["backbone"], in_channels=int(spec["in_channels"]), dropout=float(spec["dropout"]),
                        mean=spec["mean"], std=spec["std"], head_inputs=spec["head_inputs"] or None, **options)
