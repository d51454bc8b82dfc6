"""Backbones by name and the multi-head network (one shared trunk, one head per task).

P1 (arXiv 2105.03790) §4 builds FaceBehaviorNet on VGG-FACE: VGG-16 convolutional layers and fully connected
layers, shared by all tasks, with one output layer per task (softmax expressions, sigmoid AUs, tanh valence /
arousal). P2 (arXiv 2401.01219) shows the coupling losses are network-agnostic (ResNet and others), so the
backbone is a name in :data:`BACKBONES`. Everything is plain torch (no torchvision) and nothing is ever
downloaded: pretrained weights come from a local file through :func:`load_weights`.

A trained network travels as one *model file* (:func:`save`, :func:`load`, :func:`save_from_checkpoint`): its
spec, weights, input size, relatedness tables, decision thresholds and metadata, read back with
``torch.load(weights_only=True)`` and rebuilt without the code of the run that trained it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fbhelpers.files import plain_data, read_weights_only, save_torch
from fbhelpers.relatedness import Relatedness
from fbhelpers.study import Coupling
from fbhelpers.tasks import Task

BACKBONES: dict[str, Callable[..., nn.Module]] = {}

# Keys of the converted VGG-FACE model (Albanie's ``vgg_face_dag``: conv1_1 .. conv5_3, fc6, fc7, fc8) -> ours.
VGGFACE_PREFIX_MAP: dict[str, str | None] = {
    **{f"conv{b}_{i}.": f"features.{n}." for (b, i), n in zip(
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3), (5, 1), (5, 2), (5, 3)],
        [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    )},
    "fc6.": "fc6.", "fc7.": "fc7.", "fc8.": None,
}
# Input statistics published with that model (RGB, 0-255 scale, std 1), rescaled to our [0, 1] inputs.
VGGFACE_MEAN: tuple[float, float, float] = (129.186279296875 / 255, 104.76238250732422 / 255, 93.59396362304688 / 255)
VGGFACE_STD: float = 1 / 255


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a backbone factory ``f(in_channels=3, **kw) -> nn.Module with .out_dim`` to
    :data:`BACKBONES` (LibMTL-style registry; P2 §4: the method does not depend on the network)."""
    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = factory
        return factory
    return add


