"""Training data: (image, MOS) datasets, the collator that batches them, quality-preserving augmentation and the
decoded-image cache.

    DatasetDict split (image files or embedded image bytes + MOS)
      -> image source: `build_image_cache` (decoded once, uint8, in memory or memory-mapped on disk) or
         `metaqap_hf.data.images.DecodedImages` (decoded on every access); both run the inference path:
         `load_dataset_image` (files and embedded bytes alike) + `metaqap_hf.image_utils.resize_pixels`
      -> `QualityImageDataset` (+ `QualityAugmentation` for training) -> `QualityDataCollator` -> pixel_values, labels

Samples stay uint8 until the collator, which rescales the batch with the processor's own factor, so batches equal
`image_processor(images)["pixel_values"]` bit for bit when no augmentation is applied, and worker processes move a
quarter of the bytes. `training_datasets` reads only the ``train`` and ``validation`` splits of a `DatasetDict`: the
test split cannot reach training, early stopping or model selection through it.

Augmentation follows MetaQAP's official code (METHOD.md section 4): horizontal flips, a small rotation (+-10 deg),
scaling (0.9-1.1), translation (+-20 px) and a random crop, computed as one bilinear resampling of the crop's pixels
with reflection at the borders (no black corners: a black wedge is itself a visible defect). The crop is not resized
back: the model resizes any input to each backbone's size anyway. Randomness comes from a generator seeded by
(seed, epoch, index), so a resumed run repeats every sample's augmentation without saving RNG state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from ..data.images import DatasetImage, DecodedImages, image_column, image_identity

__all__ = [
    "AugmentationParams",
    "DecodedImages",
    "QualityAugmentation",
    "QualityDataCollator",
    "QualityImageDataset",
    "build_image_cache",
    "quality_dataset",
    "training_datasets",
]


# Augmentation

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


# Image sources

def image_cache_key(images: Sequence[DatasetImage], image_processor) -> str:
    """A short hash of what the cached pixels depend on: each image's identity (a file's path, size and modification
    time, or the hash of embedded bytes; `image_identity`) and the processor's resize settings. A changed or
    replaced file gives a new key, hence a new cache file."""
    settings = {name: str(getattr(image_processor, name, None)) for name in ("size", "resample", "do_resize")}
    identity = {"format": 2, "processor": type(image_processor).__name__, "settings": settings,
                "images": [image_identity(image) for image in images]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def build_image_cache(
    images: Sequence[DatasetImage],
    image_processor,
    cache_dir: str | os.PathLike | None = None,
    *,
    num_workers: int = 0,
    batch_size: int = 16,
    desc: str = "decoding images",
) -> np.ndarray:
    """Decode and process every image once (file paths, or items of a datasets ``Image`` column); return a uint8
    array (N, 3, H, W).

    With `cache_dir`, the array lives in ``<cache_dir>/images-<key>.npy`` (see `image_cache_key`): an existing
    file is memory-mapped read-only and returned at once; a new one is written to a temporary name first and
    renamed into place when complete, so an interrupted build never leaves a file that would be reused.
    `num_workers` decode in parallel (DataLoader worker processes).
    """
    if not len(images):
        raise ValueError("build_image_cache: no images given")
    files = DecodedImages(images, image_processor)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{image_cache_key(images, image_processor)}.npy"
        if cache_file.is_file():
            return np.load(cache_file, mmap_mode="r")
        cache_file.parent.mkdir(parents=True, exist_ok=True)

    shape = (len(files), *files[0].shape)
    temporary = None
    if cache_file is None:
        pixels = np.empty(shape, dtype=np.uint8)
    else:
        temporary = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npy")
        pixels = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_same_size)
    start = 0
    try:
        for batch in tqdm(loader, desc=desc, unit="batch"):
            _check_same_size(tuple(batch.shape[1:]), shape[1:])
            pixels[start:start + len(batch)] = batch.numpy()
            start += len(batch)
        if temporary is not None:
            pixels.flush()
            del pixels
            os.replace(temporary, cache_file)
            return np.load(cache_file, mmap_mode="r")
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink()
    return pixels


def _check_same_size(found: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if found != expected:
        raise ValueError(f"processed images differ in size ({found} vs {expected}); the image cache needs an "
                         "image processor that resizes every image to one size")


def _stack_same_size(images: list[torch.Tensor]) -> torch.Tensor:
    """Collate processed images into one uint8 batch, with a clear error when their sizes differ."""
    for image in images:
        _check_same_size(tuple(image.shape), tuple(images[0].shape))
    return torch.stack(images)


# Datasets and collator

class ImageSource(Protocol):
    """Anything indexable that yields uint8 (3, H, W) images: a cache array (N, 3, H, W) or `DecodedImages`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int): ...


