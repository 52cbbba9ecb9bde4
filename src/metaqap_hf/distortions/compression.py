"""Compression distortions: JPEG (torchvision codec) and a JPEG 2000-like wavelet coder in torch.

JPEG runs the real codec on the images' device (libjpeg on CPU, nvJPEG for CUDA tensors). There is no
JPEG 2000 codec on a GPU, and OpenJPEG through Pillow costs about 0.1 s per 384-px image on a CPU core,
so ``jpeg2000`` reproduces the codec's irreversible path in batched tensor code instead: colour
transform, 5-level CDF 9/7 wavelet, a dead-zone quantiser whose step meets the compression ratio under
a bit-count model calibrated on OpenJPEG, and the inverse. Its PSNR per level stays within about 1 dB
of OpenJPEG's on 128-384 px photos (tests/test_distortion_reference.py).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from ._common import level_value, mix_channels

__all__ = [
    "JPEG_QUALITY",
    "JPEG2000_COMPRESSION_RATIO",
    "jpeg",
    "jpeg2000",
]

# libjpeg quality factor per level (1 = worst possible).
JPEG_QUALITY = (45, 22, 12, 7, 3)
# JPEG 2000 compression ratio (raw 24-bit size / code-stream size) per level.
JPEG2000_COMPRESSION_RATIO = (12, 24, 48, 90, 160)

_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.16875, -0.33126, 0.5], [0.5, -0.41869, -0.08131]])
_YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.34413, -0.71414], [1.0, 1.772, 0.0]])
# CDF 9/7 lifting weights and scaling of JPEG 2000 Part 1's irreversible wavelet.
_LIFTING_WEIGHTS = (-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971)
_LIFTING_SCALE = 1.230174104914001
_DECOMPOSITIONS = 5
# Rate model, fitted to OpenJPEG (Pillow, quality_mode="rates") on pristine photos of 128-384 px: a
# coefficient quantised to q != 0 costs this many bits plus log2|q|; zeros are free; the code-stream
# headers take a fixed number of bytes out of the budget.
_BITS_PER_SIGNIFICANT_COEFFICIENT = 11.0
_HEADER_BYTES = 250
# Candidate quantiser steps: a log2 grid, searched for all images at once from a histogram.
_STEPS_PER_OCTAVE = 16
_LOWEST_STEP_OCTAVE = -6
_STEP_OCTAVES = 20


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round().clamp(0, 255).to(torch.uint8)


def jpeg(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Real JPEG encode/decode with torchvision (libjpeg on CPU, nvJPEG for CUDA tensors)."""
    quality = level_value(JPEG_QUALITY, level)
    encoded = encode_jpeg(list(_to_uint8(images)), quality=quality)
    # decode_jpeg takes the byte streams on the CPU whatever device it decodes on.
    decoded = decode_jpeg([stream.cpu() for stream in encoded], mode=ImageReadMode.RGB, device=images.device)
    return torch.stack(decoded).to(images.dtype) / 255.0


def _predict(target: torch.Tensor, source: torch.Tensor, weight: float, dim: int) -> None:
    """In place: target[n] += weight * (source[n] + source[n + 1]), the source mirrored past its end."""
    length = source.shape[dim]
    pairs = source.narrow(dim, 0, length - 1) + source.narrow(dim, 1, length - 1)
    target.narrow(dim, 0, length - 1).add_(pairs, alpha=weight)
    target.narrow(dim, length - 1, 1).add_(source.narrow(dim, length - 1, 1), alpha=2 * weight)


def _update(target: torch.Tensor, source: torch.Tensor, weight: float, dim: int) -> None:
    """In place: target[n] += weight * (source[n - 1] + source[n]), the source mirrored before its start."""
    length = source.shape[dim]
    pairs = source.narrow(dim, 0, length - 1) + source.narrow(dim, 1, length - 1)
    target.narrow(dim, 1, length - 1).add_(pairs, alpha=weight)
    target.narrow(dim, 0, 1).add_(source.narrow(dim, 0, 1), alpha=2 * weight)


