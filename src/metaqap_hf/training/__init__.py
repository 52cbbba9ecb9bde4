"""Training MetaQAP models: one Accelerate loop (mixed precision, gradient accumulation, processes and GPUs,
crash-safe checkpoints, exact resumption), a thin `transformers.Trainer` integration of the same loss and defaults,
the frozen-feature recipe of the default model, and the meta-learner (stacking).

    data.py          (image, MOS) datasets, collator, quality-preserving augmentation, decoded-image cache
    loop.py          train_with_accelerate and its arguments; set_trainable; the metrics log
    checkpointing.py crash-safe checkpoint folders
    finetune.py      finetune(): any dataset -> a fine-tuned checkpoint (`metaqap train`)
    trainer.py       MetaQAPTrainer, quality_training_arguments
    frozen.py        train_frozen(): frozen backbones, MLP heads, stacking (`metaqap train-frozen`)
    stacking.py      the meta-learner fits; stack_checkpoints() (`metaqap stack`)

    >>> from metaqap_hf.training import AccelerateTrainingArguments, FinetuningOptions, finetune
    >>> result = finetune("biq2021", AccelerateTrainingArguments("runs/lite", num_epochs=10),
    ...                   FinetuningOptions(data_dir="/data/BIQ2021", cache_dir="/data/cache"))
    >>> result = finetune("mydata/scores.csv", AccelerateTrainingArguments("runs/mine"),
    ...                   FinetuningOptions(mos_range=(1, 5)))  # your own images and scores
"""

from ..deprecation import moved_names
from .data import (
    DecodedImages,
    QualityAugmentation,
    QualityDataCollator,
    QualityImageDataset,
    build_image_cache,
    quality_dataset,
    training_datasets,
)
from .finetune import FinetuningOptions, FinetuningSetup, finetune, prepare_finetuning
from .frozen import FrozenRecipe, extract_features, train_frozen, train_head
from .loop import (
    AccelerateTrainingArguments,
    TrainingResult,
    initialize_head_bias,
    set_trainable,
    train_with_accelerate,
)
from .stacking import MetaLearnerFit, fit_meta_learner, stack_checkpoints
from .trainer import MetaQAPTrainer, quality_training_arguments

__all__ = [
    "AccelerateTrainingArguments",
    "DecodedImages",
    "FinetuningOptions",
    "FinetuningSetup",
    "FrozenRecipe",
    "MetaLearnerFit",
    "MetaQAPTrainer",
    "QualityAugmentation",
    "QualityDataCollator",
    "QualityImageDataset",
    "TrainingResult",
    "build_image_cache",
    "extract_features",
    "finetune",
    "fit_meta_learner",
    "initialize_head_bias",
    "prepare_finetuning",
    "quality_dataset",
    "quality_training_arguments",
    "set_trainable",
    "stack_checkpoints",
    "train_frozen",
    "train_head",
    "train_with_accelerate",
    "training_datasets",
]

# Moved to metaqap_hf.evaluation in 0.2.0 (evaluation no longer imports training).
__getattr__ = moved_names(__name__, {"Predictions": "..evaluation", "predict": "..evaluation"})
