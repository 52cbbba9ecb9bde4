"""Tests for metaqap_hf.metrics: correlations against scipy, logistic fits, Trainer and evaluate entry points."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import EvalPrediction

from metaqap_hf.metrics import (
    EVALUATE_MODULE_PATH,
    compute_iqa_metrics,
    compute_metrics,
    fit_logistic,
    krocc,
    logistic_4pl,
    logistic_5pl,
    plcc,
    rmse,
    srocc,
)

METRIC_KEYS = {"srocc", "krocc", "plcc", "rmse", "plcc_4pl", "rmse_4pl", "plcc_5pl", "rmse_5pl"}


def _noisy_monotone_data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.random(n)
    mos = 1 + 4 * pred**2 + 0.2 * rng.standard_normal(n)
    return pred, mos


@pytest.mark.parametrize("with_ties", [False, True])
def test_correlations_and_rmse_match_scipy(with_ties):
    pred, mos = _noisy_monotone_data()
    if with_ties:
        pred, mos = np.round(pred, 1), np.round(mos, 0)
    assert srocc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic, rel=1e-12)
    assert plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos).statistic, rel=1e-12)
    assert krocc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic, rel=1e-12)
    assert rmse(pred, mos) == pytest.approx(math.sqrt(np.mean((pred - mos) ** 2)), rel=1e-12)


def test_lists_tensors_and_column_arrays_give_the_same_numbers():
    pred, mos = _noisy_monotone_data(n=20)
    reference = compute_iqa_metrics(pred, mos)
    for pred_like, mos_like in [
        (pred.tolist(), mos.tolist()),
        (torch.tensor(pred, dtype=torch.float64), torch.tensor(mos, dtype=torch.float64)),
        (pred.reshape(-1, 1), mos),
    ]:
        assert compute_iqa_metrics(pred_like, mos_like) == pytest.approx(reference)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        srocc([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        plcc(np.zeros((3, 2)), np.zeros((3, 2)))


def test_undefined_correlations_are_nan():
    assert math.isnan(srocc([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert math.isnan(plcc([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert math.isnan(krocc([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert math.isnan(plcc([0.5], [0.1]))


def test_4pl_fit_recovers_known_parameters():
    true_params = (4.5, 1.2, 0.55, 0.12)
    rng = np.random.default_rng(3)
    pred = np.sort(rng.random(300))
    mos = logistic_4pl(pred, *true_params) + 0.01 * rng.standard_normal(pred.size)
    fit = fit_logistic(pred, mos, n_params=4)
    assert fit.converged, fit.message
    b1, b2, b3, b4 = fit.params
    assert (b1, b2, b3, abs(b4)) == pytest.approx(true_params, abs=0.02)
    assert np.sqrt(np.mean((fit.mapped - logistic_4pl(pred, *true_params)) ** 2)) < 0.01


def test_4pl_fit_follows_a_decreasing_relation():
    pred = np.linspace(-2.0, 3.0, 80)
    mos = logistic_4pl(pred, 10.0, 90.0, 0.5, 0.7)  # higher prediction, lower MOS
    fit = fit_logistic(pred, mos, n_params=4)
    assert fit.converged, fit.message
    assert plcc(fit.mapped, mos) > 0.9999


@pytest.mark.parametrize("n_params", [4, 5])
def test_noiseless_logistic_data_gives_fitted_plcc_of_one(n_params):
    pred = np.linspace(100.0, 300.0, 100)  # a scale far from MOS, so the fit must rescale its parameters
    if n_params == 4:
        mos = logistic_4pl(pred, 80.0, 20.0, 180.0, 20.0)
    else:
        mos = logistic_5pl(pred, 60.0, 0.09, 200.0, 0.05, 40.0)
    results = compute_iqa_metrics(pred, mos)
    assert results[f"fit_{n_params}pl_converged"] is True
    assert results[f"plcc_{n_params}pl"] > 0.9999
    assert results[f"plcc_{n_params}pl"] > results["plcc"]
    assert results[f"rmse_{n_params}pl"] < 1e-2 * np.ptp(mos) < results["rmse"]


def test_fit_without_finite_optimum_stops_on_a_bound_and_still_helps():
    """An exponential relation's best 4PL has an infinite asymptote: the bounded fit ends on a bound."""
    pred = np.linspace(0.0, 1.0, 200)
    mos = np.exp(3 * pred)
    fit = fit_logistic(pred, mos, n_params=4)
    assert fit.converged
    assert "bound" in fit.message
    assert plcc(fit.mapped, mos) > plcc(pred, mos)
    np.testing.assert_allclose(logistic_4pl(pred, *fit.params), fit.mapped)


