"""Compression distortions: JPEG (torchvision codec) and JPEG 2000 (Pillow/OpenJPEG round trip)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, features
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from ._common import level_value

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


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255.0).round().clamp(0, 255).to(torch.uint8)


def jpeg(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Real JPEG encode/decode with torchvision (libjpeg on CPU, nvJPEG for CUDA tensors)."""
    quality = level_value(JPEG_QUALITY, level)
    encoded = encode_jpeg(list(_to_uint8(images)), quality=quality)
    # decode_jpeg takes the byte streams on the CPU whatever device it decodes on.
    decoded = decode_jpeg([stream.cpu() for stream in encoded], mode=ImageReadMode.RGB, device=images.device)
    return torch.stack(decoded).to(images.dtype) / 255.0


def jpeg2000(images: torch.Tensor, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG 2000 encode/decode, one image at a time through Pillow's OpenJPEG codec.

    There is no torch JPEG 2000 codec, so this type runs on the CPU whatever the images' device
    (the only distortion that does) and is the slowest of the 25.
    """
    if not features.check("jpg_2000"):
        raise RuntimeError("The jpeg2000 distortion needs Pillow built with OpenJPEG (PIL.features 'jpg_2000').")
    ratio = level_value(JPEG2000_COMPRESSION_RATIO, level)
    pixels = _to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(
            buffer, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True
        )
        buffer.seek(0)
        with Image.open(buffer) as reopened:
            decoded.append(np.asarray(reopened.convert("RGB")))
    stacked = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return stacked.to(device=images.device, dtype=images.dtype) / 255.0
