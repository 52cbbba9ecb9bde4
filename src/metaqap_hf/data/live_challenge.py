"""LIVE In the Wild Image Quality Challenge (Ghadiyaram and Bovik, 2016): 1,162 photographs, MOS on 0-100.

The release lists 1,169 images; its first 7 (``t1.bmp`` .. ``t7.bmp`` in ``Images/trainingImages/``) were shown
to raters for training and are, by the field's protocol, never evaluated on. They are dropped by default; with
``include_training_images=True`` they are added to ``train`` only, after validation is carved.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from ._common import (
    BenchmarkInfo,
    DatasetLayoutError,
    LabelledImage,
    attach_image_paths,
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

__all__ = ["INFO", "NUM_TRAINING_IMAGES", "load_live_challenge"]

NUM_TRAINING_IMAGES = 7
RELEASE_DIR = "ChallengeDB_release"
NAMES_VARIABLE = "AllImages_release"
MOS_VARIABLE = "AllMOS_release"
STD_VARIABLE = "AllStdDev_release"

INFO = BenchmarkInfo(
    name="live_challenge",
    pretty_name="LIVE Challenge",
    mos_min=0.0,
    mos_max=100.0,
    mos_description="mean of crowd ratings on a continuous 0-100 scale; higher is better; mos_std from AllStdDev",
    split_protocol=(
        "no official split: split_index k (0-9) is the k-th seeded random 80/20 train/test split; validation is a "
        "seeded random part of train. The 7 rater-training images are never in validation or test."
    ),
    layout=(
        "<data_dir>/\n"
        f"  {RELEASE_DIR}/Images/*.bmp|*.JPG                 the 1,162 evaluation images\n"
        f"  {RELEASE_DIR}/Images/trainingImages/t1..t7.bmp   the 7 rater-training images\n"
        f"  {RELEASE_DIR}/Data/{NAMES_VARIABLE}.mat         cell array {NAMES_VARIABLE} (file names)\n"
        f"  {RELEASE_DIR}/Data/{MOS_VARIABLE}.mat            array {MOS_VARIABLE} (0-100)\n"
        f"  {RELEASE_DIR}/Data/{STD_VARIABLE}.mat         array {STD_VARIABLE}"
    ),
    homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
    license="unknown",
    license_note=(
        "Copyright the Laboratory for Image and Video Engineering (LIVE), UT Austin; released for research on "
        "request. Do not redistribute the images without the lab's permission; cite the paper."
    ),
    citation=(
        "@article{ghadiyaram2016massive,\n"
        "  title   = {Massive online crowdsourced study of subjective and objective picture quality},\n"
        "  author  = {Ghadiyaram, Deepti and Bovik, Alan C.},\n"
        "  journal = {IEEE Transactions on Image Processing},\n"
        "  volume  = {25},\n"
        "  number  = {1},\n"
        "  pages   = {372--387},\n"
        "  year    = {2016}\n"
        "}"
    ),
)


def load_live_challenge(
    data_dir: str | os.PathLike[str],
    *,
    split_index: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 0,
    include_training_images: bool = False,
    strict: bool = False,
) -> DatasetDict:
    """Load LIVE Challenge as ``train``/``validation``/``test`` on split ``split_index`` of the 80/20 protocol.

    Args:
        data_dir: the folder holding ``ChallengeDB_release/`` (see ``INFO.layout``).
        split_index: which of the seeded random 80/20 splits (the protocol reports 0-9).
        validation_fraction: share of the train part held out as ``validation`` (0 for none).
        seed: seed of that hold-out.
        include_training_images: add the 7 rater-training images to ``train`` (they never enter evaluation).
        strict: raise instead of warning when the image folders hold images that the release does not list.
    """
    release = require_directory(Path(data_dir) / RELEASE_DIR, INFO)
    image_dir = require_directory(release / "Images", INFO)
    data = release / "Data"
    names_file, mos_file, std_file = (
        require_file(data / f"{variable}.mat", INFO) for variable in (NAMES_VARIABLE, MOS_VARIABLE, STD_VARIABLE)
    )
    names = [
        parse_name(cell, label_file=names_file, row=index + 1, column=NAMES_VARIABLE)
        for index, cell in enumerate(_read_mat_variable(names_file, NAMES_VARIABLE, text=True))
    ]
    mos = _read_mat_variable(mos_file, MOS_VARIABLE, text=False)
    std = _read_mat_variable(std_file, STD_VARIABLE, text=False)
    for label_file, variable, values in ((mos_file, MOS_VARIABLE, mos), (std_file, STD_VARIABLE, std)):
        if len(values) != len(names):
            raise DatasetLayoutError(
                f"{label_file}: {variable} holds {len(values)} values but {names_file} lists {len(names)} images."
            )
    rows = [
        LabelledImage(
            image_name=name,
            mos=parse_score(mos[index], label_file=mos_file, row=index + 1, column=MOS_VARIABLE, info=INFO),
            mos_std=parse_score(std[index], label_file=std_file, row=index + 1, column=STD_VARIABLE),
        )
        for index, name in enumerate(names)
    ]
    check_unique_names(rows, names_file)
    if len(rows) <= NUM_TRAINING_IMAGES:
        raise DatasetLayoutError(
            f"{names_file} lists {len(rows)} images, no more than the {NUM_TRAINING_IMAGES} rater-training images."
        )
    training_images, evaluation_images = rows[:NUM_TRAINING_IMAGES], rows[NUM_TRAINING_IMAGES:]
    used = evaluation_images + (training_images if include_training_images else [])

    image_dirs = [image_dir]
    if (image_dir / "trainingImages").is_dir():
        image_dirs.append(image_dir / "trainingImages")
    images = index_images(*image_dirs)
    attach_image_paths(used, images, names_file, image_dir)
    warn_unlabeled_images(images, names, image_dir, strict=strict)
    train, test = protocol_split(evaluation_images, split_index, group_of=name_of)
    splits = train_validation_test(train, test, validation_fraction, seed, group_of=name_of)
    if include_training_images:
        splits["train"] = training_images + splits["train"]
    return build_dataset_dict(splits, INFO)


def _read_mat_variable(path: Path, variable: str, *, text: bool) -> list:
    """The entries of a MATLAB cell array of strings (``text``) or numeric array, flattened in order."""
    from scipy.io import loadmat

    try:
        contents = loadmat(path)
    except Exception as error:  # scipy raises assorted exception types on damaged files
        raise DatasetLayoutError(f"{path} is not a readable MATLAB file: {error}.") from error
    if variable not in contents:
        found = sorted(key for key in contents if not key.startswith("__"))
        raise DatasetLayoutError(f"{path} has no variable {variable!r}; it holds {found}.")
    values = np.asarray(contents[variable]).ravel()
    if text:
        return [_cell_text(cell) for cell in values]
    return values.tolist()


def _cell_text(cell: object) -> str | None:
    """The string in one MATLAB cell (loaded as a nested array), or None when the cell holds no text."""
    while isinstance(cell, np.ndarray):
        if cell.size != 1:
            return None
        cell = cell.ravel()[0]
    return cell if isinstance(cell, str) else None
