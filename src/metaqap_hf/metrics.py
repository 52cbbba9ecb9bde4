"""Image quality assessment metrics: SROCC, KROCC, PLCC, RMSE and the VQEG logistic mappings.

Raw versus fitted: `plcc` and `rmse` compare the model's predictions with MOS as they are. The field often
reports them after a monotonic logistic mapping fitted from predictions to MOS (VQEG; METHOD.md section 6),
which removes a non-linear or differently scaled output. `compute_iqa_metrics` reports both, with the fitted
values under ``*_4pl`` / ``*_5pl`` names. SROCC and KROCC depend only on order, so a monotonic mapping leaves
them unchanged and they are reported once.

Nothing here raises on awkward data during an evaluation: an undefined correlation (fewer than two points, or
constant predictions or MOS) is NaN, and a logistic fit that fails returns the raw predictions and says why.
Mismatched lengths are a caller's bug and do raise.

`EVALUATE_MODULE_PATH` points at an `evaluate` metric script that wraps `compute_iqa_metrics`, so
``evaluate.load(EVALUATE_MODULE_PATH)`` works with no hub access.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
from scipy import optimize, special, stats

if TYPE_CHECKING:
    import torch

__all__ = [
    "EVALUATE_MODULE_PATH",
    "LogisticFit",
    "MEAN_OF_BASES",
    "ablation_metrics",
    "compute_iqa_metrics",
    "compute_metrics",
    "ensemble_metrics",
    "fit_logistic",
    "krocc",
    "logistic_4pl",
    "logistic_5pl",
    "plcc",
    "rmse",
    "srocc",
]

logger = logging.getLogger(__name__)

EVALUATE_MODULE_PATH: str = str(Path(__file__).resolve().parent / "evaluate_metric" / "iqa_metrics.py")

Scores = Union[Sequence[float], np.ndarray, "torch.Tensor"]


def _as_scores(values: Scores, name: str) -> np.ndarray:
    """Flatten scores of shape (N,) or (N, 1) into a float64 numpy vector (tensors are recognised by ``.detach``,
    so importing this module does not import torch)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {array.shape}")
    return array


def _as_score_pair(pred: Scores, mos: Scores) -> tuple[np.ndarray, np.ndarray]:
    pred_array, mos_array = _as_scores(pred, "pred"), _as_scores(mos, "mos")
    if pred_array.shape != mos_array.shape:
        raise ValueError(f"pred and mos must have the same length, got {pred_array.size} and {mos_array.size}")
    return pred_array, mos_array


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN when fewer than two points or either vector has no spread."""
    if x.size < 2:
        return float("nan")
    x_centered, y_centered = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.dot(x_centered, x_centered) * np.dot(y_centered, y_centered))
    if not denominator > 0:
        return float("nan")
    return float(np.clip(np.dot(x_centered, y_centered) / denominator, -1.0, 1.0))


def srocc(pred: Scores, mos: Scores) -> float:
    """Spearman rank-order correlation (Pearson's r of the ranks, ties averaged)."""
    pred_array, mos_array = _as_score_pair(pred, mos)
    return _pearson(stats.rankdata(pred_array), stats.rankdata(mos_array))


def plcc(pred: Scores, mos: Scores) -> float:
    """Pearson linear correlation of the raw predictions with MOS."""
    return _pearson(*_as_score_pair(pred, mos))


def krocc(pred: Scores, mos: Scores) -> float:
    """Kendall rank-order correlation (tau-b, which accounts for ties)."""
    pred_array, mos_array = _as_score_pair(pred, mos)
    if pred_array.size < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.kendalltau(pred_array, mos_array).statistic)


def rmse(pred: Scores, mos: Scores) -> float:
    """Root mean squared error of the raw predictions against MOS (same units as MOS)."""
    pred_array, mos_array = _as_score_pair(pred, mos)
    if pred_array.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((pred_array - mos_array) ** 2)))


