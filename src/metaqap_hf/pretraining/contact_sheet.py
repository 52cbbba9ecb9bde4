"""A contact sheet of every distortion type at every level, for checking the generator by eye."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from ..image_utils import load_image_tensor

__all__ = ["make_contact_sheet"]

_LABEL_WIDTH = 190
_HEADER_HEIGHT = 22
_GAP = 2
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)


def _center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centred ``size`` x ``size`` crop of a (3, H, W) image at its native resolution, as a batch of one.

    Distortion parameters are in pixels, so the sheet shows them at the scale training crops see;
    an image whose short side is below ``size`` is first enlarged to fit.
    """
    height, width = image.shape[-2:]
    if min(height, width) < size:
        scale = size / min(height, width)
        height, width = max(size, round(height * scale)), max(size, round(width * scale))
        image = F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False)[0]
    top, left = (height - size) // 2, (width - size) // 2
    return image[None, :, top : top + size, left : left + size].clamp(0.0, 1.0)


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def make_contact_sheet(
    image_path: str | PathLike, output_png: str | PathLike, size: int = 128, seed: int = 0
) -> Path:
    """Write one PNG: a row per distortion type (25), the original then levels 1-5 left to right.

    Each cell is the centred ``size`` x ``size`` crop of ``image_path`` at native resolution; ``seed``
    fixes the random choices, so the sheet is reproducible. Returns the path written.
    """
    pristine = _center_crop(load_image_tensor(image_path), size)
    font = ImageFont.load_default()
    columns = ["original"] + [f"level {level}" for level in range(1, NUM_LEVELS + 1)]
    cell = size + _GAP
    sheet = Image.new(
        "RGB", (_LABEL_WIDTH + cell * len(columns), _HEADER_HEIGHT + cell * len(DISTORTION_TYPES)), _BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(columns):
        draw.text((_LABEL_WIDTH + column * cell + 4, 4), title, fill=_INK, font=font)
    for row, kind in enumerate(DISTORTION_TYPES):
        top = _HEADER_HEIGHT + row * cell
        draw.text((6, top + size // 2 - 6), f"{row + 1:2d} {kind}", fill=_INK, font=font)
        sheet.paste(_to_pil(pristine[0]), (_LABEL_WIDTH, top))
        for level in range(1, NUM_LEVELS + 1):
            generator = torch.Generator().manual_seed(seed)
            distorted = distort(pristine, kind, level, generator=generator)
            sheet.paste(_to_pil(distorted[0]), (_LABEL_WIDTH + level * cell, top))
    output_png = Path(output_png)
    output_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output_png)
    return output_png
