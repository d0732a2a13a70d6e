"""The image classifiers of ``vision.classify``: the chapter's CNN, LeNet-5 and a small-input ResNet-18.

``cnn``, ``lenet5`` and ``resnet18`` take the number of classes and the input's channels
(and size, where the layout depends on it) and return a randomly initialised ``nn.Module``
mapping normalised images ``N x C x H x W`` to class logits.

``build_cnn``, ``build_lenet5`` and ``build_resnet18`` are what the plugin registers for
``vision.classify`` (``--set model=lenet5``). A model another package registers for the task
is built the same way, as ``builder(config, meta) -> nn.Module``, where ``config`` is the
task's ``ImageClassificationConfig`` and ``meta`` holds:

    classes     list[str]    class names, in label order (the model returns one logit each)
    channels    int          channels of the input images (1 or 3)
    image_size  int          side of the square input images in pixels
    mean, std   list[float]  per-channel statistics the inputs were standardised with

The model receives images standardised with ``mean`` and ``std``; ``weights=FILE`` is
applied by the task after the builder returns.

    dlguide run vision.classify --set model=lenet5 dataset=mnist epochs=3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlguide import UsageError, first_line
from dlguide_vision.config import ACTIVATION_NAMES

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES  # the config's choices, kept without torch


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UsageError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def cnn(num_classes: int, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (32, 64),
        activation: str = "relu", dropout: float = 0.25, hidden: int = 128) -> nn.Module:
    """The chapter's CNN: per entry of ``channels`` one block of a 3x3 convolution, the activation and
    2x2 max pooling (so ``len(channels)`` is the depth), then a fully connected layer of ``hidden``
    units with dropout before and after it, and the output layer."""
    if not channels:
        raise UsageError("the cnn needs at least one entry in channels, e.g. channels=32,64")
    side = image_size // 2 ** len(channels)
    if side < 1:
        raise UsageError(f"{len(channels)} pooling blocks halve {image_size}-pixel images to nothing; "
                         f"use at most {max(image_size.bit_length() - 1, 0)} entries in channels or a larger image_size")
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        layers += [nn.Conv2d(previous, width, 3, padding=1), _activation(activation), nn.MaxPool2d(2)]
        previous = width
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(previous * side * side, hidden), _activation(activation),
               nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """LeCun et al. (1998): two 5x5 convolutions (6 and 16 maps) with 2x2 average pooling, then 120-84 units.

    The layout is defined on 32x32 inputs; other sizes are resized to 32x32 first.
    """

    SIZE = 32

    def __init__(self, num_classes: int, in_channels: int = 1, activation: str = "tanh") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), _activation(activation), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), _activation(activation), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), _activation(activation),
            nn.Linear(120, 84), _activation(activation), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.SIZE, self.SIZE):
            x = nn.functional.interpolate(x, size=(self.SIZE, self.SIZE), mode="bilinear", antialias=True,
                                          align_corners=False)
        return self.classifier(self.features(x))


def lenet5(num_classes: int, in_channels: int = 1, activation: str = "tanh") -> nn.Module:
    """LeNet-5 (tanh and average pooling as published; inputs resized to 32x32)."""
    return LeNet5(num_classes, in_channels, activation)


def resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised, with a stem for small images: a 3x3 stride-1
    convolution and no max pooling, since the ImageNet stem would shrink a 32-pixel image to 8 pixels
    before the first residual block."""
    from torchvision.models import resnet18 as torchvision_resnet18

    model = torchvision_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_cnn(config: Any, meta: Mapping[str, Any]) -> nn.Module:
    """The chapter's CNN with the config's ``channels``, ``activation``, ``dropout`` and ``hidden``."""
    return cnn(len(meta["classes"]), int(meta["channels"]), int(meta["image_size"]), config.channels,
               config.activation, config.dropout, config.hidden)


def build_lenet5(config: Any, meta: Mapping[str, Any]) -> nn.Module:
    """LeNet-5 with the config's ``activation``."""
    return lenet5(len(meta["classes"]), int(meta["channels"]), config.activation)


def build_resnet18(config: Any, meta: Mapping[str, Any]) -> nn.Module:
    """The small-input ResNet-18."""
    return resnet18(len(meta["classes"]), int(meta["channels"]))


def load_pretrained(model: nn.Module, path: Path) -> list[str]:
    """Copy every tensor of a local weights file (safetensors, or a torch state dict) whose name and
    shape match into ``model``; return the names of the model's tensors left as initialised.

    An ImageNet ResNet-18 file thus fills every layer but the small-input stem and the classifier.
    """
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch.load raise many kinds for a bad file
        raise UsageError(f"cannot read weights {path}: {first_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds no state dict of tensors")
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    if not matching:
        raise UsageError(f"no tensor in {path} matches this model by name and shape")
    model.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))
