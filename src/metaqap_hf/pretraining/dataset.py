"""Quality-aware pretraining data: a seeded stream of distorted crops with pseudo-MOS labels.

Every sample is a pure function of ``(seed, epoch, index)``: its pristine image, crop, distortion
type, level and noise all come from a generator seeded by those three numbers. Each DataLoader
worker of each distributed rank takes a disjoint slice of the indices, so the epoch's sample set
is the same however many ranks and workers share it. ``export_shards`` freezes a stream into
parquet shards and ``ShardDataset`` replays them, so a pretraining stage can also run from disk.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from itertools import islice
from os import PathLike
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from ..files import walk_files
from ..image_utils import load_image_tensor
from .labels import DEFAULT_METRICS, PseudoMOSLabeler, full_reference_scores

__all__ = ["find_images", "DistortedStream", "export_shards", "ShardDataset"]

# Seed-stream tags, so calibration samples never coincide with training samples.
_TRAINING_STREAM = 0
_CALIBRATION_STREAM = 1


def find_images(sources: str | PathLike | Sequence[str | PathLike]) -> list[Path]:
    """The images of `sources`, each a folder (searched recursively, by suffix, case-insensitive, in sorted order) or
    an image file, in the order given. A source that cannot be used (missing, unreadable, a folder without images)
    is an error naming it: content is never dropped silently."""
    sources = [sources] if isinstance(sources, (str, PathLike)) else list(sources)
    if not sources:
        raise FileNotFoundError("No pristine image folders or files were given.")
    walk = walk_files(sources, images_only=True)
    if walk.problems:
        shown = "; ".join(f"{path}: {reason}" for path, reason in walk.problems[:3])
        raise FileNotFoundError(f"{len(walk.problems)} pristine image source(s) cannot be used: {shown}"
                                f"{' ...' if len(walk.problems) > 3 else ''}")
    return walk.files


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _random_crop(image: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``size`` x ``size`` crop of a (3, H, W) image; smaller images are first enlarged to fit."""
    height, width = image.shape[-2:]
    if min(height, width) < size:
        scale = size / min(height, width)
        height, width = max(size, round(height * scale)), max(size, round(width * scale))
        image = F.interpolate(image[None], size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    top = int(torch.randint(height - size + 1, (1,), generator=generator))
    left = int(torch.randint(width - size + 1, (1,), generator=generator))
    return image[:, top : top + size, left : left + size]


def _resolve_shard(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit rank/world size, else torch.distributed's when initialised, else a single process."""
    if rank is None or world_size is None:
        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank = rank if rank is not None else (torch.distributed.get_rank() if initialised else 0)
        if world_size is None:
            world_size = torch.distributed.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"Rank {rank} is outside a world of size {world_size}.")
    return rank, world_size


class DistortedStream(IterableDataset):
    """Random crops of pristine images, each distorted by a random KADID type and level, with pseudo-MOS.

    Args:
        root: folder searched recursively for images, an image file, or a list of those (`find_images`).
        crop_size: side of the square crops (pixels, native resolution).
        samples_per_epoch: samples per epoch over all ranks (default: one per image).
        seed: base seed; with the epoch and sample index it fixes every sample.
        labeler: fitted ``PseudoMOSLabeler``. If omitted, one is calibrated at construction on
            ``calibration_samples`` samples drawn from a separate seed stream, with ``metrics``.
        rank, world_size: this process's share; default from ``torch.distributed`` if initialised.

    Yields:
        ``{"pixel_values": float32 (3, crop, crop) on [0, 1], "labels": float32 scalar tensor
        (pseudo-MOS on [0, 1], higher is better), "distortion": str, "level": int}``.
    """

    def __init__(
        self,
        root: str | PathLike | Sequence[str | PathLike],
        crop_size: int = 224,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        labeler: PseudoMOSLabeler | None = None,
        metrics: Sequence[str] = DEFAULT_METRICS,
        calibration_samples: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.image_paths = find_images(root)
        self.crop_size = crop_size
        self.samples_per_epoch = samples_per_epoch if samples_per_epoch is not None else len(self.image_paths)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._image_order_cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self.labeler = labeler if labeler is not None else self.calibrate(calibration_samples, metrics)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples the next iteration yields (call on every rank)."""
        self.epoch = epoch

    def _image_for(self, stream: int, epoch: int, index: int) -> Path:
        """Images are visited in a fresh random order every pass over the folder."""
        count = len(self.image_paths)
        key = (stream, epoch, index // count)
        if self._image_order_cache is None or self._image_order_cache[0] != key:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(_seed(self.seed, *key)))
            self._image_order_cache = (key, order)
        return self.image_paths[int(self._image_order_cache[1][index % count])]

    def _draw(self, stream: int, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor, str, int]:
        """The pristine crop, its distorted version, the type and level of one sample."""
        generator = torch.Generator().manual_seed(_seed(self.seed, stream, epoch, index))
        pristine = _random_crop(load_image_tensor(self._image_for(stream, epoch, index)), self.crop_size, generator)
        kind = DISTORTION_TYPES[int(torch.randint(len(DISTORTION_TYPES), (1,), generator=generator))]
        level = int(torch.randint(1, NUM_LEVELS + 1, (1,), generator=generator))
        distorted = distort(pristine[None], kind, level, generator=generator)[0]
        return pristine, distorted, kind, level

    def calibrate(
        self, num_samples: int, metrics: Sequence[str] = DEFAULT_METRICS, batch_size: int = 16
    ) -> PseudoMOSLabeler:
        """Fit a rank-normalising labeler on FR scores of ``num_samples`` samples from the calibration stream."""
        scores: dict[str, list[torch.Tensor]] = {name: [] for name in metrics}
        for start in range(0, num_samples, batch_size):
            indices = range(start, min(start + batch_size, num_samples))
            drawn = [self._draw(_CALIBRATION_STREAM, 0, index) for index in indices]
            batch_scores = full_reference_scores(
                torch.stack([pristine for pristine, *_ in drawn]),
                torch.stack([distorted for _, distorted, *_ in drawn]),
                metrics,
            )
            for name, values in batch_scores.items():
                scores[name].append(values)
        return PseudoMOSLabeler.fit({name: torch.cat(values) for name, values in scores.items()})

    def sample(self, index: int, epoch: int | None = None) -> dict:
        """Sample ``index`` of ``epoch`` (default: the current one); identical wherever it is computed."""
        pristine, distorted, kind, level = self._draw(_TRAINING_STREAM, self.epoch if epoch is None else epoch, index)
        label = self.labeler.label_images(pristine[None], distorted[None])[0]
        return {"pixel_values": distorted, "labels": label, "distortion": kind, "level": level}

    def _indices(self) -> range:
        """This rank's indices of the epoch, then this DataLoader worker's share of them."""
        rank, world_size = _resolve_shard(self.rank, self.world_size)
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        return range(rank + world_size * worker_id, self.samples_per_epoch, world_size * num_workers)

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        for index in self._indices():
            yield self.sample(index, epoch)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all of its DataLoader workers)."""
        rank, world_size = _resolve_shard(self.rank, self.world_size)
        return len(range(rank, self.samples_per_epoch, world_size))


def _png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def export_shards(
    stream: DistortedStream, output_dir: str | PathLike, num_samples: int, shard_size: int = 1000
) -> list[Path]:
    """Write the first ``num_samples`` samples of ``stream`` (its current epoch and shard) as parquet.

    Files are ``train-00000-of-0000N.parquet`` with columns ``image`` (a ``datasets.Image`` struct
    holding 8-bit PNG bytes), ``labels`` (float32), ``distortion`` (string) and ``level`` (int8), so
    ``datasets.load_dataset("parquet", data_dir=output_dir)`` decodes them as images too.
    """
    import datasets  # deferred: heavy import, needed only for writing shards

    available = len(stream)
    if num_samples > available:
        raise ValueError(f"The stream yields {available} samples per epoch on this rank; asked for {num_samples}.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "labels": datasets.Value("float32"),
            "distortion": datasets.Value("string"),
            "level": datasets.Value("int8"),
        }
    )
    num_shards = math.ceil(num_samples / shard_size)
    samples = islice(iter(stream), num_samples)
    paths = []
    for shard in range(num_shards):
        rows = list(islice(samples, shard_size))
        table = {
            "image": [{"bytes": _png_bytes(row["pixel_values"]), "path": None} for row in rows],
            "labels": [float(row["labels"]) for row in rows],
            "distortion": [row["distortion"] for row in rows],
            "level": [row["level"] for row in rows],
        }
        path = output_dir / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
        datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))
        paths.append(path)
    return paths


class ShardDataset(Dataset):
    """Map-style dataset over parquet shards written by ``export_shards``; yields the stream's dicts.

    Pixel values come back exactly as exported: 8-bit, i.e. within 1/510 of the streamed floats.
    """

    def __init__(self, shard_dir: str | PathLike) -> None:
        paths = sorted(Path(shard_dir).glob("*.parquet"))
        if not paths:
            raise FileNotFoundError(f"No parquet shards in {shard_dir}.")
        tables = [pq.read_table(path, columns=["image", "labels", "distortion", "level"]) for path in paths]
        self._images = [
            value for table in tables for value in table.column("image").combine_chunks().field("bytes").to_pylist()
        ]
        self._labels = [value for table in tables for value in table.column("labels").to_pylist()]
        self._kinds = [value for table in tables for value in table.column("distortion").to_pylist()]
        self._levels = [value for table in tables for value in table.column("level").to_pylist()]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict:
        return {
            "pixel_values": load_image_tensor(io.BytesIO(self._images[index])),
            "labels": torch.tensor(self._labels[index], dtype=torch.float32),
            "distortion": self._kinds[index],
            "level": int(self._levels[index]),
        }
