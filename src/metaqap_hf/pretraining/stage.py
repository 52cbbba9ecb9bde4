"""The quality-aware pretraining stage: teach a `MetaQAPModel`'s backbones to rank synthetic distortions before
they ever see a human opinion score (METHOD.md, stage 1).

    pristine photos -> DistortedStream (random crop, KADID distortion, pseudo-MOS from FR metrics)
                    -> train_with_accelerate (backbones + heads, quality-aware loss) -> checkpoint
    checkpoint -> create_model(..., backbones_from=checkpoint) -> fine-tuning / frozen features on a benchmark

Training reuses the Accelerate loop of `metaqap_hf.training` unchanged (mixed precision, accumulation,
checkpoints, exact resumption): the stream is wrapped in a map-style view whose sample ``i`` of epoch ``e`` is a
pure function of ``(seed, e, i)``, so the loop's seedable shuffling and resumption apply as to any dataset. Model
selection looks at a fixed validation set drawn from a separate seed of the same content, labelled by the same
labeler; no human score is read here (a benchmark's training images may be content, never its test images).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from ..factory import create_model, load_backbones_from_checkpoint
from ..training.loop import AccelerateTrainingArguments, initialize_head_bias, train_with_accelerate
from .dataset import DistortedStream, ShardDataset
from .labels import DEFAULT_METRICS

__all__ = ["PRETRAINING_MODEL_OPTIONS", "StreamSamples", "pretrain", "load_backbones_from_checkpoint"]

LABELER_FILE = "pseudo_mos_labeler.json"
SETTINGS_FILE = "pretraining.json"
# `create_model` options of the model `pretrain` trains: pseudo-MOS on [0, 1], MLP heads.
PRETRAINING_MODEL_OPTIONS = {"mos_range": [0.0, 1.0], "mos_name": "pseudo-MOS (0-1, FR metrics fused)",
                             "head_hidden_size": 256, "head_dropout": 0.2}
# Seed offset of the validation stream: its crops and distortions never coincide with the training stream's.
_VALIDATION_SEED_OFFSET = 1_000_003


class StreamSamples(Dataset):
    """Map-style view of a `DistortedStream`: item ``i`` is the stream's sample ``i`` of the current epoch.

    `set_epoch` is forwarded to the stream, so every epoch draws fresh crops, distortions and levels. Items hold
    ``pixel_values`` (float32 on [0, 1]) and ``labels`` (pseudo-MOS on [0, 1]) only, as the training collator wants.
    """

    def __init__(self, stream: DistortedStream) -> None:
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return self.stream.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.stream.sample(index)
        return {"pixel_values": sample["pixel_values"], "labels": sample["labels"]}


def _datasets(
    pristine_dir: str | os.PathLike | Sequence[str | os.PathLike] | None,
    shards: str | os.PathLike | None,
    *,
    crop_size: int,
    samples_per_epoch: int | None,
    validation_samples: int,
    metrics: Sequence[str],
    calibration_samples: int,
    seed: int,
) -> tuple[Dataset, list[dict], object | None]:
    """Training dataset, materialised validation samples and the labeler (None when replaying shards)."""
    if shards is not None:
        replay = ShardDataset(shards)
        if len(replay) <= validation_samples:
            raise ValueError(f"{shards} holds {len(replay)} samples: too few to keep {validation_samples} for "
                             "validation and train on the rest")
        split = len(replay) - validation_samples
        validation = [replay[i] for i in range(split, len(replay))]
        return Subset(replay, range(split)), [_training_item(s) for s in validation], None
    if pristine_dir is None:
        raise ValueError("pretraining needs a folder of pristine images (pristine_dir) or exported shards (shards)")
    stream = DistortedStream(pristine_dir, crop_size=crop_size, samples_per_epoch=samples_per_epoch, seed=seed,
                             metrics=metrics, calibration_samples=calibration_samples, rank=0, world_size=1)
    held_out = DistortedStream(pristine_dir, crop_size=crop_size, samples_per_epoch=validation_samples,
                               seed=seed + _VALIDATION_SEED_OFFSET, labeler=stream.labeler, rank=0, world_size=1)
    validation = [_training_item(held_out.sample(i)) for i in range(validation_samples)]
    return StreamSamples(stream), validation, stream.labeler


def _training_item(sample: Mapping) -> dict[str, torch.Tensor]:
    return {"pixel_values": sample["pixel_values"], "labels": sample["labels"]}


def pretrain(
    pristine_dir: str | os.PathLike | Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    *,
    backbones: str | Sequence[Mapping] = "lite",
    crop_size: int = 224,
    steps: int = 1000,
    batch_size: int = 16,
    loss: str = "quality_aware",
    shards: str | os.PathLike | None = None,
    samples_per_epoch: int | None = None,
    validation_samples: int = 64,
    metrics: Sequence[str] = DEFAULT_METRICS,
    calibration_samples: int = 256,
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    seed: int = 0,
    **training_options: object,
) -> Path:
    """Quality-aware pretraining of a fresh model's backbones and heads on pseudo-MOS; returns the final checkpoint.

    Samples come from `DistortedStream` over `pristine_dir`: a folder, or a list of folders and image files (e.g. the
    pristine photos and a benchmark's training images, their content only). Each sample is a ``crop_size`` crop,
    labelled by the FR `metrics` fused by a labeler calibrated on `calibration_samples` crops. Or samples come from
    parquet `shards` written by `export_shards` (their last `validation_samples` rows held out). With the stream, an
    epoch is `samples_per_epoch` samples (default: enough for `steps` steps, so the run is one pass of fresh
    samples). The model is `create_model(backbones, **PRETRAINING_MODEL_OPTIONS)`: `backbones` is a preset
    (``"lite"``, ``"tiny"``) or a list of specs; with `pretrained` they start from ImageNet weights.
    `training_options` are further `AccelerateTrainingArguments` fields (``learning_rate``, ``mixed_precision``,
    ``eval_every_steps``, ``save_every_steps``...); rerunning into `output_dir` resumes.

    Writes what `train_with_accelerate` writes (``final/``, ``best/``, ``checkpoints/``, ``metrics.jsonl``,
    ``training_result.json``) plus ``pseudo_mos_labeler.json`` (stream only) and ``pretraining.json`` (settings).
    Hand ``final/`` to fine-tuning as `backbones_from` (`create_model`, `finetune`, `train_frozen`).
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(f"pretraining needs steps >= 1 and batch_size >= 2 (the loss ranks within a batch); got "
                         f"steps={steps}, batch_size={batch_size}")
    accumulation = int(training_options.get("gradient_accumulation_steps", 1))
    if samples_per_epoch is None:
        samples_per_epoch = steps * batch_size * accumulation
    train, validation, labeler = _datasets(
        pristine_dir, shards, crop_size=crop_size, samples_per_epoch=samples_per_epoch,
        validation_samples=validation_samples, metrics=metrics, calibration_samples=calibration_samples, seed=seed)
    model = create_model(backbones, pretrained=pretrained, weight_sources=weight_sources, seed=seed, loss=loss,
                         **PRETRAINING_MODEL_OPTIONS)
    initialize_head_bias(model, [float(item["labels"]) for item in validation])

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if labeler is not None:
        labeler.save(output_dir / LABELER_FILE)
    content = None if pristine_dir is None else [str(path) for path in train.stream.image_paths]
    settings = {"pristine_images": content,
                "shards": None if shards is None else str(shards), "backbones": model.config.backbones,
                "crop_size": crop_size, "steps": steps, "batch_size": batch_size, "loss": loss,
                "samples_per_epoch": len(train), "validation_samples": len(validation),
                "metrics": list(metrics) if shards is None else "from shards", "pretrained": pretrained,
                "seed": seed, "training_options": dict(training_options)}
    (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, default=str) + "\n")

    num_epochs = max(1, -(-steps * batch_size * accumulation // len(train)))
    options = {"num_epochs": num_epochs, "max_steps": steps, "per_device_batch_size": batch_size,
               "eval_batch_size": batch_size, **training_options}
    arguments = AccelerateTrainingArguments(output_dir=str(output_dir), seed=seed, **options)
    result = train_with_accelerate(model, train, validation, arguments)
    return Path(result.final_model_dir)
