"""Brightness distortions: brighten and darken (tone curves on Lab lightness) and a global mean shift."""

from __future__ import annotations

import torch
from ._common import lab_to_rgb, level_value, random_signs, rgb_to_lab

__all__ = [
    "BRIGHTEN_GAMMA",
    "DARKEN_GAMMA",
    "MEAN_SHIFT_OFFSET",
    "brighten",
    "darken",
    "mean_shift",
]

# Exponent of the tone curve on Lab lightness (L' = 100 * (L / 100) ** gamma); below 1 brightens.
BRIGHTEN_GAMMA = (0.8, 0.65, 0.52, 0.4, 0.3)
# Exponent of the tone curve on Lab lightness; above 1 darkens.
DARKEN_GAMMA = (1.3, 1.6, 2.0, 2.5, 3.2)
# Constant added to every channel, with a random sign per image (brighter or darker).
MEAN_SHIFT_OFFSET = (0.06, 0.11, 0.17, 0.24, 0.32)


def _lightness_gamma(images: torch.Tensor, gamma: float) -> torch.Tensor:
    """Power-law tone curve on Lab lightness with chroma (a, b) unchanged; black and white stay fixed."""
    lab = rgb_to_lab(images)
    lab[:, 0].div_(100.0).clamp_(0.0, 1.0).pow_(gamma).mul_(100.0)
    return lab_to_rgb(lab)


def brighten(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Non-linear brightening: shadows and mid-tones lifted, white kept."""
    return _lightness_gamma(images, level_value(BRIGHTEN_GAMMA, level))


def darken(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Non-linear darkening: shadows and mid-tones pushed down, white kept."""
    return _lightness_gamma(images, level_value(DARKEN_GAMMA, level))


def mean_shift(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Global intensity offset, up or down at random per image; values clip at 0 and 1."""
    offset = level_value(MEAN_SHIFT_OFFSET, level)
    return images + offset * random_signs(images.shape[0], generator, images.device)