def build_backbone(name: str, in_channels: int = 3, **kw) -> nn.Module:
    """The registered backbone ``name`` mapping ``(B, in_channels, H, W)`` to features ``(B, out_dim)``.

    Registered: ``cnn4`` (small CPU CNN), ``vgg16`` (VGG-FACE layout, P1 §4), ``resnet18``, ``resnet50``
    (P2 §4). ``kw`` go to the factory (e.g. ``widths`` for cnn4, ``fc_width`` for vgg16).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered backbones are {sorted(BACKBONES)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    module = BACKBONES[name](in_channels=in_channels, **kw)
    if not isinstance(getattr(module, "out_dim", None), int):
        raise ValueError(f"backbone {name!r} has no integer attribute out_dim")
    return module


def _init_conv_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------- cnn4
class CNN4(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks, then an adaptive average pool to a ``pool`` x ``pool`` grid, flattened:
    a CPU-friendly trunk for synthetic twins (METHOD.md §7 prototype). ``out_dim = widths[-1] * pool**2``.
    [choice] ``widths=(32, 64, 128, 256)``; ``pool=1`` is the usual global average pool, ``pool=3`` keeps a coarse
    layout (brows / eyes / mouth of an aligned face), which the localised AUs of a face need."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256), pool: int = 1) -> None:
        super().__init__()
        if not (isinstance(pool, int) and pool >= 1):
            raise ValueError(f"cnn4: pool must be a positive integer, got {pool!r}")
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.out_dim = int(c) * pool * pool
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


@register_backbone("cnn4")
def cnn4(in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256), pool: int = 1) -> nn.Module:
    """Small 4-block CNN (see :class:`CNN4`)."""
    return CNN4(in_channels, widths, pool)


# ----------------------------------------------------------------------------------------------- vgg16
class VGG16(nn.Module):
    """VGG-16 as in VGG-FACE (P1 §4): 13 conv layers under ``features.N`` (torchvision indices 0, 2, ..., 28;
    max-pools at 4, 9, 16, 23, 30), adaptive average pooling to ``pool_size`` x ``pool_size``, then ``fc6`` and
    ``fc7`` (Linear + ReLU + dropout) of width ``fc_width``; ``out_dim = fc_width``. ``fc_width=None`` drops
    fc6/fc7 and global-average-pools the conv features instead (``out_dim = 512``).

    Any input of at least 32 px works (48 px ends at 1 x 1 after the five pools; the adaptive pool then
    replicates it, as torchvision does). A converted VGG-FACE state dict loads with
    ``load_weights(net, path, prefix_map=VGGFACE_PREFIX_MAP)`` (use :data:`VGGFACE_MEAN` / :data:`VGGFACE_STD`
    as the input normalisation of :class:`MultiHeadNet`). [choice] ``fc_width=4096``, ``fc_dropout=0.5``
    (VGG-FACE values), ``pool_size=7`` (what fc6 of VGG-FACE expects).
    """

    CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                  512, 512, 512, "M")

    def __init__(self, in_channels: int = 3, fc_width: int | None = 4096, fc_dropout: float = 0.5,
                 pool_size: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        if fc_width is None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.out_dim = c
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
            self.fc6 = nn.Linear(c * pool_size * pool_size, fc_width)
            self.fc7 = nn.Linear(fc_width, fc_width)
            self.drop = nn.Dropout(fc_dropout)
            self.out_dim = int(fc_width)
        self.fc_width = fc_width
        _init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        if self.fc_width is None:
            return x
        x = self.drop(torch.relu(self.fc6(x)))
        return self.drop(torch.relu(self.fc7(x)))


@register_backbone("vgg16")
def vgg16(in_channels: int = 3, fc_width: int | None = 4096, fc_dropout: float = 0.5,
          pool_size: int = 7) -> nn.Module:
    """VGG-16 in the VGG-FACE layout (see :class:`VGG16`; P1 §4)."""
    return VGG16(in_channels, fc_width, fc_dropout, pool_size)


# ----------------------------------------------------------------------------------------------- resnets
class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs), torchvision parameter names."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3 with the stride, 1x1), torchvision parameter names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk (He et al. 2016) with torchvision names ``conv1, bn1, layer1..layer4`` and no ``fc``, so a
    converted torchvision / VGGFace2 state dict loads (drop its classifier with ``prefix_map={"fc.": None}``);
    global average pool, ``out_dim = 512 * block.expansion`` (P2 §4: the method is network-agnostic)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
                 in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = 512 * block.expansion
        _init_conv_bn(self)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, n: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


@register_backbone("resnet18")
def resnet18(in_channels: int = 3) -> nn.Module:
    """ResNet-18 trunk, ``out_dim = 512`` (P2 §4)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels)


