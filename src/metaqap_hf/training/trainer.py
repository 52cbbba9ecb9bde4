"""`transformers.Trainer` for MetaQAP base models: a thin integration of the same model loss, optimizer and defaults
as the Accelerate loop (`training.loop`), for users whose tooling is built around Trainer.

What it adds to Trainer: the collator that batches `QualityImageDataset` samples, validation metrics (SROCC / PLCC /
KROCC / RMSE of the score, SROCC of each base model), the loop's optimizer (backbones and heads at their own
learning rates), frozen backbones kept in eval mode, early stopping and the augmentation epoch. The loss is the
model's own (`config.loss`). Model selection uses the validation split given as `eval_dataset`; see
`training_datasets`, which never reads the test split.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

from ..metrics import ensemble_metrics
from ..modeling_metaqap import MetaQAPModel
from .data import QualityDataCollator
from .loop import AccelerateTrainingArguments, build_optimizer, set_trainable, train_mode

__all__ = ["MetaQAPTrainer", "make_compute_metrics", "quality_training_arguments"]

_LOOP_DEFAULTS = {field.name: field.default for field in dataclasses.fields(AccelerateTrainingArguments)}


def quality_training_arguments(output_dir: str | os.PathLike, **overrides) -> TrainingArguments:
    """`TrainingArguments` with the Accelerate loop's defaults (epochs, batch sizes, learning rate, weight decay,
    schedule, gradient clipping, seed); any argument can be overridden.

    Also: evaluate and save every epoch, keep the model with the best validation SROCC (``load_best_model_at_end``),
    keep dataset columns as they are, no reporting integrations, pinned memory only where there is a GPU to copy to,
    and ``use_cpu`` on a machine without a GPU (Trainer refuses ``bf16=True`` on a CPU otherwise).
    ``dataloader_drop_last`` stays off: Trainer applies it to evaluation too, where it would drop validation images.
    """
    defaults = dict(
        num_train_epochs=_LOOP_DEFAULTS["num_epochs"],
        per_device_train_batch_size=_LOOP_DEFAULTS["per_device_batch_size"],
        per_device_eval_batch_size=_LOOP_DEFAULTS["eval_batch_size"],
        learning_rate=_LOOP_DEFAULTS["learning_rate"],
        weight_decay=_LOOP_DEFAULTS["weight_decay"],
        lr_scheduler_type=_LOOP_DEFAULTS["lr_scheduler"],
        max_grad_norm=_LOOP_DEFAULTS["max_grad_norm"],
        seed=_LOOP_DEFAULTS["seed"],
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=_LOOP_DEFAULTS["log_every_steps"],
        load_best_model_at_end=True,
        metric_for_best_model=_LOOP_DEFAULTS["metric_for_best_model"],
        greater_is_better=True,
        save_total_limit=_LOOP_DEFAULTS["keep_checkpoints"],
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    return TrainingArguments(output_dir=str(output_dir), **{**defaults, **overrides})


def make_compute_metrics(backbone_ids: Sequence[str]):
    """A Trainer ``compute_metrics`` for `MetaQAPModel` outputs ``(score, base_scores, std)``."""
    backbone_ids = list(backbone_ids)

    def compute(eval_pred) -> dict[str, float]:
        (scores, base_scores, *_), labels = eval_pred[0], eval_pred[1]
        return ensemble_metrics(scores, base_scores, labels, backbone_ids)

    return compute


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
        eval_dataset: the validation split carved from train, used for evaluation, early stopping and best-model
            selection. Never pass the test split.
        train_backbones: False freezes the backbones (only heads learn; frozen backbones stay in eval mode).
        head_learning_rate: the heads' learning rate (``args.learning_rate`` is the backbones'), as in the loop.
        early_stopping_patience: stop after this many evaluations without a better `metric_for_best_model`
            (None: never; Trainer needs ``load_best_model_at_end`` for early stopping, so it applies only then).
        image_processor: saved with every checkpoint so it loads with `pipeline("image-quality", ...)`; its
            `rescale_factor` also sets the default collator.
        Other keyword arguments go to `transformers.Trainer` (`callbacks`, ...).
    """

    def __init__(
        self,
        model: MetaQAPModel,
        args: TrainingArguments,
        train_dataset,
        eval_dataset,
        *,
        train_backbones: bool = _LOOP_DEFAULTS["train_backbones"],
        head_learning_rate: float | None = _LOOP_DEFAULTS["head_learning_rate"],
        early_stopping_patience: int | None = _LOOP_DEFAULTS["early_stopping_patience"],
        image_processor=None,
        **kwargs,
    ):
        set_trainable(model, backbones=train_backbones)
        self.head_learning_rate = head_learning_rate
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if early_stopping_patience is not None and args.load_best_model_at_end:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=QualityDataCollator(getattr(image_processor, "rescale_factor", 1 / 255)),
            processing_class=image_processor,
            compute_metrics=make_compute_metrics(model.config.backbone_ids),
            callbacks=callbacks,
            **kwargs,
        )
        if hasattr(train_dataset, "set_epoch"):
            self.add_callback(_SetAugmentationEpoch(train_dataset))

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            loop_args = AccelerateTrainingArguments(
                output_dir=self.args.output_dir, learning_rate=self.args.learning_rate,
                head_learning_rate=self.head_learning_rate, weight_decay=self.args.weight_decay)
            self.optimizer = build_optimizer(model or self.model, loop_args)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:  # Trainer.training_step has just called model.train(): put frozen backbones back
            train_mode(self.accelerator.unwrap_model(model))
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
