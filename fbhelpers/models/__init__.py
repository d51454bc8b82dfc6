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
from .backbones import (
    BACKBONES, VGGFACE_MEAN, VGGFACE_PREFIX_MAP, VGGFACE_STD, BasicBlock, Bottleneck, CNN4, ResNet, VGG16,
    build_backbone, cnn4, load_weights, register_backbone, resnet18, resnet50, vgg16,
)
from .modelfile import (
    COUPLING_KEYS, MODEL_FORMAT, MODEL_FORMAT_VERSION, MODEL_KEYS, load, save, save_from_checkpoint,
)
from .network import REGRESSION_INITS, SPEC_KEYS, MultiHeadNet, build, output_probabilities

__all__ = [
    "BACKBONES", "VGGFACE_MEAN", "VGGFACE_PREFIX_MAP", "VGGFACE_STD", "BasicBlock", "Bottleneck", "CNN4", "ResNet",
    "VGG16", "build_backbone", "cnn4", "load_weights", "register_backbone", "resnet18", "resnet50", "vgg16",
    "COUPLING_KEYS", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "MODEL_KEYS", "load", "save", "save_from_checkpoint",
    "REGRESSION_INITS", "SPEC_KEYS", "MultiHeadNet", "build", "output_probabilities",
]
