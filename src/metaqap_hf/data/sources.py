"""One way to name a dataset, whatever it is: the resolver behind every command and training function.

    source                                   read as                                     MOS scale
    a registered name ("biq2021") + data_dir the benchmark's official layout             the benchmark's own
    a table file (".csv", ".jsonl")          columns image (path relative to the table), mos_range (required)
                                             mos, and optionally split and std
    a folder                                 `datasets.load_dataset(folder)`, e.g. one   from mos and mos_normalized
                                             written by `prepare_dataset` (images        when present, else
                                             embedded in parquet)                        mos_range
    a hub dataset id ("user/my-iqa")         `datasets.load_dataset(id)`; offline, from  the same
                                             the local cache
    a `DatasetDict` (Python)                 as it is                                    the same

A registered name wins over a folder of the same name (write ``./biq2021`` for the folder). Every source comes
back with a ``train`` and a ``validation`` split: a source without validation gets one carved from train with
`validation_fraction` and `seed` (the benchmarks' own hold-out); ``test`` stays as the source has it and is only
ever used for reports. Tables and datasets are checked before anything is built from them (columns, scores that
are not numbers or lie off the scale, unknown splits, repeated, missing or unreadable images): every problem is
reported at once, with its count and the first few rows or images.

    >>> from metaqap_hf.data import load_dataset_source
    >>> source = load_dataset_source("my_mydata/scores.csv", mos_range=(1, 5))
    >>> source.dataset["train"], source.mos_range, source.mos_name
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Image, Value

from ._common import (
    BenchmarkInfo,
    DatasetLayoutError,
    LabelledImage,
    build_dataset_dict,
    describe_names,
    name_of,
    read_csv_rows,
)
from .images import find_image_problems, image_column
from .registry import DATASETS, get_benchmark
from .splits import VALIDATION_FRACTION, hold_out

__all__ = ["SPLITS", "TABLE_LAYOUT", "TABLE_SUFFIXES", "DatasetSource", "load_dataset_source"]

SPLITS = ("train", "validation", "test")
TABLE_SUFFIXES = (".csv", ".jsonl")
TABLE_LAYOUT = (
    "a .csv file with a header row, or a .jsonl file with one JSON object per line, holding per image:\n"
    "  image   path of the image file, relative to the table's folder (or absolute)\n"
    "  mos     its score, a number on the scale given as mos_range (--mos-range LOW HIGH)\n"
    "  split   optional: train, validation or test (without it every row is train)\n"
    "  std     optional: the spread of the ratings, on the mos scale"
)
# mos_normalized is rounded to this many significant digits when the scale is worked out from it.
_SCALE_DIGITS = 9


@dataclass(frozen=True)
class DatasetSource:
    """A dataset ready for training or evaluation, and what is known of it.

    Attributes:
        dataset: ``train`` and ``validation`` splits (``test`` when the source has one), each with the columns
            ``image`` (a `datasets.Image`: file paths or embedded bytes), ``image_name`` and ``mos``.
        name: a short human name ("BIQ2021", "scores").
        dataset_id: a stable identifier for model cards: the benchmark's name, the hub id, or a slug.
        origin: where it was read from (a folder, a file, a hub id).
        mos_range: the ``mos`` scale, (low, high).
    """

    dataset: DatasetDict
    name: str
    dataset_id: str
    origin: str
    mos_range: tuple[float, float]

    @property
    def mos_name(self) -> str:
        """What a model trained on it scores, e.g. ``BIQ2021 MOS (0-1)`` (`MetaQAPConfig.mos_name`)."""
        low, high = self.mos_range
        return f"{self.name} MOS ({low:g}-{high:g})"

    def describe(self) -> str:
        """One line for reports and model cards: the name, where it came from and the images per split."""
        counts = ", ".join(f"{len(split)} {name}" for name, split in self.dataset.items())
        return f"{self.name} ({self.origin}; images: {counts})"


def load_dataset_source(
    source: str | os.PathLike | DatasetDict | DatasetSource,
    data_dir: str | os.PathLike | None = None,
    *,
    mos_range: Sequence[float] | None = None,
    name: str | None = None,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    **loader_options: object,
) -> DatasetSource:
    """Resolve `source` (a registered benchmark name, a table file, a folder, a hub dataset id, or a
    `DatasetDict`) into a checked `DatasetSource`; see the module docstring for what each reads.

    Args:
        data_dir: the benchmark's folder; only for registered benchmarks.
        mos_range: the scale of ``mos``; required for tables and for datasets without ``mos_normalized``; where the
            source knows its own scale, a different one is refused.
        name: the dataset's human name (default: the benchmark's; the table's stem; the name a prepared folder's
            card or a DatasetDict's `DatasetInfo.dataset_name` gives, else the folder's name or the hub id).
        validation_fraction, seed: the validation split carved from train when the source has none.
        **loader_options: a registered benchmark's loader options (``split_index``, ``resolution``, ...).
    """
    if isinstance(source, DatasetSource):
        return source
    scale = _checked_scale(mos_range) if mos_range is not None else None
    carve = {"validation_fraction": validation_fraction, "seed": seed}
    if isinstance(source, DatasetDict):
        known_name = next((split.info.dataset_name for split in source.values() if split.info.dataset_name), None)
        return _from_dataset_dict(source, name or known_name or "dataset", "a DatasetDict given in Python", scale,
                                  **carve)
    text = os.fspath(source)
    if _is_registered(text):
        return _from_benchmark(text, data_dir, scale, loader_options, **carve)
    if data_dir is not None or loader_options:
        given = "data_dir" if data_dir is not None else ", ".join(loader_options)
        raise ValueError(f"{given} is only read for the registered benchmarks ({', '.join(DATASETS)}); "
                         f"{text!r} is not one of them")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"{path}: a table must be a {' or '.join(TABLE_SUFFIXES)} file\n{TABLE_LAYOUT}")
        return _from_table(path, scale, name, **carve)
    if path.is_dir():
        dataset = _load_with_datasets(str(path), f"folder {path}")
        return _from_dataset_dict(dataset, name or _card_name(path / "README.md") or path.resolve().name,
                                  f"folder {path}", scale, **carve)
    if path.suffix.lower() in TABLE_SUFFIXES or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{text}: no such file or folder")
    dataset = _load_with_datasets(text, f"hub dataset {text}")
    return _from_dataset_dict(dataset, name or _hub_card_name(text) or text, f"hub dataset {text}", scale,
                              dataset_id=text, **carve)


def _is_registered(text: str) -> bool:
    try:
        get_benchmark(text)
    except ValueError:
        return False
    return True


def _checked_scale(mos_range: Sequence[float]) -> tuple[float, float]:
    values = tuple(float(value) for value in mos_range)
    if len(values) != 2 or not all(math.isfinite(value) for value in values) or values[0] >= values[1]:
        raise ValueError(f"mos_range must be two finite numbers LOW < HIGH, got {tuple(mos_range)}")
    return values


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-") or "dataset"


# ------------------------------------------------------------------------------------- benchmarks
def _from_benchmark(text, data_dir, scale, loader_options, *, validation_fraction, seed) -> DatasetSource:
    benchmark = get_benchmark(text)
    info = benchmark.info
    if scale is not None and scale != info.mos_range:
        raise ValueError(f"{info.pretty_name}'s MOS scale is {info.mos_min:g}-{info.mos_max:g}; mos_range "
                         f"{scale[0]:g}-{scale[1]:g} contradicts it (leave it out for registered benchmarks)")
    split_options = {key: value for key, value in {"validation_fraction": validation_fraction, "seed": seed}.items()
                     if key in benchmark.options}  # KonIQ-10k has an official validation split instead
    dataset = benchmark.load(data_dir, **split_options, **loader_options)
    origin = f"official layout in {data_dir}" if data_dir is not None else "official layout, downloaded"
    return DatasetSource(dataset, info.pretty_name, info.name, origin, info.mos_range)


# ------------------------------------------------------------------------------------------ tables
class _Problems:
    """Everything wrong with a table or dataset, grouped by kind, so that one error lists it all."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}

    def add(self, kind: str, entry: str) -> None:
        self.found.setdefault(kind, []).append(entry)

    def raise_if_any(self, where: str) -> None:
        if not self.found:
            return
        lines = [f"  - {kind}: {describe_names(entries, quote=False)}" for kind, entries in self.found.items()]
        raise DatasetLayoutError(f"{where} cannot be used:\n" + "\n".join(lines))


