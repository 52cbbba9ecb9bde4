"""Reading pristine images for distortion: any file Pillow opens, EXIF-oriented, as an RGB float tensor."""

from __future__ import annotations

from os import PathLike
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["read_rgb_image"]


def read_rgb_image(path: str | PathLike | BinaryIO) -> torch.Tensor:
    """Decode ``path`` (file name or binary file object) to a float tensor (3, H, W) on [0, 1], EXIF-oriented."""
    try:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255.0
