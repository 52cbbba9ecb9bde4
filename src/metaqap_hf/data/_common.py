"""Pieces every benchmark loader shares.

A loader reads one dataset's official label file(s), matches every label row to an image file, assigns rows to
splits and hands them to :func:`build_dataset_dict`. The helpers here keep the error messages of the five
loaders alike: each names the file and the problem, and lists at most ``MAX_NAMES_SHOWN`` offending names
together with their count.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, DatasetInfo, Features, Image, Value

from ..files import has_image_suffix

__all__ = [
    "BenchmarkInfo",
    "DatasetLayoutError",
    "LabelledImage",
    "UnlabeledImagesWarning",
    "attach_image_paths",
    "base_features",
    "build_dataset_dict",
    "check_unique_names",
    "describe_names",
    "index_images",
    "name_of",
    "parse_name",
    "parse_score",
    "read_csv_rows",
    "require_directory",
    "require_file",
    "warn_unlabeled_images",
]

MAX_NAMES_SHOWN = 10


class DatasetLayoutError(ValueError):
    """A benchmark folder does not match its official layout, or one of its label files cannot be read."""


class UnlabeledImagesWarning(UserWarning):
    """An image folder holds images that no label file lists; the loaders skip them."""


@dataclass(frozen=True)
class BenchmarkInfo:
    """What is known of a benchmark: its MOS scale, split protocol, layout, licence and citation.

    ``layout`` is the text every error shows, so that a user knows exactly what to put where;
    ``extra_columns`` describes the columns this benchmark has beyond the common five.
    """

    name: str
    pretty_name: str
    mos_min: float
    mos_max: float
    mos_description: str
    split_protocol: str
    layout: str
    homepage: str
    license: str
    license_note: str
    citation: str
    extra_columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def mos_range(self) -> tuple[float, float]:
        return (self.mos_min, self.mos_max)

    @property
    def mos_name(self) -> str:
        """What a model trained on this benchmark scores, e.g. ``BIQ2021 MOS (0-1)`` (`MetaQAPConfig.mos_name`)."""
        return f"{self.pretty_name} MOS ({self.mos_min:g}-{self.mos_max:g})"

    def normalize(self, mos: float) -> float:
        """Map a MOS on this benchmark's documented scale onto 0-1."""
        return (mos - self.mos_min) / (self.mos_max - self.mos_min)

    def description(self) -> str:
        """The text kept in ``DatasetInfo.description``: the MOS scale and the split protocol."""
        return (
            f"{self.pretty_name}. MOS scale {self.mos_min:g}-{self.mos_max:g} ({self.mos_description}); "
            f"mos_normalized = (mos - {self.mos_min:g}) / ({self.mos_max:g} - {self.mos_min:g}). "
            f"Splits: {self.split_protocol}"
        )


@dataclass
class LabelledImage:
    """One label row: the image name as the label file writes it, its scores and any benchmark-specific fields."""

    image_name: str
    mos: float
    mos_std: float | None = None
    extra: dict[str, object] = field(default_factory=dict)
    path: Path | None = None


def describe_names(names: Sequence[str], *, quote: bool = True) -> str:
    """Up to ``MAX_NAMES_SHOWN`` names (quoted, unless `quote` is off) and the total count."""
    shown = ", ".join(repr(name) if quote else name for name in names[:MAX_NAMES_SHOWN])
    more = ", ..." if len(names) > MAX_NAMES_SHOWN else ""
    return f"{shown}{more} ({len(names)} in all)"


def _layout_hint(info: BenchmarkInfo) -> str:
    return f"Expected {info.pretty_name} layout:\n{info.layout}"


def require_directory(path: Path, info: BenchmarkInfo) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"Missing directory {path}. {_layout_hint(info)}")
    return path


def require_file(path: Path, info: BenchmarkInfo) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"Missing label file {path}. {_layout_hint(info)}")
    return path


def index_images(*directories: Path) -> dict[str, list[Path]]:
    """Image files directly inside ``directories``, keyed by their case-folded name.

    Case-folding lets a label ``ss02 (1014).jpg`` find the file ``ss02 (1014).JPG``. A symbolic link counts only
    when its target lies inside one of ``directories``: a dataset folder from someone else must not pull files
    from elsewhere on the machine into a prepared dataset, so a link that leads out is an error naming it.
    """
    roots = [Path(os.path.realpath(directory)) for directory in directories]
    index: dict[str, list[Path]] = {}
    leaving: list[str] = []
    for directory in directories:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not (entry.is_file() and has_image_suffix(entry.name)):
                    continue
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    if not any(target.is_relative_to(root) for root in roots):
                        leaving.append(f"{entry.name} -> {target}")
                        continue
                index.setdefault(entry.name.casefold(), []).append(Path(entry.path))
    if leaving:
        raise DatasetLayoutError(
            f"{directories[0]} holds symbolic links to files outside the dataset: {describe_names(leaving)}. Copy "
            f"those images into the folder (links are followed only within it)."
        )
    return index


