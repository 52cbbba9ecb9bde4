"""The quality-aware pretraining stage: teach a `MetaQAPModel`'s backbones to rank synthetic distortions before
they ever see a human opinion score (METHOD.md, stage 1).

    pristine photos -> DistortedStream (random crop, KADID distortion, pseudo-MOS from FR metrics)
                    -> train_with_accelerate (QualityPretrainingModel: backbones + heads, and classifiers for the
                       classification objective; the weighted sum of the chosen `objectives`) -> checkpoint
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
from .objectives import DISTORTION_CLASSES, QualityPretrainingModel, weighted_objectives

__all__ = ["PRETRAINING_MODEL_OPTIONS", "PretrainingCollator", "StreamSamples", "pretrain",
           "load_backbones_from_checkpoint"]

LABELER_FILE = "pseudo_mos_labeler.json"
SETTINGS_FILE = "pretraining.json"
# `create_model` options of the model `pretrain` trains: pseudo-MOS on [0, 1], MLP heads.
PRETRAINING_MODEL_OPTIONS = {"mos_range": [0.0, 1.0], "mos_name": "pseudo-MOS (0-1, FR metrics fused)",
                             "head_hidden_size": 256, "head_dropout": 0.2}
# Seed offset of the validation stream: its crops and distortions never coincide with the training stream's.
_VALIDATION_SEED_OFFSET = 1_000_003


class StreamSamples(Dataset):
    """Map-style view of a `DistortedStream`: item ``i`` is the stream's sample ``i`` of the current epoch, or, for
    a stream of pairs, its samples ``2i`` and ``2i + 1`` stacked (so shuffling never splits a pair).

    `set_epoch` is forwarded to the stream, so every epoch draws fresh crops, distortions and levels. Items hold
    ``pixel_values`` (float32 on [0, 1]), ``labels`` (pseudo-MOS on [0, 1]) and ``distortion_class``.
    """

    def __init__(self, stream: DistortedStream) -> None:
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __len__(self) -> int:
        return self.stream.samples_per_epoch // 2 if self.stream.pairs else self.stream.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not self.stream.pairs:
            return _training_item(self.stream.sample(index))
        members = [_training_item(self.stream.sample(2 * index + member)) for member in (0, 1)]
        return {key: torch.stack([member[key] for member in members]) for key in members[0]}


class PretrainingCollator:
    """Batches of `StreamSamples` / `ShardDataset` items (what the model takes of them): single samples are stacked,
    pairs concatenated (rows 2k and 2k + 1 stay a pair)."""

    keys = ("pixel_values", "labels", "distortion_class")

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        join = torch.cat if items[0]["pixel_values"].ndim == 4 else torch.stack
        return {key: join([torch.as_tensor(item[key]) for item in items]) for key in self.keys}


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
    pairs: bool,
    pristine_fraction: float,
) -> tuple[Dataset, list[dict], object | None]:
    """Training dataset, materialised validation samples and the labeler (None when replaying shards)."""
    if shards is not None:
        if pairs:
            raise ValueError("the ranking objective needs pairs of crops, which only the stream draws: give "
                             "pristine_dir instead of shards")
        replay = ShardDataset(shards)
        if len(replay) <= validation_samples:
            raise ValueError(f"{shards} holds {len(replay)} samples: too few to keep {validation_samples} for "
                             "validation and train on the rest")
        split = len(replay) - validation_samples
        validation = [replay[i] for i in range(split, len(replay))]
        return Subset(replay, range(split)), [_training_item(s) for s in validation], None
    if pristine_dir is None:
        raise ValueError("pretraining needs a folder of pristine images (pristine_dir) or exported shards (shards)")
    shape = dict(crop_size=crop_size, rank=0, world_size=1, pairs=pairs, pristine_fraction=pristine_fraction)
    stream = DistortedStream(pristine_dir, samples_per_epoch=samples_per_epoch, seed=seed, metrics=metrics,
                             calibration_samples=calibration_samples, **shape)
    held_out = StreamSamples(DistortedStream(pristine_dir, samples_per_epoch=validation_samples,
                                             seed=seed + _VALIDATION_SEED_OFFSET, labeler=stream.labeler, **shape))
    validation = [held_out[i] for i in range(len(held_out))]
    return StreamSamples(stream), validation, stream.labeler


def _training_item(sample: Mapping) -> dict[str, torch.Tensor]:
    return {"pixel_values": sample["pixel_values"], "labels": sample["labels"],
            "distortion_class": torch.tensor(sample["distortion_class"])}


def pretrain(
    pristine_dir: str | os.PathLike | Sequence[str | os.PathLike] | None,
    output_dir: str | os.PathLike,
    *,
    backbones: str | Sequence[Mapping] = "lite",
    crop_size: int = 224,
    steps: int = 1000,
    batch_size: int = 16,
    loss: str = "quality_aware",
    objectives: Sequence[str] = ("regression",),
    objective_weights: Mapping[str, float] | None = None,
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
    """Quality-aware pretraining of a fresh model's backbones and heads; returns the final checkpoint.

    Samples come from `DistortedStream` over `pristine_dir`: a folder, or a list of folders and image files (e.g. the
    pristine photos and a benchmark's training images, their content only). Each sample is a ``crop_size`` crop,
    labelled by the FR `metrics` fused by a labeler calibrated on `calibration_samples` crops. Or samples come from
    parquet `shards` written by `export_shards` (their last `validation_samples` rows held out). With the stream, an
    epoch is `samples_per_epoch` samples (default: enough for `steps` steps, so the run is one pass of fresh
    samples). The model is a `QualityPretrainingModel` from `create_model(backbones, **PRETRAINING_MODEL_OPTIONS)`:
    `backbones` is a preset
    (``"lite"``, ``"tiny"``) or a list of specs; with `pretrained` they start from ImageNet weights.
    `objectives` are some of `objectives.OBJECTIVES`: ``"regression"`` (pseudo-MOS, with `loss`),
    ``"classification"`` (the 126 distortion classes; a share 1/126 of the crops is then left pristine) and
    ``"ranking"`` (the stream draws pairs of one crop at two levels; `batch_size` must be even); the loss is their
    sum, each times its `objective_weights` entry (default 1).
    `training_options` are further `AccelerateTrainingArguments` fields (``learning_rate``, ``mixed_precision``,
    ``eval_every_steps``, ``save_every_steps``...); rerunning into `output_dir` resumes.

    Writes what `train_with_accelerate` writes (``final/``, ``best/``, ``checkpoints/``, ``metrics.jsonl``,
    ``training_result.json``) plus ``pseudo_mos_labeler.json`` (stream only) and ``pretraining.json`` (settings).
    Hand ``final/`` to fine-tuning as `backbones_from` (`create_model`, `finetune`, `train_frozen`).
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(f"pretraining needs steps >= 1 and batch_size >= 2 (the loss ranks within a batch); got "
                         f"steps={steps}, batch_size={batch_size}")
    weights = weighted_objectives(objectives, objective_weights)
    pairs = "ranking" in weights
    if pairs and batch_size % 2:
        raise ValueError(f"the ranking objective takes pairs of crops: batch_size must be even; got {batch_size}")
    crops_per_item = 2 if pairs else 1
    accumulation = int(training_options.get("gradient_accumulation_steps", 1))
    if samples_per_epoch is None:
        samples_per_epoch = steps * batch_size * accumulation
    train, validation, labeler = _datasets(
        pristine_dir, shards, crop_size=crop_size, samples_per_epoch=samples_per_epoch,
        validation_samples=validation_samples, metrics=metrics, calibration_samples=calibration_samples, seed=seed,
        pairs=pairs, pristine_fraction=crops_per_item / len(DISTORTION_CLASSES) if "classification" in weights
        else 0.0)  # a pair leaves only its first crop pristine: twice the share keeps the classes even
    model = create_model(backbones, pretrained=pretrained, weight_sources=weight_sources, seed=seed, loss=loss,
                         model_class=QualityPretrainingModel, pretraining_objectives=weights,
                         **PRETRAINING_MODEL_OPTIONS)
    initialize_head_bias(model, [float(label) for item in validation for label in item["labels"].view(-1)])

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if labeler is not None:
        labeler.save(output_dir / LABELER_FILE)
    content = None if pristine_dir is None else [str(path) for path in train.stream.image_paths]
    settings = {"pristine_images": content,
                "shards": None if shards is None else str(shards), "backbones": model.config.backbones,
                "crop_size": crop_size, "steps": steps, "batch_size": batch_size, "loss": loss,
                "objectives": weights, "samples_per_epoch": len(train) * crops_per_item,
                "validation_samples": len(validation) * crops_per_item,
                "metrics": list(metrics) if shards is None else "from shards", "pretrained": pretrained,
                "seed": seed, "training_options": dict(training_options)}
    (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, default=str) + "\n")

    items_per_step = batch_size // crops_per_item
    num_epochs = max(1, -(-steps * items_per_step * accumulation // len(train)))
    options = {"num_epochs": num_epochs, "max_steps": steps, "per_device_batch_size": items_per_step,
               "eval_batch_size": items_per_step, **training_options}
    arguments = AccelerateTrainingArguments(output_dir=str(output_dir), seed=seed, **options)
    result = train_with_accelerate(model, train, validation, arguments, data_collator=PretrainingCollator())
    return Path(result.final_model_dir)