def test_compute_iqa_metrics_keys_and_raw_versus_fitted():
    pred, mos = _noisy_monotone_data()
    results = compute_iqa_metrics(pred, mos)
    assert METRIC_KEYS | {"n", "fit_4pl_converged", "fit_5pl_converged"} == set(results)
    assert results["n"] == pred.size
    assert results["plcc"] == plcc(pred, mos)  # raw
    assert results["rmse"] == rmse(pred, mos)  # raw, on the prediction scale (0-1) against MOS (1-5)
    assert results["rmse_4pl"] < 0.3 < results["rmse"]  # fitted, on the MOS scale
    assert results["plcc_4pl"] == plcc(fit_logistic(pred, mos, 4).mapped, mos)


@pytest.mark.parametrize(
    ("pred", "mos", "reason"),
    [
        ([0.5] * 10, list(np.linspace(1.0, 5.0, 10)), "constant"),
        ([0.2, 0.8], [1.0, 4.0], "points"),
        ([0.1, float("nan"), 0.3, 0.4, 0.5, 0.6], [1.0, 2.0, 3.0, 4.0, 4.5, 5.0], "NaN"),
    ],
)
def test_degenerate_inputs_do_not_raise_and_say_the_fit_failed(pred, mos, reason, caplog):
    for n_params in (4, 5):
        fit = fit_logistic(pred, mos, n_params=n_params)
        assert not fit.converged
        assert fit.params is None
        assert reason in fit.message
        np.testing.assert_array_equal(fit.mapped, np.asarray(pred))
    with caplog.at_level(logging.WARNING, logger="metaqap_hf.metrics"):
        results = compute_iqa_metrics(pred, mos)
    assert results["fit_4pl_converged"] is False and results["fit_5pl_converged"] is False
    assert all(math.isnan(results[key]) for key in ("plcc_4pl", "rmse_4pl", "plcc_5pl", "rmse_5pl"))
    assert "logistic fit failed" in caplog.text


def test_compute_metrics_on_trainer_style_predictions():
    pred, mos = _noisy_monotone_data(n=32)
    expected = {"srocc": srocc(pred, mos), "plcc": plcc(pred, mos), "krocc": krocc(pred, mos), "rmse": rmse(pred, mos)}
    model_outputs = (pred.reshape(-1, 1).astype(np.float32), np.zeros((32, 5), dtype=np.float32))
    from_eval_prediction = compute_metrics(EvalPrediction(predictions=model_outputs, label_ids=mos.astype(np.float32)))
    from_tuple = compute_metrics((pred, mos))
    assert from_eval_prediction == pytest.approx(expected, rel=1e-5)
    assert from_tuple == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow  # a fresh interpreter importing evaluate takes about 10 s of CPU
def test_evaluate_load_by_path_offline_gives_the_same_numbers(tmp_path):
    """A fresh interpreter with no hub access and an empty cache loads the shipped module by path."""
    pred, mos = _noisy_monotone_data(n=40)
    script = (
        "import json, sys, evaluate\n"
        "from metaqap_hf.metrics import EVALUATE_MODULE_PATH\n"
        "pred, mos = json.loads(sys.stdin.read())\n"
        "metric = evaluate.load(EVALUATE_MODULE_PATH)\n"
        "print(json.dumps(metric.compute(predictions=pred, references=mos)))\n"
    )
    environment = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
    }
    completed = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([pred.tolist(), mos.tolist()]),
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    from_evaluate = json.loads(completed.stdout.strip().splitlines()[-1])
    assert from_evaluate == pytest.approx(compute_iqa_metrics(pred, mos), rel=1e-12)
    assert EVALUATE_MODULE_PATH.endswith(os.path.join("evaluate_metric", "iqa_metrics.py"))