def _number(cell: object) -> float | None:
    if isinstance(cell, bool):
        return None
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_table(path: Path) -> list[tuple[int, dict[str, object]]]:
    """``(line number, {column: value})`` for every row of a CSV or JSONL table (column names case-folded)."""
    if path.suffix.lower() == ".csv":
        rows = read_csv_rows(path, ["image", "mos"], ["split", "std"])
        return [(line, {column.casefold(): cell for column, cell in cells.items()}) for line, cells in rows]
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DatasetLayoutError(f"{path} is not a UTF-8 text file: {error}.") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetLayoutError(f"{path}, line {number}: not valid JSON ({error.msg}).") from None
        if not isinstance(record, dict):
            raise DatasetLayoutError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
        rows.append((number, {str(key).strip().casefold(): value for key, value in record.items()}))
    absent = [column for column in ("image", "mos") if not any(column in cells for _, cells in rows)]
    if rows and absent:
        raise DatasetLayoutError(f"{path}: no row has {' or '.join(map(repr, absent))}.\nExpected:\n{TABLE_LAYOUT}")
    return rows


def _from_table(path: Path, scale, name, *, validation_fraction, seed) -> DatasetSource:
    if scale is None:
        raise ValueError(f"{path}: give the scale of its 'mos' column, e.g. mos_range=(1, 5) (--mos-range 1 5)")
    rows = _read_table(path)
    if not rows:
        raise DatasetLayoutError(f"{path} holds no rows.\nExpected:\n{TABLE_LAYOUT}")
    low, high = scale
    has_split = any("split" in cells for _, cells in rows)
    problems = _Problems()
    splits: dict[str, list[LabelledImage]] = {split: [] for split in SPLITS}
    seen: set[Path] = set()
    for line, cells in rows:
        image = "" if cells.get("image") is None else str(cells["image"]).strip()
        if not image:
            problems.add("rows without an image", f"line {line}")
            continue
        mos = _number(cells.get("mos"))
        if mos is None:
            problems.add("rows whose 'mos' is not a number", f"line {line} ({cells.get('mos')!r})")
        elif not low <= mos <= high:
            problems.add(f"scores outside the scale {low:g}-{high:g}", f"line {line} ({mos:g})")
        std = None
        if cells.get("std") not in (None, ""):
            std = _number(cells["std"])
            if std is None or std < 0:
                problems.add("rows whose 'std' is not a number >= 0", f"line {line} ({cells['std']!r})")
        split = str(cells.get("split") or "").strip().casefold() if has_split else "train"
        if split not in SPLITS:
            problems.add("rows whose split is not train, validation or test", f"line {line} ({cells.get('split')!r})")
        file = (path.parent / Path(image).expanduser()).resolve()
        if file in seen:
            problems.add("images listed more than once", f"line {line} ({image!r})")
        seen.add(file)
        if split in SPLITS and mos is not None:
            splits[split].append(LabelledImage(image_name=image, mos=mos, mos_std=std, path=file))
    missing, unreadable = find_image_problems(sorted(str(file) for file in seen))
    for kind, entries in (("missing images", missing), ("images that cannot be opened", unreadable)):
        for entry in entries:
            problems.add(kind, entry)
    problems.raise_if_any(str(path))

    if not splits["validation"] and validation_fraction > 0 and len(splits["train"]) >= 2:
        splits["train"], splits["validation"] = hold_out(splits["train"], validation_fraction, seed, group_of=name_of)
    info = BenchmarkInfo(
        name=_slug(path.stem), pretty_name=name or path.stem, mos_min=low, mos_max=high,
        mos_description=f"the 'mos' column of {path.name}",
        split_protocol=("the table's own 'split' column" if has_split else "every row is train") + (
            f"; validation carved from train (validation_fraction={validation_fraction}, seed={seed})"),
        layout=TABLE_LAYOUT, homepage="", license="unknown", license_note="", citation="",
    )
    dataset = build_dataset_dict({split: rows for split, rows in splits.items() if rows}, info)
    return DatasetSource(dataset, info.pretty_name, info.name, f"table {path}", scale)


