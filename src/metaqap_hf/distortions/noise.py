"""Noise distortions: white Gaussian, noise in YCbCr components, impulse, multiplicative, and denoised noise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb

from ._common import level_value, rand, randn

__all__ = [
    "WHITE_NOISE_STD",
    "WHITE_NOISE_COLOR_COMPONENT_STD",
    "IMPULSE_NOISE_DENSITY",
    "MULTIPLICATIVE_NOISE_STD",
    "DENOISE_SETTINGS",
    "white_noise",
    "white_noise_color_component",
    "impulse_noise",
    "multiplicative_noise",
    "denoise",
]

# Standard deviation of additive Gaussian noise on each RGB channel (images on [0, 1]).
WHITE_NOISE_STD = (0.025, 0.045, 0.07, 0.1, 0.14)
# Standard deviation of additive Gaussian noise on each of Y, Cb and Cr.
WHITE_NOISE_COLOR_COMPONENT_STD = (0.02, 0.035, 0.055, 0.08, 0.11)
# Fraction of samples replaced by salt (1) or pepper (0), independently per channel.
IMPULSE_NOISE_DENSITY = (0.005, 0.012, 0.025, 0.045, 0.075)
# Standard deviation of the Gaussian factor n in x * (1 + n) (speckle).
MULTIPLICATIVE_NOISE_STD = (0.06, 0.1, 0.15, 0.21, 0.28)
# (noise std, bilateral spatial sigma in pixels): noise is added, then removed by an edge-preserving
# bilateral filter whose range sigma follows the noise, leaving the waxy, detail-free look of denoisers.
DENOISE_SETTINGS = ((0.03, 1.0), (0.05, 1.4), (0.08, 1.8), (0.11, 2.3), (0.15, 3.0))
# Bilateral range sigma (summed absolute RGB difference) per unit of noise std: strong enough to
# flatten the noise, and with it fine texture.
_DENOISE_RANGE_PER_STD = 5.0


def white_noise(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive white Gaussian noise, independent per RGB channel."""
    std = level_value(WHITE_NOISE_STD, level)
    return images + std * randn(images.shape, generator, images.device)


def white_noise_color_component(
    images: torch.Tensor, level: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """White Gaussian noise added to the YCbCr components; in RGB it is correlated and strongly coloured."""
    std = level_value(WHITE_NOISE_COLOR_COMPONENT_STD, level)
    ycbcr = rgb_to_ycbcr(images)
    return ycbcr_to_rgb(ycbcr + std * randn(images.shape, generator, images.device))


def impulse_noise(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt-and-pepper noise. One uniform draw per sample decides both corruption and its polarity,
    so under a fixed seed the corrupted set of a level contains that of every lower level."""
    density = level_value(IMPULSE_NOISE_DENSITY, level)
    draw = rand(images.shape, generator, images.device)
    salted = torch.where(draw < density / 2, torch.ones_like(images), images)
    return torch.where((draw >= density / 2) & (draw < density), torch.zeros_like(images), salted)


def multiplicative_noise(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Speckle noise whose amplitude grows with the signal: x * (1 + n)."""
    std = level_value(MULTIPLICATIVE_NOISE_STD, level)
    return images * (1.0 + std * randn(images.shape, generator, images.device))


def _bilateral_pass(images: torch.Tensor, guide: torch.Tensor, spatial_sigma: float, range_sigma: float, dim: int):
    """One-dimensional bilateral filter along ``dim`` (2: along columns, 3: along rows), borders replicated.

    A neighbour's weight is a Gaussian of its offset times a Gaussian of its summed absolute RGB difference
    to the centre in ``guide``. That difference is symmetric, so each offset's weights serve the neighbours
    on both sides; each offset is a shifted view, so memory stays at a few images whatever the radius.
    """
    radius = math.ceil(3.0 * spatial_sigma)
    length = images.shape[dim]
    padding = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
    padded_images = F.pad(images, padding, mode="replicate")
    padded_guide = F.pad(guide, padding, mode="replicate")
    weighted_sum = images.clone()  # the centre weighs 1
    weight_sum = torch.ones_like(images[:, :1])
    for offset in range(1, radius + 1):
        span = padded_guide.shape[dim] - offset
        # In place after the first difference: each new full-size tensor costs as much as the arithmetic.
        distance = (padded_guide.narrow(dim, offset, span) - padded_guide.narrow(dim, 0, span)).abs_().sum(1, True)
        weight = distance.square_().mul_(-0.5 / range_sigma**2).add_(-0.5 * (offset / spatial_sigma) ** 2).exp_()
        # Padded position q + offset seen from q, and q - offset seen from q, for the image's q.
        for weight_start, neighbour_start in ((radius, radius + offset), (radius - offset, radius - offset)):
            neighbour_weight = weight.narrow(dim, weight_start, length)
            weighted_sum.addcmul_(neighbour_weight, padded_images.narrow(dim, neighbour_start, length))
            weight_sum.add_(neighbour_weight)
    return weighted_sum / weight_sum


def denoise(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise followed by edge-preserving denoising: smeared texture with residual blotches.

    The denoiser is a separable bilateral filter (along rows, then along columns), both passes steered
    by the noisy image: the look of the full 2-D bilateral filter (35-52 dB PSNR to its output, level 5
    to level 1; tests/test_distortion_reference.py) at 2 x (6 sigma + 1) taps instead of (6 sigma + 1)^2.
    """
    noise_std, spatial_sigma = level_value(DENOISE_SETTINGS, level)
    noisy = (images + noise_std * randn(images.shape, generator, images.device)).clamp(0.0, 1.0)
    range_sigma = _DENOISE_RANGE_PER_STD * noise_std
    rows_filtered = _bilateral_pass(noisy, noisy, spatial_sigma, range_sigma, dim=3)
    return _bilateral_pass(rows_filtered, noisy, spatial_sigma, range_sigma, dim=2)
