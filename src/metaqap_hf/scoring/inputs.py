"""What `metaqap score` can read, as one lazy stream of `ImageInput`s in a fixed order: files and folders (walked
recursively), lists of paths (a file or standard input), WebDataset-style tar shards and `datasets` datasets (a hub
id, streamed, or a local folder). Nothing is held in memory beyond the item at hand, so a list of millions of paths
costs what one path costs (a folder's names are listed one folder at a time)."""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..files import WalkStats, has_image_suffix, iter_files
from ..image_utils import MAX_ENCODED_BYTES
from .options import OptionError

__all__ = ["TAR_SUFFIXES", "ImageInput", "ImageInputs", "iter_path_list", "iter_tar_shard", "is_tar_shard"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_LIST_CHUNK = 1 << 16


@dataclass(frozen=True)
class ImageInput:
    """One thing to score. `key` names it in results (a path, ``shard.tar/member`` or ``dataset:split/row``);
    `source` is a file path or the encoded image bytes; `problem` says why it cannot be scored (found while
    listing) when set."""

    key: str
    source: str | bytes | None = None
    problem: str | None = None


def is_tar_shard(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


def iter_tar_shard(path: str | os.PathLike) -> Iterator[ImageInput]:
    """The image members of a tar archive (plain or compressed), read as a stream in archive order, keyed
    ``ARCHIVE/MEMBER``. Links and special entries are reported, never followed; an unreadable archive is reported
    under its own name after the members read before the damage."""
    name = str(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            yield ImageInput(name, problem="not a regular file (a pipe, socket or device)")
            return
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if member.isdir() or not has_image_suffix(member.name):
                    continue  # WebDataset samples hold labels and metadata beside the image
                key = f"{name}/{member.name}"
                if not member.isfile():
                    yield ImageInput(key, problem="a link or special entry in the archive, not followed")
                elif member.size > MAX_ENCODED_BYTES:
                    yield ImageInput(key, problem=f"archive member of {member.size} bytes is too large to score")
                else:
                    yield ImageInput(key, archive.extractfile(member).read())
    except Exception as error:  # damaged archives raise tarfile's, zlib's, lzma's... errors: the shard's problem
        yield ImageInput(name, problem=f"unreadable tar archive ({type(error).__name__}: {error})")


def iter_path_list(stream: BinaryIO) -> Iterator[str]:
    """Paths from a list, read as it comes: one a line (a trailing carriage return dropped, empty lines skipped),
    or NUL-separated (`find -print0`) when the first chunk read holds a NUL byte, so names may hold newlines.
    Bytes that are not UTF-8 keep their value (os.fsdecode)."""
    read = getattr(stream, "read1", stream.read)  # read1: what a pipe holds now, without waiting for a full chunk
    separator, rest = None, b""
    while chunk := read(_LIST_CHUNK):
        if separator is None:
            separator = b"\0" if b"\0" in chunk else b"\n"
        *lines, rest = (rest + chunk).split(separator)
        yield from _list_entries(lines, separator)
    yield from _list_entries([rest], separator or b"\n")


def _list_entries(lines: list[bytes], separator: bytes) -> Iterator[str]:
    for line in lines:
        if separator == b"\n" and line.endswith(b"\r"):
            line = line[:-1]
        if line:
            yield os.fsdecode(line)


class ImageInputs:
    """Everything one scoring run reads, in this order: `paths` (files, folders, tar shards), the paths listed in
    `files_from` (a file, ``"-"`` for standard input, or a binary stream), and the rows of `dataset` (a local folder
    written by `save_to_disk`, any folder or hub id `datasets.load_dataset` reads, streamed; offline, the local
    cache), from `split` (default: every split) and its `image_column` (default: the first image column).

    Options are checked when this is built, before any scoring; iterate it once. `stats.hidden` counts entries
    inside folders that were passed over because their names start with a dot.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike] = (),
        *,
        files_from: str | os.PathLike | BinaryIO | None = None,
        dataset: str | os.PathLike | None = None,
        split: str | None = None,
        image_column: str | None = None,
    ):
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.stats = WalkStats()
        for option, value in (("split", split), ("image_column", image_column)):
            if value is not None and dataset is None:
                raise OptionError(option, value, "is only used with a dataset")
        self.list_path = str(files_from) if isinstance(files_from, (str, os.PathLike)) else None
        self._list = _open_list(files_from) if files_from is not None else None
        self._dataset = _open_dataset(dataset, split, image_column) if dataset is not None else None
        if not self.paths and self._list is None and self._dataset is None:
            raise OptionError("paths", [], "give image files or folders, a list of them, or a dataset")

    def __iter__(self) -> Iterator[ImageInput]:
        sources = [iter(self.paths)]
        if self._list is not None:
            sources.append(iter_path_list(self._list))
        for source in sources:
            for path, problem in iter_files(source, stats=self.stats):
                if problem is not None:
                    yield ImageInput(str(path), problem=problem)
                elif is_tar_shard(path):
                    yield from iter_tar_shard(path)
                else:
                    yield ImageInput(str(path), str(path))
        if self._dataset is not None:
            yield from self._dataset


def _open_list(files_from: str | os.PathLike | BinaryIO) -> BinaryIO:
    if not isinstance(files_from, (str, os.PathLike)):
        return files_from
    if str(files_from) == "-":
        return sys.stdin.buffer
    try:
        mode = os.stat(files_from).st_mode
        if stat.S_ISDIR(mode):
            raise OptionError("files_from", str(files_from), "is a folder; give a file that lists paths, one a line")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):  # /dev/zero would list empty names for ever
            raise OptionError("files_from", str(files_from), "is a device; give a file or pipe that lists paths")
        return open(files_from, "rb")  # noqa: SIM115 - read lazily while scoring, closed at exit
    except OSError as error:
        raise OptionError("files_from", str(files_from), f"cannot read it ({error.strerror or error})") from None


def _open_dataset(dataset: str | os.PathLike, split: str | None, image_column: str | None) -> Iterator[ImageInput]:
    """Load (lazily: streaming) and check the dataset now; its rows are read when the iterator is."""
    import datasets

    name = str(dataset)
    try:
        if (Path(name) / "dataset_info.json").is_file() or (Path(name) / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, streaming=True)
    except Exception as error:  # datasets raises many types for "not found", "offline", "not a dataset"
        raise OptionError("dataset", name, f"cannot load it ({type(error).__name__}: {error})") from None
    parts = dict(loaded) if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)) else {
        str(getattr(loaded, "split", None) or "train"): loaded}
    if split is not None:
        if split not in parts:
            raise OptionError("split", split, f"{name} has the splits {sorted(parts)}")
        parts = {split: parts[split]}
    columns = {}
    for part_name, part in parts.items():
        features = part.features or {}
        image_columns = [key for key, feature in features.items() if isinstance(feature, datasets.Image)]
        column = image_column or next(iter(image_columns), None)
        if column not in image_columns:
            raise OptionError("image_column", image_column, f"{name} ({part_name}) has no such image column; its "
                                                            f"columns are {sorted(features)}, images in {image_columns}")
        columns[part_name] = column
    return _dataset_rows(name, parts, columns)


def _dataset_rows(name: str, parts: dict, columns: dict[str, str]) -> Iterator[ImageInput]:
    import datasets

    for part_name, part in parts.items():
        column = columns[part_name]
        rows = part.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        for index, row in enumerate(rows):
            key = f"{name}:{part_name}/{index}"
            cell = row[column] or {}
            if cell.get("bytes"):
                yield ImageInput(key, cell["bytes"])
            elif not cell.get("path"):
                yield ImageInput(key, problem="the row holds no image")
            elif os.path.lexists(cell["path"]):
                yield ImageInput(key, cell["path"])
            else:  # a file in the dataset's repository (streaming): read through datasets' own opener
                try:
                    with datasets.utils.file_utils.xopen(cell["path"], "rb") as file:
                        item = ImageInput(key, file.read(MAX_ENCODED_BYTES))
                except Exception as error:
                    item = ImageInput(key, problem=f"cannot read {cell['path']} ({type(error).__name__}: {error})")
                yield item
