"""The images of a dataset split, wherever they are: files on disk or bytes embedded in parquet.

A ``datasets.Image`` column holds, per row, a file path, the file's bytes, or both (a prepared folder or a hub
dataset embeds the bytes and keeps only the original file name as ``path``). Everything here takes such items (or
plain paths) and never a decoded image, so training, evaluation and feature extraction read any source the same
way, through `load_image`, the decoder inference uses:

    split -> `image_column` (undecoded items, fetched lazily) -> `load_dataset_image` (-> `load_image`)
                                                               -> `DecodedImages` (+ `resize_pixels`: uint8 pixels)
                                                               -> `image_identity` (what a cache is keyed by)
                                                               -> `find_image_problems` (before any training)
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Union

import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset

from ..deprecation import moved_names
from ..image_utils import ImageLoadError, load_image, resize_pixels

__all__ = ["DatasetImage", "DecodedImages", "ImageColumn", "find_image_problems", "image_column", "image_identity",
           "image_label", "load_dataset_image"]

# A file path, or one undecoded item of a `datasets.Image` column: {"path": str | None, "bytes": bytes | None}.
DatasetImage = Union[str, os.PathLike, Mapping[str, object]]

# Renamed in 0.2.0: `metaqap_hf.scoring.ImageInput` is another thing (one input of `metaqap score`).
__getattr__ = moved_names(__name__, {"ImageInput": ".images:DatasetImage"})


class ImageColumn(Sequence):
    """The ``image`` column of a `datasets.Dataset` as undecoded items, read from its Arrow table one at a time
    (the bytes of a large embedded dataset never sit in memory all at once)."""

    def __init__(self, split, column: str = "image"):
        from datasets import Image

        if column not in split.column_names:
            raise ValueError(f"the split has no {column!r} column; its columns are {split.column_names}")
        self._items = split.select_columns([column]).cast_column(column, Image(decode=False))
        self._column = column

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._items[int(index)][self._column]


def image_column(split) -> ImageColumn:
    """The undecoded ``image`` items of a datasets split (see `ImageColumn`)."""
    return ImageColumn(split)


def _parts(image: DatasetImage) -> tuple[str | None, bytes | None]:
    if isinstance(image, Mapping):
        path, data = image.get("path"), image.get("bytes")
        return (str(path) if path else None), data
    return str(image), None


def image_label(image: DatasetImage) -> str:
    """How messages name an image: its path (for embedded images, the file name it was stored under)."""
    path, _ = _parts(image)
    return path or "<embedded image without a name>"


def load_dataset_image(image: DatasetImage) -> PILImage.Image:
    """Decode one image with `load_image`, from its embedded bytes when it has them, else from its file.

    Raises `ImageLoadError` naming the image (for embedded bytes, by the name stored with them).
    """
    path, data = _parts(image)
    if data is None:
        if path is None:
            raise ImageLoadError(image_label(image), "the row holds neither image bytes nor a file path")
        return load_image(path)
    try:
        return load_image(io.BytesIO(data))
    except ImageLoadError as error:
        raise ImageLoadError(image_label(image), error.reason) from None


class DecodedImages(Dataset):
    """Images decoded on every access: `images[i]` is a uint8 tensor (3, H, W), decoded by `load_dataset_image` and
    resized by `image_utils.resize_pixels` (not rescaled). `images` are file paths or undecoded items of a datasets
    ``Image`` column (`image_column`), embedded bytes included. Raises `ImageLoadError` naming a bad image."""

    def __init__(self, images: Sequence[DatasetImage], image_processor):
        self.images = images
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return resize_pixels(load_dataset_image(self.images[index]), self.image_processor)


def image_identity(image: DatasetImage) -> list:
    """What pixels derived from `image` depend on, for cache keys: a file's resolved path, size and modification
    time (a replaced file gives a new identity), or the SHA-256 of embedded bytes."""
    path, data = _parts(image)
    if data is not None:
        return ["bytes", hashlib.sha256(data).hexdigest()]
    stat = Path(path).stat()
    return ["file", str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def find_image_problems(images: Iterable[DatasetImage]) -> tuple[list[str], list[str]]:
    """The images that are missing, and those that cannot be opened (with the reason), checked from their headers
    only: a fraction of a millisecond per image, so a whole dataset is checked before any model is built.
    Returns ``(missing, unreadable)``, each a list of image labels."""
    missing, unreadable = [], []
    for image in images:
        path, data = _parts(image)
        label = image_label(image)
        if data is None:
            if path is None:
                unreadable.append(f"{label} (neither bytes nor a path)")
                continue
            file = Path(path)
            if not file.exists():
                missing.append(label)
                continue
            if not file.is_file():
                unreadable.append(f"{label} (not a regular file)")
                continue
            if file.stat().st_size == 0:
                unreadable.append(f"{label} (empty file)")
                continue
        try:
            with PILImage.open(io.BytesIO(data) if data is not None else path):
                pass  # opening parses the header; the pixels are left undecoded
        except Exception as error:  # noqa: BLE001  (any failure to open is this image's problem, named below)
            reason = "not an image file PIL can read" if isinstance(error, PILImage.UnidentifiedImageError) else (
                str(error) or type(error).__name__)
            unreadable.append(f"{label} ({reason})")
    return missing, unreadable
