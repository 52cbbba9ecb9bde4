"""Torch datasets of (image, MOS) pairs for training and evaluation, and the collator that batches them.

Images come from a uint8 source shaped like the image processor's output before rescaling: a decoded cache
(`build_image_cache`) or the files themselves (`ImageFiles`). Samples stay uint8 until the collator, which
rescales the batch with the processor's own factor, so batches equal `image_processor(images)["pixel_values"]`
bit for bit when no augmentation is applied, and worker processes move a quarter of the bytes.

`training_datasets` takes a `DatasetDict` and reads only its ``train`` and ``validation`` splits: the test split
cannot reach training, early stopping or model selection through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import QualityAugmentation
from .features import image_paths
from .image_cache import ImageFiles, build_image_cache

__all__ = ["ImageSource", "QualityDataCollator", "QualityImageDataset", "quality_dataset", "training_datasets"]


class ImageSource(Protocol):
    """Anything indexable that yields uint8 (3, H, W) images: a cache array (N, 3, H, W) or `ImageFiles`."""

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
    """A `QualityImageDataset` over one `datasets` split with an ``image`` column of files and a label column.

    With `cache` (default) the images are decoded once (`build_image_cache`, on disk when `cache_dir` is given);
    without it they are decoded on every access.
    """
    if label_column not in split.column_names:
        raise ValueError(f"the split has no label column {label_column!r}; its columns are {split.column_names}")
    paths = image_paths(split)
    if cache:
        images = build_image_cache(paths, image_processor, cache_dir, num_workers=num_workers)
    else:
        images = ImageFiles(paths, image_processor)
    return QualityImageDataset(images, split[label_column], augmentation=augmentation, seed=seed)


def training_datasets(
    dataset_dict,
    image_processor,
    *,
    label_column: str = "mos",
    augmentation: QualityAugmentation | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> tuple[QualityImageDataset, QualityImageDataset]:
    """The ``train`` (augmented) and ``validation`` (not augmented) datasets of a `DatasetDict`.

    Only those two splits are read; ``test`` is left alone whatever the dict holds. Validation must exist and be
    non-empty (load the benchmark with ``validation_fraction > 0``): it is what early stopping and model
    selection look at.
    """
    for name in ("train", "validation"):
        if name not in dataset_dict or len(dataset_dict[name]) == 0:
            raise ValueError(f"training needs a non-empty {name!r} split (validation is carved from train, e.g. "
                             f"load_biq2021(..., validation_fraction=0.1)); got splits {list(dataset_dict)}")
    options = dict(label_column=label_column, cache=cache, cache_dir=cache_dir, num_workers=num_workers, seed=seed)
    train = quality_dataset(dataset_dict["train"], image_processor, augmentation=augmentation, **options)
    validation = quality_dataset(dataset_dict["validation"], image_processor, **options)
    return train, validation
