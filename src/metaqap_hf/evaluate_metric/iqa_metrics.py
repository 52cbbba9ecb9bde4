"""An `evaluate` metric for image quality assessment, loadable offline by path.

    import evaluate
    from metaqap_hf.metrics import EVALUATE_MODULE_PATH

    iqa = evaluate.load(EVALUATE_MODULE_PATH)
    iqa.compute(predictions=[0.1, 0.5, 0.7, 0.2, 0.9, 0.4], references=[0.2, 0.4, 0.8, 0.1, 0.9, 0.5])

`evaluate` copies this script into its module cache and imports it from there, so it holds no logic of its own:
it calls `metaqap_hf.metrics.compute_iqa_metrics`, and the results are the same dict.
"""

import datasets
import evaluate

from metaqap_hf.metrics import compute_iqa_metrics

_DESCRIPTION = """
Agreement between predicted quality scores and mean opinion scores (MOS): SROCC and KROCC (rank order),
PLCC and RMSE on the raw predictions, and PLCC / RMSE after a fitted 4- and 5-parameter VQEG logistic mapping
(`plcc_4pl`, `rmse_4pl`, `plcc_5pl`, `rmse_5pl`; NaN when a fit fails, see `fit_4pl_converged` /
`fit_5pl_converged`), plus `n`, the number of images.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted quality scores, higher is better.
    references (`list` of `float`): mean opinion scores of the same images, in the same order.
Returns:
    `dict` with srocc, krocc, plcc, rmse, plcc_4pl, rmse_4pl, plcc_5pl, rmse_5pl, fit_4pl_converged,
    fit_5pl_converged and n.
"""


class IQAMetrics(evaluate.Metric):
    """SROCC, KROCC, PLCC and RMSE (raw and after logistic mapping) for image quality predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float | int | bool]:
        return compute_iqa_metrics(predictions, references)
