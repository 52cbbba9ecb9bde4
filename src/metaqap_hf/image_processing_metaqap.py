"""Image processors for MetaQAP: decode an image and turn it into the float tensor every backbone starts from.

Resize policy (deterministic; no random crops at inference): every image is resized *whole* to
`size` (512x512 by default), bicubic with antialiasing, whatever its size and aspect ratio. Nothing is cropped away,
so no region of the photo goes unscored; images far from square are stretched, which changes their geometry but not
their blur, noise or compression artefacts the way a crop would drop them. BIQ2021 photos (512x512) pass unchanged.
Pixel values are scaled to [0, 1]; per-backbone resizing and mean/std normalisation happen inside the model, so one
processed tensor feeds every backbone.

Two backends, as in transformers 5: `MetaQAPImageProcessor` (torchvision, batched, any device) and
`MetaQAPImageProcessorPil` (PIL/NumPy only). Their bicubic kernels differ slightly, so scores differ in the
third decimal between backends; each is deterministic run to run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import PILImageResampling

__all__ = [
    "ImageLoadError",
    "load_image",
    "load_image_tensor",
    "to_rgb_image",
    "MetaQAPImageProcessor",
    "MetaQAPImageProcessorPil",
]

# Decompression-bomb guard: PIL's default limit, stated explicitly so it is an error (named file) not a warning.
MAX_IMAGE_PIXELS = 178_956_970


class ImageLoadError(ValueError):
    """An input image could not be used. `path` names it (or says what was given) and `reason` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def to_rgb_image(image: Image.Image | np.ndarray, name: str = "<image>") -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image or an array (HxW, HxWx1, HxWx3 or HxWx4; uint8 in 0-255, or float in
    [0, 1]). Alpha is dropped; greyscale is replicated to three channels; 16-bit images are scaled to 8 bits."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # channels-first input
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ImageLoadError(name, f"array of shape {image.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
        if array.dtype == np.uint8:
            pass
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise ImageLoadError(name, "float arrays must hold finite values in [0, 1]")
            array = np.round(array * 255).astype(np.uint8)
        elif array.dtype == np.uint16:
            array = (array // 257).astype(np.uint8)
        else:
            raise ImageLoadError(name, f"unsupported array dtype {array.dtype} (use uint8, uint16 or float in [0, 1])")
        image = Image.fromarray(np.ascontiguousarray(array))
    if not isinstance(image, Image.Image):
        raise ImageLoadError(name, f"expected a file path, PIL image or numpy array, got {type(image).__name__}")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(path: str | os.PathLike | BinaryIO) -> Image.Image:
    """Decode an image file (or binary file object) fully, so truncated files fail here and not later, apply its
    EXIF orientation and return 8-bit RGB. Raises `ImageLoadError` naming the file and the problem."""
    name = str(path)
    if isinstance(path, (str, os.PathLike)):
        file = Path(path)
        if not file.is_file():
            raise ImageLoadError(name, "no such file" if not file.exists() else "not a regular file")
        if file.stat().st_size == 0:
            raise ImageLoadError(name, "empty file (0 bytes)")
    else:
        file = path
    try:
        with Image.open(file) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageLoadError(name, f"image of {image.width}x{image.height} pixels is too large to score")
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb_image(image, name)
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, ImageLoadError):
            raise
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageLoadError(name, reason) from None


def load_image_tensor(path: str | os.PathLike | BinaryIO) -> torch.Tensor:
    """`load_image` as a float tensor (3, H, W) in [0, 1], for code that works on tensors (distortions)."""
    return torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1).float() / 255.0


class _MetaQAPDefaults:
    resample = PILImageResampling.BICUBIC
    size = {"height": 512, "width": 512}
    do_resize = True
    do_rescale = True
    do_normalize = False  # each backbone normalises with its own statistics inside the model
    do_convert_rgb = True
    model_input_names = ["pixel_values"]


class MetaQAPImageProcessor(_MetaQAPDefaults, TorchvisionBackend):
    """Torchvision backend: batched resizing, runs on the device the images are on."""


class MetaQAPImageProcessorPil(_MetaQAPDefaults, PilBackend):
    """PIL backend: no torchvision needed at preprocessing time."""
