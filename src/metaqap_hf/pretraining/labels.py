"""Pseudo-MOS for synthetic distortions: full-reference scores against the pristine original, fused.

Fusion follows METHOD.md section 1. Each full-reference (FR) metric is mapped to its percentile within
a calibration population of FR scores (so metrics on different scales and with different curvature
become comparable), then the percentiles are averaged. Where a human-rated synthetic dataset is
available (KADID-10k, TID2013), non-negative fusion weights can be fitted to its MOS instead.
Every score here is oriented so that higher means better quality.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import piq
import torch
from scipy.optimize import nnls

__all__ = [
    "FR_METRICS",
    "DEFAULT_METRICS",
    "full_reference_scores",
    "PseudoMOSLabeler",
]


def _multi_scale_ssim(distorted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """MS-SSIM with as many of the standard 5 scales as the image size allows.

    piq needs ``(kernel - 1) * 2 ** (scales - 1) + 1`` pixels (161 for 5 scales); smaller images use
    the first scales only, with the standard scale weights renormalised.
    """
    kernel_size = 11
    side = min(distorted.shape[-2:])
    scales = min(5, int(math.floor(math.log2((side - 1) / (kernel_size - 1)))) + 1)
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])[:scales]
    return piq.multi_scale_ssim(
        distorted, reference, kernel_size=kernel_size, data_range=1.0, reduction="none",
        scale_weights=weights / weights.sum(),
    )


# name -> (score function taking (distorted, reference), sign that makes higher better, minimum side).
FR_METRICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], float, int]] = {
    "ssim": (lambda x, y: piq.ssim(x, y, data_range=1.0, reduction="none"), 1.0, 11),
    "multi_scale_ssim": (_multi_scale_ssim, 1.0, 11),
    "gmsd": (lambda x, y: piq.gmsd(x, y, data_range=1.0, reduction="none"), -1.0, 8),
    "vif_p": (lambda x, y: piq.vif_p(x, y, data_range=1.0, reduction="none"), 1.0, 41),
    "fsim": (lambda x, y: piq.fsim(x, y, data_range=1.0, reduction="none"), 1.0, 16),
    "vsi": (lambda x, y: piq.vsi(x, y, data_range=1.0, reduction="none"), 1.0, 16),
    "haarpsi": (lambda x, y: piq.haarpsi(x, y, data_range=1.0, reduction="none"), 1.0, 16),
    "mdsi": (lambda x, y: piq.mdsi(x, y, data_range=1.0, reduction="none"), -1.0, 8),
}

# Structure (SSIM), gradients (GMSD), information fidelity (VIF) and a colour-aware wavelet index
# (HaarPSI): four views that disagree usefully, at about 0.16 s per 224 px image on one CPU core.
# ("gmsd", "haarpsi", "mdsi") is about 4x faster where labelling is the bottleneck.
DEFAULT_METRICS: tuple[str, ...] = ("ssim", "gmsd", "vif_p", "haarpsi")


def full_reference_scores(
    reference: torch.Tensor, distorted: torch.Tensor, metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, torch.Tensor]:
    """Score each distorted image against its pristine reference with piq full-reference metrics.

    Args:
        reference, distorted: float tensors (B, 3, H, W) on [0, 1] (values are clamped to it).
        metrics: names from ``FR_METRICS``.

    Returns:
        ``{metric: tensor (B,)}``, every score oriented so that higher is better: distance-like
        metrics (GMSD, MDSI) are negated.
    """
    if reference.shape != distorted.shape or reference.ndim != 4:
        raise ValueError(
            f"reference and distorted must be batches of equal shape (B, C, H, W); got "
            f"{tuple(reference.shape)} and {tuple(distorted.shape)}."
        )
    unknown = [name for name in metrics if name not in FR_METRICS]
    if unknown:
        raise ValueError(f"Unknown full-reference metrics {unknown}; expected names from {list(FR_METRICS)}.")
    reference = reference.float().clamp(0.0, 1.0)
    distorted = distorted.float().clamp(0.0, 1.0)
    scores = {}
    for name in metrics:
        function, sign, min_side = FR_METRICS[name]
        if min(reference.shape[-2:]) < min_side:
            raise ValueError(f"Metric {name} needs images of at least {min_side}x{min_side} pixels; "
                             f"got {tuple(reference.shape[-2:])}.")
        scores[name] = sign * function(distorted, reference).float()
    return scores


def _as_matrix(scores: Mapping[str, torch.Tensor | Sequence[float]], metrics: Sequence[str]) -> torch.Tensor:
    missing = [name for name in metrics if name not in scores]
    if missing:
        raise KeyError(f"Scores lack the metrics {missing} that this labeler fuses.")
    columns = [torch.as_tensor(scores[name]).to(torch.float64).flatten() for name in metrics]
    return torch.stack([column.to(columns[0].device) for column in columns], 1)  # on the scores' device


@dataclass
class PseudoMOSLabeler:
    """Maps full-reference scores to a pseudo-MOS on [0, 1] (higher is better).

    Each metric's score becomes its mid-rank percentile within the calibration population (stored as
    at most a few thousand sorted order statistics); the pseudo-MOS is
    ``clamp(intercept + sum_m weight_m * percentile_m, 0, 1)``. ``fit`` gives equal weights and no
    intercept, i.e. the rank-normalised average; ``fit_to_human`` learns the weights from human MOS.
    """

    metrics: tuple[str, ...]
    sorted_values: dict[str, torch.Tensor]
    weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0

    def __post_init__(self) -> None:
        self.metrics = tuple(self.metrics)
        if not self.weights:
            self.weights = {name: 1.0 / len(self.metrics) for name in self.metrics}
        for name in self.metrics:
            if name not in self.sorted_values or name not in self.weights:
                raise ValueError(f"Labeler metric {name!r} has no calibration values or weight.")

    @classmethod
    def fit(cls, scores: Mapping[str, torch.Tensor], max_points: int = 2001) -> PseudoMOSLabeler:
        """Calibrate on a population of FR scores (e.g. from ``full_reference_scores`` over many samples).

        ``max_points`` caps the stored order statistics per metric (evenly spaced in rank), which keeps
        the JSON small while resolving percentiles to 1 / max_points.
        """
        metrics = tuple(scores)
        matrix = _as_matrix(scores, metrics).cpu()
        if matrix.shape[0] < 2:
            raise ValueError("Calibrating a PseudoMOSLabeler needs at least 2 scored samples.")
        if not torch.isfinite(matrix).all():
            raise ValueError("Calibration scores contain NaN or infinite values.")
        ordered = matrix.sort(dim=0).values
        keep = torch.linspace(0, ordered.shape[0] - 1, min(max_points, ordered.shape[0])).round().long()
        return cls(metrics=metrics, sorted_values={name: ordered[keep, i] for i, name in enumerate(metrics)})

    def percentiles(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mid-rank percentile (N, M) of each sample's score per metric, on [0, 1], in ``metrics`` order."""
        matrix = _as_matrix(scores, self.metrics)
        columns = []
        for i, name in enumerate(self.metrics):
            reference = self.sorted_values[name].to(matrix.device)
            below = torch.searchsorted(reference, matrix[:, i].contiguous(), right=False)
            at_or_below = torch.searchsorted(reference, matrix[:, i].contiguous(), right=True)
            columns.append((below + at_or_below).double() / (2 * reference.numel()))
        return torch.stack(columns, 1)

    def __call__(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pseudo-MOS (N,) float32 on [0, 1] for a batch of FR scores, on the scores' device."""
        percentiles = self.percentiles(scores)
        weights = torch.tensor([self.weights[name] for name in self.metrics], dtype=torch.float64,
                               device=percentiles.device)
        fused = self.intercept + percentiles @ weights
        return fused.clamp(0.0, 1.0).float()

    def label_images(self, reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
        """Pseudo-MOS (B,) of distorted images against their pristine references."""
        return self(full_reference_scores(reference, distorted, self.metrics))

    def fit_to_human(
        self,
        fr_scores: Mapping[str, torch.Tensor],
        mos: torch.Tensor | Sequence[float],
        mos_range: tuple[float, float] | None = None,
    ) -> PseudoMOSLabeler:
        """Fit fusion weights to human opinion scores of a rated synthetic dataset.

        Solves ``mos01 ~ intercept + P @ w`` with ``w >= 0`` by non-negative least squares, where P are
        this labeler's percentiles of ``fr_scores`` and ``mos01`` is ``mos`` rescaled from ``mos_range``
        (default: its observed min and max) to [0, 1]. The intercept may take either sign. ``mos`` must
        be oriented higher = better (KADID-10k's "dmos" column already is; negate true DMOS).

        Returns:
            A new labeler with the same calibration and the fitted weights and intercept.
        """
        percentiles = self.percentiles(fr_scores).cpu().numpy()
        target = torch.as_tensor(mos, dtype=torch.float64).flatten().cpu().numpy()
        if target.shape[0] != percentiles.shape[0]:
            raise ValueError(f"Got {percentiles.shape[0]} score rows but {target.shape[0]} MOS values.")
        low, high = mos_range if mos_range is not None else (float(target.min()), float(target.max()))
        if not high > low:
            raise ValueError(f"MOS range must be increasing; got {(low, high)}.")
        target = (target - low) / (high - low)
        ones = np.ones((percentiles.shape[0], 1))
        solution, _ = nnls(np.hstack([percentiles, ones, -ones]), target)
        weights = {name: float(solution[i]) for i, name in enumerate(self.metrics)}
        return PseudoMOSLabeler(
            self.metrics, dict(self.sorted_values), weights, intercept=float(solution[-2] - solution[-1])
        )

    def to_dict(self) -> dict:
        """JSON-ready description: metrics, calibration order statistics, weights and intercept."""
        return {
            "metrics": list(self.metrics),
            "sorted_values": {name: self.sorted_values[name].tolist() for name in self.metrics},
            "weights": {name: self.weights[name] for name in self.metrics},
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> PseudoMOSLabeler:
        return cls(
            metrics=tuple(data["metrics"]),
            sorted_values={
                name: torch.tensor(values, dtype=torch.float64) for name, values in data["sorted_values"].items()
            },
            weights={name: float(value) for name, value in data["weights"].items()},
            intercept=float(data["intercept"]),
        )

    def save(self, path: str | PathLike) -> Path:
        """Write the labeler as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: str | PathLike) -> PseudoMOSLabeler:
        """Read a labeler written by ``save``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"Cannot read a PseudoMOSLabeler from {path}: {error}") from error
