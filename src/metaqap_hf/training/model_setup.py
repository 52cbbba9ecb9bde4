"""Preparing a `MetaQAPModel` for gradient training: which parts learn, train/eval modes, head initialisation.

Base-model training keeps the meta-learner fixed (at the plain mean a fresh config gives): the meta-learner is
fitted afterwards by stacking on held-out predictions, never by gradient descent on the training images.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..modeling_metaqap import MetaQAPModel

__all__ = ["initialize_head_bias", "set_trainable", "train_mode"]


def set_trainable(
    model: MetaQAPModel, *, backbones: bool = True, heads: bool = True, meta_learner: bool = False
) -> dict[str, int]:
    """Switch gradients on or off per part; returns the number of trainable parameters per part."""
    parts = {"backbones": (model.backbones, backbones), "heads": (model.heads, heads),
             "meta_learner": (model.meta_learner, meta_learner)}
    if not any(flag for _, flag in parts.values()):
        raise ValueError("set_trainable: nothing left to train (backbones, heads and meta_learner all frozen)")
    counts = {}
    for name, (module, flag) in parts.items():
        module.requires_grad_(flag)
        counts[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return counts


def train_mode(model: nn.Module) -> None:
    """`model.train()`, except that frozen backbones stay in eval mode: their BatchNorm running statistics must
    not drift with the training batches when their weights are not learning."""
    model.train()
    backbones = getattr(model, "backbones", [])
    for backbone in backbones:
        if not any(p.requires_grad for p in backbone.parameters()):
            backbone.eval()


@torch.no_grad()
def initialize_head_bias(model: MetaQAPModel, labels: Sequence[float]) -> float:
    """Start every head at the mean training label (unit scale) instead of 0.

    Fresh heads predict about 0 while MOS sit mid-scale; at fine-tuning learning rates the bias alone would take
    thousands of steps to get there. Returns the bias used. Call on a fresh model, before training.
    """
    unit = model.to_unit_scale(torch.as_tensor(labels, dtype=torch.float64))
    if unit.numel() == 0:
        raise ValueError("initialize_head_bias: no labels given")
    mean = float(unit.mean())
    for head in model.heads:
        last_linear = [module for module in head.modules() if isinstance(module, nn.Linear)][-1]
        last_linear.bias.fill_(mean)
    return mean
