"""Fine-tuning on any dataset, assembled from the training room's parts: the function behind `metaqap train` and the
fine-tuning examples, so that a command line and a Python call do exactly the same thing.

    prepare_finetuning: dataset (`load_dataset_source`: a benchmark, a table, a prepared folder, a hub id)
                        -> train / validation (carved from train when the source has none; test never read)
                        -> image cache + augmentation; `create_model` (ImageNet backbones, heads at the mean label)
    finetune:           prepare_finetuning -> `train_with_accelerate` (which writes each model with its card)

    >>> from metaqap_hf.training import finetune
    >>> result = finetune("biq2021", "runs/lite", data_dir="/data/BIQ2021", num_epochs=10, cache_dir="/data/cache")
    >>> result = finetune("mydata/scores.csv", "runs/mine", mos_range=(1, 5), backbones="tf_efficientnet_lite0")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from datasets import DatasetDict

from ..data import DatasetSource, load_dataset_source
from ..data.splits import VALIDATION_FRACTION
from ..factory import create_model
from ..hub import ModelCardFacts, command_line
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..modeling_metaqap import MetaQAPModel
from .data import QualityAugmentation, QualityImageDataset, training_datasets
from .loop import AccelerateTrainingArguments, TrainingResult, initialize_head_bias, train_with_accelerate

__all__ = ["FinetuningSetup", "finetune", "prepare_finetuning"]


@dataclass
class FinetuningSetup:
    """What a fine-tuning run needs before its loop: a fresh model (ImageNet backbones, heads started at the mean
    training label), the training (augmented) and validation datasets, the image processor that made them, and the
    dataset they came from."""

    model: MetaQAPModel
    train: QualityImageDataset
    validation: QualityImageDataset
    image_processor: MetaQAPImageProcessor
    source: DatasetSource


def prepare_finetuning(
    dataset: str | os.PathLike | DatasetSource,
    *,
    data_dir: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    backbones: str | Sequence[Mapping] = "lite",
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    backbones_from: str | os.PathLike | None = None,
    loss: str = "quality_aware",
    image_size: int = 512,
    validation_fraction: float = VALIDATION_FRACTION,
    train_limit: int | None = None,
    validation_limit: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> FinetuningSetup:
    """The model and datasets of a fine-tuning run on `dataset` (`finetune` and the Trainer example start here).

    `dataset` is anything `metaqap_hf.data.load_dataset_source` resolves: a registered benchmark (with `data_dir`),
    a CSV/JSONL table of image paths and scores (with `mos_range`), a prepared folder, a hub dataset id or a
    `DatasetDict`; it is checked before any model is built. Validation is the source's own, or carved from its
    training images (`validation_fraction`, `seed`); the test split is never read. `train_limit` /
    `validation_limit` keep the first N images of those splits (smoke runs). Images are resized to `image_size` by
    the image processor (512 is the inference default) and decoded once (`cache`; on disk under `cache_dir` when
    given, by `num_workers` processes); training images are augmented (`QualityAugmentation`). The model comes from
    `create_model(backbones, ...)` on the dataset's MOS scale; `backbones_from` starts its backbones from a saved
    model instead of ImageNet (quality-aware pretraining's ``final/``).
    """
    source = load_dataset_source(dataset, data_dir, mos_range=mos_range, validation_fraction=validation_fraction,
                                 seed=seed)
    splits = DatasetDict(source.dataset)  # a copy: the limits apply to this run only
    for name, limit in (("train", train_limit), ("validation", validation_limit)):
        if limit is not None and name in splits:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    source = replace(source, dataset=splits)
    processor = MetaQAPImageProcessor(size={"height": image_size, "width": image_size})
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation(), cache=cache,
                                          cache_dir=cache_dir, num_workers=num_workers, seed=seed)
    model = create_model(backbones, pretrained=pretrained, weight_sources=weight_sources, seed=seed, loss=loss,
                         backbones_from=backbones_from, mos_range=list(source.mos_range), mos_name=source.mos_name)
    initialize_head_bias(model, train.labels)
    return FinetuningSetup(model, train, validation, processor, source)


def finetune(
    dataset: str | os.PathLike | DatasetSource,
    output_dir: str | os.PathLike,
    *,
    training_command: str | None = None,
    **options: object,
) -> TrainingResult:
    """Fine-tune a fresh model on `dataset` (see `prepare_finetuning`) with `train_with_accelerate`.

    `options` are `prepare_finetuning` options (``data_dir``, ``mos_range``, ``backbones``, ``loss``,
    ``image_size``, ``cache_dir``, ``num_workers``, ``seed``...) and `AccelerateTrainingArguments` fields
    (``num_epochs``, ``max_steps``, ``per_device_batch_size``, ``gradient_accumulation_steps``, ``learning_rate``,
    ``mixed_precision``, ``train_backbones``, ``save_every_steps``, ``early_stopping_patience``...); ``seed`` and
    ``num_workers`` go to both. Rerunning into the same `output_dir` resumes from its last checkpoint. Writes what
    `train_with_accelerate` writes (``best/`` and ``final/`` with their model cards, ``checkpoints/``,
    ``metrics.jsonl``, ``training_result.json``) and returns its result. `training_command` is the command the
    cards show (default: how this process was started).
    """
    setup_names = set(inspect.signature(prepare_finetuning).parameters)
    setup = prepare_finetuning(dataset, **{k: v for k, v in options.items() if k in setup_names})
    shared = {k: v for k, v in options.items() if k in ("seed", "num_workers")}
    loop_options = {k: v for k, v in options.items() if k not in setup_names}
    arguments = AccelerateTrainingArguments(output_dir=str(output_dir), **shared, **loop_options)
    source = setup.source
    start = options.get("backbones_from")
    card = ModelCardFacts(
        training_dataset=source.name, training_dataset_id=source.dataset_id,
        training_command=training_command or command_line(),
        training_notes=(f"fine-tuned (metaqap_hf.training.finetune) on {source.describe()}, backbones starting from "
                        + (f"the saved model {start}" if start else "ImageNet")),
    )
    return train_with_accelerate(setup.model, setup.train, setup.validation, arguments,
                                 image_processor=setup.image_processor, card=card)
