"""What quality-aware pretraining asks of a model: one or more objectives, their losses summed with weights.

- ``regression``:     the model's quality loss against each crop's pseudo-MOS (the paper's stage 1, METHOD.md).
- ``classification``: which of the 126 `DISTORTION_CLASSES` made the crop (pristine, or one of 25 types x 5
                      levels), one `DistortionClassifier` per backbone over its pooled features (DB-CNN's
                      synthetic objective).
- ``ranking``:        crops come in pairs (rows 2k and 2k + 1) of the same content and type at two levels; the
                      milder one must score higher by `RANKING_MARGIN` (margin ranking loss on every base score and
                      on the combined score).

`QualityPretrainingModel` is a `MetaQAPModel` with the classifiers beside its heads; its config names the
objectives and weights (``pretraining_objectives``), so a saved pretraining checkpoint says what it was trained
for. Its backbones hand on to fine-tuning (`create_model(..., backbones_from=...)`) like any saved model's.

The class layout is shared: `DISTORTION_CLASSES[0]` is ``"pristine"``, then ``"<type>/<level>"`` in
`metaqap_hf.distortions.DISTORTION_TYPES` order, levels 1 to 5; `class_distortion_type` folds a class into
``0`` (pristine) or ``1 + DISTORTION_TYPES.index(type)``, the 26-way layout of a fault diagnosis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distortions import DISTORTION_TYPES, NUM_LEVELS
from ..losses import get_loss
from ..modeling_metaqap import ImageQualityOutput, MetaQAPModel

__all__ = [
    "DEFAULT_OBJECTIVE_WEIGHT",
    "DISTORTION_CLASSES",
    "OBJECTIVES",
    "PRISTINE",
    "PRISTINE_CLASS",
    "RANKING_MARGIN",
    "DistortionClassifier",
    "QualityPretrainingModel",
    "class_distortion_type",
    "class_severity",
    "distortion_class",
    "weighted_objectives",
    "pair_ranking_loss",
]

OBJECTIVES: tuple[str, ...] = ("regression", "classification", "ranking")
PRISTINE = "pristine"
PRISTINE_CLASS = 0
DISTORTION_CLASSES: tuple[str, ...] = (
    PRISTINE, *(f"{kind}/{level}" for kind in DISTORTION_TYPES for level in range(1, NUM_LEVELS + 1)))
DEFAULT_OBJECTIVE_WEIGHT = 1.0
# On the unit quality scale (pseudo-MOS 0-1): the milder crop of a pair must lead by this much.
RANKING_MARGIN = 0.05


def distortion_class(kind: str, level: int) -> int:
    """Index in `DISTORTION_CLASSES` of a crop distorted by `kind` at `level` (``"pristine"``: level ignored)."""
    if kind == PRISTINE:
        return PRISTINE_CLASS
    if kind not in DISTORTION_TYPES or not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"no distortion class for {kind!r} at level {level!r}")
    return 1 + DISTORTION_TYPES.index(kind) * NUM_LEVELS + (level - 1)


def class_severity(classes: torch.Tensor) -> torch.Tensor:
    """Level of each class index: 0 for pristine, else 1 (mildest) to 5."""
    return torch.where(classes == PRISTINE_CLASS, 0, (classes - 1) % NUM_LEVELS + 1)


def class_distortion_type(classes: torch.Tensor) -> torch.Tensor:
    """Type of each class index: 0 for pristine, else 1 + its index in `DISTORTION_TYPES`."""
    return torch.where(classes == PRISTINE_CLASS, 0, (classes - 1) // NUM_LEVELS + 1)


def weighted_objectives(objectives: Sequence[str], weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """``{objective: weight}`` for the selected objectives (`DEFAULT_OBJECTIVE_WEIGHT` unless given), checked."""
    objectives = list(dict.fromkeys(objectives))
    unknown = [name for name in [*objectives, *(weights or {})] if name not in OBJECTIVES]
    if not objectives or unknown:
        raise ValueError(f"pretraining objectives must be some of {', '.join(OBJECTIVES)}; got {objectives}"
                         + (f" (unknown: {unknown})" if unknown else ""))
    unused = [name for name in weights or {} if name not in objectives]
    if unused:
        raise ValueError(f"weights given for objectives that are not selected: {unused}")
    chosen = {name: float((weights or {}).get(name, DEFAULT_OBJECTIVE_WEIGHT)) for name in objectives}
    bad = {name: value for name, value in chosen.items() if not value > 0}
    if bad:
        raise ValueError(f"objective weights must be positive; got {bad}")
    return chosen


def pair_ranking_loss(quality: torch.Tensor, severity: torch.Tensor, margin: float = RANKING_MARGIN) -> torch.Tensor:
    """Margin ranking loss over the pairs (rows 2k, 2k + 1) of `quality` (B,) or (B, K): in each pair the row of
    lower `severity` must score higher by `margin`. Pairs of equal severity add nothing."""
    if quality.shape[0] % 2:
        raise ValueError(f"ranking takes pairs of rows; got a batch of {quality.shape[0]}")
    quality = quality.reshape(quality.shape[0], -1)
    first, second = quality[0::2], quality[1::2]
    order = torch.sign(severity[1::2] - severity[0::2]).to(quality.dtype)[:, None].expand_as(first)
    losses = F.relu(margin - order * (first - second)) * order.abs()
    return losses.sum() / order.abs().sum().clamp(min=1.0)


class DistortionClassifier(nn.Module):
    """Pooled backbone features -> logits over `num_classes` (default: the 126 `DISTORTION_CLASSES`)."""

    def __init__(self, in_features: int, num_classes: int = len(DISTORTION_CLASSES)):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.float())


class QualityPretrainingModel(MetaQAPModel):
    """A `MetaQAPModel` trained on `config.pretraining_objectives` (``{objective: weight}``, see `OBJECTIVES`).

    `forward` also takes ``distortion_class`` (B,) (indices into `DISTORTION_CLASSES`), which classification and
    ranking need; with ranking, rows 2k and 2k + 1 are a pair. Its loss is the weighted sum of the objectives.
    """

    def __init__(self, config):
        super().__init__(config)
        configured = getattr(config, "pretraining_objectives", None) or {"regression": DEFAULT_OBJECTIVE_WEIGHT}
        self.objectives = weighted_objectives(list(configured), configured)
        self.classifiers = nn.ModuleList()
        if "classification" in self.objectives:
            self.classifiers.extend(DistortionClassifier(head.feature_mean.numel()) for head in self.heads)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        distortion_class: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> ImageQualityOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features = [self.base_features(pixel_values, index) for index in range(len(self.heads))]
        base_unit = torch.stack([head(feature) for head, feature in zip(self.heads, features)], dim=1).float()
        score_unit = self.combine(base_unit)
        losses = self._losses(features, base_unit, score_unit, labels, distortion_class)
        loss = sum(self.objectives[name] * value for name, value in losses.items()) if losses else None
        base_scores = self.from_unit_scale(base_unit)
        score = self.from_unit_scale(score_unit)
        std = base_scores.std(dim=1, correction=0)
        if not return_dict:
            output = (score, base_scores, std)
            return (loss, *output) if loss is not None else output
        return ImageQualityOutput(loss=loss, score=score, base_scores=base_scores, std=std)

    def _losses(self, features, base_unit, score_unit, labels, distortion_class) -> dict[str, torch.Tensor]:
        if labels is None and distortion_class is None:
            return {}
        needs_classes = [name for name in ("classification", "ranking") if name in self.objectives]
        if needs_classes and distortion_class is None:
            raise ValueError(f"the {' and '.join(needs_classes)} objective needs distortion_class")
        losses = {}
        if "regression" in self.objectives:
            if labels is None:
                raise ValueError("the regression objective needs labels (pseudo-MOS)")
            target = self.to_unit_scale(labels.to(score_unit.device, torch.float32).view(-1))
            loss_fn = get_loss(self.config.loss, **self.config.loss_kwargs)
            base_losses = torch.stack([loss_fn(base_unit[:, i], target) for i in range(base_unit.shape[1])])
            losses["regression"] = base_losses.mean() + loss_fn(score_unit, target)
        if needs_classes:
            classes = distortion_class.to(score_unit.device).long().view(-1)
        if "classification" in self.objectives:
            losses["classification"] = torch.stack([
                F.cross_entropy(classifier(feature), classes)
                for classifier, feature in zip(self.classifiers, features)]).mean()
        if "ranking" in self.objectives:
            quality = torch.cat([base_unit, score_unit[:, None]], dim=1)
            losses["ranking"] = pair_ranking_loss(quality, class_severity(classes))
        return losses
