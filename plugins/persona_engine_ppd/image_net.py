"""The small convolutional image encoder behind the ``tiny-image`` encoder plugins, the decoder that
trains it as an autoencoder, and the augmentations of its invariance term.

It stands in for PPD's frozen vision-language model, which no one can install here. The default
(``tiny-image``) is self-supervised: reconstruction of the pixels plus invariance to pixel noise
and masking (optionally VICReg's variance and covariance terms against collapse), nothing else
(:func:`persona_engine_ppd.trainer.train_image_encoder`). The
``tiny-image-supervised`` variant adds a linear read-out of the images' drawing attributes (hue,
value, position, size, shape), the very quantities the synthetic task's gold rewards are computed
from: an oracle, kept only for comparison."""

from __future__ import annotations

import torch
from torch import nn


class TinyImageNet(nn.Module):
    """(n, 3, S, S) images in [0, 1] -> (n, dim): two stride-2 convolutions and a linear map."""

    def __init__(self, image_size: int, dim: int, width: int = 32):
        super().__init__()
        if image_size % 4:
            raise ValueError("image_size must be a multiple of 4")
        self.image_size, self.dim = image_size, dim
        self.conv = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Linear(width * (image_size // 4) ** 2, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(images * 2.0 - 1.0).flatten(1))


class TinyImageDecoder(nn.Module):
    """(n, dim) -> (n, 3, S, S) in [0, 1]; only used to train :class:`TinyImageNet`."""

    def __init__(self, image_size: int, dim: int, width: int = 32):
        super().__init__()
        self.side, self.width = image_size // 4, width
        self.head = nn.Linear(dim, width * self.side**2)
        self.deconv = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width // 2, 3, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(z.shape[0], self.width, self.side, self.side)
        return torch.sigmoid(self.deconv(h))


def augment(
    images: torch.Tensor, generator: torch.Generator, *, noise: float = 0.05, mask: float = 0.15
) -> torch.Tensor:
    """A random view of images (n, 3, S, S) in [0, 1]: Gaussian pixel noise of std ``noise`` and a
    share ``mask`` of the pixels blacked out. Neither changes what the image shows on average
    (colour, brightness, position), so invariance to them keeps those in the embedding."""
    noisy = images + noise * torch.randn(images.shape, generator=generator).to(images.device)
    keep = torch.rand((images.shape[0], 1, *images.shape[2:]), generator=generator) >= mask
    return (noisy * keep.to(images.device, images.dtype)).clamp(0.0, 1.0)
