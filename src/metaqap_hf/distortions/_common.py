"""Helpers shared by the distortion families: seeded random draws, level look-up, masks, kernel sizes.

Random numbers are drawn on the generator's own device and then moved to the images' device, so a
CPU ``torch.Generator`` gives the same draws whether the images live on the CPU or on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "NUM_LEVELS",
    "level_value",
    "rand",
    "randn",
    "randint",
    "random_signs",
    "luma",
    "last_covering_square",
    "gaussian_kernel_size",
]

NUM_LEVELS = 5


def level_value(table: Sequence, level: int):
    """Return the parameter of ``level`` (1-based) from a per-level table of length ``NUM_LEVELS``."""
    if len(table) != NUM_LEVELS:
        raise ValueError(f"A level table needs {NUM_LEVELS} entries, got {len(table)}.")
    return table[level - 1]


def _source_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 draws of ``shape`` on ``device``, reproducible under ``generator``."""
    values = torch.rand(tuple(shape), generator=generator, device=_source_device(generator, device))
    return values.to(device)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal float32 draws of ``shape`` on ``device``, reproducible under ``generator``."""
    values = torch.randn(tuple(shape), generator=generator, device=_source_device(generator, device))
    return values.to(device)


def randint(
    high: int | torch.Tensor, shape: Sequence[int], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Integers in ``[0, high)`` of ``shape``; ``high`` may be a tensor broadcastable to ``shape``."""
    high = torch.as_tensor(high, device=device)
    return (rand(shape, generator, device) * high).long().clamp(max=high - 1)


def random_signs(batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """One random sign (+1 or -1) per image, shaped (B, 1, 1, 1) for broadcasting."""
    return torch.where(rand((batch, 1, 1, 1), generator, device) < 0.5, -1.0, 1.0)


def luma(images: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma (B, 1, H, W) of RGB images (B, 3, H, W)."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def last_covering_square(tops: torch.Tensor, lefts: torch.Tensor, side: int, height: int, width: int) -> torch.Tensor:
    """For P axis-aligned squares per image, the index of the last square covering each pixel.

    Args:
        tops, lefts: (B, P) integer corners, chosen so that every square lies inside the image.
        side: square side in pixels.

    Returns:
        (B, H, W) long tensor holding the square index, or -1 where no square covers the pixel.
        Overlaps resolve to the highest index, deterministically on every device.
    """
    batch, count = tops.shape
    steps = torch.arange(side, device=tops.device)
    rows = (tops[:, :, None, None] + steps[None, None, :, None]).expand(batch, count, side, side)
    cols = (lefts[:, :, None, None] + steps[None, None, None, :]).expand(batch, count, side, side)
    flat_index = (rows * width + cols).reshape(batch, -1)
    square_id = torch.arange(count, device=tops.device).view(1, count, 1, 1).expand(batch, count, side, side)
    owner = torch.full((batch, height * width), -1, dtype=torch.long, device=tops.device)
    owner.scatter_reduce_(1, flat_index, square_id.reshape(batch, -1), reduce="amax")
    return owner.view(batch, height, width)


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel size covering +-3 sigma of a Gaussian."""
    return 2 * math.ceil(3.0 * sigma) + 1
