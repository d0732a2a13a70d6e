"""DCGAN (Radford et al. 2016) generator and discriminator, sized to the images.

The generator starts from a ``start x start`` map and doubles it with strided transposed
convolutions until it reaches the image side: 8x8 digits start at 4x4 (one doubling),
28x28 MNIST at 7x7 (two), 32x32 CIFAR at 4x4 (three). The discriminator mirrors it.
As in the paper: batch norm everywhere but the generator's output and the
discriminator's input, ReLU in the generator, LeakyReLU(0.2) in the discriminator, tanh
output in [-1, 1], weights drawn from N(0, 0.02).

``build_dcgan`` is what the plugin registers for ``vision.gan``. A model another package
registers for the task is built the same way, as ``builder(config, meta) -> nn.Module``,
where ``config`` is the task's ``ImageGenerationConfig`` (``latent_dim``, ``g_features``,
``d_features``, ``extra_layers``, ``ema_decay``) and ``meta`` holds:

    classes     list[str]  class names of the data set (the generator is unconditional)
    channels    int        channels of the images to make (1 or 3)
    image_size  int        side of the square images in pixels

and it must offer what the task uses: ``generator`` and ``discriminator`` submodules (one
optimizer each), ``update_ema(decay)``, and a ``forward(x, mode)`` that does every pass, so
the task calls the network only through the run's wrapped model:

    mode="generate"      noise N x latent_dim -> images in [-1, 1] (the training generator)
    mode="discriminate"  images in [-1, 1] -> one logit per image (real > 0)
    mode="sample"        noise -> images in [0, 1] from the generator that makes the samples
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

MODES = ("generate", "discriminate", "sample")


def layout(image_size: int) -> tuple[int, int]:
    """``(start side, doublings)``: halve the side while it stays even and at least 3 after halving."""
    side, doublings = image_size, 0
    while side % 2 == 0 and side // 2 >= 3:
        side //= 2
        doublings += 1
    if doublings == 0:
        raise ValueError(f"image side {image_size} cannot be reached by doubling; use an even size such as 8, 28 or 32")
    return side, doublings


class Generator(nn.Sequential):
    """Noise ``N x latent_dim`` -> images ``N x channels x size x size`` in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, features: int, extra_layers: int = 0) -> None:
        start, doublings = layout(image_size)
        width = features * 2 ** (doublings - 1)
        layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1)),
                                   nn.ConvTranspose2d(latent_dim, width, start, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(doublings - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        for _ in range(extra_layers):  # at the last hidden resolution, as in DCGAN's reference code
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        super().__init__(*layers)
        self.latent_dim = latent_dim


class Discriminator(nn.Sequential):
    """Images in [-1, 1] -> one logit per image (real > 0)."""

    def __init__(self, channels: int, image_size: int, features: int, extra_layers: int = 0) -> None:
        start, doublings = layout(image_size)
        width = features
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(extra_layers):  # at the first hidden resolution, mirroring the generator
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, True)]
        for _ in range(doublings - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, start, 1, 0), nn.Flatten(0)]
        super().__init__(*layers)


class DCGAN(nn.Module):
    """The two players in one module, so one state dict and one safetensors file hold both.

    With ``ema=True`` it also holds ``generator_ema``, an exponential moving average of the
    generator's weights (Yazici et al. 2019, as in ProGAN and StyleGAN): the training
    generator keeps chasing the discriminator, while its average settles on cleaner
    images. Samples come from the average when there is one.
    """

    def __init__(self, latent_dim: int, channels: int, image_size: int, g_features: int, d_features: int,
                 ema: bool = False, extra_layers: int = 0) -> None:
        super().__init__()
        self.generator = Generator(latent_dim, channels, image_size, g_features, extra_layers)
        self.discriminator = Discriminator(channels, image_size, d_features, extra_layers)
        self.apply(init_weights)
        self.generator_ema: Generator | None = None
        if ema:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    def sampler(self) -> Generator:
        """The generator that makes the samples: the average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, x: torch.Tensor, mode: str = "discriminate") -> torch.Tensor:
        """One entry point for every pass (see the module's docstring), so that a distributed
        wrapper around this module sees each of them."""
        if mode == "generate":
            return self.generator(x)
        if mode == "discriminate":
            return self.discriminator(x)
        if mode == "sample":
            return (self.sampler()(x) + 1) / 2
        raise ValueError(f"unknown DCGAN mode {mode!r}; expected one of {', '.join(MODES)}")

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """Move the average ``1 - decay`` of the way towards the generator; batch-norm statistics are copied."""
        if self.generator_ema is None:
            return
        averaged, current = list(self.generator_ema.parameters()), list(self.generator.parameters())
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for mine, theirs in zip(self.generator_ema.buffers(), self.generator.buffers()):
            mine.copy_(theirs)


def build_dcgan(config: Any, meta: Mapping[str, Any]) -> DCGAN:
    """The DCGAN of the config's sizes for the images ``meta`` describes, with a moving average
    of the generator when ``ema_decay`` is above 0."""
    return DCGAN(config.latent_dim, int(meta["channels"]), int(meta["image_size"]), config.g_features,
                 config.d_features, ema=config.ema_decay > 0, extra_layers=config.extra_layers)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions from N(0, 0.02), batch-norm scales from N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