def logistic_4pl(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic, ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    ``b1`` and ``b2`` are the upper and lower asymptotes, ``b3`` the midpoint and ``|b4|`` the width.
    """
    return (b1 - b2) * special.expit((x - b3) / np.abs(b4)) + b2


def logistic_5pl(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """VQEG 5-parameter logistic, ``b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5``.

    A logistic of height ``b1``, slope ``b2`` and midpoint ``b3``, plus a linear part ``b4 * x + b5``.
    """
    return b1 * (0.5 - special.expit(-b2 * (x - b3))) + b4 * x + b5


_LOGISTICS = {4: logistic_4pl, 5: logistic_5pl}


@dataclass
class LogisticFit:
    """The result of `fit_logistic`.

    Attributes:
        mapped: predictions mapped to the MOS scale; the raw predictions when the fit did not converge.
        params: fitted ``(b1, ..., bn)``, or None when the fit did not converge.
        converged: whether ``mapped`` really is the fitted mapping.
        message: what happened, e.g. why the fit failed; suitable for a log line.
    """

    mapped: np.ndarray
    params: tuple[float, ...] | None
    converged: bool
    message: str


# Fits run on standardised data (mean 0, std 1 for predictions and for MOS), which makes one starting point and
# one set of bounds suit any score scale. Bounding the parameters (in standard deviations) lets a fit finish
# when the data do not pin the curve down, e.g. an exponential-looking relation whose best 4PL asymptote lies
# at infinity; the message then names the parameters that sit on a bound.
_STANDARDISED_BOUND = 50.0
_MIN_STANDARDISED_WIDTH = 1e-3
_MAX_FUNCTION_EVALUATIONS = 5000


def _standardised_start_and_bounds(
    x: np.ndarray, y: np.ndarray, n_params: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Start with asymptotes at the MOS extremes, the midpoint at the median prediction and unit width."""
    increasing = _pearson(x, y) >= 0
    low, high = float(y.min()), float(y.max())
    midpoint = float(np.median(x))
    lower = np.full(n_params, -_STANDARDISED_BOUND)
    upper = np.full(n_params, _STANDARDISED_BOUND)
    if n_params == 4:
        start = np.array([high, low, midpoint, 1.0] if increasing else [low, high, midpoint, 1.0])
        lower[3] = _MIN_STANDARDISED_WIDTH
    else:
        start = np.array([high - low if increasing else low - high, 1.0, midpoint, 0.0, 0.0])
    return np.clip(start, 0.99 * lower, 0.99 * upper), (lower, upper)


def _unstandardise(
    params: np.ndarray, x_mean: float, x_std: float, y_mean: float, y_std: float
) -> tuple[float, ...]:
    """Turn parameters fitted on standardised data into the parameters of the same curve on the raw scales."""
    if params.size == 4:
        b1, b2, b3, b4 = params
        return (y_mean + y_std * b1, y_mean + y_std * b2, x_mean + x_std * b3, x_std * b4)
    b1, b2, b3, b4, b5 = params
    slope = y_std * b4 / x_std
    return (y_std * b1, b2 / x_std, x_mean + x_std * b3, slope, y_mean + y_std * b5 - slope * x_mean)


def fit_logistic(pred: Scores, mos: Scores, n_params: int = 4) -> LogisticFit:
    """Fit the 4- or 5-parameter VQEG logistic from predictions to MOS by bounded least squares (curve_fit, trf).

    Never raises on data: too few points, constant inputs, non-finite values, a fit that does not converge or
    one that yields non-finite values all return the raw predictions with ``converged=False`` and a message.
    The returned ``params`` apply to the raw scales: ``logistic_4pl(pred, *params)`` gives ``mapped``.
    """
    if n_params not in _LOGISTICS:
        raise ValueError(f"n_params must be 4 or 5, got {n_params}")
    pred_array, mos_array = _as_score_pair(pred, mos)

    def failed(reason: str) -> LogisticFit:
        message = f"{n_params}-parameter logistic fit failed: {reason}; raw predictions returned"
        return LogisticFit(mapped=pred_array.copy(), params=None, converged=False, message=message)

    if pred_array.size <= n_params:
        return failed(f"needs more than {n_params} points, got {pred_array.size}")
    if not (np.all(np.isfinite(pred_array)) and np.all(np.isfinite(mos_array))):
        return failed("predictions or MOS contain NaN or infinite values")
    if np.ptp(pred_array) == 0 or np.ptp(mos_array) == 0:
        return failed("predictions or MOS are constant")

    logistic = _LOGISTICS[n_params]
    x_mean, x_std, y_mean, y_std = pred_array.mean(), pred_array.std(), mos_array.mean(), mos_array.std()
    x, y = (pred_array - x_mean) / x_std, (mos_array - y_mean) / y_std
    start, (lower, upper) = _standardised_start_and_bounds(x, y, n_params)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            standardised_params, _ = optimize.curve_fit(
                logistic, x, y, p0=start, bounds=(lower, upper), method="trf", max_nfev=_MAX_FUNCTION_EVALUATIONS
            )
            params = _unstandardise(standardised_params, x_mean, x_std, y_mean, y_std)
            mapped = logistic(pred_array, *params)
    except (RuntimeError, ValueError, FloatingPointError) as error:
        return failed(str(error))
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(mapped))):
        return failed("the fitted curve has non-finite values")
    at_bound = np.isclose(standardised_params, lower) | np.isclose(standardised_params, upper)
    message = f"{n_params}-parameter logistic fit converged"
    if at_bound.any():
        names = ", ".join(f"b{index + 1}" for index in np.flatnonzero(at_bound))
        message += f" with {names} on its bound (the data do not pin the curve down)"
    return LogisticFit(mapped=mapped, params=tuple(float(p) for p in params), converged=True, message=message)


