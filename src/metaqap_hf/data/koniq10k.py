"""KonIQ-10k (Hosu et al., 2020): 10,073 in-the-wild photographs, official train/validation/test sets, MOS on 1-5."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

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
    parse_name,
    parse_score,
    read_csv_rows,
    require_directory,
    require_file,
    warn_unlabeled_images,
)
from .download import download_file, resolve_data_dir

__all__ = ["DOWNLOADS", "INFO", "load_koniq10k"]

SCORES_FILE = "koniq10k_scores_and_distributions.csv"
SETS_FILE = "koniq10k_distributions_sets.csv"
OFFICIAL_SETS = {"training": "train", "validation": "validation", "test": "test"}

# What ``download=True`` fetches: images and scores from the authors' site (the URLs their own notebooks use),
# the official set assignment from their code repository.
DOWNLOADS: dict[str, str] = {
    "images_1024x768": "http://datasets.vqa.mmsp-kn.de/archives/koniq10k_1024x768.zip",
    "images_512x384": "http://datasets.vqa.mmsp-kn.de/archives/koniq10k_512x384.zip",
    "scores": "http://datasets.vqa.mmsp-kn.de/archives/koniq10k_scores_and_distributions.zip",
    "sets": f"https://raw.githubusercontent.com/subpic/koniq/master/metadata/{SETS_FILE}",
}

INFO = BenchmarkInfo(
    name="koniq10k",
    pretty_name="KonIQ-10k",
    mos_min=1.0,
    mos_max=5.0,
    mos_description="mean of crowd ratings on a 5-point scale; higher is better; mos_std is the SD column",
    split_protocol=(
        "the official sets of koniq10k_distributions_sets.csv: training (7,058) -> train, validation (1,000) -> "
        "validation, test (2,015) -> test."
    ),
    layout=(
        "<data_dir>/\n"
        "  koniq10k_1024x768/*.jpg                 (or 1024x768/; 512x384/ or koniq10k_512x384/ with "
        "resolution='512x384')\n"
        f"  {SCORES_FILE}    columns image_name, MOS (1-5), SD, ...\n"
        f"  {SETS_FILE}        columns image_name, set (training/validation/test)\n"
        f"(images and scores from {DOWNLOADS['images_1024x768'].rsplit('/', 1)[0]}/, the sets file from "
        f"{DOWNLOADS['sets']})"
    ),
    homepage="https://database.mmsp-kn.de/koniq-10k-database.html",
    license="unknown",
    license_note=(
        "Images were sampled from YFCC100M and keep their individual Creative Commons licences; see the "
        "authors' page for the terms of the annotations, and cite the paper."
    ),
    citation=(
        "@article{hosu2020koniq,\n"
        "  title   = {{KonIQ-10k}: An ecologically valid database for deep learning of blind image quality "
        "assessment},\n"
        "  author  = {Hosu, Vlad and Lin, Hanhe and Sziranyi, Tamas and Saupe, Dietmar},\n"
        "  journal = {IEEE Transactions on Image Processing},\n"
        "  volume  = {29},\n"
        "  pages   = {4041--4056},\n"
        "  year    = {2020}\n"
        "}"
    ),
)


def load_koniq10k(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    resolution: Literal["1024x768", "512x384"] = "1024x768",
    strict: bool = False,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DatasetDict:
    """Load KonIQ-10k as ``train``/``validation``/``test`` on the official sets.

    Args:
        data_dir: the folder in the official layout (see ``INFO.layout``).
        resolution: which image folder to read, the original ``1024x768`` or the authors' ``512x384`` copy.
        strict: raise instead of warning when the image folder holds images that the scores file does not list.
        download: fetch the images of ``resolution``, the scores and the sets file into ``data_dir`` (or
            ``<cache_dir>/koniq10k``) when they are not there yet.
        cache_dir: where to download to when no ``data_dir`` is given.
    """
    if resolution not in ("1024x768", "512x384"):
        raise ValueError(f"resolution must be '1024x768' or '512x384'; got {resolution!r}.")
    root = resolve_data_dir(data_dir, cache_dir, INFO, download=download)
    if download:
        _download_missing(root, resolution)
    image_dir = _find_image_dir(root, resolution)
    scores_file = require_file(root / SCORES_FILE, INFO)
    sets_file = require_file(root / SETS_FILE, INFO)

    rows = [
        LabelledImage(
            image_name=parse_name(cells["image_name"], label_file=scores_file, row=line, column="image_name"),
            mos=parse_score(cells["MOS"], label_file=scores_file, row=line, column="MOS", info=INFO),
            mos_std=parse_score(cells["SD"], label_file=scores_file, row=line, column="SD"),
        )
        for line, cells in read_csv_rows(scores_file, ["image_name", "MOS", "SD"])
    ]
    check_unique_names(rows, scores_file)
    split_of = _read_sets(sets_file)
    without_set = [row.image_name for row in rows if row.image_name.casefold() not in split_of]
    if without_set:
        raise DatasetLayoutError(
            f"{sets_file} gives no set for {len(without_set)} images of {scores_file}: {describe_names(without_set)}."
        )

    images = index_images(image_dir)
    attach_image_paths(rows, images, scores_file, image_dir)
    warn_unlabeled_images(images, [row.image_name for row in rows], image_dir, strict=strict)
    splits: dict[str, list[LabelledImage]] = {split: [] for split in OFFICIAL_SETS.values()}
    for row in rows:
        splits[split_of[row.image_name.casefold()]].append(row)
    return build_dataset_dict(splits, INFO)


def _image_dir_candidates(root: Path, resolution: str) -> list[Path]:
    """The folder names the official zips and common copies use for the images of ``resolution``."""
    return [root / f"koniq10k_{resolution}", root / f"koniq10k_{resolution}" / resolution, root / resolution]


def _find_image_dir(root: Path, resolution: str) -> Path:
    for candidate in _image_dir_candidates(root, resolution):
        if candidate.is_dir() and any(candidate.glob("*.jpg")):
            return candidate
    return require_directory(_image_dir_candidates(root, resolution)[0], INFO)


def _download_missing(root: Path, resolution: str) -> None:
    if not any(path.is_dir() and any(path.glob("*.jpg")) for path in _image_dir_candidates(root, resolution)):
        download_file(DOWNLOADS[f"images_{resolution}"], root, INFO, unpack=True)
    if not (root / SCORES_FILE).is_file():
        download_file(DOWNLOADS["scores"], root, INFO, unpack=True, strip_top_folder=True)
    if not (root / SETS_FILE).is_file():
        download_file(DOWNLOADS["sets"], root, INFO, unpack=False)


def _read_sets(sets_file: Path) -> dict[str, str]:
    """Case-folded image name -> split name, from the official set assignment."""
    split_of: dict[str, str] = {}
    for line, cells in read_csv_rows(sets_file, ["image_name", "set"]):
        name = parse_name(cells["image_name"], label_file=sets_file, row=line, column="image_name")
        official_set = cells["set"].casefold()
        if official_set not in OFFICIAL_SETS:
            raise DatasetLayoutError(
                f"{sets_file}, row {line}: set {cells['set']!r} is none of {sorted(OFFICIAL_SETS)}."
            )
        split_of[name.casefold()] = OFFICIAL_SETS[official_set]
    return split_of
