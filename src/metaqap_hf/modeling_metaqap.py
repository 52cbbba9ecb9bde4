"""The MetaQAP model: several timm CNN backbones, one regression head each, and a linear meta-learner that
combines their base scores into one quality score, all in one `forward`.

    pixel_values (B, 3, H, W) in [0, 1]          <- MetaQAPImageProcessor
      -> per backbone: resize to its image_size, normalise with its mean/std
      -> backbone feature maps of every stage -> pooled (spatial mean and std) -> head -> base score (unit scale)
      -> meta-learner (config.meta_learner): coefficients . base scores + intercept -> score (unit scale)
      -> mapped to the checkpoint's MOS range; std = spread of the base scores (a per-image confidence signal)
      -> optional fault head (config.fault_head): every backbone's pooled features together -> one logit per fault
         class (what is wrong with the photo), returned with `output_faults=True`
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_metaqap import MetaQAPConfig
from .losses import get_loss

__all__ = ["FaultHead", "ImageQualityOutput", "MetaQAPPreTrainedModel", "MetaQAPModel", "QualityHead"]


@dataclass
class ImageQualityOutput(ModelOutput):
    """
    Output of [`MetaQAPModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Training loss on the unit scale: the mean of every base model's loss plus the final score's loss.
        score (`torch.FloatTensor` of shape `(batch_size,)`):
            Predicted quality on the checkpoint's MOS scale (`config.mos_range`), higher is better.
        base_scores (`torch.FloatTensor` of shape `(batch_size, num_backbones)`):
            Each base model's prediction on the same scale, in `config.backbone_ids` order.
        std (`torch.FloatTensor` of shape `(batch_size,)`):
            Standard deviation of the base scores: how much the base models disagree about this image.
        fault_logits (`torch.FloatTensor` of shape `(batch_size, num_fault_classes)`, *optional*, returned with
            `output_faults=True`):
            The fault head's logits, one per class of `config.fault_head` (its `types`, `labels`, `families`).
    """

    loss: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    base_scores: torch.FloatTensor | None = None
    std: torch.FloatTensor | None = None
    fault_logits: torch.FloatTensor | None = None


class QualityHead(nn.Module):
    """Pooled features -> one base score. Features are standardised with stored statistics first (identity until
    fitted), which keeps a ridge fit on frozen features and gradient training in one form."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self.dropout = nn.Dropout(dropout)
        if hidden_size:
            self.mlp = nn.Sequential(nn.Linear(in_features, hidden_size), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden_size, 1))
        else:
            self.mlp = nn.Linear(in_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std
        return self.mlp(self.dropout(features)).squeeze(-1)

    @torch.no_grad()
    def set_output_bias(self, value: float) -> None:
        """Start the head at a constant prediction (e.g. the mean training target) instead of about 0, so that
        training does not spend its first epochs finding the offset."""
        output_layer = self.mlp[-1] if isinstance(self.mlp, nn.Sequential) else self.mlp
        output_layer.bias.fill_(value)


class FaultHead(nn.Module):
    """Pooled features of every backbone, concatenated -> one logit per fault class. Standardised with stored
    statistics first, as in `QualityHead`."""

    def __init__(self, in_features: int, num_classes: int, hidden_size: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        if hidden_size:
            self.mlp = nn.Sequential(nn.Linear(in_features, hidden_size), nn.GELU(),
                                     nn.Linear(hidden_size, num_classes))
        else:
            self.mlp = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp((features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std)


def pool_features(feature_maps: list[torch.Tensor]) -> torch.Tensor:
    """Spatial mean and std of each stage's feature map, concatenated (the std carries the texture and artefact
    statistics quality depends on); computed in float32 for stability."""
    pooled = []
    for fmap in feature_maps:
        fmap = fmap.float()
        pooled += [fmap.mean(dim=(2, 3)), fmap.std(dim=(2, 3), correction=0)]
    return torch.cat(pooled, dim=1)


class MetaQAPPreTrainedModel(PreTrainedModel):
    config_class = MetaQAPConfig
    base_model_prefix = "metaqap"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # forward() has no **kwargs, so Trainer scales the loss for gradient accumulation itself.
    accepts_loss_kwargs = False
    # Checkpoints written before version 0.2 also stored the meta-learner as weights; config.json is its home now.
    _keys_to_ignore_on_load_unexpected = [r"^meta_learner\.(coefficients|intercept)$"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Backbone layers keep timm's own initialisation (or the weights loaded over it); only our heads and the
        # buffers timm does not save (e.g. relative position indices) are set here.
        if isinstance(module, (QualityHead, FaultHead)):
            init.zeros_(module.feature_mean)
            init.ones_(module.feature_std)
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    init.normal_(layer.weight, std=0.01)
                    init.zeros_(layer.bias)
        elif hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()


class MetaQAPModel(MetaQAPPreTrainedModel):
    """
    MetaQAP no-reference image quality model. Build a fresh one from a [`MetaQAPConfig`]; load ImageNet weights
    into its backbones with `metaqap_hf.weights.load_pretrained_backbones(model)`, or a trained checkpoint with
    `MetaQAPModel.from_pretrained(path)`.
    """

    def __init__(self, config: MetaQAPConfig):
        super().__init__(config)
        self.backbones = nn.ModuleList()
        self.heads = nn.ModuleList()
        for spec in config.backbones:
            backbone = timm.create_model(spec["name"], pretrained=False, features_only=True)
            in_features = 2 * sum(backbone.feature_info.channels())  # mean and std of every stage
            self.backbones.append(backbone)
            self.heads.append(QualityHead(in_features, config.head_hidden_size, config.head_dropout))
        # Only checkpoints that have one get the module, so older ones load with exactly their own weights.
        if config.fault_head is not None:
            self.fault_head = FaultHead(sum(head.feature_mean.numel() for head in self.heads),
                                        len(config.fault_head["types"]), config.fault_head["hidden_size"])
        self.post_init()

    def base_features(self, pixel_values: torch.Tensor, index: int) -> torch.Tensor:
        """Pooled multi-stage features of backbone `index` for images in [0, 1] at any size."""
        spec = self.config.backbones[index]
        size = spec["image_size"]
        x = pixel_values.float()  # resize and normalise in float32 (antialiased resize has no bfloat16 kernel)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(spec["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(spec["std"], device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return pool_features(self.backbones[index](x))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_faults: bool = False,
    ) -> ImageQualityOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            RGB images scaled to [0, 1], as [`MetaQAPImageProcessor`] returns them. Any size: each backbone resizes
            to its own `image_size` and normalises with its own statistics.
        labels (`torch.FloatTensor` of shape `(batch_size,)`, *optional*):
            Target MOS on the checkpoint's scale (`config.mos_range`).
        output_faults (`bool`, *optional*, defaults to `False`):
            Also return the fault head's logits (`fault_logits`; last in the tuple form). Needs a checkpoint with a
            fault head (`config.fault_head`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_faults and self.config.fault_head is None:
            raise ValueError("this checkpoint has no fault head (config.fault_head is None): it scores quality but "
                             "cannot diagnose faults")
        features = [self.base_features(pixel_values, i) for i in range(len(self.heads))]
        base_unit = torch.stack([head(features[i]) for i, head in enumerate(self.heads)], dim=1).float()
        fault_logits = self.fault_head(torch.cat(features, dim=1)).float() if output_faults else None
        score_unit = self.combine(base_unit)

        loss = None
        if labels is not None:
            target = self.to_unit_scale(labels.to(score_unit.device, torch.float32).view(-1))
            loss_fn = get_loss(self.config.loss, **self.config.loss_kwargs)
            base_losses = torch.stack([loss_fn(base_unit[:, i], target) for i in range(base_unit.shape[1])])
            loss = base_losses.mean() + loss_fn(score_unit, target)

        base_scores = self.from_unit_scale(base_unit)
        score = self.from_unit_scale(score_unit)
        std = base_scores.std(dim=1, correction=0)
        if not return_dict:
            output = (score, base_scores, std) + ((fault_logits,) if output_faults else ())
            return (loss, *output) if loss is not None else output
        return ImageQualityOutput(loss=loss, score=score, base_scores=base_scores, std=std, fault_logits=fault_logits)

    def combine(self, base_unit: torch.Tensor) -> torch.Tensor:
        """The meta-learner: `config.meta_learner`'s coefficients . base scores + intercept (unit scale)."""
        meta = self.config.meta_learner
        return base_unit @ base_unit.new_tensor(meta["coefficients"]) + meta["intercept"]

    def to_unit_scale(self, mos: torch.Tensor) -> torch.Tensor:
        low, high = self.config.mos_range
        return (mos - low) / (high - low)

    def from_unit_scale(self, unit: torch.Tensor) -> torch.Tensor:
        low, high = self.config.mos_range
        return unit * (high - low) + low
