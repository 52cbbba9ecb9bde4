"""Configuration of a MetaQAP checkpoint: which backbones, how their features are pooled and scored, how the
meta-learner combines them, and which MOS scale the scores are on."""

from __future__ import annotations

import math
from typing import Any

import timm
from timm.models import PretrainedCfg
from transformers import PretrainedConfig

from .losses import LOSSES

__all__ = ["MetaQAPConfig", "LITE_BACKBONES", "BACKBONE_KEYS", "META_LEARNER_METHODS", "timm_normalization"]

BACKBONE_KEYS = ("name", "image_size", "mean", "std")
META_LEARNER_METHODS = ("mean", "stepwise", "ridge", "nnls")
# The metaqap-lite architecture: the four backbones with real ImageNet weights available without a hub. Their
# input normalisation is read from timm's pretrained_cfg (see `_check_backbone`).
LITE_BACKBONES = (
    {"name": "tf_efficientnet_lite0", "image_size": 256},
    {"name": "tf_efficientnet_lite1", "image_size": 256},
    {"name": "tf_efficientnet_lite2", "image_size": 256},
    {"name": "mobilenetv2_100", "image_size": 256},
)


def _fail(message: str) -> None:
    raise ValueError(f"MetaQAPConfig: {message}")


def timm_normalization(name: str) -> dict[str, list[float]]:
    """The input `mean`/`std` that timm's pretrained weights for `name` expect (its `pretrained_cfg`; timm's
    defaults, the ImageNet statistics, for a model registered without one)."""
    pretrained_cfg = timm.get_pretrained_cfg(name) or PretrainedCfg()
    return {"mean": list(pretrained_cfg.mean), "std": list(pretrained_cfg.std)}


