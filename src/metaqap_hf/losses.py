"""Training losses for score regression: plain MSE, the MetaQAP quality-aware loss and a soft-rank variant.

Every loss takes a batch of predicted scores and a batch of target MOS, each of shape ``(B,)`` (``(B, 1)`` is
accepted and flattened), and returns a scalar tensor. They are plain functions so that a Trainer, an Accelerate
loop or a test can call them directly; `get_loss` picks one by name so that the loss ablation is a single flag.

Correlation terms need at least two distinct values to be defined. Here Pearson's correlation carries a small
epsilon under its square root, which makes the correlation of a vector with no spread exactly 0 (and its
gradient finite). So with a batch of one image, or a batch whose predictions or targets are all equal, a
correlation term contributes the constant ``weight * (1 - 0)``: the reported loss stays finite and only the
MSE part produces gradients.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "LOSSES",
    "get_loss",
    "mse_loss",
    "quality_aware_loss",
    "rank_aware_loss",
    "soft_rank",
    "soft_rank_loss",
]

LossFunction = Callable[[Tensor, Tensor], Tensor]


def _as_score_batches(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten ``(B,)`` or ``(B, 1)`` scores to ``(B,)``; targets take the predictions' dtype and device."""
    for name, tensor in (("pred", pred), ("target", target)):
        if tensor.dim() == 0 or tensor.dim() > 2 or (tensor.dim() == 2 and tensor.shape[1] != 1):
            raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(tensor.shape)}")
    pred = pred.reshape(-1)
    target = target.reshape(-1).to(dtype=pred.dtype, device=pred.device)
    if pred.numel() != target.numel():
        raise ValueError(f"pred and target must hold as many scores, got {pred.numel()} and {target.numel()}")
    if pred.numel() == 0:
        raise ValueError("pred and target are empty: a loss needs at least one score")
    return pred, target


def _pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-D tensors; 0 for a vector with no spread (see the module docstring)."""
    a_centered = a - a.mean()
    b_centered = b - b.mean()
    covariance = (a_centered * b_centered).mean()
    return covariance / torch.sqrt(a_centered.pow(2).mean() * b_centered.pow(2).mean() + eps)


def _half_mse(pred: Tensor, target: Tensor) -> Tensor:
    """The paper's regression term, ``0.5 * mean((T - Y)^2)``."""
    return 0.5 * (target - pred).pow(2).mean()


def _check_weights(**weights: float) -> None:
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Plain mean squared error, ``mean((pred - target)^2)``: the baseline of the loss ablation."""
    pred, target = _as_score_batches(pred, target)
    return (pred - target).pow(2).mean()


def quality_aware_loss(
    pred: Tensor, target: Tensor, mse_weight: float = 0.5, correlation_weight: float = 0.5
) -> Tensor:
    """The MetaQAP quality-aware loss (METHOD.md section 2), as in the authors' code.

    ``L = mse_weight * 0.5 * mean((T - Y)^2) + correlation_weight * (1 - pearson(softmax(Y), softmax(T)))``,
    with the softmax taken over the whole batch. The paper calls the second term a differentiable SROCC
    approximation; it is in fact a PLCC-like term on softmax-weighted scores. Because the softmax is
    exponential, the term depends on the MOS scale: on a 0-100 scale the softmax is nearly one-hot.

    Both softmax vectors are multiplied by the batch size (mean 1) before the correlation. Pearson's correlation
    is scale invariant, so this changes nothing mathematically; it keeps the stabilising epsilon negligible
    next to the tiny spread of raw softmax values (about 1 / B each).
    """
    _check_weights(mse_weight=mse_weight, correlation_weight=correlation_weight)
    pred, target = _as_score_batches(pred, target)
    batch_size = pred.numel()
    correlation = _pearson(torch.softmax(pred, dim=0) * batch_size, torch.softmax(target, dim=0) * batch_size)
    return mse_weight * _half_mse(pred, target) + correlation_weight * (1 - correlation)


def soft_rank(scores: Tensor, temperature: float) -> Tensor:
    """Differentiable ranks of a 1-D tensor: ``rank_i = sum_j sigmoid((s_i - s_j) / temperature)``.

    Each pairwise comparison is a sigmoid instead of a step, so ranks move smoothly with the scores. As the
    temperature goes to 0 the result tends to the ordinary ranks (ties averaged), shifted by 0.5, which no
    correlation notices. The temperature is in units of the scores: for MOS on 0-1, 0.01-0.1 is sensible.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    differences = scores.unsqueeze(1) - scores.unsqueeze(0)
    return torch.sigmoid(differences / temperature).sum(dim=1)


def _hard_rank(scores: Tensor) -> Tensor:
    """Ordinary ranks with ties averaged, on the same 0.5-shifted footing as `soft_rank` (no gradient needed)."""
    differences = scores.unsqueeze(1) - scores.unsqueeze(0)
    return (differences > 0).to(scores.dtype).sum(dim=1) + 0.5 * (differences == 0).to(scores.dtype).sum(dim=1)


def soft_rank_loss(pred: Tensor, target: Tensor, temperature: float = 0.05) -> Tensor:
    """``1 - pearson(soft_rank(pred), rank(target))``: a differentiable stand-in for ``1 - SROCC``.

    Targets are ranked exactly (they need no gradient); predictions get soft ranks (see `soft_rank`), so the
    value approaches ``1 - spearman(pred, target)`` as the temperature shrinks.
    """
    pred, target = _as_score_batches(pred, target)
    return 1 - _pearson(soft_rank(pred, temperature), _hard_rank(target))


def rank_aware_loss(
    pred: Tensor, target: Tensor, mse_weight: float = 0.5, rank_weight: float = 0.5, temperature: float = 0.05
) -> Tensor:
    """``mse_weight * 0.5 * mean((T - Y)^2) + rank_weight * soft_rank_loss(Y, T)``.

    The same regression term as `quality_aware_loss`, with the softmax-Pearson term replaced by a soft-rank
    correlation, so an ablation between the two changes only the correlation term.
    """
    _check_weights(mse_weight=mse_weight, rank_weight=rank_weight)
    pred, target = _as_score_batches(pred, target)
    return mse_weight * _half_mse(pred, target) + rank_weight * soft_rank_loss(pred, target, temperature)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": mse_loss,
    "quality_aware": quality_aware_loss,
    "rank": rank_aware_loss,
}


def get_loss(name: str, **kwargs: float) -> LossFunction:
    """Return the loss registered under ``name`` with ``kwargs`` (weights, temperature) bound.

    Raises ValueError for an unknown name or for a keyword the loss does not take, so a typo in a training
    flag fails at start-up rather than at the first batch.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    loss_function = LOSSES[name]
    parameters = list(inspect.signature(loss_function).parameters)[2:]
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ValueError(
            f"Loss {name!r} does not take {', '.join(unknown)}; its parameters: {', '.join(parameters) or 'none'}"
        )
    return functools.partial(loss_function, **kwargs)
