"""Tests for metaqap_hf.losses: values against numpy, gradients, degenerate batches and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from metaqap_hf.losses import LOSSES, get_loss, mse_loss, quality_aware_loss, rank_aware_loss, soft_rank_loss

PRED = [0.1, 0.4, 0.9]
TARGET = [0.2, 0.5, 0.7]


def _tensor(values: list[float] | np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def _numpy_softmax(values: np.ndarray) -> np.ndarray:
    exponentials = np.exp(values - values.max())
    return exponentials / exponentials.sum()


def _numpy_soft_rank(values: np.ndarray, temperature: float) -> np.ndarray:
    differences = values[:, None] - values[None, :]
    return (1.0 / (1.0 + np.exp(-differences / temperature))).sum(axis=1)


def test_mse_by_hand():
    # differences -0.1, -0.1, 0.2 -> squares 0.01, 0.01, 0.04 -> mean 0.02
    assert mse_loss(_tensor(PRED), _tensor(TARGET)).item() == pytest.approx(0.02, rel=1e-12)


def test_quality_aware_loss_matches_numpy():
    pred, target = np.array(PRED), np.array(TARGET)
    half_mse = 0.5 * np.mean((target - pred) ** 2)
    assert half_mse == pytest.approx(0.01)  # 0.5 * 0.02, by hand
    correlation = np.corrcoef(_numpy_softmax(pred), _numpy_softmax(target))[0, 1]
    for mse_weight, correlation_weight in [(0.5, 0.5), (0.25, 1.0), (1.0, 0.0)]:
        expected = mse_weight * half_mse + correlation_weight * (1 - correlation)
        loss = quality_aware_loss(_tensor(PRED), _tensor(TARGET), mse_weight, correlation_weight)
        assert loss.item() == pytest.approx(expected, abs=1e-5)  # the epsilon biases Pearson by ~1e-6


def test_quality_aware_correlation_term_vanishes_for_perfect_predictions():
    scores = _tensor([0.3, 0.1, 0.8, 0.55, 0.62])
    loss = quality_aware_loss(scores, scores.clone(), mse_weight=0.0, correlation_weight=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_soft_rank_loss_matches_numpy():
    rng = np.random.default_rng(0)
    pred, target = rng.random(7), rng.random(7)
    temperature = 0.2
    expected = 1 - np.corrcoef(_numpy_soft_rank(pred, temperature), stats.rankdata(target))[0, 1]
    loss = soft_rank_loss(_tensor(pred), _tensor(target), temperature=temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_soft_rank_correlation_approaches_spearman_as_temperature_shrinks():
    rng = np.random.default_rng(1)
    pred = rng.permutation(32) / 32.0  # distinct scores, 1/32 apart
    target = np.round(rng.random(32), 1)  # with ties, ranked by averaging
    spearman = stats.spearmanr(pred, target).statistic
    errors = [
        abs((1 - soft_rank_loss(_tensor(pred), _tensor(target), temperature=t).item()) - spearman)
        for t in (0.3, 0.03, 0.003)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-6


def test_rank_aware_loss_combines_half_mse_and_soft_rank_term():
    pred, target = _tensor(PRED), _tensor(TARGET)
    expected = 0.25 * 0.01 + 0.75 * soft_rank_loss(pred, target, temperature=0.1).item()
    loss = rank_aware_loss(pred, target, mse_weight=0.25, rank_weight=0.75, temperature=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_is_finite_nonzero_and_descends(name):
    loss_function = get_loss(name)
    rng = np.random.default_rng(2)
    pred, target = _tensor(rng.random(8), requires_grad=True), _tensor(rng.random(8))
    loss = loss_function(pred, target)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = pred - 1e-2 * pred.grad
        assert loss_function(stepped, target) < loss


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    ("pred", "target"), [([0.3], [0.7]), ([0.5, 0.5, 0.5], [0.2, 0.4, 0.9]), ([0.1, 0.6, 0.3], [0.4, 0.4, 0.4])]
)
def test_degenerate_batches_give_finite_loss_and_gradient(name, pred, target):
    """Batch of one, constant predictions, constant targets: finite values, and the MSE part still trains."""
    pred_tensor = _tensor(pred, requires_grad=True)
    loss = get_loss(name)(pred_tensor, _tensor(target))
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(pred_tensor.grad).all()
    assert pred_tensor.grad.abs().sum() > 0


def test_batch_of_one_correlation_terms_contribute_their_constant():
    """With one score, Pearson is taken as 0, so each correlation term adds exactly its weight."""
    pred, target = _tensor([0.3]), _tensor([0.7])
    half_mse = 0.5 * 0.4**2
    assert quality_aware_loss(pred, target).item() == pytest.approx(0.5 * half_mse + 0.5, rel=1e-9)
    assert rank_aware_loss(pred, target).item() == pytest.approx(0.5 * half_mse + 0.5, rel=1e-9)


def test_column_shaped_scores_and_float32_targets_are_accepted():
    pred = _tensor(PRED).reshape(3, 1)
    target = torch.tensor(TARGET, dtype=torch.float32)
    assert quality_aware_loss(pred, target).item() == pytest.approx(
        quality_aware_loss(_tensor(PRED), _tensor(TARGET)).item(), rel=1e-6
    )


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(3), torch.zeros(4), "as many"),
        (torch.zeros(3, 2), torch.zeros(3, 2), "shape"),
        (torch.zeros(0), torch.zeros(0), "empty"),
    ],
)
def test_bad_shapes_raise(pred, target, message):
    with pytest.raises(ValueError, match=message):
        quality_aware_loss(pred, target)


def test_get_loss_binds_parameters():
    pred, target = _tensor(PRED), _tensor(TARGET)
    only_rank = get_loss("rank", mse_weight=0.0, rank_weight=1.0, temperature=0.1)
    assert only_rank(pred, target).item() == pytest.approx(soft_rank_loss(pred, target, 0.1).item())
    only_mse = get_loss("quality_aware", mse_weight=1.0, correlation_weight=0.0)
    assert only_mse(pred, target).item() == pytest.approx(0.5 * mse_loss(pred, target).item())


def test_get_loss_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="mse, quality_aware, rank"):
        get_loss("spearman")
    with pytest.raises(ValueError, match="temperature"):
        get_loss("quality_aware", temperature=0.1)
    with pytest.raises(ValueError, match="none"):
        get_loss("mse", mse_weight=1.0)


def test_invalid_weights_and_temperature_raise():
    pred, target = _tensor(PRED), _tensor(TARGET)
    with pytest.raises(ValueError, match="correlation_weight"):
        quality_aware_loss(pred, target, correlation_weight=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        soft_rank_loss(pred, target, temperature=0.0)
