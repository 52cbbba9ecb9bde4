"""Finding image files: the one folder walker and the one set of image suffixes that scoring, pretraining and the
dataset loaders share."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "FileWalk", "has_image_suffix", "walk_files"]

# What the loaders and the pretraining stream take for an image; Pillow reads more, and scoring tries every file.
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def has_image_suffix(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class FileWalk:
    """The files found, in order, and `(path, reason)` for every argument or folder that could not be used."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def walk_files(paths: Iterable[str | os.PathLike], *, images_only: bool = False) -> FileWalk:
    """Expand path arguments: files as given, folders walked recursively in sorted order, hidden entries skipped.

    With `images_only`, files found inside folders are kept only when `has_image_suffix` (files given by name are
    always kept). Arguments that do not exist and sub-folders that cannot be read are reported in `problems`,
    never skipped silently.
    """
    walk = FileWalk()
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            def report(error: OSError) -> None:
                walk.problems.append((str(error.filename), f"cannot read folder ({error.strerror})"))

            for root, dirs, names in os.walk(path, onerror=report):
                dirs[:] = sorted(name for name in dirs if not name.startswith("."))
                walk.files += [Path(root) / name for name in sorted(names)
                               if not name.startswith(".") and (not images_only or has_image_suffix(name))]
        elif path.exists():
            walk.files.append(path)
        else:
            walk.problems.append((str(argument), "no such file or directory"))
    return walk
