"""Decode each training image once per run instead of once per epoch.

Decoding a JPEG and resizing it to 512x512 costs more CPU than copying its pixels, and training reads every image
once per epoch. `build_image_cache` runs the inference path (`load_image` + the image processor, with rescaling
switched off) over a list of files once and keeps the result as a uint8 array of shape (N, 3, H, W): in memory, or
as a memory-mapped ``.npy`` file under `cache_dir` keyed by the file list (paths, sizes, modification times) and
the processor's resize settings, reused by later runs. The uint8 values are exactly what the processor produces
before its final rescale to [0, 1], so the cache changes no pixel. 10,000 BIQ2021 images take 7.9 GB: use
`cache_dir` (disk) for full datasets and memory for small ones.

`ImageFiles` is the uncached source with the same interface (decode on every access), used to build the cache
and as the baseline the cache is measured against (benchmarks/train_speed.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..image_processing_metaqap import load_image

__all__ = ["ImageFiles", "build_image_cache", "image_cache_key"]


class ImageFiles(Dataset):
    """Images decoded from files on every access: `files[i]` is a uint8 tensor (3, H, W) as the image processor
    makes it (decoded by `load_image`, resized, not rescaled). Raises `ImageLoadError` naming a bad file."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_processor):
        self.paths = [str(path) for path in paths]
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = load_image(self.paths[index])
        pixels = self.image_processor(images=[image], do_rescale=False, return_tensors="pt")["pixel_values"][0]
        if pixels.dtype != torch.uint8:
            raise TypeError(f"{self.paths[index]}: the image processor returned {pixels.dtype} pixels with "
                            "do_rescale=False; the image cache needs a processor that resizes in uint8")
        return pixels


def image_cache_key(paths: Sequence[str | os.PathLike], image_processor) -> str:
    """A short hash of what the cached pixels depend on: each file's path, size and modification time, and the
    processor's resize settings. A changed or replaced file gives a new key, hence a new cache file."""
    files = []
    for path in paths:
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    settings = {name: str(getattr(image_processor, name, None)) for name in ("size", "resample", "do_resize")}
    identity = {"format": 1, "processor": type(image_processor).__name__, "settings": settings, "files": files}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def build_image_cache(
    paths: Sequence[str | os.PathLike],
    image_processor,
    cache_dir: str | os.PathLike | None = None,
    *,
    num_workers: int = 0,
    batch_size: int = 16,
    desc: str = "decoding images",
) -> np.ndarray:
    """Decode and process every image in `paths` once; return a uint8 array (N, 3, H, W).

    With `cache_dir`, the array lives in ``<cache_dir>/images-<key>.npy`` (see `image_cache_key`): an existing
    file is memory-mapped read-only and returned at once; a new one is written to a temporary name first and
    renamed into place when complete, so an interrupted build never leaves a file that would be reused.
    `num_workers` decode in parallel (DataLoader worker processes).
    """
    if not paths:
        raise ValueError("build_image_cache: no image paths given")
    files = ImageFiles(paths, image_processor)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{image_cache_key(paths, image_processor)}.npy"
        if cache_file.is_file():
            return np.load(cache_file, mmap_mode="r")
        cache_file.parent.mkdir(parents=True, exist_ok=True)

    shape = (len(files), *files[0].shape)
    temporary = None
    if cache_file is None:
        pixels = np.empty(shape, dtype=np.uint8)
    else:
        temporary = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npy")
        pixels = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_same_size)
    start = 0
    try:
        for batch in tqdm(loader, desc=desc, unit="batch"):
            _check_same_size(tuple(batch.shape[1:]), shape[1:])
            pixels[start:start + len(batch)] = batch.numpy()
            start += len(batch)
        if temporary is not None:
            pixels.flush()
            del pixels
            os.replace(temporary, cache_file)
            return np.load(cache_file, mmap_mode="r")
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink()
    return pixels


def _check_same_size(found: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if found != expected:
        raise ValueError(f"processed images differ in size ({found} vs {expected}); the image cache needs an "
                         "image processor that resizes every image to one size")


def _stack_same_size(images: list[torch.Tensor]) -> torch.Tensor:
    """Collate processed images into one uint8 batch, with a clear error when their sizes differ."""
    for image in images:
        _check_same_size(tuple(image.shape), tuple(images[0].shape))
    return torch.stack(images)
