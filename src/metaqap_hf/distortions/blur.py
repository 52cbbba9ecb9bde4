"""Blur distortions: Gaussian, lens (defocus disk) and linear motion blur."""

from __future__ import annotations

import torch
from kornia.filters import motion_blur as kornia_motion_blur

from ._common import fft_filter2d, gaussian_filter, level_value, rand

__all__ = [
    "GAUSSIAN_BLUR_SIGMA",
    "LENS_BLUR_RADIUS",
    "MOTION_BLUR_LENGTH",
    "gaussian_blur",
    "lens_blur",
    "motion_blur",
    "disk_kernel",
]

# Standard deviation (pixels) of the Gaussian kernel per level.
GAUSSIAN_BLUR_SIGMA = (0.6, 1.2, 2.0, 3.2, 5.0)
# Radius (pixels) of the uniform defocus disk per level.
LENS_BLUR_RADIUS = (1.0, 2.0, 3.5, 5.5, 8.0)
# Length (pixels, odd) of the straight motion path per level; the angle is random per image.
MOTION_BLUR_LENGTH = (3, 5, 9, 15, 23)


def gaussian_blur(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur."""
    return gaussian_filter(images, level_value(GAUSSIAN_BLUR_SIGMA, level))


def disk_kernel(radius: float, supersampling: int = 8) -> torch.Tensor:
    """Normalised disk kernel whose edge pixels are weighted by the fraction of their area inside the disk."""
    half = int(radius + 0.5)
    size = 2 * half + 1
    fine = (torch.arange(size * supersampling, dtype=torch.float32) + 0.5) / supersampling - size / 2
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2 <= radius**2).float()
    coverage = inside.view(size, supersampling, size, supersampling).mean(dim=(1, 3))
    return coverage / coverage.sum()


def lens_blur(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Defocus blur: convolution with a uniform disk (the point spread function of an out-of-focus lens).

    The disk is not separable, so the convolution runs through the FFT.
    """
    return fft_filter2d(images, disk_kernel(level_value(LENS_BLUR_RADIUS, level)))


def motion_blur(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Linear motion blur along a random direction per image (uniform over 0-180 degrees)."""
    length = level_value(MOTION_BLUR_LENGTH, level)
    angles = rand((images.shape[0],), generator, images.device) * 180.0
    directions = torch.zeros_like(angles)
    return kornia_motion_blur(images, length, angles, directions, border_type="replicate", mode="bilinear")