def attach_image_paths(
    rows: Sequence[LabelledImage], images: Mapping[str, list[Path]], label_file: Path, image_dir: Path
) -> None:
    """Set ``row.path`` for every row; fail naming the rows whose image is missing or ambiguous."""
    missing: list[str] = []
    for row in rows:
        candidates = images.get(row.image_name.casefold(), [])
        exact = [path for path in candidates if path.name == row.image_name]
        if len(candidates) == 1 or len(exact) == 1:
            row.path = exact[0] if exact else candidates[0]
        elif not candidates:
            missing.append(row.image_name)
        else:
            raise DatasetLayoutError(
                f"{label_file} lists {row.image_name!r}, which matches several files that differ only in case: "
                f"{describe_names([path.name for path in candidates])}. Keep one of them."
            )
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} images listed in {label_file} are missing from {image_dir}: {describe_names(missing)}."
        )


def warn_unlabeled_images(
    images: Mapping[str, list[Path]], labelled_names: Iterable[str], image_dir: Path, *, strict: bool
) -> None:
    """Report images that no label lists: a warning (they are skipped), or an error when ``strict``."""
    known = {name.casefold() for name in labelled_names}
    unlabeled = sorted(path.name for key, paths in images.items() if key not in known for path in paths)
    if not unlabeled:
        return
    message = f"{image_dir} holds {len(unlabeled)} images that no label file lists: {describe_names(unlabeled)}."
    if strict:
        raise DatasetLayoutError(message)
    warnings.warn(f"{message} They are skipped; pass strict=True to make this an error.", UnlabeledImagesWarning, 3)


def read_csv_rows(
    path: Path, required_columns: Sequence[str], optional_columns: Sequence[str] = ()
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV label file as ``(line number, {column: cell})``: every required column, and those of
    `optional_columns` that the header has.

    Column names are matched without regard to case or surrounding spaces; rows whose cells are all empty (the
    trailing ``,,`` lines some files carry) are skipped.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetLayoutError(
                    f"Label file {path} is empty; expected a header with {list(required_columns)}."
                )
            positions: dict[str, int] = {}
            for index, name in enumerate(header):
                positions.setdefault(name.strip().casefold(), index)
            absent = [column for column in required_columns if column.casefold() not in positions]
            if absent:
                raise DatasetLayoutError(
                    f"Label file {path} has no column {', '.join(map(repr, absent))}; its header is {header}."
                )
            present = [*required_columns, *(column for column in optional_columns if column.casefold() in positions)]
            wanted = {column: positions[column.casefold()] for column in present}
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                padded = cells + [""] * (len(header) - len(cells))
                rows.append((reader.line_num, {column: padded[index].strip() for column, index in wanted.items()}))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetLayoutError(f"Label file {path} is not a readable CSV file: {error}.") from error
    return rows


def parse_score(
    cell: object, *, label_file: Path, row: int | str, column: str, info: BenchmarkInfo | None = None
) -> float:
    """A finite number from a label cell; with ``info``, also within the benchmark's documented MOS range."""
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise DatasetLayoutError(f"{label_file}, row {row}: column {column!r} holds {cell!r}, not a number.")
    if info is not None and not info.mos_min <= value <= info.mos_max:
        raise DatasetLayoutError(
            f"{label_file}, row {row}: {column} {value:g} lies outside {info.pretty_name}'s documented scale "
            f"{info.mos_min:g}-{info.mos_max:g}."
        )
    return value


def parse_name(cell: object, *, label_file: Path, row: int | str, column: str) -> str:
    """A non-empty image name from a label cell."""
    name = "" if cell is None else str(cell).strip()
    if not name:
        raise DatasetLayoutError(f"{label_file}, row {row}: column {column!r} holds no image name.")
    return name


def name_of(row: LabelledImage) -> str:
    """The grouping key of independent images: each image is its own group."""
    return row.image_name


def check_unique_names(rows: Sequence[LabelledImage], label_file: Path) -> None:
    """Fail when a label file lists an image twice (names compared without regard to case)."""
    seen: set[str] = set()
    repeated = []
    for row in rows:
        key = row.image_name.casefold()
        if key in seen:
            repeated.append(row.image_name)
        seen.add(key)
    if repeated:
        raise DatasetLayoutError(f"{label_file} lists some images more than once: {describe_names(repeated)}.")


def base_features() -> Features:
    """The columns every benchmark has; loaders add their own after these."""
    return Features(
        {
            "image": Image(),
            "image_name": Value("string"),
            "mos": Value("float64"),
            "mos_normalized": Value("float64"),
            "mos_std": Value("float64"),
        }
    )


def build_dataset_dict(
    splits: Mapping[str, Sequence[LabelledImage]], info: BenchmarkInfo, features: Features | None = None
) -> DatasetDict:
    """One ``Dataset`` per split, images kept as file paths and decoded lazily on access."""
    features = features or base_features()
    common_columns = base_features()
    extra_columns = [column for column in features if column not in common_columns]
    dataset_info = DatasetInfo(
        dataset_name=info.pretty_name,  # how `load_dataset_source` names a DatasetDict given in Python
        description=info.description(),
        citation=info.citation,
        homepage=info.homepage,
        license=info.license_note,
        features=features,
    )
    result = DatasetDict()
    for split, rows in splits.items():
        columns: dict[str, list[object]] = {
            "image": [str(row.path) for row in rows],
            "image_name": [row.image_name for row in rows],
            "mos": [row.mos for row in rows],
            "mos_normalized": [info.normalize(row.mos) for row in rows],
            "mos_std": [row.mos_std for row in rows],
        }
        for column in extra_columns:
            columns[column] = [row.extra.get(column) for row in rows]
        result[split] = Dataset.from_dict(columns, features=features, info=dataset_info.copy(), split=split)
    return result
