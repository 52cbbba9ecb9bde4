"""The 25 KADID-10k distortion types behind one entry point, plus random per-image sampling.

Every type maps a float batch (B, 3, H, W) on [0, 1] to a batch of the same shape, dtype and device,
clamped to [0, 1]; level 1 is the mildest and level 5 the most severe. Random choices (noise, angles,
positions) come from the optional ``torch.Generator``, so a seeded generator reproduces the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import blur, brightness, color, compression, noise, sharpness, spatial
from ._common import NUM_LEVELS, randint

__all__ = ["DISTORTION_TYPES", "NUM_LEVELS", "distort", "distort_batch", "random_distortion"]

DistortionFunction = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]

_DISTORTIONS: dict[str, DistortionFunction] = {
    "gaussian_blur": blur.gaussian_blur,
    "lens_blur": blur.lens_blur,
    "motion_blur": blur.motion_blur,
    "color_diffusion": color.color_diffusion,
    "color_shift": color.color_shift,
    "color_quantization": color.color_quantization,
    "color_saturation_1": color.color_saturation_1,
    "color_saturation_2": color.color_saturation_2,
    "jpeg": compression.jpeg,
    "jpeg2000": compression.jpeg2000,
    "white_noise": noise.white_noise,
    "white_noise_color_component": noise.white_noise_color_component,
    "impulse_noise": noise.impulse_noise,
    "multiplicative_noise": noise.multiplicative_noise,
    "denoise": noise.denoise,
    "brighten": brightness.brighten,
    "darken": brightness.darken,
    "mean_shift": brightness.mean_shift,
    "jitter": spatial.jitter,
    "non_eccentricity_patch": spatial.non_eccentricity_patch,
    "pixelate": spatial.pixelate,
    "quantization": spatial.quantization,
    "color_block": spatial.color_block,
    "high_sharpen": sharpness.high_sharpen,
    "contrast_change": sharpness.contrast_change,
}

# Fixed order: KADID-10k's numbering (type index i + 1 is KADID distortion i + 1).
DISTORTION_TYPES: tuple[str, ...] = tuple(_DISTORTIONS)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Distortions take RGB batches shaped (B, 3, H, W); got {shape}.")
    if not images.is_floating_point():
        raise TypeError(f"Distortions take float images on [0, 1]; got dtype {images.dtype}.")


def distort(
    images: torch.Tensor, kind: str, level: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply distortion ``kind`` at ``level`` (1-5) to every image of a batch.

    Args:
        images: float tensor (B, 3, H, W) with values on [0, 1], on any device.
        kind: one of ``DISTORTION_TYPES``.
        level: severity, 1 (mildest) to 5 (most severe).
        generator: source of the random choices; the same seeded generator state gives the same output.

    Returns:
        Tensor of the input's shape, dtype and device, clamped to [0, 1]. Computation runs in float32.
    """
    _check_images(images)
    if kind not in _DISTORTIONS:
        raise ValueError(f"Unknown distortion {kind!r}; expected one of {', '.join(DISTORTION_TYPES)}.")
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"Distortion level must be an integer from 1 to {NUM_LEVELS}; got {level!r}.")
    distorted = _DISTORTIONS[kind](images.float().clamp(0.0, 1.0), level, generator)
    # In place: the result is new, or at most a view of the clamped copy above, never the caller's tensor.
    return distorted.clamp_(0.0, 1.0).to(images.dtype)


def _type_indices(kinds: Sequence[str] | torch.Tensor, batch: int) -> torch.Tensor:
    """Type indices (B,) on the CPU from names or indices into ``DISTORTION_TYPES``."""
    if isinstance(kinds, torch.Tensor):
        indices = kinds.detach().cpu().long().flatten()
        unknown = indices[(indices < 0) | (indices >= len(DISTORTION_TYPES))].tolist()
        if unknown:
            raise ValueError(f"Distortion type indices must lie in [0, {len(DISTORTION_TYPES)}); got {unknown[:3]}.")
    else:
        unknown = [kind for kind in kinds if kind not in _DISTORTIONS]
        if unknown:
            raise ValueError(f"Unknown distortion {unknown[0]!r}; expected one of {', '.join(DISTORTION_TYPES)}.")
        indices = torch.tensor([DISTORTION_TYPES.index(kind) for kind in kinds], dtype=torch.long)
    if indices.numel() != batch:
        raise ValueError(f"Got {indices.numel()} distortion types for a batch of {batch} images.")
    return indices


def _level_values(levels: Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    """Levels (B,) on the CPU, each an integer from 1 to ``NUM_LEVELS``."""
    if isinstance(levels, torch.Tensor):
        if levels.is_floating_point() or levels.dtype == torch.bool:
            raise ValueError(f"Distortion levels must be integers from 1 to {NUM_LEVELS}; got dtype {levels.dtype}.")
        values = levels.detach().cpu().long().flatten()
    else:
        bad = [level for level in levels if isinstance(level, bool) or not isinstance(level, int)]
        if bad:
            raise ValueError(f"Distortion levels must be integers from 1 to {NUM_LEVELS}; got {bad[0]!r}.")
        values = torch.tensor(list(levels), dtype=torch.long)
    if values.numel() != batch:
        raise ValueError(f"Got {values.numel()} distortion levels for a batch of {batch} images.")
    outside = values[(values < 1) | (values > NUM_LEVELS)].tolist()
    if outside:
        raise ValueError(f"Distortion levels must be integers from 1 to {NUM_LEVELS}; got {outside[0]}.")
    return values


def distort_batch(
    images: torch.Tensor,
    kinds: Sequence[str] | torch.Tensor,
    levels: Sequence[int] | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Distort each image of a batch with its own type and level, on the batch's device.

    Args:
        images: float tensor (B, 3, H, W) with values on [0, 1], on any device.
        kinds: B type names, or a long tensor (B,) of indices into ``DISTORTION_TYPES``.
        levels: B severities from 1 to 5, as a sequence or a long tensor (B,).
        generator: source of the random choices; the same seeded generator state gives the same output.

    Returns:
        Tensor of the input's shape, dtype and device, clamped to [0, 1]. Images that share a (type,
        level) are processed together as one sub-batch, in the order of (type index, level).
    """
    _check_images(images)
    batch = images.shape[0]
    type_per_image = _type_indices(kinds, batch)
    level_per_image = _level_values(levels, batch)
    distorted = torch.empty_like(images)
    pairs = torch.stack([type_per_image, level_per_image], dim=1)
    for kind_id, level in torch.unique(pairs, dim=0).tolist():
        members = ((type_per_image == kind_id) & (level_per_image == level)).nonzero().flatten().to(images.device)
        distorted[members] = distort(images[members], DISTORTION_TYPES[kind_id], level, generator=generator)
    return distorted


def random_distortion(
    images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Distort each image with its own uniformly drawn type and level (see ``distort_batch``).

    Returns:
        ``(distorted, kinds, levels)``: the distorted batch, the type name of each image, and a long
        tensor (B,) of levels on the images' device.
    """
    _check_images(images)
    batch = images.shape[0]
    kind_index = randint(len(DISTORTION_TYPES), (batch,), generator, torch.device("cpu"))
    levels = randint(NUM_LEVELS, (batch,), generator, torch.device("cpu")) + 1
    distorted = distort_batch(images, kind_index, levels, generator=generator)
    kinds = [DISTORTION_TYPES[index] for index in kind_index.tolist()]
    return distorted, kinds, levels.to(images.device)