class QualityImageDataset(Dataset):
    """Pairs of a uint8 image (3, H, W) and its MOS label, optionally augmented.

    Augmentation is a pure function of (`seed`, epoch, index): call `set_epoch` at the start of every epoch (the
    training loops here do), and an interrupted run that resumes sees the same augmented images as one that was
    never stopped. Worker processes must be created after `set_epoch` (the default, non-persistent workers are).
    """

    def __init__(
        self,
        images: ImageSource,
        labels: Sequence[float],
        augmentation: QualityAugmentation | None = None,
        seed: int = 0,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = torch.tensor(np.asarray(labels, dtype=np.float32))
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = self.images[index]
        pixels = torch.from_numpy(np.array(pixels)) if isinstance(pixels, np.ndarray) else pixels
        if self.augmentation is not None:
            pixels = self.augmentation(pixels, np.random.default_rng([self.seed, self.epoch, index]))
        return {"pixel_values": pixels, "labels": self.labels[index]}


@dataclass
class QualityDataCollator:
    """Batch samples into `pixel_values` (float in [0, 1], rescaled exactly as the image processor rescales) and
    `labels` (float32 MOS)."""

    rescale_factor: float = 1 / 255

    def __call__(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([sample["pixel_values"] for sample in samples])
        if pixels.dtype == torch.uint8:
            pixels = pixels * self.rescale_factor
        return {"pixel_values": pixels, "labels": torch.stack([sample["labels"] for sample in samples])}


def quality_dataset(
    split,
    image_processor,
    *,
    label_column: str = "mos",
    augmentation: QualityAugmentation | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> QualityImageDataset:
    """A `QualityImageDataset` over one `datasets` split with an ``image`` column (files or embedded bytes) and a
    label column.

    With `cache` (default) the images are decoded once (`build_image_cache`, on disk when `cache_dir` is given);
    without it they are decoded on every access.
    """
    if label_column not in split.column_names:
        raise ValueError(f"the split has no label column {label_column!r}; its columns are {split.column_names}")
    column = image_column(split)
    if cache:
        images = build_image_cache(column, image_processor, cache_dir, num_workers=num_workers)
    else:
        images = DecodedImages(column, image_processor)
    return QualityImageDataset(images, split[label_column][:], augmentation=augmentation, seed=seed)


def training_datasets(
    dataset_dict, image_processor, *, augmentation: QualityAugmentation | None = None, **options
) -> tuple[QualityImageDataset, QualityImageDataset]:
    """The ``train`` (with `augmentation`) and ``validation`` (without) datasets of a `DatasetDict`; `options` are
    `quality_dataset`'s (``label_column``, ``cache``, ``cache_dir``, ``num_workers``, ``seed``).

    Only those two splits are read; ``test`` is left alone whatever the dict holds. Validation must exist and be
    non-empty (load the benchmark with ``validation_fraction > 0``): it is what early stopping and model
    selection look at.
    """
    for name in ("train", "validation"):
        if name not in dataset_dict or len(dataset_dict[name]) == 0:
            raise ValueError(f"training needs a non-empty {name!r} split (validation is carved from train, e.g. "
                             f"load_dataset_source(..., validation_fraction=0.1)); got splits {list(dataset_dict)}")
    train = quality_dataset(dataset_dict["train"], image_processor, augmentation=augmentation, **options)
    validation = quality_dataset(dataset_dict["validation"], image_processor, **options)
    return train, validation
