"""Backbones by name: a registry (:data:`BACKBONES`, :func:`register_backbone`) of plain-torch feature extractors
(``cnn4``, ``vgg16`` in the VGG-FACE layout, ``resnet18``, ``resnet50``) and :func:`load_weights` for local
pretrained weights (nothing is ever downloaded).

P1 (arXiv 2105.03790) §4 builds FaceBehaviorNet on VGG-FACE; P2 (arXiv 2401.01219) shows the coupling losses are
network-agnostic, so the backbone is a name. No torchvision: every layer is written here.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

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
    a CPU-friendly trunk for synthetic twins (docs/method.md#synthetic-twins). ``out_dim = widths[-1] * pool**2``.
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
