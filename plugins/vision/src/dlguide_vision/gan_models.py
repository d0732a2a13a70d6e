"""DCGAN (Radford et al. 2016) generator and discriminator, sized to the images.

The generator starts from a ``start x start`` map and doubles it with strided transposed
convolutions until it reaches the image side: 8x8 digits start at 4x4 (one doubling),
28x28 MNIST at 7x7 (two), 32x32 CIFAR at 4x4 (three). The discriminator mirrors it.
As in the paper: batch norm everywhere but the generator's output and the
discriminator's input, ReLU in the generator, LeakyReLU(0.2) in the discriminator, tanh
output in [-1, 1], weights drawn from N(0, 0.02).
"""

from __future__ import annotations

import torch
from torch import nn


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

    def __init__(self, latent_dim: int, channels: int, image_size: int, features: int) -> None:
        start, doublings = layout(image_size)
        width = features * 2 ** (doublings - 1)
        layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1)),
                                   nn.ConvTranspose2d(latent_dim, width, start, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(doublings - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        super().__init__(*layers)
        self.latent_dim = latent_dim


class Discriminator(nn.Sequential):
    """Images in [-1, 1] -> one logit per image (real > 0)."""

    def __init__(self, channels: int, image_size: int, features: int) -> None:
        start, doublings = layout(image_size)
        width = features
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(doublings - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, start, 1, 0), nn.Flatten(0)]
        super().__init__(*layers)


class DCGAN(nn.Module):
    """The two players in one module, so one state dict and one safetensors file hold both."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, g_features: int, d_features: int) -> None:
        super().__init__()
        self.generator = Generator(latent_dim, channels, image_size, g_features)
        self.discriminator = Discriminator(channels, image_size, d_features)
        self.apply(init_weights)

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from noise ``N x latent_dim``."""
        return (self.generator(noise) + 1) / 2


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolutions from N(0, 0.02), batch-norm scales from N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