# ---------------------------------------------------------------------- folders, hub ids, DatasetDicts
def _load_with_datasets(location: str, what: str) -> DatasetDict:
    from datasets import load_dataset

    try:
        dataset = load_dataset(location)
    except Exception as error:  # noqa: BLE001  (datasets raises many kinds; each ends as one clear message)
        offline = " in the local cache (offline mode is on)" if os.environ.get("HF_HUB_OFFLINE") not in (
            None, "", "0") else ""
        raise ValueError(f"{location!r} is not a registered benchmark ({', '.join(DATASETS)}), a table, or a "
                         f"dataset `datasets.load_dataset` can read{offline}: {type(error).__name__}: {error}"
                         ) from error
    if not isinstance(dataset, DatasetDict):
        raise ValueError(f"{what}: expected named splits, got {type(dataset).__name__}")
    return dataset


def _card_name(card_file: Path) -> str | None:
    """The ``pretty_name`` a dataset card declares, if it has one."""
    if not card_file.is_file():
        return None
    from huggingface_hub import DatasetCard

    try:
        return DatasetCard.load(card_file).data.pretty_name
    except Exception:  # noqa: BLE001  (a card that does not parse names nothing; the data is checked on its own)
        return None


def _hub_card_name(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "README.md", repo_type="dataset")
    return _card_name(Path(cached)) if isinstance(cached, str) else None


