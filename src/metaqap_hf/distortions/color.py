"""Colour distortions: chroma diffusion, channel shift, palette quantisation, under- and over-saturation."""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import translate

from ._common import gaussian_filter, lab_to_rgb, level_value, rand, randint, rgb_to_lab

__all__ = [
    "COLOR_DIFFUSION_SIGMA",
    "COLOR_SHIFT_PIXELS",
    "COLOR_QUANTIZATION_COLORS",
    "COLOR_SATURATION_1_FACTOR",
    "COLOR_SATURATION_2_FACTOR",
    "color_diffusion",
    "color_shift",
    "color_quantization",
    "color_saturation_1",
    "color_saturation_2",
]

# Standard deviation (pixels) of the Gaussian blur applied to the Lab chroma channels a and b.
COLOR_DIFFUSION_SIGMA = (1.0, 2.5, 4.5, 7.0, 11.0)
# Displacement (pixels) of the green channel against red and blue, in a random direction per image.
COLOR_SHIFT_PIXELS = (1.0, 2.0, 3.5, 5.5, 8.0)
# Size of the per-image palette (k-means colours) that every pixel snaps to.
COLOR_QUANTIZATION_COLORS = (48, 24, 12, 6, 3)
# Factor on HSV saturation (desaturation towards grey at constant HSV value).
COLOR_SATURATION_1_FACTOR = (0.6, 0.4, 0.25, 0.1, 0.0)
# Factor on Lab chroma (a, b) at constant lightness (over-saturation).
COLOR_SATURATION_2_FACTOR = (1.3, 1.6, 2.0, 2.6, 3.4)

_KMEANS_SAMPLE_PIXELS = 4096
_KMEANS_ITERATIONS = 12
# Pixels per block of the nearest-colour search: its distance matrix then stays in the CPU's cache.
_NEAREST_BLOCK_PIXELS = 8192


def color_diffusion(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Colour bleeding: blur the Lab chroma channels while keeping lightness sharp."""
    lab = rgb_to_lab(images)
    chroma = gaussian_filter(lab[:, 1:], level_value(COLOR_DIFFUSION_SIGMA, level))
    return lab_to_rgb(torch.cat([lab[:, :1], chroma], dim=1))


def color_shift(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mis-registered colour planes: translate the green channel, which fringes every edge with colour."""
    distance = level_value(COLOR_SHIFT_PIXELS, level)
    angles = rand((images.shape[0],), generator, images.device) * (2.0 * math.pi)
    offsets = distance * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    green = translate(images[:, 1:2], offsets.to(images), mode="bilinear", padding_mode="border")
    return torch.cat([images[:, :1], green, images[:, 2:]], dim=1)


def _nearest_color(pixels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Index (B, N) of the palette colour (B, K, 3) nearest to each pixel (B, N, 3) in Euclidean distance.

    Minimises ``|c|^2 - 2 p.c`` (the squared distance less the pixel's own ``|p|^2``), block by block.
    """
    squared_norms = palette.square().sum(dim=-1)[:, None, :]
    transposed = palette.transpose(1, 2)
    return torch.cat(
        [
            torch.baddbmm(squared_norms, block, transposed, alpha=-2.0).argmin(dim=-1)
            for block in pixels.split(_NEAREST_BLOCK_PIXELS, dim=1)
        ],
        dim=1,
    )


def _kmeans_palette(pixels: torch.Tensor, colors: int, generator: torch.Generator | None) -> torch.Tensor:
    """Lloyd's k-means on a random subsample of (B, N, 3) pixels; returns (B, colors, 3) centres.

    Cluster sums use a one-hot matrix product rather than scatter-add, so results are bit-reproducible
    on GPUs too. Empty clusters keep their previous centre.
    """
    batch, count, _ = pixels.shape
    sample_index = randint(count, (batch, min(count, _KMEANS_SAMPLE_PIXELS)), generator, pixels.device)
    sample = torch.gather(pixels, 1, sample_index[..., None].expand(-1, -1, 3))
    centres = sample[:, :colors].clone()
    for _ in range(_KMEANS_ITERATIONS):
        assignment = _nearest_color(sample, centres)
        one_hot = torch.nn.functional.one_hot(assignment, centres.shape[1]).to(sample.dtype)
        sums = one_hot.transpose(1, 2) @ sample
        sizes = one_hot.sum(dim=1)[..., None]
        centres = torch.where(sizes > 0, sums / sizes.clamp(min=1.0), centres)
    return centres


def color_quantization(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Palette reduction: each image keeps only a few k-means colours (no dithering), like an indexed GIF."""
    colors = level_value(COLOR_QUANTIZATION_COLORS, level)
    batch, channels, height, width = images.shape
    pixels = images.flatten(2).transpose(1, 2)
    palette = _kmeans_palette(pixels, colors, generator)
    nearest = _nearest_color(pixels, palette)
    quantized = torch.gather(palette, 1, nearest[..., None].expand(-1, -1, channels))
    return quantized.transpose(1, 2).reshape(batch, channels, height, width)


def color_saturation_1(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Desaturation: scale HSV saturation at constant value.

    With hue and value fixed, every RGB channel is ``V - V*S*g(H)``, so scaling S by f is exactly
    ``V - f * (V - channel)``; no colour-space round trip is needed.
    """
    factor = level_value(COLOR_SATURATION_1_FACTOR, level)
    value = images.amax(dim=1, keepdim=True)
    return value - factor * (value - images)


def color_saturation_2(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Over-saturation: scale Lab chroma at constant lightness; out-of-gamut colours clip."""
    factor = level_value(COLOR_SATURATION_2_FACTOR, level)
    lab = rgb_to_lab(images)
    lab[:, 1:] *= factor
    return lab_to_rgb(lab)