@register_backbone("resnet50")
def resnet50(in_channels: int = 3) -> nn.Module:
    """ResNet-50 trunk, ``out_dim = 2048`` (P2 §4)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels)


# ----------------------------------------------------------------------------------------------- weights
def load_weights(module: nn.Module, path: str | os.PathLike, strict: bool = True,
                 prefix_map: Mapping[str, str | None] | None = None) -> tuple[list[str], list[str]]:
    """Load a local state dict (raw, or under ``"model"`` / ``"state_dict"``) into ``module``; never downloads.

    ``torch.load(path, map_location="cpu", weights_only=True)``. ``prefix_map`` renames keys of the file: the
    longest matching prefix is replaced by its value, or the key is dropped when the value is ``None`` (e.g.
    ``{"module.": ""}`` for DDP checkpoints, ``{"fc.": None}`` for a torchvision ResNet classifier,
    :data:`VGGFACE_PREFIX_MAP` for VGG-FACE, P1 §4). A shape mismatch raises ValueError naming the parameter,
    the file and both shapes; with ``strict`` missing / unexpected keys raise too (before anything is copied).
    Returns ``(missing, unexpected)`` key lists.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"could not read weights from {os.fspath(path)!r} (weights_only=True): {err}") from err
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{os.fspath(path)!r} holds no state dict (a mapping of names to tensors, "
                         f"optionally under 'model' or 'state_dict')")
    state: dict[str, torch.Tensor] = {}
    prefixes = sorted(prefix_map or {}, key=len, reverse=True)
    for key, value in obj.items():
        new = key
        for p in prefixes:
            if key.startswith(p):
                target = prefix_map[p]
                new = None if target is None else target + key[len(p):]
                break
        if new is not None:
            state[new] = value
    return _load_state(module, state, repr(os.fspath(path)), strict,
                       "use prefix_map to rename or drop keys, or strict=False")


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], where: str, strict: bool,
                hint: str) -> tuple[list[str], list[str]]:
    """Copy ``state`` into ``module`` after checking it (ValueError naming ``where``, the parameter and both shapes,
    or the missing / unexpected keys when ``strict``); returns ``(missing, unexpected)``."""
    own = module.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"{where}: parameter {key!r} has shape {tuple(value.shape)} in the file "
                             f"but {tuple(own[key].shape)} in the model")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        raise ValueError(f"{where} does not match the model: {len(missing)} missing keys "
                         f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]} ({hint})")
    module.load_state_dict(state, strict=False)
    return missing, unexpected


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
    the features can (``benchmarks/learnability.py``, README "SynthFaces learnability"). The head's shape depends
    on it, so a saved state dict loads only into a model built with the same ``head_inputs``.

    ``regression_init`` [choice, not in P0-P2; default ``"zeros"``]: how the heads of regression tasks (VA)
    start. ``"zeros"`` sets their weight and bias to 0, so every face starts at the prediction 0 (the centre of
    [-1, 1]); ``"default"`` keeps PyTorch's random ``nn.Linear`` initialisation (the behaviour before issue 12
    item 8). Why: the CCC loss (P1 §3, METHOD.md §3 "VA") has d(1 - CCC)/d(mean prediction) = 4 cov (mu_p -
    mu_t) / D^2, so while an output's covariance with its target is negative (a random head: half the outputs)
    gradient descent pushes its mean *away* from the target mean, into the flat part of ``tanh``, where the
    gradient vanishes (tanh' < 1e-6 at |z| = 8) and the output never comes back: its CCC stays 0. A zero head
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
        probes, METHOD.md §4)."""
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


# ----------------------------------------------------------------------------------------------- model files
MODEL_FORMAT = "fbhelpers-model"
MODEL_FORMAT_VERSION = 1
MODEL_KEYS: tuple[str, ...] = ("format", "format_version", "fbhelpers_version", "spec", "state_dict", "input_size",
                               "couplings", "tables", "thresholds", "metadata")
COUPLING_KEYS: tuple[str, ...] = ("class_task", "attr_task", "classes", "attributes", "values")


def save(model: MultiHeadNet, path: str | os.PathLike, *, input_size: int | Sequence[int] | None = None,
         couplings: Sequence[Coupling | Mapping[str, Any]] | None = None,
         tables: Mapping[str, Relatedness] | None = None,
         thresholds: Mapping[str, float | Sequence[float]] | None = None, **metadata: Any) -> Path:
    """Write ``model`` to one self-describing file that :func:`load` rebuilds without any code of the run.

    The file (``torch.save``, readable with ``weights_only=True``, written atomically: ``files.save_torch``) holds
    the keys :data:`MODEL_KEYS`: the format marker and version, the fbhelpers version, ``spec``
    (:meth:`MultiHeadNet.spec`), ``state_dict``, ``input_size`` ``[H, W]`` (an int is a square), ``couplings``
    (the relatedness tables of training, ``study.Coupling`` objects or dicts of :data:`COUPLING_KEYS`, stored
    aligned to the tasks' label orders), ``tables`` (extra named ``Relatedness``, e.g. ``{"compound":
    prior("du2014_compound")}`` for zero-shot compound expressions), ``thresholds`` (``{task: per-label decision
    thresholds}`` of the multilabel tasks, a number or one per label; [choice] 0.5 where not given) and
    ``metadata`` (the keyword arguments: plain JSON-like values, numpy scalars converted). ``input_size``,
    ``couplings``, ``tables`` and ``thresholds`` default to the model's own attributes (set by :func:`load`).
    """
    from fbhelpers import __version__  # the package imports this module first

    if not isinstance(model, MultiHeadNet):
        raise ValueError(f"save: expected a MultiHeadNet, got {type(model).__name__}")
    size = model.input_size if input_size is None else input_size
    if size is None:
        raise ValueError("save: give input_size (the model's training image size, H, W or one int)")
    record = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "fbhelpers_version": __version__,
        "spec": _json_like(model.spec(), "spec", "model"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input_size": list(_input_size(size)),
        "couplings": [_coupling_record(c, model.tasks) for c in (model.couplings if couplings is None else couplings)],
        "tables": {str(n): _table_record(t, str(n)) for n, t in (model.tables if tables is None else tables).items()},
        "thresholds": _threshold_record(model.thresholds if thresholds is None else thresholds, model.tasks),
        "metadata": {str(k): _json_like(v, str(k)) for k, v in metadata.items()},
    }
    return save_torch(record, path)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> MultiHeadNet:
    """The :class:`MultiHeadNet` saved by :func:`save`, on ``device`` and in eval mode, with its attributes
    ``input_size`` (H, W), ``couplings`` (``study.Coupling`` with ``Relatedness`` tables), ``tables`` (name ->
    ``Relatedness``), ``thresholds`` (multilabel task -> ``(K,)`` array) and ``metadata``.

    Read with ``torch.load(weights_only=True)``: a file that is not an fbhelpers model file (a tampered pickle, a
    plain state dict, a ``fit`` checkpoint, text), another format version, a missing key or weights that do not
    fit the spec raise ValueError naming the file (and the key or parameter); a missing file FileNotFoundError.
    """
    where = f"model file {os.fspath(path)!r}"
    record = _read_record(path, where)
    model = _build_from(record["spec"], record["state_dict"], where)
    try:
        model.input_size = _input_size(record["input_size"])
        model.couplings = [Coupling(c["class_task"], c["attr_task"], _relatedness(c, "coupling"))
                           for c in record["couplings"]]
        model.tables = {name: _relatedness(t, name) for name, t in record["tables"].items()}
        model.thresholds = {name: np.asarray(v, dtype=float) for name, v in record["thresholds"].items()}
        model.metadata = dict(record["metadata"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where} is malformed: {type(err).__name__}: {err}") from None
    return model.to(device).eval()


def save_from_checkpoint(checkpoint_path: str | os.PathLike, path: str | os.PathLike, **metadata: Any) -> Path:
    """Turn a ``train.fit`` checkpoint (``last.pt`` or ``best.pt``: ``model_spec``, ``model``, ``input_size``,
    ``couplings``) into a model file (:func:`save`), with the best step's weights when the run selected a model
    (``fit(..., select=...)``) and the last step's otherwise; ``metadata`` is stored, with ``checkpoint_step`` and
    the run's ``training`` settings (steps, seed, lr, optimizer, schedule) unless given. ValueError naming the file
    when it is not readable with ``weights_only=True`` or lacks a key (a checkpoint of a network other than
    ``MultiHeadNet``, or written before checkpoints carried ``model_spec``)."""
    where = f"checkpoint {os.fspath(checkpoint_path)!r}"
    state = read_weights_only(checkpoint_path, where)
    if not isinstance(state, Mapping):
        raise ValueError(f"{where} is not a train.fit checkpoint (it holds a {type(state).__name__})")
    if state.get("format") == MODEL_FORMAT:
        raise ValueError(f"{where} is already a model file (models.save, export-model): predict with it or load it "
                         f"with models.load; export-model converts train.fit checkpoints (last.pt, best.pt)")
    missing = [k for k in ("model_spec", "model", "input_size") if state.get(k) is None]
    if missing:
        raise ValueError(f"{where} lacks {missing}: it was not written by train.fit for a MultiHeadNet, or predates "
                         f"checkpoints that describe their model; rebuild the network and use models.save instead")
    best = state.get("best") or {}
    model = _build_from(state["model_spec"], best.get("model", state["model"]), where)
    config = state.get("config") or {}
    metadata.setdefault("checkpoint_step", best.get("step", state.get("step")))
    metadata.setdefault("training", {k: config[k] for k in ("steps", "seed", "lr", "optimizer", "schedule")
                                     if k in config})
    return save(model, path, input_size=state["input_size"], couplings=state.get("couplings") or [], **metadata)


def _build_from(spec: Any, state: Any, where: str) -> MultiHeadNet:
    """The network of ``spec`` holding the weights ``state``; ValueError naming ``where`` (and the parameter)."""
    if not isinstance(spec, Mapping) or not isinstance(state, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where} is malformed: the spec must be a mapping and the state dict map names to tensors")
    try:
        model = build(spec)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    _load_state(model, state, where, strict=True, hint="its spec does not describe its weights")
    _check_finite(state, where)
    return model


def _check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """ValueError naming the tensors of ``state`` (the first five, and how many) holding NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{where} has NaN or infinite weights in {len(bad)} of its {len(state)} tensors: "
                         f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''} (a training run that diverged?); "
                         f"the model would predict nothing meaningful")


