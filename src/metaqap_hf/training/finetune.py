"""Fine-tuning on a benchmark, assembled from the training room's parts: the function behind `metaqap train` and the
fine-tuning examples, so that a command line and a Python call do exactly the same thing.

    prepare_finetuning: benchmark -> train / validation (carved from train; test never read)
                        -> image cache + augmentation; `create_model` (ImageNet backbones, heads at the mean label)
    finetune:           prepare_finetuning -> `train_with_accelerate`

    >>> from metaqap_hf.training import finetune
    >>> result = finetune("biq2021", "/data/BIQ2021", "runs/lite", num_epochs=10, cache_dir="/data/cache")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from datasets import DatasetDict

from ..data import get_benchmark
from ..factory import create_model
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..modeling_metaqap import MetaQAPModel
from .data import QualityAugmentation, QualityImageDataset, training_datasets
from .loop import AccelerateTrainingArguments, TrainingResult, initialize_head_bias, train_with_accelerate

__all__ = ["FinetuningSetup", "finetune", "load_training_splits", "prepare_finetuning"]


def load_training_splits(
    dataset: str,
    data_dir: str | os.PathLike | None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    train_limit: int | None = None,
    validation_limit: int | None = None,
) -> DatasetDict:
    """Benchmark `dataset` with ``validation`` carved from its training images (`validation_fraction`, `seed`);
    `train_limit` / `validation_limit` keep only the first N images of those splits (smoke runs)."""
    splits = get_benchmark(dataset).load(data_dir, validation_fraction=validation_fraction, seed=seed)
    for name, limit in (("train", train_limit), ("validation", validation_limit)):
        if limit is not None:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    return splits


@dataclass
class FinetuningSetup:
    """What a fine-tuning run needs before its loop: a fresh model (ImageNet backbones, heads started at the mean
    training label), the training (augmented) and validation datasets, and the image processor that made them."""

    model: MetaQAPModel
    train: QualityImageDataset
    validation: QualityImageDataset
    image_processor: MetaQAPImageProcessor


def prepare_finetuning(
    dataset: str,
    data_dir: str | os.PathLike | None,
    *,
    backbones: str | Sequence[Mapping] = "lite",
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    loss: str = "quality_aware",
    image_size: int = 512,
    validation_fraction: float = 0.1,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> FinetuningSetup:
    """The model and datasets of a fine-tuning run on benchmark `dataset` (`finetune` and the Trainer example
    start here).

    Validation is carved from the training images (`validation_fraction`, `seed`); the test split is never read.
    Images are resized to `image_size` by the image processor (512 is the inference default) and decoded once
    (`cache`; on disk under `cache_dir` when given, by `num_workers` processes); training images are augmented
    (`QualityAugmentation`). The model comes from `create_model(backbones, ...)` on the benchmark's MOS scale.
    """
    splits = load_training_splits(dataset, data_dir, validation_fraction=validation_fraction, seed=seed,
                                  train_limit=train_limit, validation_limit=validation_limit)
    processor = MetaQAPImageProcessor(size={"height": image_size, "width": image_size})
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation(), cache=cache,
                                          cache_dir=cache_dir, num_workers=num_workers, seed=seed)
    info = get_benchmark(dataset).info
    model = create_model(backbones, pretrained=pretrained, weight_sources=weight_sources, seed=seed, loss=loss,
                         mos_range=list(info.mos_range), mos_name=info.mos_name)
    initialize_head_bias(model, train.labels)
    return FinetuningSetup(model, train, validation, processor)


def finetune(
    dataset: str, data_dir: str | os.PathLike | None, output_dir: str | os.PathLike, **options: object
) -> TrainingResult:
    """Fine-tune a fresh model on benchmark `dataset` with `train_with_accelerate`.

    `options` are `prepare_finetuning` options (``backbones``, ``loss``, ``image_size``, ``cache_dir``,
    ``num_workers``, ``seed``...) and `AccelerateTrainingArguments` fields (``num_epochs``, ``max_steps``,
    ``per_device_batch_size``, ``gradient_accumulation_steps``, ``learning_rate``, ``mixed_precision``,
    ``train_backbones``, ``save_every_steps``, ``early_stopping_patience``...); ``seed`` and ``num_workers`` go to
    both. Rerunning into the same `output_dir` resumes from its last checkpoint. Writes what `train_with_accelerate`
    writes (``best/``, ``final/``, ``checkpoints/``, ``metrics.jsonl``, ``training_result.json``) and returns its
    result.
    """
    setup_names = set(inspect.signature(prepare_finetuning).parameters)
    setup = prepare_finetuning(dataset, data_dir, **{k: v for k, v in options.items() if k in setup_names})
    shared = {k: v for k, v in options.items() if k in ("seed", "num_workers")}
    loop_options = {k: v for k, v in options.items() if k not in setup_names}
    arguments = AccelerateTrainingArguments(output_dir=str(output_dir), **shared, **loop_options)
    return train_with_accelerate(setup.model, setup.train, setup.validation, arguments,
                                 image_processor=setup.image_processor)
