"""SPAQ (Fang et al., 2020): 11,125 smartphone photographs, MOS on 0-100 plus five attribute scores."""

from __future__ import annotations

import os
import zipfile
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
    name_of,
    parse_name,
    parse_score,
    require_directory,
    require_file,
    warn_unlabeled_images,
)
from .splits import protocol_split, train_validation_test

__all__ = ["ATTRIBUTES", "INFO", "load_spaq"]

IMAGE_DIR = "TestImage"
LABEL_FILE = "Annotations/MOS and Image attribute scores.xlsx"
NAME_COLUMN = "Image name"
MOS_COLUMN = "MOS"
ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")

INFO = BenchmarkInfo(
    name="spaq",
    pretty_name="SPAQ",
    mos_min=0.0,
    mos_max=100.0,
    mos_description="mean of lab ratings on a continuous 0-100 scale; higher is better; no rating spread released",
    split_protocol=(
        "no official split: split_index k (0-9) is the k-th seeded random 80/20 train/test split; validation is a "
        "seeded random part of train."
    ),
    layout=(
        "<data_dir>/\n"
        f"  {IMAGE_DIR}/*.jpg                                        the 11,125 images\n"
        f"  {LABEL_FILE}   columns '{NAME_COLUMN}', '{MOS_COLUMN}' (0-100), "
        f"{', '.join(ATTRIBUTES)}"
    ),
    homepage="https://github.com/h4nwei/SPAQ",
    license="unknown",
    license_note="Released by the authors for research; see their repository for the terms, and cite the paper.",
    citation=(
        "@inproceedings{fang2020perceptual,\n"
        "  title     = {Perceptual quality assessment of smartphone photography},\n"
        "  author    = {Fang, Yuming and Zhu, Hanwei and Zeng, Yan and Ma, Kede and Wang, Zhou},\n"
        "  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},\n"
        "  pages     = {3677--3686},\n"
        "  year      = {2020}\n"
        "}"
    ),
    extra_columns={
        attribute.lower(): f"{attribute} attribute score from the spreadsheet (0-100); None where not released"
        for attribute in ATTRIBUTES
    },
)


def load_spaq(
    data_dir: str | os.PathLike[str],
    *,
    split_index: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 0,
    strict: bool = False,
) -> DatasetDict:
    """Load SPAQ as ``train``/``validation``/``test`` on split ``split_index`` of the 80/20 protocol.

    Besides the common columns, ``brightness``, ``colorfulness``, ``contrast``, ``noisiness`` and ``sharpness``
    hold the attribute scores; they are None where the spreadsheet lacks that column.

    Args:
        data_dir: the folder in the official layout (see ``INFO.layout``).
        split_index: which of the seeded random 80/20 splits (the protocol reports 0-9).
        validation_fraction: share of the train part held out as ``validation`` (0 for none).
        seed: seed of that hold-out.
        strict: raise instead of warning when ``TestImage/`` holds images that the spreadsheet does not list.
    """
    root = Path(data_dir)
    image_dir = require_directory(root / IMAGE_DIR, INFO)
    label_file = require_file(root / LABEL_FILE, INFO)
    rows = _read_spreadsheet(label_file)
    check_unique_names(rows, label_file)
    images = index_images(image_dir)
    attach_image_paths(rows, images, label_file, image_dir)
    warn_unlabeled_images(images, [row.image_name for row in rows], image_dir, strict=strict)
    train, test = protocol_split(rows, split_index, group_of=name_of)
    splits = train_validation_test(train, test, validation_fraction, seed, group_of=name_of)
    features = Features({**base_features(), **{attribute.lower(): Value("float64") for attribute in ATTRIBUTES}})
    return build_dataset_dict(splits, INFO, features)


def _read_spreadsheet(label_file: Path) -> list[LabelledImage]:
    """Label rows from the first sheet; the header row is matched without regard to case or spaces."""
    try:
        from openpyxl import load_workbook
    except ImportError as error:
        raise ImportError(
            "Reading SPAQ's spreadsheet needs openpyxl: pip install openpyxl (or metaqap-hf[data])."
        ) from error
    try:
        workbook = load_workbook(label_file, read_only=True, data_only=True)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetLayoutError(f"{label_file} is not a readable .xlsx file: {error}.") from error
    try:
        lines = workbook.worksheets[0].iter_rows(values_only=True)
        header = next(lines, None) or ()
        keys = [str(cell).strip().casefold() for cell in header]
        absent = [column for column in (NAME_COLUMN, MOS_COLUMN) if column.casefold() not in keys]
        if absent:
            raise DatasetLayoutError(
                f"{label_file} has no column {', '.join(map(repr, absent))}; its header is {list(header)}."
            )
        rows = []
        for line, cells in enumerate(lines, start=2):
            if all(cell is None or str(cell).strip() == "" for cell in cells):
                continue
            by_column: dict[str, object] = {}
            for key, cell in zip(keys, cells):
                by_column.setdefault(key, cell)
            rows.append(
                LabelledImage(
                    image_name=parse_name(
                        by_column.get(NAME_COLUMN.casefold()), label_file=label_file, row=line, column=NAME_COLUMN
                    ),
                    mos=parse_score(
                        by_column.get(MOS_COLUMN.casefold()),
                        label_file=label_file,
                        row=line,
                        column=MOS_COLUMN,
                        info=INFO,
                    ),
                    extra={
                        attribute.lower(): parse_score(
                            by_column.get(attribute.casefold()), label_file=label_file, row=line, column=attribute
                        )
                        if attribute.casefold() in keys
                        else None
                        for attribute in ATTRIBUTES
                    },
                )
            )
    finally:
        workbook.close()
    return rows
