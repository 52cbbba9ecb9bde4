"""BIQ2021 (Ahmed and Asif, 2022): 12,000 photographs with an official 10,000/2,000 train/test split, MOS on 0-1."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from ._common import (
    BenchmarkInfo,
    DatasetLayoutError,
    LabelledImage,
    attach_image_paths,
    build_dataset_dict,
    check_unique_names,
    describe_names,
    index_images,
    name_of,
    parse_name,
    parse_score,
    read_csv_rows,
    require_directory,
    require_file,
    warn_unlabeled_images,
)
from .download import download_file, resolve_data_dir
from .splits import train_validation_test

__all__ = ["ARCHIVE_URL", "INFO", "load_biq2021"]

ARCHIVE_URL = "https://github.com/nisarahmedrana/BIQ2021/archive/refs/heads/main.zip"
IMAGE_DIR = "Images"
TRAIN_LABELS = "Train (Images and MOS).csv"
TEST_LABELS = "Test (Images and MOS).csv"

INFO = BenchmarkInfo(
    name="biq2021",
    pretty_name="BIQ2021",
    mos_min=0.0,
    mos_max=1.0,
    mos_description="mean of 30 observers' 5-point ratings rescaled to 0-1; higher is better",
    split_protocol=(
        "the official split, 10,000 train / 2,000 test images; validation is a seeded random part of the "
        "official train images (validation_fraction, seed), never of test."
    ),
    layout=(
        "<data_dir>/\n"
        f"  {IMAGE_DIR}/                        the 12,000 images (.jpg, some .JPG)\n"
        f"  {TRAIN_LABELS}      columns 'Image Name', 'MOS' (0-1)\n"
        f"  {TEST_LABELS}       columns 'Image Name', 'MOS' (0-1)\n"
        f"(the authors' repository, also downloadable as {ARCHIVE_URL})"
    ),
    homepage="https://github.com/nisarahmedrana/BIQ2021",
    license="unknown",
    license_note=(
        "The authors' repository carries no licence file; its README says subset 3 comes from Unsplash. Check "
        "with the authors before redistributing the images, and cite the paper."
    ),
    citation=(
        "@article{ahmed2022biq2021,\n"
        "  title   = {{BIQ2021}: a large-scale blind image quality assessment database},\n"
        "  author  = {Ahmed, Nisar and Asif, Shahzad},\n"
        "  journal = {Journal of Electronic Imaging},\n"
        "  volume  = {31},\n"
        "  number  = {5},\n"
        "  pages   = {053010},\n"
        "  year    = {2022}\n"
        "}"
    ),
)


def load_biq2021(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DatasetDict:
    """Load BIQ2021 as ``train``/``validation``/``test`` on the official split.

    Args:
        data_dir: the folder in the official layout (see ``INFO.layout``).
        validation_fraction: share of the official train images held out as ``validation`` (0 for none).
        seed: seed of that hold-out.
        strict: raise instead of warning when ``Images/`` holds images that neither CSV lists.
        download: fetch the authors' GitHub archive into ``data_dir`` (or ``<cache_dir>/biq2021``) when the
            files are not there yet.
        cache_dir: where to download to when no ``data_dir`` is given.
    """
    root = resolve_data_dir(data_dir, cache_dir, INFO, download=download)
    if download and not all((root / name).exists() for name in (IMAGE_DIR, TRAIN_LABELS, TEST_LABELS)):
        download_file(ARCHIVE_URL, root, INFO, unpack=True, strip_top_folder=True)
    image_dir = require_directory(root / IMAGE_DIR, INFO)
    train_file = require_file(root / TRAIN_LABELS, INFO)
    test_file = require_file(root / TEST_LABELS, INFO)
    train, test = _read_labels(train_file), _read_labels(test_file)
    in_both = sorted({row.image_name.casefold() for row in train} & {row.image_name.casefold() for row in test})
    if in_both:
        raise DatasetLayoutError(f"{train_file} and {test_file} both list {describe_names(in_both)}.")

    images = index_images(image_dir)
    attach_image_paths(train, images, train_file, image_dir)
    attach_image_paths(test, images, test_file, image_dir)
    warn_unlabeled_images(images, [row.image_name for row in train + test], image_dir, strict=strict)
    splits = train_validation_test(train, test, validation_fraction, seed, group_of=name_of)
    return build_dataset_dict(splits, INFO)


def _read_labels(label_file: Path) -> list[LabelledImage]:
    rows = [
        LabelledImage(
            image_name=parse_name(cells["Image Name"], label_file=label_file, row=line, column="Image Name"),
            mos=parse_score(cells["MOS"], label_file=label_file, row=line, column="MOS", info=INFO),
        )
        for line, cells in read_csv_rows(label_file, ["Image Name", "MOS"])
    ]
    check_unique_names(rows, label_file)
    return rows
