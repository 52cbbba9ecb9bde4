"""Finding image files: the one folder walker and the one set of image suffixes that scoring, pretraining and the
dataset loaders share."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "FileWalk", "WalkStats", "has_image_suffix", "iter_files", "walk_files"]

# What the loaders and the pretraining stream take for an image; Pillow reads more, and scoring tries every file.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def has_image_suffix(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class WalkStats:
    """What a walk passed over on purpose: entries inside folders whose names start with a dot."""

    hidden: int = 0


@dataclass
class FileWalk:
    """The files found, in order, and `(path, reason)` for every argument or folder that could not be used."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _error_reason(path: Path, error: BaseException) -> str:
    if isinstance(error, ValueError):
        return "not a valid file name"
    if getattr(error, "errno", None) == errno.ENOENT and os.path.islink(path):
        return "broken symbolic link (its target does not exist)"
    return (getattr(error, "strerror", None) or str(error)).lower()


def _list_folder(folder: Path, images_only: bool, stats: WalkStats) -> tuple[list[tuple[Path, str | None]], list]:
    """The files (or problems) and sub-folders directly in `folder`, each sorted by name; raises OSError when the
    folder cannot be listed. Only names are kept, so a folder of a million files costs about 100 MB while listed."""
    files, folders = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                stats.hidden += 1
                continue
            path = folder / entry.name
            try:
                is_folder = entry.is_dir()  # follows symbolic links
            except OSError as error:
                files.append((path, _error_reason(path, error)))
                continue
            if is_folder:
                folders.append(path)
            elif not images_only or has_image_suffix(entry.name):
                files.append((path, None))
    files.sort(key=lambda item: item[0].name)
    folders.sort(key=lambda path: path.name)
    return files, folders


def _walk_folder(top: Path, images_only: bool, stats: WalkStats) -> Iterator[tuple[Path, str | None]]:
    """Depth first without recursion (any depth): a folder's files, then each sub-folder in name order. Symbolic
    links to folders are followed; a link back to a folder already walked is reported, not followed again, and so
    is an empty sub-folder named like an image (someone meant a file there)."""
    walked: set[tuple[int, int]] = set()
    pending = [top]
    while pending:
        folder = pending.pop()
        try:
            status = os.stat(folder)
            identity = (status.st_dev, status.st_ino)
            if identity in walked:
                yield folder, "symbolic link to a folder already walked (a loop), not followed"
                continue
            walked.add(identity)
            files, folders = _list_folder(folder, images_only, stats)
        except OSError as error:
            yield folder, f"cannot read folder ({_error_reason(folder, error)})"
            continue
        if folder != top and not files and not folders and has_image_suffix(folder):
            yield folder, "a folder named like an image, holding no files"
        yield from files
        pending += reversed(folders)


def iter_files(
    paths: Iterable[str | os.PathLike], *, images_only: bool = False, stats: WalkStats | None = None
) -> Iterator[tuple[Path, str | None]]:
    """Expand path arguments lazily, in order: `(path, None)` for each file, `(path, reason)` for each argument,
    folder or entry that cannot be used. Files are yielded as given (a pipe or device too: the decoder names it);
    folders are walked recursively in sorted order, entries whose names start with a dot skipped (and counted in
    `stats`). With `images_only`, files found inside folders are kept only when `has_image_suffix`. A folder
    argument under which no file is found is reported, never skipped silently.
    """
    stats = stats if stats is not None else WalkStats()
    for argument in paths:
        path = Path(argument)
        try:
            is_folder = stat.S_ISDIR(os.stat(path).st_mode)
        except (OSError, ValueError) as error:
            yield path, _error_reason(path, error)
            continue
        if not is_folder:
            yield path, None
            continue
        hidden_before, found = stats.hidden, False
        for item in _walk_folder(path, images_only, stats):
            found = True
            yield item
        if not found:
            hidden = stats.hidden - hidden_before
            kind = "image files" if images_only else "files"
            yield path, f"folder holds no {kind}" + (f" ({hidden} hidden entries skipped)" if hidden else "")


def walk_files(paths: Iterable[str | os.PathLike], *, images_only: bool = False) -> FileWalk:
    """`iter_files` collected: the files in order, and the problems."""
    walk = FileWalk()
    for path, reason in iter_files(paths, images_only=images_only):
        if reason is None:
            walk.files.append(path)
        else:
            walk.problems.append((str(path), reason))
    return walk
