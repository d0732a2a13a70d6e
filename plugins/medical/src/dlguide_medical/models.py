"""The MONAI networks of the medical tasks, registered as ``medical.<name>`` model builders.

Every builder is called as ``builder(config, meta) -> nn.Module``, where ``config`` is the
task's config and ``meta`` what the task learnt from its data:

- medical.segment (``unet``, ``segresnet``): ``meta["channels"]`` is the number of image
  channels (MSD modalities) and ``meta["classes"]`` the foreground label names; the network
  maps ``[B, channels, X, Y, Z]`` to ``[B, len(classes) + 1, X, Y, Z]`` logits (background
  first). ``config.channels``, ``res_units`` and ``dropout`` size it.
- medical.classify (``densenet121``): ``meta["channels"]`` is 1 (images are read as grey) and
  ``meta["classes"]`` the class names; the network maps ``[B, channels, H, W]`` to
  ``[B, len(classes)]`` logits.
"""

from __future__ import annotations

from typing import Any

from monai.networks.nets import DenseNet121, SegResNet, UNet
from torch import nn

PAPER_BLOCKS = (1, 2, 2, 4)  # residual blocks per SegResNet encoder level in the paper


def unet(config: Any, meta: dict[str, Any]) -> nn.Module:
    """MONAI's residual 3D U-Net: each entry of ``config.channels`` is one level, halving the resolution."""
    return UNet(spatial_dims=3, in_channels=int(meta["channels"]), out_channels=len(meta["classes"]) + 1,
                channels=tuple(config.channels), strides=(2,) * (len(config.channels) - 1),
                num_res_units=config.res_units, norm="batch", dropout=config.dropout)


def segresnet(config: Any, meta: dict[str, Any]) -> nn.Module:
    """MONAI's SegResNet (Myronenko 2018) with ``channels[0]`` filters at full resolution, one level per entry."""
    levels = len(config.channels)
    blocks = tuple(PAPER_BLOCKS[min(i, len(PAPER_BLOCKS) - 1)] for i in range(levels))
    return SegResNet(spatial_dims=3, in_channels=int(meta["channels"]), out_channels=len(meta["classes"]) + 1,
                     init_filters=config.channels[0], blocks_down=blocks, blocks_up=(1,) * (levels - 1),
                     dropout_prob=config.dropout or None)


def densenet121(config: Any, meta: dict[str, Any]) -> nn.Module:
    """MONAI's 2D DenseNet-121 (the MedNIST tutorial's network)."""
    return DenseNet121(spatial_dims=2, in_channels=int(meta["channels"]), out_channels=len(meta["classes"]))
