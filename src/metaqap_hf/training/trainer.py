"""`transformers.Trainer` for MetaQAP base models.

The model computes its own loss (`config.loss`: mean of the per-base losses plus the final score's loss), so the
Trainer only needs the right plumbing: the collator that batches `QualityImageDataset` samples, validation
metrics (SROCC / PLCC / KROCC / RMSE of the score, SROCC of each base model), what is trainable, frozen
backbones kept in eval mode, and the augmentation epoch. Model selection uses the validation split given as
`eval_dataset`; see `training_datasets`, which never reads the test split.
"""

from __future__ import annotations

import math
import os

import torch

from transformers import Trainer, TrainerCallback, TrainingArguments

from ..modeling_metaqap import MetaQAPModel
from .evaluation import make_compute_metrics
from .model_setup import set_trainable, train_mode
from .quality_dataset import QualityDataCollator

__all__ = ["MetaQAPTrainer", "quality_training_arguments"]


def quality_training_arguments(output_dir: str | os.PathLike, **overrides) -> TrainingArguments:
    """`TrainingArguments` with defaults suited to quality regression; any argument can be overridden.

    Defaults: evaluate and save every epoch, keep the model with the best validation SROCC
    (``load_best_model_at_end``), keep dataset columns as they are, AdamW at 1e-4 with a cosine schedule, no
    reporting integrations, pinned memory only where there is a GPU to copy to. ``dataloader_drop_last`` stays
    off: Trainer applies it to evaluation too, where it would drop validation images.
    """
    defaults = dict(
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=10,
        load_best_model_at_end=True,
        metric_for_best_model="srocc",
        greater_is_better=True,
        save_total_limit=2,
        remove_unused_columns=False,
        label_names=["labels"],
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-4,
        weight_decay=1e-4,
        lr_scheduler_type="cosine",
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return TrainingArguments(output_dir=str(output_dir), **{**defaults, **overrides})


class _SetAugmentationEpoch(TrainerCallback):
    """Tell the training dataset which epoch starts, so its augmentation differs per epoch yet is reproducible."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


class MetaQAPTrainer(Trainer):
    """Trainer for `MetaQAPModel` base models on `QualityImageDataset`s.

    Args:
        model: the model; its `config.loss` is the training loss.
        args: e.g. from `quality_training_arguments`.
        train_dataset: training images (augmented).
        eval_dataset: the validation split carved from train, used for evaluation, early stopping
            (`transformers.EarlyStoppingCallback`) and best-model selection. Never pass the test split.
        train_backbones: False freezes the backbones (only heads learn; frozen backbones stay in eval mode).
        train_meta_learner: False (default) keeps the meta-learner fixed; it is fitted later by stacking.
        image_processor: saved with every checkpoint so it loads with `pipeline("image-quality", ...)`; its
            `rescale_factor` also sets the default collator.
        Other keyword arguments go to `transformers.Trainer` (`callbacks`, `optimizers`, ...).
    """

    def __init__(
        self,
        model: MetaQAPModel,
        args: TrainingArguments,
        train_dataset,
        eval_dataset,
        *,
        train_backbones: bool = True,
        train_meta_learner: bool = False,
        image_processor=None,
        data_collator=None,
        compute_metrics=None,
        **kwargs,
    ):
        set_trainable(model, backbones=train_backbones, heads=True, meta_learner=train_meta_learner)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator or QualityDataCollator(getattr(image_processor, "rescale_factor", 1 / 255)),
            processing_class=image_processor,
            compute_metrics=compute_metrics or make_compute_metrics(model.config.backbone_ids),
            **kwargs,
        )
        if hasattr(train_dataset, "set_epoch"):
            self.add_callback(_SetAugmentationEpoch(train_dataset))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:  # Trainer.training_step has just called model.train(): put frozen backbones back
            train_mode(self.accelerator.unwrap_model(model))
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
