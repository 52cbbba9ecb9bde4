"""Crash-safe checkpoint folders: a checkpoint either exists complete under its final name or not at all.

Every save goes into a hidden temporary folder next to the final one (``.tmp-checkpoint-00000100``), is flushed to
disk, and only then renamed to ``checkpoint-00000100``; renaming a folder is atomic on POSIX file systems. A
process killed during a save leaves only the temporary folder, which `list_checkpoints` never returns and the next
save or resume deletes. Old checkpoints are removed the same way round: renamed out of the ``checkpoint-*``
namespace first, deleted after, so a half-deleted folder is never mistaken for a checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

from ..deprecation import moved_names

__all__ = [
    "atomic_directory",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "remove_incomplete",
    "save_training_state",
]

# Renamed in 0.2.0: `metaqap_hf.cards.save_checkpoint` writes a model checkpoint (model, processor, card).
__getattr__ = moved_names(__name__, {"save_checkpoint": ".checkpointing:save_training_state"})

_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


def checkpoint_path(root: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of optimizer step `step` lives under `root`."""
    return Path(root) / f"checkpoint-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest (lowest step) first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir()
             if path.is_dir() and (match := _CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def remove_incomplete(root: str | os.PathLike) -> list[Path]:
    """Delete what interrupted saves and deletions left under `root`; returns the folders removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    leftovers = [path for path in root.iterdir() if path.name.startswith((_TEMPORARY_PREFIX, _TRASH_PREFIX))]
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return leftovers


def atomic_directory(destination: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a folder through `write(temporary_folder)`, then move it to `destination` in one rename.

    An existing `destination` is replaced: it is renamed away first (so for an instant neither exists, but never
    a mixture of old and new files) and deleted after the new folder is in place.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f"{_TEMPORARY_PREFIX}{destination.name}")
    if temporary.exists():
        shutil.rmtree(temporary)
    write(temporary)
    _fsync_tree(temporary)
    old = destination.with_name(f"{_TRASH_PREFIX}{destination.name}")
    if destination.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(destination, old)
    os.replace(temporary, destination)
    _fsync_directory(destination.parent)
    if old.exists():
        shutil.rmtree(old)
    return destination


def save_training_state(accelerator, root: str | os.PathLike, step: int, keep_last: int | None = None) -> Path:
    """`accelerator.save_state` into ``<root>/checkpoint-<step>``, atomically; then keep only the `keep_last`
    newest checkpoints (all when None). Every process must call this (each saves its own RNG state)."""
    final = checkpoint_path(root, step)
    temporary = final.with_name(f"{_TEMPORARY_PREFIX}{final.name}")
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_incomplete(root)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(temporary)
        if final.exists():  # the same step saved before (a rerun past its last checkpoint): replace it whole
            os.replace(final, final.with_name(f"{_TRASH_PREFIX}{final.name}"))
        os.replace(temporary, final)
        _fsync_directory(final.parent)
        if keep_last is not None:
            prune_checkpoints(root, keep_last)
        remove_incomplete(root)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(root: str | os.PathLike, keep_last: int) -> list[Path]:
    """Remove all but the `keep_last` newest complete checkpoints; returns the ones removed."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    removed = list_checkpoints(root)[:-keep_last]
    for path in removed:
        trash = path.with_name(f"{_TRASH_PREFIX}{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash)
    return removed


def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` and the folders themselves, so a rename never outruns the data."""
    for directory, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(Path(directory))


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
