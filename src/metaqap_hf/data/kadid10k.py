"""KADID-10k (Lin, Hosu and Saupe, 2019): 81 references x 25 distortions x 5 levels, DMOS on 1-5.

KADID's ``dmos`` is a degradation score relative to the reference on a 1-5 scale where higher means better
quality, so it is used as the ``mos`` column as is. Splits are drawn over reference images: no reference
content is in two splits.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from datasets import DatasetDict, Features, Value

from ._common import (
    BenchmarkInfo,
    DatasetLayoutError,
    LabelledImage,
    attach_image_paths,
    base_features,
    build_dataset_dict,
    check_unique_names,
    index_images,
    parse_name,
    parse_score,
    read_csv_rows,
    require_directory,
    require_file,
    warn_unlabeled_images,
)
from .splits import protocol_split, train_validation_test

__all__ = ["INFO", "load_kadid10k"]

IMAGE_DIR = "images"
LABEL_FILE = "dmos.csv"
DISTORTED_NAME = re.compile(r"^(?P<reference>I\d+)_(?P<type>\d+)_(?P<level>\d+)\.\w+$", re.IGNORECASE)

INFO = BenchmarkInfo(
    name="kadid10k",
    pretty_name="KADID-10k",
    mos_min=1.0,
    mos_max=5.0,
    mos_description=(
        "DMOS from crowd ratings of each distorted image against its reference, 1-5, higher is better; "
        "mos_std is the square root of the released rating variance"
    ),
    split_protocol=(
        "no official split: split_index k (0-9) is the k-th seeded random 80/20 train/test split of the 81 "
        "reference images (all distorted versions of a reference go to the same split); validation is a seeded "
        "random part of the train references."
    ),
    layout=(
        "<data_dir>/\n"
        f"  {IMAGE_DIR}/I01_01_01.png ...   distorted images I<reference>_<type 01-25>_<level 01-05>.png\n"
        f"  {IMAGE_DIR}/I01.png ...         the 81 reference images\n"
        f"  {LABEL_FILE}                  columns dist_img, ref_img, dmos (1-5), var"
    ),
    homepage="https://database.mmsp-kn.de/kadid-10k-database.html",
    license="unknown",
    license_note=(
        "Reference images come from Pixabay; see the authors' page for the terms of the database, and cite the "
        "paper."
    ),
    citation=(
        "@inproceedings{lin2019kadid,\n"
        "  title     = {{KADID-10k}: A large-scale artificially distorted {IQA} database},\n"
        "  author    = {Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar},\n"
        "  booktitle = {International Conference on Quality of Multimedia Experience (QoMEX)},\n"
        "  pages     = {1--3},\n"
        "  year      = {2019}\n"
        "}"
    ),
    extra_columns={
        "ref_image": "file name of the pristine reference image (in images/ of the original release)",
        "distortion_type": "KADID distortion type, 1-25, from the file name",
        "distortion_level": "distortion level, 1 (weakest) to 5 (strongest), from the file name",
    },
)


def load_kadid10k(
    data_dir: str | os.PathLike[str],
    *,
    split_index: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
) -> DatasetDict:
    """Load KADID-10k as ``train``/``validation``/``test``, split by reference image (split ``split_index``).

    Besides the common columns: ``ref_image`` (the reference's file name), ``distortion_type`` (1-25) and
    ``distortion_level`` (1-5), read from the distorted image's name.

    Args:
        data_dir: the folder in the official layout (see ``INFO.layout``).
        split_index: which of the seeded random 80/20 splits over references (the protocol reports 0-9).
        validation_fraction: share of the train references held out as ``validation`` (0 for none).
        seed: seed of that hold-out.
        strict: raise instead of warning when ``images/`` holds images that are neither distorted images in
            ``dmos.csv`` nor references named there.
    """
    root = Path(data_dir)
    image_dir = require_directory(root / IMAGE_DIR, INFO)
    label_file = require_file(root / LABEL_FILE, INFO)
    columns = ["dist_img", "ref_img", "dmos", "var"]
    rows = [_parse_row(line, cells, label_file) for line, cells in read_csv_rows(label_file, columns)]
    check_unique_names(rows, label_file)
    images = index_images(image_dir)
    attach_image_paths(rows, images, label_file, image_dir)
    references = {str(row.extra["ref_image"]) for row in rows}
    warn_unlabeled_images(images, [row.image_name for row in rows] + sorted(references), image_dir, strict=strict)

    def reference_of(row: LabelledImage) -> str:
        return str(row.extra["ref_image"]).casefold()

    train, test = protocol_split(rows, split_index, group_of=reference_of)
    splits = train_validation_test(train, test, validation_fraction, seed, group_of=reference_of)
    features = Features(
        {
            **base_features(),
            "ref_image": Value("string"),
            "distortion_type": Value("int32"),
            "distortion_level": Value("int32"),
        }
    )
    return build_dataset_dict(splits, INFO, features)


def _parse_row(line: int, cells: dict[str, str], label_file: Path) -> LabelledImage:
    name = parse_name(cells["dist_img"], label_file=label_file, row=line, column="dist_img")
    match = DISTORTED_NAME.match(name)
    if match is None:
        raise DatasetLayoutError(
            f"{label_file}, row {line}: dist_img {name!r} is not of the form I<reference>_<type>_<level>.png."
        )
    variance = parse_score(cells["var"], label_file=label_file, row=line, column="var")
    if variance < 0:
        raise DatasetLayoutError(f"{label_file}, row {line}: var {variance:g} is negative.")
    return LabelledImage(
        image_name=name,
        mos=parse_score(cells["dmos"], label_file=label_file, row=line, column="dmos", info=INFO),
        mos_std=math.sqrt(variance),
        extra={
            "ref_image": parse_name(cells["ref_img"], label_file=label_file, row=line, column="ref_img"),
            "distortion_type": int(match["type"]),
            "distortion_level": int(match["level"]),
        },
    )
