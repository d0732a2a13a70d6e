"""The MONAI networks of the medical tasks, built from a run's config."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import DenseNet121, SegResNet, UNet
from torch import nn

SEGMENTATION_MODELS = ("unet", "segresnet")
PAPER_BLOCKS = (1, 2, 2, 4)  # residual blocks per SegResNet encoder level in the paper


def unet(in_channels: int, out_channels: int, channels: Sequence[int], res_units: int = 2,
         dropout: float = 0.0) -> nn.Module:
    """MONAI's residual 3D U-Net: each entry of ``channels`` is one level, halving the resolution."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=res_units, norm="batch", dropout=dropout)


def segresnet(in_channels: int, out_channels: int, channels: Sequence[int], dropout: float = 0.0) -> nn.Module:
    """MONAI's SegResNet (Myronenko 2018) with ``channels[0]`` filters at full resolution, one level per entry."""
    blocks = tuple(PAPER_BLOCKS[min(i, len(PAPER_BLOCKS) - 1)] for i in range(len(channels)))
    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=channels[0],
                     blocks_down=blocks, blocks_up=(1,) * (len(channels) - 1), dropout_prob=dropout or None)


def densenet121(in_channels: int, classes: int) -> nn.Module:
    """MONAI's 2D DenseNet-121 (the MedNIST tutorial's network)."""
    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=classes)