def _input_size(value: Any) -> tuple[int, int]:
    """(H, W) from an int (a square) or a pair of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    pair = tuple(pair) if isinstance(pair, (list, tuple)) else ()
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                 for v in pair):
        raise ValueError(f"input_size must be a positive int or a pair (H, W) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _task(tasks: Sequence[Task], name: str, kind: str, what: str) -> Task:
    """The task ``name`` of kind ``kind``; ValueError naming ``what`` otherwise."""
    found = [t for t in tasks if t.name == name]
    if not found or found[0].kind != kind:
        raise ValueError(f"{what}: {name!r} is not a {kind} task of the model; its tasks are "
                         f"{[(t.name, t.kind) for t in tasks]}")
    return found[0]


def _relatedness(record: Mapping[str, Any], name: str) -> Relatedness:
    """A ``Relatedness`` from a stored record (``classes``, ``attributes``, ``values`` and optional provenance)."""
    table = pd.DataFrame(np.asarray(record["values"], dtype=float), index=list(record["classes"]),
                         columns=list(record["attributes"]))
    return Relatedness(table=table, name=record.get("name", name), citation=record.get("citation", ""),
                       provenance=record.get("provenance", ""), uncertain=tuple(record.get("uncertain", ())),
                       notes=dict(record.get("notes", {})))


def _coupling_record(coupling: Coupling | Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, Any]:
    """A coupling as plain lists (:data:`COUPLING_KEYS` and the table's ``name``), its table aligned to the class
    and attribute tasks' label orders."""
    if isinstance(coupling, Mapping):
        missing = [k for k in COUPLING_KEYS if k not in coupling]
        if missing:
            raise ValueError(f"coupling {dict(coupling)!r:.200} lacks the keys {missing}")
        names, rel = (coupling["class_task"], coupling["attr_task"]), _relatedness(coupling, "coupling")
    elif isinstance(coupling, Coupling):
        names, rel = (coupling.class_task, coupling.attr_task), coupling.relatedness
    else:
        raise ValueError(f"couplings: expected study.Coupling objects or dicts, got {type(coupling).__name__}")
    what = f"coupling {names[0]!r} x {names[1]!r}"
    ct, at = _task(tasks, names[0], "multiclass", what), _task(tasks, names[1], "multilabel", what)
    if not isinstance(rel, Relatedness):
        values = torch.as_tensor(rel).detach().cpu().double().numpy()
        if values.shape != (ct.n_outputs, at.n_outputs):
            raise ValueError(f"{what}: relatedness has shape {values.shape}, the tasks need "
                             f"({ct.n_outputs}, {at.n_outputs})")
        rel = Relatedness(pd.DataFrame(values, index=list(ct.labels), columns=list(at.labels)))
    rel = rel.align(ct.labels, at.labels)
    return {"class_task": ct.name, "attr_task": at.name, "name": rel.name, "classes": list(rel.classes),
            "attributes": list(rel.attributes), "values": rel.table.to_numpy(dtype=float).tolist()}


def _table_record(rel: Relatedness, name: str) -> dict[str, Any]:
    """A named ``Relatedness`` as plain lists and strings."""
    if not isinstance(rel, Relatedness):
        raise ValueError(f"tables[{name!r}]: expected a Relatedness, got {type(rel).__name__}")
    return {"name": rel.name, "citation": rel.citation, "provenance": rel.provenance,
            "uncertain": list(rel.uncertain), "notes": dict(rel.notes), "classes": list(rel.classes),
            "attributes": list(rel.attributes), "values": rel.table.to_numpy(dtype=float).tolist()}


def _threshold_record(thresholds: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, list[float]]:
    """Per-label decision thresholds of every multilabel task ([choice] 0.5 where not given), each in [0, 1]."""
    for name in thresholds:
        _task(tasks, name, "multilabel", "thresholds")
    record = {}
    for t in (t for t in tasks if t.kind == "multilabel"):
        given = thresholds.get(t.name, 0.5)
        values = np.asarray(given, dtype=float)
        values = np.full(t.n_outputs, float(values)) if values.ndim == 0 else values
        if values.shape != (t.n_outputs,) or not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"thresholds[{t.name!r}] must be one number or {t.n_outputs} numbers in [0, 1] "
                             f"(labels {list(t.labels)}), got {given!r}")
        record[t.name] = values.tolist()
    return record