def _scale_from_columns(splits: Mapping[str, Dataset], where: str) -> tuple[float, float] | None:
    """The scale that maps ``mos`` onto ``mos_normalized`` (the columns `metaqap_hf.data` writes), or None."""
    if not all("mos_normalized" in split.column_names for split in splits.values()):
        return None
    pairs = np.array([(mos, normalized) for split in splits.values()
                      for mos, normalized in zip(split["mos"][:], split["mos_normalized"][:])
                      if _number(mos) is not None and _number(normalized) is not None], dtype=np.float64)
    if len(pairs) < 2 or np.ptp(pairs[:, 1]) == 0:
        return None
    lowest, highest = pairs[np.argmin(pairs[:, 1])], pairs[np.argmax(pairs[:, 1])]
    span = (highest[0] - lowest[0]) / (highest[1] - lowest[1])
    low = lowest[0] - lowest[1] * span
    if span <= 0 or not np.allclose((pairs[:, 0] - low) / span, pairs[:, 1], atol=1e-6):
        raise DatasetLayoutError(f"{where}: 'mos_normalized' is not a linear map of 'mos' onto 0-1; drop it or fix "
                                 "it, and give the scale with mos_range")
    return float(f"{low:.{_SCALE_DIGITS}g}"), float(f"{low + span:.{_SCALE_DIGITS}g}")


def _from_dataset_dict(dataset: DatasetDict, name: str, origin: str, scale, *, validation_fraction, seed,
                       dataset_id: str | None = None) -> DatasetSource:
    unknown = [split for split in dataset if split not in SPLITS]
    if unknown or not dataset:
        raise DatasetLayoutError(f"{origin} has the splits {list(dataset)}; expected train, validation and/or test.")
    splits: dict[str, Dataset] = {}
    for split_name, split in dataset.items():
        absent = [column for column in ("image", "mos") if column not in split.column_names]
        if absent:
            raise DatasetLayoutError(f"{origin}, split {split_name}: no column {' or '.join(map(repr, absent))}; "
                                     f"its columns are {split.column_names}.")
        feature = split.features["image"]
        if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
            split = split.cast_column("image", Image())  # file paths
        elif not isinstance(feature, Image):
            raise DatasetLayoutError(f"{origin}, split {split_name}: column 'image' holds {feature}, not images.")
        if "image_name" not in split.column_names:
            labels = [item.get("path") or f"row {index}" for index, item in enumerate(image_column(split))]
            split = split.add_column("image_name", labels)
        splits[split_name] = split

    known = _scale_from_columns(splits, origin)
    if scale is not None and known is not None and not np.allclose(scale, known):
        raise ValueError(f"{origin} is on the scale {known[0]:g}-{known[1]:g} (from its 'mos_normalized'); "
                         f"mos_range {scale[0]:g}-{scale[1]:g} contradicts it")
    scale = scale or known
    if scale is None:
        raise ValueError(f"{origin}: give the scale of its 'mos' column, e.g. mos_range=(1, 5) (--mos-range 1 5); "
                         "it has no 'mos_normalized' column to read it from")

    problems = _Problems()
    low, high = scale
    for split_name, split in splits.items():
        for image_name, mos in zip(split["image_name"][:], split["mos"][:]):
            value = _number(mos)
            if value is None:
                problems.add("rows whose 'mos' is not a number", f"{split_name} {image_name!r} ({mos!r})")
            elif not low - 1e-9 <= value <= high + 1e-9:
                problems.add(f"scores outside the scale {low:g}-{high:g}", f"{split_name} {image_name!r} "
                             f"({value:g})")
        missing, unreadable = find_image_problems(image_column(split))
        for kind, entries in (("missing images", missing), ("images that cannot be opened", unreadable)):
            for entry in entries:
                problems.add(kind, f"{split_name} {entry}")
    problems.raise_if_any(origin)

    if "validation" not in splits and "train" in splits and validation_fraction > 0 and len(splits["train"]) >= 2:
        train, names = splits["train"], splits["train"]["image_name"][:]
        kept, held = hold_out(range(len(train)), validation_fraction, seed, group_of=lambda index: names[index])
        splits["train"], splits["validation"] = train.select(kept), train.select(held)
    ordered = DatasetDict({split: splits[split] for split in SPLITS if split in splits})
    return DatasetSource(ordered, name, dataset_id or _slug(name), origin, scale)
