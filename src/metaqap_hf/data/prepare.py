"""Write a benchmark as a hub-ready folder: parquet shards with the images embedded, and a dataset card.

The folder has the shape ``push_to_hub`` gives a repository (``data/<split>-00000-of-0000N.parquet`` plus a
``README.md`` whose YAML declares the configs, features and splits), so ``datasets.load_dataset(folder)`` reads
it now and ``load_dataset(repo_id)`` reads it once the folder is uploaded as is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, DatasetInfo, Value
from datasets.arrow_writer import get_writer_batch_size_from_data_size
from datasets.info import DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCardData

from ._common import BenchmarkInfo
from .registry import get_benchmark

__all__ = ["prepare_dataset"]

DATA_FOLDER = "data"
CARD_FILE = "README.md"
COMMON_COLUMNS = {
    "image": "the image, embedded as its original file bytes",
    "image_name": "file name as the official label file writes it",
    "mos": "mean opinion score on the benchmark's own scale (see Scores)",
    "mos_normalized": "mos mapped onto 0-1 with the documented scale range",
    "mos_std": "spread of the ratings on the mos scale; empty where the benchmark releases none",
}
# Loader options that do not change the rows or splits, left out of the card.
NON_SPLIT_ARGUMENTS = frozenset({"strict", "download", "cache_dir"})


def prepare_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    *,
    max_shard_size: int | str = "500MB",
    overwrite: bool = False,
    **loader_kwargs: object,
) -> Path:
    """Load benchmark ``name`` from ``data_dir`` and write it to ``output_dir`` in the hub's parquet layout.

    Args:
        name: a registered benchmark (``metaqap_hf.data.DATASETS``).
        data_dir: the benchmark's folder in its official layout (None with ``download=True`` for BIQ2021/KonIQ).
        output_dir: the folder to write; it receives ``data/`` and ``README.md``.
        max_shard_size: largest size of one parquet shard, as bytes or a string such as ``"500MB"``.
        overwrite: replace an earlier ``data/`` and ``README.md`` in ``output_dir`` (otherwise an error).
        **loader_kwargs: passed to the benchmark's loader (``validation_fraction``, ``seed``, ``split_index``...).

    Returns:
        The output folder.
    """
    benchmark = get_benchmark(name)
    max_bytes = convert_file_size_to_int(max_shard_size)
    output = Path(output_dir).expanduser()
    data_folder, card_file = output / DATA_FOLDER, output / CARD_FILE
    if (data_folder.exists() or card_file.exists()) and not overwrite:
        raise FileExistsError(
            f"{output} already holds {DATA_FOLDER}/ or {CARD_FILE}; pass overwrite=True to replace them."
        )
    dataset_dict = benchmark.load(data_dir, **loader_kwargs)

    if data_folder.exists():
        shutil.rmtree(data_folder)
    data_folder.mkdir(parents=True)
    splits_written = {
        split: _write_split(dataset, split, data_folder, max_bytes) for split, dataset in dataset_dict.items()
    }
    parameters = {
        key: value
        for key, value in {**benchmark.options, **loader_kwargs}.items()
        if key not in NON_SPLIT_ARGUMENTS
    }
    card_file.write_text(_dataset_card(benchmark.info, dataset_dict, splits_written, parameters), encoding="utf-8")
    return output


def _write_split(dataset: Dataset, split: str, data_folder: Path, max_bytes: int) -> tuple[SplitInfo, int]:
    """Write one split as parquet shards of at most about ``max_bytes`` each, images embedded.

    Returns the split's ``SplitInfo`` (its in-memory size) and the bytes written to disk.
    """
    image_paths = [item["path"] for item in dataset.with_format("arrow")["image"].to_pylist()]
    estimated_bytes = dataset.data.nbytes + sum(os.path.getsize(path) for path in image_paths)
    num_shards = max(1, min(len(dataset), estimated_bytes // max_bytes + 1))
    rows_per_group = get_writer_batch_size_from_data_size(len(dataset), estimated_bytes)
    schema = dataset.features.arrow_schema
    table_bytes = file_bytes = 0
    for index in range(num_shards):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        shard_path = data_folder / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        with pq.ParquetWriter(shard_path, schema=schema) as writer:
            for table in shard.with_format("arrow").iter(batch_size=rows_per_group):
                embedded = embed_table_storage(table)
                writer.write_table(embedded)
                table_bytes += embedded.nbytes
        file_bytes += shard_path.stat().st_size
    return SplitInfo(name=split, num_bytes=table_bytes, num_examples=len(dataset)), file_bytes


def _dataset_card(
    info: BenchmarkInfo,
    dataset_dict: DatasetDict,
    splits_written: dict[str, tuple[SplitInfo, int]],
    parameters: dict[str, object],
) -> str:
    features = next(iter(dataset_dict.values())).features
    dataset_info = DatasetInfo(
        config_name="default", features=features, splits=SplitDict(), download_size=0, dataset_size=0
    )
    for split_info, file_bytes in splits_written.values():
        dataset_info.splits.add(split_info)
        dataset_info.download_size += file_bytes
        dataset_info.dataset_size += split_info.num_bytes
    card_data = DatasetCardData(
        license=info.license,
        pretty_name=info.pretty_name,
        tags=["image-quality-assessment", "no-reference-iqa", "mean-opinion-score"],
    )
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": split, "path": f"{DATA_FOLDER}/{split}-*"} for split in splits_written]}}
    ).to_dataset_card_data(card_data)

    column_meanings = {**COMMON_COLUMNS, **info.extra_columns}
    column_rows = "\n".join(
        f"| `{column}` | {_type_name(feature)} | {column_meanings.get(column, '')} |"
        for column, feature in features.items()
    )
    split_rows = "\n".join(f"| {split} | {len(dataset)} |" for split, dataset in dataset_dict.items())
    parameter_text = ", ".join(f"`{key}={value!r}`" for key, value in parameters.items()) or "none"
    return f"""---
{card_data.to_yaml()}
---

# {info.pretty_name}

{info.pretty_name} for no-reference image quality assessment, prepared with `metaqap_hf.data.prepare_dataset`
from the official release ({info.homepage}). Images are embedded byte for byte as released.

## Scores

- `mos`: {info.mos_description}. Scale {info.mos_min:g}-{info.mos_max:g}.
- `mos_normalized`: `(mos - {info.mos_min:g}) / ({info.mos_max:g} - {info.mos_min:g})`, on 0-1.

## Columns

| column | type | meaning |
|---|---|---|
{column_rows}

## Splits

| split | images |
|---|---|
{split_rows}

Protocol: {info.split_protocol}

Loader parameters used: {parameter_text}.

## Loading

```python
from datasets import load_dataset

dataset = load_dataset("path/to/this/folder")  # or the hub repository id once uploaded
```

## Licence

{info.license_note} Do not publish this folder where the licence does not allow it.

## Citation

```bibtex
{info.citation}
```
"""


def _type_name(feature: object) -> str:
    return feature.dtype if isinstance(feature, Value) else type(feature).__name__.lower()
