"""What pretraining distorts, when it comes from a labelled dataset: the image files of its train and validation
splits (`metaqap pretrain --content-dataset`). The test split is never read, so pretraining cannot see images a
later evaluation scores."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..data import DatasetSource, image_column, load_dataset_source

__all__ = ["training_image_files"]


def training_image_files(
    dataset: str | os.PathLike | DatasetSource,
    data_dir: str | os.PathLike | None = None,
    *,
    mos_range: Sequence[float] | None = None,
) -> list[str]:
    """The image files of `dataset`'s train and validation splits (anything `load_dataset_source` resolves).
    Pretraining decodes files, so a dataset whose images are embedded (parquet) raises `ValueError` saying so."""
    source = load_dataset_source(dataset, data_dir, mos_range=mos_range, validation_fraction=0.0)
    files = []
    for split in ("train", "validation"):
        for item in image_column(source.dataset[split]) if split in source.dataset else ():
            path = item.get("path") if isinstance(item, dict) else str(item)
            if isinstance(item, dict) and item.get("bytes") or not path:
                raise ValueError(f"{source.describe()}: its images are embedded in the dataset, and pretraining "
                                 "reads image files; give their folder with --pristine-dir instead")
            files.append(path)
    return files
