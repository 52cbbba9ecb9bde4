"""Training augmentation as MetaQAP's official code uses it (METHOD.md section 4): horizontal flips, a small
rotation (+-10 deg), scaling (0.9-1.1), translation (+-20 px) and a random crop, on the processed uint8 image.

Why this shape:
- It runs on the tensor the shared image processor made (decoded by `load_image`, resized whole to 512x512), so
  training sees exactly the pixels inference sees before the random geometry; no second decode/resize path.
- Rotation, scaling, translation and the crop are one bilinear resampling (`grid_sample`) computed for the crop's
  pixels only, reflecting at the image borders: no black corners appear (a black wedge is itself a visible defect
  and would teach the model that rotated photos are worse).
- The crop is not resized back: the model resizes any input to each backbone's `image_size` anyway, so a resize
  here would only add a second resampling (quality artefacts are what the model looks at).
- Randomness comes from a `numpy.random.Generator` the caller passes, so a sample's augmentation can be made a
  pure function of (seed, epoch, index); resuming a run then repeats it exactly without saving any RNG state.

Evaluation uses no augmentation at all (pass `augmentation=None` to the dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = ["AugmentationParams", "QualityAugmentation"]


@dataclass(frozen=True)
class AugmentationParams:
    """One sample's random geometry: flip, rotation (degrees), scale, translation (x, y pixels) and crop box."""

    flip: bool
    angle: float
    scale: float
    translate: tuple[float, float]
    crop_top: int
    crop_left: int
    crop_height: int
    crop_width: int


@dataclass(frozen=True)
class QualityAugmentation:
    """Random flip + rotation + scale + translation + crop of a (3, H, W) image tensor (uint8 or float).

    Args:
        flip_probability: chance of a horizontal flip.
        max_rotation: rotation angle drawn uniformly from [-max_rotation, max_rotation] degrees.
        scale_range: zoom factor drawn uniformly from this range (1 = unchanged).
        max_translation: shift drawn uniformly from [-max_translation, max_translation] pixels on each axis.
        crop_fraction: side of the random crop as a fraction of the image side (1 = no crop). All crops of
            equal-sized images have the same size, so they batch.
    """

    flip_probability: float = 0.5
    max_rotation: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_translation: float = 20.0
    crop_fraction: float = 0.875

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if not 0.0 <= self.max_rotation <= 45.0:
            raise ValueError(f"max_rotation must be in [0, 45] degrees, got {self.max_rotation}")
        low, high = self.scale_range
        if not 0.5 <= low <= high <= 2.0:
            raise ValueError(f"scale_range must satisfy 0.5 <= low <= high <= 2, got {self.scale_range}")
        if self.max_translation < 0:
            raise ValueError(f"max_translation must be >= 0 pixels, got {self.max_translation}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

    def sample(self, rng: np.random.Generator, height: int, width: int) -> AugmentationParams:
        """Draw one sample's parameters for an image of `height` x `width`."""
        crop_height = max(1, round(height * self.crop_fraction))
        crop_width = max(1, round(width * self.crop_fraction))
        return AugmentationParams(
            flip=bool(rng.random() < self.flip_probability),
            angle=float(rng.uniform(-self.max_rotation, self.max_rotation)),
            scale=float(rng.uniform(*self.scale_range)),
            translate=(float(rng.uniform(-self.max_translation, self.max_translation)),
                       float(rng.uniform(-self.max_translation, self.max_translation))),
            crop_top=int(rng.integers(0, height - crop_height + 1)),
            crop_left=int(rng.integers(0, width - crop_width + 1)),
            crop_height=crop_height,
            crop_width=crop_width,
        )

    def apply(self, image: torch.Tensor, params: AugmentationParams) -> torch.Tensor:
        """Apply `params` to a (3, H, W) tensor; returns (3, crop_height, crop_width) of the same dtype."""
        if image.dim() != 3:
            raise ValueError(f"expected one (C, H, W) image, got shape {tuple(image.shape)}")
        if params.flip:
            image = TF.horizontal_flip_image(image)
        top, left, height, width = params.crop_top, params.crop_left, params.crop_height, params.crop_width
        if not (params.angle or params.scale != 1.0 or any(params.translate)):
            return image[:, top:top + height, left:left + width].clone()
        grid = _sampling_grid(image.shape[-2:], params, device=image.device)
        out = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)[0]
        if image.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(image.dtype)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return self.apply(image, self.sample(rng, *image.shape[-2:]))


def _sampling_grid(size: torch.Size, params: AugmentationParams, device: torch.device) -> torch.Tensor:
    """Where each pixel of the output crop reads the input, as a `grid_sample` grid (1, crop_h, crop_w, 2).

    The augmented image is the input rotated by `angle` and scaled by `scale` about its centre, then shifted by
    `translate`; the crop is a window of it. Only the crop's pixels are computed, and `grid_sample` reflects at
    the borders, so no padded copy of the image is made.
    """
    height, width = size
    rows = torch.arange(params.crop_top, params.crop_top + params.crop_height, device=device) + 0.5
    cols = torch.arange(params.crop_left, params.crop_left + params.crop_width, device=device) + 0.5
    y, x = torch.meshgrid(rows.double(), cols.double(), indexing="ij")
    # Inverse of p = c + scale * R(angle) (q - c) + t:  q = c + R(-angle) (p - c - t) / scale.
    dx = (x - width / 2 - params.translate[0]) / params.scale
    dy = (y - height / 2 - params.translate[1]) / params.scale
    cos, sin = math.cos(math.radians(params.angle)), math.sin(math.radians(params.angle))
    source_x = width / 2 + cos * dx + sin * dy
    source_y = height / 2 - sin * dx + cos * dy
    grid = torch.stack([2 * source_x / width - 1, 2 * source_y / height - 1], dim=-1)
    return grid[None].float()
