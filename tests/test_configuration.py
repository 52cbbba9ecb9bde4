import json

import pytest

from metaqap_hf import LITE_BACKBONES, MetaQAPConfig


def test_default_config_is_the_lite_ensemble():
    config = MetaQAPConfig()
    assert [b["name"] for b in config.backbones] == [b["name"] for b in LITE_BACKBONES]
    assert config.meta_learner["coefficients"] == pytest.approx([0.25] * 4)
    assert config.backbone_ids == [b["name"] for b in LITE_BACKBONES]


def test_round_trip_through_json(tmp_path):
    config = MetaQAPConfig(
        backbones=[{"name": "test_efficientnet", "image_size": 64}, {"name": "test_efficientnet", "image_size": 96}],
        meta_learner={"method": "stepwise", "coefficients": [0.0, 1.1], "intercept": -0.1},
        mos_range=[0, 100], mos_name="KonIQ MOS (0-100)",
    )
    config.save_pretrained(tmp_path)
    loaded = MetaQAPConfig.from_pretrained(tmp_path)
    assert loaded.backbones == config.backbones
    assert loaded.meta_learner == config.meta_learner
    assert loaded.mos_range == [0.0, 100.0]
    assert loaded.backbone_ids == ["test_efficientnet@64", "test_efficientnet@96"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "metaqap"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbones": []}, "non-empty list"),
        ({"backbones": ["resnet50"]}, "must be a dict"),
        ({"backbones": [{"name": "", "image_size": 64}]}, "timm model name"),
        ({"backbones": [{"name": "x", "image_size": 16}]}, "image_size must be an int >= 32"),
        ({"backbones": [{"name": "x", "image_size": 64, "std": [0.2, 0.0, 0.2]}]}, "std must be positive"),
        ({"backbones": [{"name": "x", "image_size": 64, "mean": [0.5, 0.5]}]}, "mean must be 3 numbers"),
        ({"backbones": [{"name": "x", "image_size": 64, "size": 3}]}, "unknown keys"),
        ({"backbones": [{"name": "x", "image_size": 64}, {"name": "x", "image_size": 64}]}, "repeat"),
        ({"feature_pooling": "max"}, "only the spatial mean and std"),
        ({"loss": "huber"}, "loss must be one of"),
        ({"head_hidden_size": -1}, "head_hidden_size"),
        ({"head_dropout": 1.0}, "head_dropout"),
        ({"mos_range": [5, 1]}, "worst < best"),
        ({"mos_range": [0, float("nan")]}, "worst < best"),
        ({"meta_learner": {"method": "magic"}}, "method must be one of"),
        ({"meta_learner": {"coefficients": [1.0]}}, "one number per backbone"),
        ({"meta_learner": {"coefficients": [0.0, 0.0, 0.0, 0.0]}}, "non-zero"),
        ({"meta_learner": {"coefficients": [1, 1, 1, float("inf")]}}, "finite"),
        ({"loss": ""}, "loss must be"),
    ],
)
def test_invalid_values_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MetaQAPConfig(**kwargs)
