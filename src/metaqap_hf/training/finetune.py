"""Fine-tuning on any dataset, assembled from the training room's parts: the function behind `metaqap train` and the
fine-tuning examples, so that a command line and a Python call do exactly the same thing.

    prepare_finetuning: dataset (`load_dataset_source`: a benchmark, a table, a prepared folder, a hub id)
                        + `FinetuningOptions` (data, model and images)
                        -> train / validation (carved from train when the source has none; test never read)
                        -> image cache + augmentation; `create_model` (ImageNet backbones, heads at the mean label)
    finetune:           prepare_finetuning -> `train_with_accelerate` with its `AccelerateTrainingArguments` (the
                        loop: epochs, batch, learning rates...), which writes each model with its card

    >>> from metaqap_hf.training import AccelerateTrainingArguments, FinetuningOptions, finetune
    >>> result = finetune("biq2021", AccelerateTrainingArguments("runs/lite", num_epochs=10),
    ...                   FinetuningOptions(data_dir="/data/BIQ2021", cache_dir="/data/cache"))
    >>> result = finetune("mydata/scores.csv", AccelerateTrainingArguments("runs/mine"),
    ...                   FinetuningOptions(mos_range=(1, 5), backbones="tf_efficientnet_lite0"))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from datasets import DatasetDict

from ..cards import ModelCardFacts, command_line
from ..data import DatasetSource, load_dataset_source
from ..data.splits import VALIDATION_FRACTION
from ..factory import create_model
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..modeling_metaqap import MetaQAPModel
from .data import QualityAugmentation, QualityImageDataset, training_datasets
from .loop import AccelerateTrainingArguments, TrainingResult, initialize_head_bias, train_with_accelerate

__all__ = ["FinetuningOptions", "FinetuningSetup", "finetune", "prepare_finetuning"]


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


@dataclass(frozen=True)
class FinetuningOptions:
    """How `prepare_finetuning` reads the dataset and builds the model (the loop's settings are
    `AccelerateTrainingArguments`).

    Args:
        data_dir / mos_range / validation_fraction: how `metaqap_hf.data.load_dataset_source` reads the dataset
            (a registered benchmark's folder; a table's MOS scale; the share of train carved into validation
            where the source has no validation split).
        train_limit / validation_limit: keep the first N images of those splits (smoke runs).
        backbones / pretrained / weight_sources / backbones_from / loss: the model, from
            `metaqap_hf.factory.create_model` (ImageNet weights, or the backbones of a saved model such as
            quality-aware pretraining's ``final/``).
        image_size: the image processor's size (512 is the inference default).
        cache / cache_dir / num_workers: decode every image once (on disk under `cache_dir` when given), with
            `num_workers` processes.
        seed: the validation split carved from train, the heads' initialisation and the augmentation.
    """

    data_dir: str | os.PathLike | None = None
    mos_range: Sequence[float] | None = None
    backbones: str | Sequence[Mapping] = "lite"
    pretrained: bool = True
    weight_sources: Mapping[str, str | os.PathLike] | None = None
    backbones_from: str | os.PathLike | None = None
    loss: str = "quality_aware"
    image_size: int = 512
    validation_fraction: float = VALIDATION_FRACTION
    train_limit: int | None = None
    validation_limit: int | None = None
    cache: bool = True
    cache_dir: str | os.PathLike | None = None
    num_workers: int = 0
    seed: int = 0


def prepare_finetuning(
    dataset: str | os.PathLike | DatasetSource, options: FinetuningOptions | None = None
) -> FinetuningSetup:
    """The model and datasets of a fine-tuning run on `dataset` (`finetune` and the Trainer example start here).

    `dataset` is anything `metaqap_hf.data.load_dataset_source` resolves: a registered benchmark (with
    ``options.data_dir``), a CSV/JSONL table of image paths and scores (with ``options.mos_range``), a prepared
    folder, a hub dataset id or a `DatasetDict`; it is checked before any model is built. Validation is the
    source's own, or carved from its training images; the test split is never read. Training images are augmented
    (`QualityAugmentation`); heads start at the mean training label. See `FinetuningOptions` for the rest.
    """
    options = options or FinetuningOptions()
    source = load_dataset_source(dataset, options.data_dir, mos_range=options.mos_range,
                                 validation_fraction=options.validation_fraction, seed=options.seed)
    splits = DatasetDict(source.dataset)  # a copy: the limits apply to this run only
    for name, limit in (("train", options.train_limit), ("validation", options.validation_limit)):
        if limit is not None and name in splits:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    source = replace(source, dataset=splits)
    processor = MetaQAPImageProcessor(size={"height": options.image_size, "width": options.image_size})
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation(), cache=options.cache,
                                          cache_dir=options.cache_dir, num_workers=options.num_workers,
                                          seed=options.seed)
    model = create_model(options.backbones, pretrained=options.pretrained, weight_sources=options.weight_sources,
                         seed=options.seed, loss=options.loss, backbones_from=options.backbones_from,
                         mos_range=list(source.mos_range), mos_name=source.mos_name)
    initialize_head_bias(model, train.labels)
    return FinetuningSetup(model, train, validation, processor, source)


def finetune(
    dataset: str | os.PathLike | DatasetSource,
    arguments: AccelerateTrainingArguments,
    options: FinetuningOptions | None = None,
    *,
    training_command: str | None = None,
) -> TrainingResult:
    """Fine-tune a fresh model on `dataset` (`prepare_finetuning` with `options`) with `train_with_accelerate` and
    its `arguments` (``arguments.output_dir`` is where the run goes).

    Rerunning into the same output folder resumes from its last checkpoint. Writes what `train_with_accelerate`
    writes (``best/`` and ``final/`` with their model cards, ``checkpoints/``, ``metrics.jsonl``,
    ``training_result.json``) and returns its result. `training_command` is the command the cards show (default:
    how this process was started).
    """
    options = options or FinetuningOptions()
    setup = prepare_finetuning(dataset, options)
    source = setup.source
    start = options.backbones_from
    card = ModelCardFacts(
        training_dataset=source.name, training_dataset_id=source.dataset_id,
        training_command=training_command or command_line(),
        training_notes=(f"fine-tuned (metaqap_hf.training.finetune) on {source.describe()}, backbones starting from "
                        + (f"the saved model {start}" if start else "ImageNet")),
    )
    return train_with_accelerate(setup.model, setup.train, setup.validation, arguments,
                                 image_processor=setup.image_processor, card=card)
