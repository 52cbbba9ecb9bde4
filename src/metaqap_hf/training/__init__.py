"""Training MetaQAP models: augmentation, the decoded-image cache, datasets and collator, a `transformers.Trainer`
subclass, an Accelerate loop with crash-safe checkpoints and exact resumption, and frozen-feature extraction.

    >>> from metaqap_hf import MetaQAPConfig, MetaQAPImageProcessor, MetaQAPModel
    >>> from metaqap_hf.data import load_biq2021
    >>> from metaqap_hf.training import (AccelerateTrainingArguments, QualityAugmentation, initialize_head_bias,
    ...                                  train_with_accelerate, training_datasets)
    >>> processor = MetaQAPImageProcessor()
    >>> train, validation = training_datasets(load_biq2021("/data/BIQ2021"), processor,
    ...                                       augmentation=QualityAugmentation(), cache_dir="/data/cache")
    >>> model = MetaQAPModel(MetaQAPConfig(mos_range=[0, 1]))  # then load_backbone_weights(...) per backbone
    >>> initialize_head_bias(model, train.labels)
    >>> train_with_accelerate(model, train, validation, AccelerateTrainingArguments("runs/lite"),
    ...                       image_processor=processor)
"""

from .accelerate_loop import AccelerateTrainingArguments, TrainingResult, train_with_accelerate
from .augment import AugmentationParams, QualityAugmentation
from .checkpointing import (
    atomic_directory,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    remove_incomplete,
    save_checkpoint,
)
from .evaluation import Predictions, make_compute_metrics, predict, quality_metrics
from .features import extract_features, image_paths
from .image_cache import ImageFiles, build_image_cache, image_cache_key
from .metrics_log import MetricsLog, read_metrics_log
from .model_setup import initialize_head_bias, set_trainable, train_mode
from .quality_dataset import QualityDataCollator, QualityImageDataset, quality_dataset, training_datasets
from .trainer import MetaQAPTrainer, quality_training_arguments

__all__ = [
    "AccelerateTrainingArguments",
    "AugmentationParams",
    "ImageFiles",
    "MetaQAPTrainer",
    "MetricsLog",
    "Predictions",
    "QualityAugmentation",
    "QualityDataCollator",
    "QualityImageDataset",
    "TrainingResult",
    "atomic_directory",
    "build_image_cache",
    "checkpoint_path",
    "extract_features",
    "image_cache_key",
    "image_paths",
    "initialize_head_bias",
    "latest_checkpoint",
    "list_checkpoints",
    "make_compute_metrics",
    "predict",
    "prune_checkpoints",
    "quality_dataset",
    "quality_metrics",
    "quality_training_arguments",
    "read_metrics_log",
    "remove_incomplete",
    "save_checkpoint",
    "set_trainable",
    "train_mode",
    "train_with_accelerate",
    "training_datasets",
]
