"""The meta-learner: how base-model predictions are combined into one score (METHOD.md section 3).

Every fit here takes base predictions the base models did NOT train on: out-of-fold predictions from k-fold
cross-fitting, or predictions on a validation split carved from the training data. Never test data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from ..cards import ModelCardFacts, card_evaluation, command_line, save_checkpoint
from ..configuration_metaqap import META_LEARNER_METHODS
from ..data import DatasetSource, load_dataset_source
from ..data.splits import VALIDATION_FRACTION
from ..evaluation import LabelledBatches, predict
from ..factory import create_model, load_checked_state
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..metrics import compute_iqa_metrics
from ..modeling_metaqap import MetaQAPModel

__all__ = ["MetaLearnerFit", "fit_meta_learner", "combine_checkpoints", "stack_checkpoints"]


@dataclass
class MetaLearnerFit:
    """A fitted meta-learner: `score = base_predictions @ coefficients + intercept`; unused bases have 0."""

    method: str
    coefficients: list[float]
    intercept: float
    r2: float
    steps: list[dict] = field(default_factory=list)  # stepwise: what was added at each step and why it stopped

    def as_config(self) -> dict:
        return {"method": self.method, "coefficients": self.coefficients, "intercept": self.intercept}

    def predict(self, base_predictions: np.ndarray) -> np.ndarray:
        return np.asarray(base_predictions) @ np.asarray(self.coefficients) + self.intercept


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    design = np.column_stack([x, np.ones(len(x))])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution[:-1], float(solution[-1])


def _r2(y: np.ndarray, prediction: np.ndarray) -> float:
    return float(1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2))


def _stepwise(x: np.ndarray, y: np.ndarray, min_coefficient: float) -> MetaLearnerFit:
    """Forward stepwise linear regression: add the base prediction giving the highest R^2, provided the NEWLY
    added predictor's coefficient passes the gate (the official code checks the first predictor's instead)."""
    selected: list[int] = []
    steps: list[dict] = []
    best_r2 = -np.inf
    while len(selected) < x.shape[1]:
        candidates = []
        for j in (j for j in range(x.shape[1]) if j not in selected):
            columns = [*selected, j]
            coefficients, intercept = _least_squares(x[:, columns], y)
            r2 = _r2(y, x[:, columns] @ coefficients + intercept)
            candidates.append((r2, j, coefficients[-1]))
        qualifying = [c for c in candidates if abs(c[2]) >= min_coefficient and c[0] > best_r2]
        if not qualifying:
            steps.append({"stop": "no remaining base model improves R^2 with |coefficient| >= "
                                  f"{min_coefficient}", "candidates": [
                                      {"index": j, "r2": r2, "coefficient": float(c)} for r2, j, c in candidates]})
            break
        r2, j, coefficient = max(qualifying)
        selected.append(j)
        best_r2 = r2
        steps.append({"added": j, "r2": r2, "coefficient": float(coefficient)})
    coefficients, intercept = _least_squares(x[:, selected], y)
    full = np.zeros(x.shape[1])
    full[selected] = coefficients
    return MetaLearnerFit("stepwise", full.tolist(), intercept, best_r2, steps)


def fit_meta_learner(
    base_predictions: np.ndarray,
    targets: np.ndarray,
    method: str = "stepwise",
    *,
    min_coefficient: float = 0.05,
    ridge_alpha: float = 1e-3,
) -> MetaLearnerFit:
    """Fit how base predictions (N, K) combine into one score for targets (N,).

    - `stepwise`: the paper's forward stepwise regression with the coefficient gate `min_coefficient`;
    - `ridge`: all bases, L2-penalised (`ridge_alpha` relative to the data's scale);
    - `nnls`: non-negative least squares, so no base model enters with a negative weight;
    - `mean`: the plain average (no fitting; the ablation without a meta-learner).
    """
    x = np.asarray(base_predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"base_predictions must be (N, K) matching targets (N,), got {x.shape} and {y.shape}")
    if len(y) < x.shape[1] + 2:
        raise ValueError(f"need more than {x.shape[1] + 1} held-out predictions to fit a meta-learner, got {len(y)}")
    k = x.shape[1]
    if method == "mean":
        coefficients, intercept = np.full(k, 1.0 / k), 0.0
    elif method == "stepwise":
        return _stepwise(x, y, min_coefficient)
    elif method == "ridge":
        mean_x, mean_y = x.mean(0), y.mean()
        centred = x - mean_x
        penalty = ridge_alpha * np.trace(centred.T @ centred) / k
        coefficients = np.linalg.solve(centred.T @ centred + penalty * np.eye(k), centred.T @ (y - mean_y))
        intercept = float(mean_y - mean_x @ coefficients)
    elif method == "nnls":
        # an intercept column of +1 and -1 lets the intercept take either sign
        design = np.column_stack([x, np.ones(len(x)), -np.ones(len(x))])
        solution, _ = nnls(design, y)
        coefficients, intercept = solution[:k], float(solution[k] - solution[k + 1])
    else:
        raise ValueError(f"unknown meta-learner method {method!r}; choose from {META_LEARNER_METHODS}")
    coefficients = np.asarray(coefficients, dtype=np.float64)
    return MetaLearnerFit(method, coefficients.tolist(), float(intercept), _r2(y, x @ coefficients + intercept))


def combine_checkpoints(checkpoints: list[str | Path]) -> MetaQAPModel:
    """One MetaQAPModel holding every backbone and head of several trained checkpoints, in order (meta-learner reset
    to the plain average). The checkpoints must share MOS range and head shape."""
    models = [MetaQAPModel.from_pretrained(path) for path in checkpoints]
    first = models[0].config
    for path, model in zip(checkpoints, models):
        for key in ("mos_range", "head_hidden_size"):
            if getattr(model.config, key) != getattr(first, key):
                raise ValueError(f"{path}: {key} {getattr(model.config, key)!r} differs from "
                                 f"{checkpoints[0]}'s {getattr(first, key)!r}; only like checkpoints can be stacked")
    combined = create_model([spec for model in models for spec in model.config.backbones], pretrained=False,
                            head_hidden_size=first.head_hidden_size, head_dropout=first.head_dropout,
                            mos_range=first.mos_range, mos_name=first.mos_name, loss=first.loss,
                            loss_kwargs=first.loss_kwargs)
    index = 0
    for path, model in zip(checkpoints, models):
        for backbone, head in zip(model.backbones, model.heads):
            load_checked_state(combined.backbones[index], backbone.state_dict(), f"{path}: backbone {index}")
            load_checked_state(combined.heads[index], head.state_dict(), f"{path}: head {index}")
            index += 1
    return combined


def stack_checkpoints(
    checkpoints: list[str | Path],
    dataset: str | os.PathLike | DatasetSource,
    output_dir: str | Path,
    *,
    data_dir: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    method: str = "stepwise",
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
    batch_size: int = 16,
    training_command: str | None = None,
) -> MetaLearnerFit:
    """Combine trained base-model checkpoints into one model and fit its meta-learner on their predictions for the
    validation split of `dataset` (anything `metaqap_hf.data.load_dataset_source` resolves; a validation split the
    source lacks is carved from its train data with `validation_fraction` and `seed`, so pass the ones the base
    models were trained with: those images were held out from them). Never the test split. Writes the combined
    checkpoint and its model card (the stacked score's figures on that validation split) to `output_dir`.
    (K-fold cross-fitting needs the base models retrained per fold: `train_frozen` does that for heads.)"""
    model = combine_checkpoints(checkpoints).eval()
    source = load_dataset_source(dataset, data_dir, mos_range=mos_range, validation_fraction=validation_fraction,
                                 seed=seed)
    if list(source.mos_range) != list(model.config.mos_range):
        raise ValueError(f"the checkpoints score on {model.config.mos_name}, but {source.name} is on "
                         f"{source.mos_range[0]:g}-{source.mos_range[1]:g}: stack them on data of their own scale")
    if "validation" not in source.dataset:
        raise ValueError(f"{source.describe()}: stacking needs a validation split (validation_fraction > 0)")
    processor = MetaQAPImageProcessor.from_pretrained(checkpoints[0])
    validation = source.dataset["validation"]
    predictions = predict(model, LabelledBatches(validation, processor, batch_size=batch_size))
    bases = model.to_unit_scale(torch.as_tensor(predictions.base_scores, dtype=torch.float64))
    fit = fit_meta_learner(bases.numpy(), model.to_unit_scale(torch.as_tensor(predictions.labels)).numpy(), method)
    model.config.set_meta_learner(**fit.as_config())
    stacked = model.from_unit_scale(model.combine(bases)).numpy()
    evaluation = card_evaluation(compute_iqa_metrics(stacked, predictions.labels), dataset_name=source.name,
                                 dataset_id=source.dataset_id, split="validation", num_images=len(validation))
    save_checkpoint(model, processor, output_dir, ModelCardFacts(
        training_dataset=source.name, training_dataset_id=source.dataset_id,
        training_command=training_command or command_line(),
        training_notes=(f"{len(checkpoints)} trained checkpoints combined, their {method} meta-learner fitted on "
                        f"their predictions for the validation split of {source.describe()} "
                        "(metaqap_hf.training.stack_checkpoints); the figures below are on that same split, so "
                        "they flatter the meta-learner: evaluate a test split with `metaqap evaluate`"),
        evaluations=[evaluation] if evaluation else [],
    ), overwrite=True)
    return fit
