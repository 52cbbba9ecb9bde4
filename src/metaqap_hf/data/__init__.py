"""The IQA benchmarks as ``datasets.DatasetDict``s, read from their official layouts.

Every loader returns ``train``/``validation``/``test`` splits with the columns ``image`` (a lazily decoded
``datasets.Image``), ``image_name``, ``mos`` (the benchmark's own scale), ``mos_normalized`` (0-1) and
``mos_std`` (None where the benchmark releases no spread); KADID-10k adds ``ref_image``, ``distortion_type``
and ``distortion_level``, SPAQ its five attribute scores. Official splits are used where they exist; otherwise
split ``split_index`` of the seeded 80/20 protocol (by reference image for KADID-10k). Validation is always
carved from train.

    >>> from metaqap_hf.data import load_iqa_dataset, prepare_dataset
    >>> biq = load_iqa_dataset("biq2021", "/data/BIQ2021", validation_fraction=0.1, seed=0)
    >>> prepare_dataset("biq2021", "/data/BIQ2021", "/data/biq2021-hf")  # parquet shards + dataset card

Your own data: `load_dataset_source` resolves any dataset a command or training function takes (a registered name,
a CSV/JSONL table of image paths and scores, a prepared folder, a hub id, a `DatasetDict`) into checked splits and
their MOS scale; `images` reads the images of any split, from files or embedded bytes, through `load_image`.

    >>> from metaqap_hf.data import load_dataset_source
    >>> source = load_dataset_source("mydata/scores.csv", mos_range=(1, 5))  # columns image, mos[, split, std]
"""

from ._common import BenchmarkInfo, DatasetLayoutError, UnlabeledImagesWarning
from .biq2021 import load_biq2021
from .download import DatasetDownloadError
from .images import ImageColumn, image_column, load_dataset_image
from .kadid10k import load_kadid10k
from .koniq10k import load_koniq10k
from .live_challenge import load_live_challenge
from .prepare import prepare_dataset
from .registry import DATASETS, RegisteredBenchmark, get_benchmark, load_iqa_dataset
from .sources import DatasetSource, load_dataset_source
from .spaq import load_spaq

__all__ = [
    "DATASETS",
    "BenchmarkInfo",
    "DatasetDownloadError",
    "DatasetLayoutError",
    "DatasetSource",
    "ImageColumn",
    "RegisteredBenchmark",
    "UnlabeledImagesWarning",
    "get_benchmark",
    "image_column",
    "load_biq2021",
    "load_dataset_image",
    "load_dataset_source",
    "load_iqa_dataset",
    "load_kadid10k",
    "load_koniq10k",
    "load_live_challenge",
    "load_spaq",
    "prepare_dataset",
]