def _json_like(value: Any, key: str, what: str = "metadata") -> Any:
    """``value`` as plain data a ``weights_only`` file holds (numpy scalars converted, tuples as lists);
    ValueError naming ``what`` and ``key`` for anything else."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_like(v, f"{key}[{i}]", what) for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_like(v, f"{key}.{k}", what) for k, v in value.items()}
    raise ValueError(f"{what} {key!r}: {type(value).__name__} {value!r:.80} is not plain data (None, bool, int, "
                     f"float, str, or lists and str-keyed dicts of them)")


def _read_record(path: str | os.PathLike, where: str) -> Mapping[str, Any]:
    """The checked contents of a model file: the format marker, version and every key of :data:`MODEL_KEYS`."""
    record = read_weights_only(path, where)
    if not isinstance(record, Mapping) or record.get("format") != MODEL_FORMAT:
        hint = ""
        if isinstance(record, Mapping) and "model" in record and ("optimizer" in record or "model_spec" in record):
            hint = (f" (a train.fit checkpoint: export it first with `python -m fbhelpers export-model "
                    f"{os.fspath(path)} model.pt` or models.save_from_checkpoint, then use model.pt)")
        elif isinstance(record, Mapping) and record and all(isinstance(v, torch.Tensor) for v in record.values()):
            hint = " (a plain state dict: build the network and use load_weights)"
        raise ValueError(f"{where} is not an fbhelpers model file: no 'format': {MODEL_FORMAT!r} marker{hint}")
    if record.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(f"{where} has 'format_version' {record.get('format_version')!r}; this fbhelpers reads "
                         f"version {MODEL_FORMAT_VERSION}")
    missing = [k for k in MODEL_KEYS if k not in record]
    if missing:
        raise ValueError(f"{where} lacks the keys {missing}")
    return record