def _check_backbone(index: int, spec: Any) -> dict:
    if not isinstance(spec, dict):
        _fail(f"backbones[{index}] must be a dict with keys {BACKBONE_KEYS}, got {type(spec).__name__}")
    unknown = set(spec) - set(BACKBONE_KEYS)
    if unknown:
        _fail(f"backbones[{index}] has unknown keys {sorted(unknown)}; allowed: {BACKBONE_KEYS}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        _fail(f"backbones[{index}]['name'] must be a timm model name, got {name!r}")
    if "mean" not in spec or "std" not in spec:
        spec = {**timm_normalization(name), **spec}
    size = spec.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        _fail(f"backbones[{index}] ({name}) image_size must be an int >= 32, got {size!r}")
    for key in ("mean", "std"):
        values = spec[key]
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            _fail(f"backbones[{index}] ({name}) {key} must be 3 numbers (R, G, B), got {values!r}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            _fail(f"backbones[{index}] ({name}) {key} must be finite numbers, got {values!r}")
    if any(v <= 0 for v in spec["std"]):
        _fail(f"backbones[{index}] ({name}) std must be positive, got {spec['std']!r}")
    return {"name": name, "image_size": size, "mean": [float(v) for v in spec["mean"]],
            "std": [float(v) for v in spec["std"]]}


class MetaQAPConfig(PretrainedConfig):
    r"""
    Configuration of [`MetaQAPModel`].

    The model scores an image with several timm CNN backbones. Each backbone sees the image resized to its own
    `image_size` and normalised with its own `mean`/`std`; the spatial mean and standard deviation of its feature
    maps from every stage are pooled into one vector, a regression head turns that into a base score, and a linear
    meta-learner combines the base scores into the final score. Heads and meta-learner work on a unit scale (0 = `mos_range[0]`,
    1 = `mos_range[1]`); outputs are mapped back to the checkpoint's MOS scale. Higher is always better.

    Args:
        backbones (`list[dict]`, *optional*, defaults to `LITE_BACKBONES`):
            One dict per base model: `name` (timm model name), `image_size` (square input side in pixels),
            `mean` and `std` (per-channel input normalisation the backbone's weights expect; default: what timm's
            `pretrained_cfg` for that model says).
        head_hidden_size (`int`, *optional*, defaults to 0):
            0 gives a linear head; a positive value a two-layer MLP head with that hidden width.
        head_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the head's inputs and hidden layer (training only).
        meta_learner (`dict`, *optional*):
            `method` (one of `"mean"`, `"stepwise"`, `"ridge"`, `"nnls"`: how it was fitted), `coefficients` (one per
            backbone; 0 means the base model is not used) and `intercept`. Defaults to the plain average. This is
            the meta-learner's only home: it is fitted by stacking, not by gradient descent, and the model reads
            it from here at every forward, so editing config.json changes the scores.
        mos_range (`list[float]`, *optional*, defaults to `[0.0, 1.0]`):
            The MOS scale scores are reported on: `[worst, best]`.
        mos_name (`str`, *optional*, defaults to `"MOS"`):
            What the score is, e.g. `"BIQ2021 MOS (0-1)"`.
        loss (`str`, *optional*, defaults to `"quality_aware"`):
            Training loss name from `metaqap_hf.losses` (`"quality_aware"`, `"rank"`, `"mse"`).
        loss_kwargs (`dict`, *optional*):
            Keyword arguments of that loss (e.g. its two weights).
        fault_head (`dict`, *optional*):
            A classifier of what is wrong with a photo, on the pooled features of every backbone together:
            `types` (the class names, e.g. the distortion registry's types and `"none"`), `labels` (what a person
            calls each class), `families` (the fault family of each class: `"blur"`, `"noise"`, ...) and
            `hidden_size` (0: linear). None (the default): the model has no fault head, and its weights and
            scores are those of a checkpoint written before fault heads existed.
    """

    model_type = "metaqap"

    def __init__(
        self,
        backbones: list[dict] | None = None,
        head_hidden_size: int = 0,
        head_dropout: float = 0.0,
        meta_learner: dict | None = None,
        mos_range: list[float] | tuple[float, float] = (0.0, 1.0),
        mos_name: str = "MOS",
        loss: str = "quality_aware",
        loss_kwargs: dict | None = None,
        fault_head: dict | None = None,
        **kwargs,
    ):
        if backbones is None:
            backbones = [dict(spec) for spec in LITE_BACKBONES]
        if not isinstance(backbones, (list, tuple)) or not backbones:
            _fail("backbones must be a non-empty list of dicts")
        self.backbones = [_check_backbone(i, spec) for i, spec in enumerate(backbones)]
        if len(set(self.backbone_ids)) != len(self.backbones):
            _fail(f"backbones repeat the same name and image_size: {self.backbone_ids}")

        # Checkpoints written before version 0.2 name the only pooling there is; nothing else is accepted.
        if kwargs.pop("feature_pooling", "mean_std") != "mean_std":
            _fail("feature_pooling: only the spatial mean and std of every stage ('mean_std') is supported")
        if isinstance(head_hidden_size, bool) or not isinstance(head_hidden_size, int) or head_hidden_size < 0:
            _fail(f"head_hidden_size must be an int >= 0, got {head_hidden_size!r}")
        self.head_hidden_size = head_hidden_size
        if not isinstance(head_dropout, (int, float)) or not 0.0 <= head_dropout < 1.0:
            _fail(f"head_dropout must be in [0, 1), got {head_dropout!r}")
        self.head_dropout = float(head_dropout)

        self.meta_learner = self._check_meta_learner(meta_learner, len(self.backbones))

        if not isinstance(mos_range, (list, tuple)) or len(mos_range) != 2:
            _fail(f"mos_range must be [worst, best], got {mos_range!r}")
        low, high = (float(v) for v in mos_range)
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            _fail(f"mos_range must be two finite numbers with worst < best, got {mos_range!r}")
        self.mos_range = [low, high]
        self.mos_name = str(mos_name)
        if loss not in LOSSES:
            _fail(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.loss = loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.fault_head = None if fault_head is None else self._check_fault_head(fault_head)
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)

    def set_meta_learner(self, method: str, coefficients: list[float], intercept: float) -> None:
        """Replace the meta-learner (validated as at construction), e.g. with a stacking fit."""
        self.meta_learner = self._check_meta_learner(
            {"method": method, "coefficients": list(coefficients), "intercept": intercept}, len(self.backbones))

    @staticmethod
    def _check_meta_learner(meta_learner: dict | None, num_backbones: int) -> dict:
        if meta_learner is None:
            return {"method": "mean", "coefficients": [1.0 / num_backbones] * num_backbones, "intercept": 0.0}
        if not isinstance(meta_learner, dict):
            _fail(f"meta_learner must be a dict, got {type(meta_learner).__name__}")
        unknown = set(meta_learner) - {"method", "coefficients", "intercept"}
        if unknown:
            _fail(f"meta_learner has unknown keys {sorted(unknown)}")
        method = meta_learner.get("method", "mean")
        if method not in META_LEARNER_METHODS:
            _fail(f"meta_learner method must be one of {META_LEARNER_METHODS}, got {method!r}")
        coefficients = meta_learner.get("coefficients", [1.0 / num_backbones] * num_backbones)
        if not isinstance(coefficients, (list, tuple)) or len(coefficients) != num_backbones:
            _fail(f"meta_learner coefficients must have one number per backbone ({num_backbones}), "
                  f"got {coefficients!r}")
        intercept = meta_learner.get("intercept", 0.0)
        values = [*coefficients, intercept]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            _fail(f"meta_learner coefficients and intercept must be finite numbers, got {meta_learner!r}")
        if not any(coefficients):
            _fail("meta_learner must give at least one backbone a non-zero coefficient")
        return {"method": method, "coefficients": [float(c) for c in coefficients], "intercept": float(intercept)}

    @staticmethod
    def _check_fault_head(fault_head: dict) -> dict:
        if not isinstance(fault_head, dict):
            _fail(f"fault_head must be a dict with types, labels, families and hidden_size, got "
                  f"{type(fault_head).__name__}")
        unknown = set(fault_head) - {"types", "labels", "families", "hidden_size"}
        if unknown:
            _fail(f"fault_head has unknown keys {sorted(unknown)}")
        lists = {key: fault_head.get(key) for key in ("types", "labels", "families")}
        for key, values in lists.items():
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
                _fail(f"fault_head {key} must be a list of non-empty strings, got {values!r}")
        sizes = {key: len(values) for key, values in lists.items()}
        if len(set(sizes.values())) != 1 or sizes["types"] < 2:
            _fail(f"fault_head types, labels and families must be equally long lists of at least 2 classes, got "
                  f"{sizes}")
        if len(set(lists["types"])) != sizes["types"]:
            _fail(f"fault_head types repeat a name: {lists['types']}")
        hidden_size = fault_head.get("hidden_size", 0)
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 0:
            _fail(f"fault_head hidden_size must be an int >= 0, got {hidden_size!r}")
        return {**{key: list(values) for key, values in lists.items()}, "hidden_size": hidden_size}

    @property
    def backbone_ids(self) -> list[str]:
        """Names the base scores are reported under: the timm name, with `@size` added where a name repeats."""
        names = [spec["name"] for spec in self.backbones]
        return [f"{spec['name']}@{spec['image_size']}" if names.count(spec["name"]) > 1 else spec["name"]
                for spec in self.backbones]
