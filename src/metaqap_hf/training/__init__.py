"""Training MetaQAP models: augmentation, the decoded-image cache, datasets and collator, a `transformers.Trainer`
subclass, an Accelerate loop with crash-safe checkpoints and exact resumption, the frozen-feature recipe of the
default model, and the meta-learner (stacking).

    >>> from metaqap_hf import MetaQAPConfig, MetaQAPImageProcessor, MetaQAPModel
    >>> from metaqap_hf.data import load_biq2021
    >>> from metaqap_hf.training import (AccelerateTrainingArguments, QualityAugmentation, initialize_head_bias,
    ...                                  train_with_accelerate, training_datasets)
    >>> processor = MetaQAPImageProcessor()
    >>> train, validation = training_datasets(load_biq2021("/data/BIQ2021"), processor,
    ...                                       augmentation=QualityAugmentation(), cache_dir="/data/cache")
    >>> model = MetaQAPModel(MetaQAPConfig(mos_range=[0, 1]))
    >>> load_pretrained_backbones(model)  # from metaqap_hf.weights
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
from .frozen import FrozenRecipe, build_frozen_ensemble, fit_frozen_heads, train_head
from .image_cache import ImageFiles, build_image_cache, image_cache_key
from .metrics_log import MetricsLog, read_metrics_log
from .model_setup import initialize_head_bias, set_trainable, train_mode
from .recipes import build_model, evaluate_checkpoint, finetune, load_training_splits
from .stacking import STACKING_METHODS, MetaLearnerFit, fit_meta_learner
from .quality_dataset import QualityDataCollator, QualityImageDataset, quality_dataset, training_datasets
from .trainer import MetaQAPTrainer, quality_training_arguments

__all__ = [
    "STACKING_METHODS",
    "FrozenRecipe",
    "MetaLearnerFit",
    "build_frozen_ensemble",
    "build_model",
    "evaluate_checkpoint",
    "finetune",
    "fit_frozen_heads",
    "fit_meta_learner",
    "load_training_splits",
    "train_head",
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
