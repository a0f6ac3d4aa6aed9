"""The small convolutional image encoder behind the ``tiny-image`` encoder plugin, and the decoder
that trains it as an autoencoder (with, optionally, a linear read-out of the images' visual
attributes: hue, value, position, size, shape). It never sees a preference or a user's reward. It
stands in for PPD's frozen vision-language model, which no one can install here: a pretrained model
knows such attributes, and a plain autoencoder of 300 steps encodes hue too weakly to stand in."""

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