def _analysis(signal: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CDF 9/7 step along ``dim`` (even length): the low-pass and high-pass halves."""
    even_index = torch.arange(0, signal.shape[dim], 2, device=signal.device)
    low, high = signal.index_select(dim, even_index), signal.index_select(dim, even_index + 1)
    first, second, third, fourth = _LIFTING_WEIGHTS
    _predict(high, low, first, dim)
    _update(low, high, second, dim)
    _predict(high, low, third, dim)
    _update(low, high, fourth, dim)
    return low.mul_(1.0 / _LIFTING_SCALE), high.mul_(_LIFTING_SCALE)


def _synthesis(low: torch.Tensor, high: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of ``_analysis``: interleave the halves back into one signal."""
    first, second, third, fourth = _LIFTING_WEIGHTS
    even, odd = low * _LIFTING_SCALE, high * (1.0 / _LIFTING_SCALE)
    _update(even, odd, -fourth, dim)
    _predict(odd, even, -third, dim)
    _update(even, odd, -second, dim)
    _predict(odd, even, -first, dim)
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def _wavelet(images: torch.Tensor, levels: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
    """Mallat decomposition: the coarsest LL band and, finest first, each level's (LH, HL, HH) bands."""
    details = []
    low = images
    for _ in range(levels):
        column_low, column_high = _analysis(low, 3)
        low, low_high = _analysis(column_low, 2)
        high_low, high_high = _analysis(column_high, 2)
        details.append((low_high, high_low, high_high))
    return low, details


def _inverse_wavelet(low: torch.Tensor, details: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    for low_high, high_low, high_high in reversed(details):
        low = _synthesis(_synthesis(low, low_high, 2), _synthesis(high_low, high_high, 2), 3)
    return low


@functools.lru_cache(maxsize=None)
def _band_gains(levels: int) -> tuple[float, list[tuple[float, float, float]]]:
    """L2 norm of one coefficient's synthesised image, per band: a step divided by it gives every band
    the same squared error per unit step (the MSE-optimal allocation of JPEG 2000's rate control)."""
    size = 2 ** (levels + 4)
    low, details = _wavelet(torch.zeros(1, 1, size, size, dtype=torch.float64), levels)

    def gain(band: torch.Tensor) -> float:
        band[..., band.shape[-2] // 2, band.shape[-1] // 2] = 1.0
        norm = _inverse_wavelet(low, details).norm().item()
        band.zero_()
        return norm

    return gain(low), [tuple(gain(band) for band in bands) for bands in details]


def _quantizer_steps(magnitudes: torch.Tensor, budget_bits: float) -> torch.Tensor:
    """Per image, the smallest step on the log2 grid whose modelled code size fits ``budget_bits``.

    Args:
        magnitudes: (B, N) gain-weighted absolute coefficients.
    """
    batch = magnitudes.shape[0]
    grid_size = _STEPS_PER_OCTAVE * _STEP_OCTAVES
    octave = magnitudes.clamp(min=2.0**_LOWEST_STEP_OCTAVE).log2_()
    bins = octave.sub_(_LOWEST_STEP_OCTAVE).mul_(_STEPS_PER_OCTAVE).floor_().clamp_(max=grid_size - 1).long()
    counts = torch.zeros(batch, grid_size, device=magnitudes.device).scatter_add_(1, bins, torch.ones_like(octave))
    grid = _LOWEST_STEP_OCTAVE + torch.arange(grid_size, device=magnitudes.device) / _STEPS_PER_OCTAVE
    centres = grid + 0.5 / _STEPS_PER_OCTAVE
    # For the step 2**grid[i]: the coefficients at or above it, and the sum of their log2 magnitudes.
    significant = counts.flip(1).cumsum(1).flip(1)
    log_sum = (counts * centres).flip(1).cumsum(1).flip(1)
    bits = _BITS_PER_SIGNIFICANT_COEFFICIENT * significant + log_sum - grid * significant
    fits = bits <= budget_bits
    # No step fits a budget the headers alone exhaust: the coarsest step, as the codec's floor.
    index = torch.where(fits.any(dim=1), fits.float().argmax(dim=1), grid_size - 1)
    return (2.0 ** grid[index]).view(batch, 1, 1, 1)


def _dead_zone(coefficients: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Quantise and dequantise: magnitudes below one step vanish, others return to their bin's middle."""
    bins = coefficients.abs().div_(step).floor_()
    kept = bins > 0
    return bins.add_(0.5).mul_(step).mul_(kept).copysign_(coefficients)


def jpeg2000(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG 2000-like compression at the level's ratio: blur and ringing from zeroed wavelet detail."""
    ratio = level_value(JPEG2000_COMPRESSION_RATIO, level)
    batch, _, height, width = images.shape
    # The codec's irreversible colour transform, on level-shifted 8-bit samples.
    ycbcr = mix_channels(_RGB_TO_YCBCR, images.mul(255.0).round_().clamp_(0, 255))
    ycbcr[:, 0] -= 128.0
    levels = min(_DECOMPOSITIONS, int(math.log2(min(height, width))))
    multiple = 2**levels
    # Mirror the image out to whole blocks of the coarsest level (the codec's symmetric extension).
    pad_bottom, pad_right = -height % multiple, -width % multiple
    if pad_bottom or pad_right:
        ycbcr = F.pad(ycbcr, (0, pad_right, 0, pad_bottom), mode="reflect")
    low, details = _wavelet(ycbcr, levels)
    low_gain, detail_gains = _band_gains(levels)
    weighted = [low.flatten(1) * low_gain] + [
        band.flatten(1) * gain for bands, gains in zip(details, detail_gains) for band, gain in zip(bands, gains)
    ]
    padded_area = ycbcr.shape[-2] * ycbcr.shape[-1]
    budget_bits = (24.0 * height * width / ratio - 8.0 * _HEADER_BYTES) * padded_area / (height * width)
    step = _quantizer_steps(torch.cat(weighted, dim=1).abs(), budget_bits)
    low = _dead_zone(low, step / low_gain)
    details = [
        tuple(_dead_zone(band, step / gain) for band, gain in zip(bands, gains))
        for bands, gains in zip(details, detail_gains)
    ]
    decoded = _inverse_wavelet(low, details)[..., :height, :width].contiguous()
    decoded[:, 0] += 128.0
    return mix_channels(_YCBCR_TO_RGB, decoded).round_().clamp_(0, 255).div_(255.0).to(images.dtype)
