"""Sharpness and contrast distortions: over-sharpening and global contrast change."""

from __future__ import annotations

import torch
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb

from ._common import gaussian_filter, level_value, luma, random_signs

__all__ = [
    "HIGH_SHARPEN_AMOUNT",
    "CONTRAST_CHANGE_FACTOR",
    "high_sharpen",
    "contrast_change",
]

# Unsharp-mask gain on luma: Y' = Y + amount * (Y - blur(Y)); the blur sigma is fixed.
HIGH_SHARPEN_AMOUNT = (1.0, 2.0, 3.5, 5.5, 8.0)
# (increase, decrease) factors on the deviation from the image's mean luma; one of the two is
# chosen at random per image, since real contrast errors go both ways.
CONTRAST_CHANGE_FACTOR = ((1.35, 0.72), (1.7, 0.55), (2.2, 0.4), (2.9, 0.28), (3.8, 0.18))

_SHARPEN_SIGMA = 1.5


def high_sharpen(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Over-sharpening with an unsharp mask on luma: halos around edges, amplified texture and noise."""
    amount = level_value(HIGH_SHARPEN_AMOUNT, level)
    ycbcr = rgb_to_ycbcr(images)
    y = ycbcr[:, :1]
    blurred = gaussian_filter(y, _SHARPEN_SIGMA)
    return ycbcr_to_rgb(torch.cat([y + amount * (y - blurred), ycbcr[:, 1:]], dim=1))


def contrast_change(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Linear contrast stretch (with clipping) or compression around the mean luma, direction random per image."""
    increase, decrease = level_value(CONTRAST_CHANGE_FACTOR, level)
    raises = random_signs(images.shape[0], generator, images.device) > 0
    factor = torch.where(raises, increase, decrease).to(images.dtype)
    mean = luma(images).mean(dim=(2, 3), keepdim=True)
    return mean + factor * (images - mean)
