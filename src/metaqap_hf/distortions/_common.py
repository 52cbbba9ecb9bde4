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
    "mix_channels",
    "rgb_to_lab",
    "lab_to_rgb",
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


def mix_channels(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``matrix`` (3, 3) applied to the channels of (B, 3, H, W) images.

    A matrix product rather than a 1x1 convolution (as fast on the CPU here): cuDNN may run convolutions in
    TF32, whose 10-bit mantissa would move 8-bit colour values by more than a rounding step.
    """
    return torch.matmul(matrix.to(images), images.flatten(2)).view(images.shape)


# CIE Lab (D65 white, 2-degree observer), as kornia.color defines it, computed with fewer full-image passes: the
# white point and Lab's linear steps folded into 3x3 matrices, and each piecewise curve evaluated without a
# branch as ``curve(max(x, knee)) + slope * min(x - knee, 0)`` (the curve is continuous at its knee), because a
# select costs more than ten times an elementwise minimum on the CPU.
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.tensor(
    [
        [3.2404813432005266, -1.5371515162713185, -0.4985363261688878],
        [-0.9692549499965682, 1.8759900014898907, 0.0415559265582928],
        [0.0556466391351772, -0.2040413383665112, 1.0573110696453443],
    ],
    dtype=torch.float64,
)
# (fx, fy, fz) -> (L + 16, a, b) and its inverse.
_F_TO_LAB = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]], dtype=torch.float64)
_LAB_TO_F = torch.linalg.inv(_F_TO_LAB)
_SRGB_KNEE, _SRGB_SLOPE = 0.04045, 1 / 12.92
_LINEAR_KNEE = 0.0031308
_LAB_KNEE, _LAB_SLOPE = 0.008856, 7.787
_LAB_F_KNEE = 0.2068966


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """Lab (L on [0, 100]) of sRGB images on [0, 1], in float32 whatever the input's floating dtype."""
    rgb = images.float()
    linear = ((rgb.clamp(min=_SRGB_KNEE) + 0.055) / 1.055).pow_(2.4)
    linear.add_((rgb - _SRGB_KNEE).clamp_(max=0.0), alpha=_SRGB_SLOPE)
    xyz = mix_channels(_RGB_TO_XYZ / _WHITE[:, None], linear)
    f = xyz.clamp(min=_LAB_KNEE).pow_(1 / 3).add_(xyz.sub_(_LAB_KNEE).clamp_(max=0.0), alpha=_LAB_SLOPE)
    lab = mix_channels(_F_TO_LAB, f)
    lab[:, 0] -= 16.0
    return lab


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """sRGB on [0, 1] (clipped) of Lab images, in float32."""
    f = mix_channels(_LAB_TO_F, lab.float()).add_(16.0 / 116.0)  # every f takes (L + 16) / 116
    f[:, 2].clamp_(min=0.0)  # out of range colours: Z below 0
    knee = f.clamp(min=_LAB_F_KNEE)
    xyz = (knee * knee * knee).add_(f.sub_(_LAB_F_KNEE).clamp_(max=0.0), alpha=1 / _LAB_SLOPE)
    linear = mix_channels(_XYZ_TO_RGB * _WHITE, xyz)
    rgb = linear.clamp(min=_LINEAR_KNEE).pow_(1 / 2.4).mul_(1.055).sub_(0.055)
    return rgb.add_(linear.sub_(_LINEAR_KNEE).clamp_(max=0.0), alpha=1 / _SRGB_SLOPE).clamp_(0.0, 1.0)
