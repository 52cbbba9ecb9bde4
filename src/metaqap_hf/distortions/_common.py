"""Helpers shared by the distortion families: seeded random draws, level look-up, masks, kernel sizes.

Random numbers are drawn on the generator's own device and then moved to the images' device, so a
CPU ``torch.Generator`` gives the same draws whether the images live on the CPU or on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d, get_gaussian_kernel2d

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
    "fft_filter2d",
    "gaussian_filter",
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


def _fft_friendly(length: int) -> int:
    """The smallest length >= ``length`` with no prime factor above 5 (fast for pocketfft and cuFFT)."""
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def fft_filter2d(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter (B, C, H, W) images with a symmetric 2-D kernel of odd size, borders replicated.

    Equal to direct filtering up to float rounding (about 1e-6), at a cost that does not grow with the
    kernel: faster than a direct convolution for non-separable or wide kernels.
    """
    kernel_height, kernel_width = kernel.shape[-2:]
    padded = F.pad(images, (kernel_width // 2,) * 2 + (kernel_height // 2,) * 2, mode="replicate")
    # Zero-extending to a fast length leaves the part kept below free of wrap-around.
    size = (_fft_friendly(padded.shape[-2]), _fft_friendly(padded.shape[-1]))
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernel.to(images), s=size)
    filtered = torch.fft.irfft2(spectrum, s=size)
    return filtered[..., kernel_height - 1 : padded.shape[-2], kernel_width - 1 : padded.shape[-1]]


# Above this kernel size, a Gaussian blur goes through the FFT rather than two 1-D convolutions.
_LARGEST_DIRECT_GAUSSIAN = 31


def gaussian_filter(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels over +-3 sigma, borders replicated."""
    size = gaussian_kernel_size(sigma)
    if size <= _LARGEST_DIRECT_GAUSSIAN:
        # Contiguous: a channel slice (such as Lab's chroma) filters about 10 times slower on the CPU.
        return gaussian_blur2d(images.contiguous(), (size, size), (sigma, sigma), border_type="replicate")
    return fft_filter2d(images, get_gaussian_kernel2d((size, size), (sigma, sigma))[0])
