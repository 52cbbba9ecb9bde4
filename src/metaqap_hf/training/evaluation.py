"""Scoring a dataset with a model and turning predictions into metrics, shared by both training loops and the
evaluation example.

Validation metrics are the raw SROCC / PLCC / KROCC / RMSE of the final score (`metaqap_hf.metrics`), plus the
SROCC of every base model (``srocc_<backbone id>``): base models are what this training improves, and the
meta-learner is fitted on their predictions later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import compute_metrics, srocc

__all__ = ["Predictions", "make_compute_metrics", "predict", "quality_metrics"]


@dataclass
class Predictions:
    """One pass over a labelled dataset: scores (N,), base scores (N, num_backbones), labels (N,), all on the
    checkpoint's MOS scale, and the loss averaged over images (correlation terms are per batch)."""

    scores: np.ndarray
    base_scores: np.ndarray
    labels: np.ndarray
    loss: float


def quality_metrics(
    scores: np.ndarray, base_scores: np.ndarray, labels: np.ndarray, backbone_ids: Sequence[str]
) -> dict[str, float]:
    """srocc, plcc, krocc, rmse of `scores`, and ``srocc_<id>`` for each column of `base_scores`."""
    metrics = compute_metrics((scores, labels))
    for column, backbone_id in enumerate(backbone_ids):
        metrics[f"srocc_{backbone_id}"] = srocc(base_scores[:, column], labels)
    return metrics


def make_compute_metrics(backbone_ids: Sequence[str]) -> Callable:
    """A `transformers.Trainer` ``compute_metrics`` for `MetaQAPModel` outputs ``(score, base_scores, std)``."""
    backbone_ids = list(backbone_ids)

    def compute(eval_pred) -> dict[str, float]:
        predictions, labels = eval_pred[0], eval_pred[1]
        scores, base_scores = predictions[0], predictions[1]
        return quality_metrics(np.asarray(scores), np.asarray(base_scores), np.asarray(labels), backbone_ids)

    return compute


@torch.no_grad()
def predict(model: torch.nn.Module, dataloader, accelerator=None, *, progress: bool = True) -> Predictions:
    """Run `model` in eval mode over `dataloader` (batches of `pixel_values` and `labels`).

    With an `accelerate.Accelerator` (and a dataloader it prepared), predictions from every process are gathered
    with the padding of the last batch removed; without one, batches are moved to the model's device.
    """
    model.eval()
    device = next(model.parameters()).device
    scores, base_scores, labels, losses, counts = [], [], [], [], []
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    for batch in tqdm(dataloader, desc="evaluating", unit="batch", disable=not show, leave=False):
        if accelerator is None:
            batch = {key: value.to(device) for key, value in batch.items()}
        output = model(**batch)
        batch_scores, batch_bases, batch_labels = output.score.float(), output.base_scores.float(), batch["labels"]
        batch_loss = output.loss.detach().float().reshape(1) * len(batch_labels)
        batch_count = torch.tensor([len(batch_labels)], device=batch_loss.device, dtype=torch.float32)
        if accelerator is not None:
            batch_scores, batch_bases, batch_labels = accelerator.gather_for_metrics(
                (batch_scores, batch_bases, batch_labels))
            batch_loss, batch_count = accelerator.gather((batch_loss, batch_count))
        scores.append(batch_scores.cpu())
        base_scores.append(batch_bases.cpu())
        labels.append(batch_labels.float().cpu())
        losses.append(batch_loss.sum().cpu())
        counts.append(batch_count.sum().cpu())
    loss = float(torch.stack(losses).sum() / torch.stack(counts).sum())
    return Predictions(torch.cat(scores).numpy(), torch.cat(base_scores).numpy(), torch.cat(labels).numpy(), loss)
