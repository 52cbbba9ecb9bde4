import numpy as np
import pytest

from metaqap_hf.training.stacking import fit_meta_learner


def _bases(n=400, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random(n)
    good = truth + rng.normal(0, 0.05, n)
    decent = truth + rng.normal(0, 0.10, n)
    noise = rng.random(n)  # unrelated to the target
    return np.column_stack([good, decent, noise]), truth


def test_stepwise_adds_useful_bases_and_gates_on_the_newly_added_coefficient():
    x, y = _bases()
    fit = fit_meta_learner(x, y, "stepwise", min_coefficient=0.05)
    assert fit.steps[0]["added"] == 0  # the most accurate base enters first
    assert fit.coefficients[0] > 0.5 and fit.coefficients[1] > 0.05
    assert fit.coefficients[2] == 0.0  # the unrelated base fails the gate on its own coefficient
    assert "stop" in fit.steps[-1]
    np.testing.assert_allclose(fit.predict(x), x @ np.array(fit.coefficients) + fit.intercept)


def test_stepwise_gate_can_stop_after_the_first_base():
    x, y = _bases()
    fit = fit_meta_learner(x, y, "stepwise", min_coefficient=0.5)
    assert np.count_nonzero(fit.coefficients) == 1 and fit.coefficients[0] > 0.5


def test_nnls_never_gives_negative_weights_and_ridge_uses_all():
    x, y = _bases(seed=1)
    x = np.column_stack([x, -x[:, 0]])  # a base that is anti-correlated with the target
    nnls_fit = fit_meta_learner(x, y, "nnls")
    assert min(nnls_fit.coefficients) >= 0.0
    ridge_fit = fit_meta_learner(x, y, "ridge")
    assert ridge_fit.r2 > 0.9 and len(ridge_fit.coefficients) == 4


def test_mean_is_the_plain_average_and_bad_inputs_are_refused():
    x, y = _bases()
    fit = fit_meta_learner(x, y, "mean")
    assert fit.coefficients == pytest.approx([1 / 3] * 3) and fit.intercept == 0.0
    with pytest.raises(ValueError, match="unknown meta-learner"):
        fit_meta_learner(x, y, "magic")
    with pytest.raises(ValueError, match="need more than"):
        fit_meta_learner(x[:3], y[:3], "stepwise")