def compute_iqa_metrics(pred: Scores, mos: Scores) -> dict[str, float | int | bool]:
    """All IQA metrics for one set of predictions.

    Keys:
        ``srocc``, ``krocc``: rank correlations (unchanged by any monotonic mapping).
        ``plcc``, ``rmse``: on the raw predictions.
        ``plcc_4pl``, ``rmse_4pl`` / ``plcc_5pl``, ``rmse_5pl``: after the fitted 4- / 5-parameter logistic
            mapping to MOS; NaN when that fit failed (never silently the raw values).
        ``fit_4pl_converged``, ``fit_5pl_converged``: whether each fit succeeded (a failure is also logged).
        ``n``: number of images.
    """
    pred_array, mos_array = _as_score_pair(pred, mos)
    results: dict[str, float | int | bool] = {
        "srocc": srocc(pred_array, mos_array),
        "krocc": krocc(pred_array, mos_array),
        "plcc": plcc(pred_array, mos_array),
        "rmse": rmse(pred_array, mos_array),
    }
    for n_params in (4, 5):
        fit = fit_logistic(pred_array, mos_array, n_params=n_params)
        if not fit.converged:
            logger.warning(fit.message)
        suffix = f"{n_params}pl"
        results[f"plcc_{suffix}"] = plcc(fit.mapped, mos_array) if fit.converged else float("nan")
        results[f"rmse_{suffix}"] = rmse(fit.mapped, mos_array) if fit.converged else float("nan")
        results[f"fit_{suffix}_converged"] = fit.converged
    results["n"] = int(pred_array.size)
    return results


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for `transformers.Trainer`: raw SROCC, PLCC, KROCC and RMSE.

    Accepts an ``EvalPrediction`` or a ``(predictions, labels)`` tuple. ``predictions`` may be a tuple of model
    outputs whose first element holds the scores, of shape (N,) or (N, 1). The logistic fits are left out to
    keep per-epoch evaluation cheap and free of fit noise; use `compute_iqa_metrics` for final reports.
    """
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    pred_array, mos_array = _as_score_pair(predictions, labels)
    return {
        "srocc": srocc(pred_array, mos_array),
        "plcc": plcc(pred_array, mos_array),
        "krocc": krocc(pred_array, mos_array),
        "rmse": rmse(pred_array, mos_array),
    }


def ensemble_metrics(
    scores: Scores, base_scores: np.ndarray, labels: Scores, backbone_ids: Sequence[str]
) -> dict[str, float]:
    """Validation metrics of a MetaQAP model: raw SROCC, PLCC, KROCC and RMSE of the final `scores`, and
    ``srocc_<backbone id>`` for each column of `base_scores` (N, num_backbones): the base models are what
    training improves, and the meta-learner is fitted on their predictions afterwards."""
    metrics = compute_metrics((scores, labels))
    base_scores = np.asarray(base_scores)
    for column, backbone_id in enumerate(backbone_ids):
        metrics[f"srocc_{backbone_id}"] = srocc(base_scores[:, column], labels)
    return metrics


MEAN_OF_BASES = "mean of base models"


def ablation_metrics(
    base_scores: np.ndarray, labels: Scores, backbone_ids: Sequence[str]
) -> dict[str, dict[str, float | int | bool]]:
    """The ensemble's ablations: `compute_iqa_metrics` of each base model alone (by backbone id) and of the plain
    average of the base scores (N, num_backbones) in place of the meta-learner (`MEAN_OF_BASES`)."""
    base_scores = np.asarray(base_scores)
    ablations = {backbone_id: compute_iqa_metrics(base_scores[:, column], labels)
                 for column, backbone_id in enumerate(backbone_ids)}
    ablations[MEAN_OF_BASES] = compute_iqa_metrics(base_scores.mean(1), labels)
    return ablations
