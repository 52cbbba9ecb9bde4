"""Spatial distortions: pixel jitter, displaced patches, pixelation, intensity quantisation, colour blocks.

Types that place random elements (patches, blocks) always draw the elements of the most severe level
and keep the first ones, so under a fixed seed each level contains the previous one and adds more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._common import NUM_LEVELS, last_covering_square, level_value, rand, randint

__all__ = [
    "JITTER_PIXELS",
    "NON_ECCENTRICITY_PATCH_COVERAGE",
    "PIXELATE_BLOCK",
    "QUANTIZATION_STEPS",
    "COLOR_BLOCK_COUNT",
    "jitter",
    "non_eccentricity_patch",
    "pixelate",
    "quantization",
    "color_block",
]

# Maximum displacement (pixels) of each pixel, drawn uniformly per pixel and axis.
JITTER_PIXELS = (0.6, 1.0, 1.5, 2.2, 3.2)
# Expected fraction of the image area covered by displaced patches (patch side: 1/16 of the short side).
NON_ECCENTRICITY_PATCH_COVERAGE = (0.04, 0.08, 0.14, 0.22, 0.32)
# Side (pixels) of the square blocks that each take their mean colour.
PIXELATE_BLOCK = (2, 3, 5, 7, 10)
# Number of intensity steps per channel; step edges sit at the channel's own quantiles.
QUANTIZATION_STEPS = (20, 12, 8, 5, 3)
# Number of uniformly coloured squares pasted at random (side: 1/10 of the short side).
COLOR_BLOCK_COUNT = (2, 4, 7, 11, 16)

_PATCH_SIDE_FRACTION = 1 / 16
_BLOCK_SIDE_FRACTION = 1 / 10


def jitter(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every pixel is replaced by a neighbour at a random offset, which frays edges and fine detail."""
    amplitude = level_value(JITTER_PIXELS, level)
    batch, _, height, width = images.shape
    offsets = (rand((batch, height, width, 2), generator, images.device) * 2.0 - 1.0) * amplitude
    rows, cols = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=torch.float32),
        torch.arange(width, device=images.device, dtype=torch.float32),
        indexing="ij",
    )
    x = (cols + offsets[..., 0]) * (2.0 / max(width - 1, 1)) - 1.0
    y = (rows + offsets[..., 1]) * (2.0 / max(height - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="border", align_corners=True)


def _square_corners(
    batch: int, count: int, side: int, height: int, width: int, generator: torch.Generator | None, device
) -> tuple[torch.Tensor, torch.Tensor]:
    tops = randint(height - side + 1, (batch, count), generator, device)
    lefts = randint(width - side + 1, (batch, count), generator, device)
    return tops, lefts


def non_eccentricity_patch(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Small patches copied from a nearby position (half to one patch side away), breaking local continuity."""
    batch, channels, height, width = images.shape
    side = max(2, min(round(min(height, width) * _PATCH_SIDE_FRACTION), height, width))
    area_in_patches = height * width / side**2
    most = math.ceil(NON_ECCENTRICITY_PATCH_COVERAGE[NUM_LEVELS - 1] * area_in_patches)
    count = math.ceil(level_value(NON_ECCENTRICITY_PATCH_COVERAGE, level) * area_in_patches)
    tops, lefts = _square_corners(batch, most, side, height, width, generator, images.device)
    distance = (rand((batch, most, 2), generator, images.device) * 0.5 + 0.5) * side
    signs = torch.where(rand((batch, most, 2), generator, images.device) < 0.5, -1.0, 1.0)
    shifts = (distance * signs).round().long()
    owner = last_covering_square(tops[:, :count], lefts[:, :count], side, height, width)
    covered = owner >= 0
    shift = torch.gather(shifts[:, :count], 1, owner.clamp(min=0).view(batch, -1, 1).expand(-1, -1, 2))
    shift = shift.view(batch, height, width, 2) * covered[..., None]
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    source_rows = (rows - shift[..., 0]).clamp(0, height - 1)
    source_cols = (cols - shift[..., 1]).clamp(0, width - 1)
    source = (source_rows * width + source_cols).view(batch, 1, -1).expand(-1, channels, -1)
    return torch.gather(images.flatten(2), 2, source).view_as(images)


def pixelate(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mosaic: average over square blocks, then show each block as one flat colour."""
    block = level_value(PIXELATE_BLOCK, level)
    height, width = images.shape[-2:]
    coarse = F.adaptive_avg_pool2d(images, (math.ceil(height / block), math.ceil(width / block)))
    return F.interpolate(coarse, size=(height, width), mode="nearest")


def _float_order_keys(values: torch.Tensor) -> torch.Tensor:
    """The bits of float32 ``values`` as int32 that order like the floats (negatives' magnitude bits flipped);
    the mapping is its own inverse."""
    bits = values.view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _sort_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted values and sorting indices of each row of (R, N) floats.

    Row by row on 32-bit integer keys: a 1-D stable integer sort takes the CPU's radix sort, 4-5 times
    faster than a batched float sort.
    """
    keys = _float_order_keys(rows.float().contiguous())
    sorted_keys, order = zip(*(row.sort(stable=True) for row in keys))
    return _float_order_keys(torch.stack(sorted_keys)).view(torch.float32).to(rows.dtype), torch.stack(order)


def quantization(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intensity quantisation: each channel keeps a few steps whose edges are the channel's quantiles
    (so every step holds about the same number of pixels); a pixel takes the centre of its step."""
    steps = level_value(QUANTIZATION_STEPS, level)
    flat = images.reshape(-1, images.shape[-2] * images.shape[-1])
    ordered, order = _sort_rows(flat)
    positions = torch.linspace(0, flat.shape[-1] - 1, steps + 1, device=images.device).round().long()
    edges = ordered[:, positions]
    centres = (edges[:, :-1] + edges[:, 1:]) / 2.0
    # A value's step counts the inner edges at or below it; in sorted order that count only grows, by one at
    # each inner edge's first occurrence, so it is a cumulative sum rather than a search per pixel.
    first_at_edge = torch.searchsorted(ordered, edges[:, 1:-1].contiguous())
    increments = torch.zeros(ordered.shape, dtype=torch.long, device=images.device)
    increments.scatter_add_(1, first_at_edge, torch.ones_like(first_at_edge))
    in_sorted_order = torch.gather(centres, 1, increments.cumsum_(1))
    return torch.empty_like(ordered).scatter_(1, order, in_sorted_order).view(images.shape)


def color_block(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly coloured squares of random colour pasted at random positions."""
    batch, channels, height, width = images.shape
    side = max(2, min(round(min(height, width) * _BLOCK_SIDE_FRACTION), height, width))
    most = COLOR_BLOCK_COUNT[NUM_LEVELS - 1]
    count = level_value(COLOR_BLOCK_COUNT, level)
    tops, lefts = _square_corners(batch, most, side, height, width, generator, images.device)
    colors = rand((batch, most, channels), generator, images.device).to(images.dtype)
    owner = last_covering_square(tops[:, :count], lefts[:, :count], side, height, width)
    painted = torch.gather(colors[:, :count], 1, owner.clamp(min=0).view(batch, -1, 1).expand(-1, -1, channels))
    painted = painted.transpose(1, 2).view_as(images)
    return torch.where((owner >= 0)[:, None], painted, images)
