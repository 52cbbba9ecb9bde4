"""Pretraining objectives: the (type, level) class layout, the pairs the ranking objective needs, each loss doing
what it says on a tiny model, and `pretrain` / `metaqap pretrain` with every objective."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS
from metaqap_hf.factory import create_model
from metaqap_hf.pretraining import DistortedStream, export_shards
from metaqap_hf.pretraining.objectives import (
    DISTORTION_CLASSES,
    PRISTINE_CLASS,
    QualityPretrainingModel,
    class_distortion_type,
    class_severity,
    distortion_class,
    pair_ranking_loss,
    weighted_objectives,
)
from metaqap_hf.pretraining.stage import PRETRAINING_MODEL_OPTIONS, PretrainingCollator, StreamSamples, pretrain

CROP = 48
METRICS = ("gmsd", "haarpsi", "mdsi")
TINY = [{"name": "test_efficientnet", "image_size": 64}, {"name": "test_resnet", "image_size": 64}]
RUN = dict(crop_size=CROP, metrics=METRICS, calibration_samples=8, validation_samples=8, mixed_precision="no",
           progress_bar=False, tensorboard=False, seed=5)


@pytest.fixture(scope="module")
def pristine_dir(tmp_path_factory) -> Path:
    """The shared pristine photos ($METAQAP_PRISTINE_DIR), else three scikit-image photos written as files."""
    shared = Path(os.environ.get("METAQAP_PRISTINE_DIR", "/work/shared/data/pristine"))
    if shared.is_dir():
        return shared
    root = tmp_path_factory.mktemp("pristine")
    for photo, name in ((data.astronaut(), "astronaut.png"), (data.chelsea(), "chelsea.png"),
                        (data.coffee(), "coffee.png")):
        Image.fromarray(photo).save(root / name)
    return root


def test_class_layout_follows_the_distortion_registry():
    assert len(DISTORTION_CLASSES) == 1 + len(DISTORTION_TYPES) * NUM_LEVELS == 126
    assert DISTORTION_CLASSES[PRISTINE_CLASS] == "pristine"
    indices = [distortion_class(kind, level) for kind in DISTORTION_TYPES for level in range(1, NUM_LEVELS + 1)]
    assert indices == list(range(1, 126))
    assert [DISTORTION_CLASSES[i] for i in indices[:2]] == [f"{DISTORTION_TYPES[0]}/1", f"{DISTORTION_TYPES[0]}/2"]
    classes = torch.arange(126)
    assert class_severity(classes).tolist() == [0] + [level for _ in DISTORTION_TYPES for level in range(1, 6)]
    assert class_distortion_type(classes).tolist() == [0] + [t + 1 for t in range(25) for _ in range(5)]
    with pytest.raises(ValueError, match="no distortion class"):
        distortion_class("jpeg", 6)


def test_objective_weights_are_checked():
    assert weighted_objectives(["ranking", "classification"], {"ranking": 0.5}) == {"ranking": 0.5,
                                                                                   "classification": 1.0}
    with pytest.raises(ValueError, match="unknown"):
        weighted_objectives(["regression", "sharpness"])
    with pytest.raises(ValueError, match="not selected"):
        weighted_objectives(["regression"], {"ranking": 2.0})
    with pytest.raises(ValueError, match="positive"):
        weighted_objectives(["ranking"], {"ranking": 0.0})


def test_ranking_loss_penalises_only_pairs_out_of_order():
    severity = torch.tensor([1, 3, 4, 2, 0, 5])  # pairs: (1 < 3), (4 > 2), (pristine < 5)
    right = torch.tensor([0.9, 0.5, 0.2, 0.6, 1.0, 0.1], requires_grad=True)
    assert pair_ranking_loss(right, severity).item() == 0
    wrong = torch.tensor([0.5, 0.9, 0.6, 0.2, 0.1, 1.0], requires_grad=True)
    loss = pair_ranking_loss(wrong, severity, margin=0.05)
    assert loss.item() == pytest.approx((0.45 + 0.45 + 0.95) / 3)
    loss.backward()
    # Gradient descent raises the milder crop of each pair and lowers the worse one.
    assert (wrong.grad[[0, 3, 4]] < 0).all() and (wrong.grad[[1, 2, 5]] > 0).all()
    with pytest.raises(ValueError, match="pairs"):
        pair_ranking_loss(torch.zeros(3), torch.zeros(3))


def test_stream_pairs_share_content_and_type_at_two_levels(pristine_dir):
    stream = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=40, seed=4, metrics=METRICS,
                             calibration_samples=8, pairs=True, pristine_fraction=0.3)
    undistorted = 0
    for pair in range(20):
        (crop_a, image_a, kind_a, level_a), (crop_b, image_b, kind_b, level_b) = (
            stream._draw(0, 0, 2 * pair + member) for member in (0, 1))
        assert torch.equal(crop_a, crop_b) and level_a != level_b and 1 <= level_b <= NUM_LEVELS
        if kind_a == "pristine":
            undistorted += 1
            assert level_a == 0 and torch.equal(image_a, crop_a) and kind_b in DISTORTION_TYPES
        else:
            assert kind_a == kind_b
    assert 0 < undistorted < 20
    view = StreamSamples(stream)
    assert len(view) == 20
    item = view[7]
    assert item["pixel_values"].shape == (2, 3, CROP, CROP)
    assert item["distortion_class"].tolist() == [stream.sample(14)["distortion_class"],
                                                 stream.sample(15)["distortion_class"]]
    batch = PretrainingCollator()([view[0], view[1]])
    assert batch["pixel_values"].shape == (4, 3, CROP, CROP) and batch["labels"].shape == (4,)
    assert torch.equal(batch["pixel_values"][2:], view[1]["pixel_values"])


def _tiny_model(objectives: dict, **options) -> QualityPretrainingModel:
    return create_model(TINY, pretrained=False, seed=0, model_class=QualityPretrainingModel,
                        pretraining_objectives=objectives, **{**PRETRAINING_MODEL_OPTIONS, **options})


def test_each_objective_trains_what_it_names():
    """A few steps on one fixed batch: classification learns the classes, ranking orders the pairs."""
    torch.manual_seed(0)
    pixels = torch.rand(8, 3, 32, 32)
    classes = torch.tensor([1, 3, 10, 6, 0, 120, 51, 52])
    model = _tiny_model({"classification": 1.0, "ranking": 1.0}, head_dropout=0.0)  # deterministic losses
    assert len(model.classifiers) == 2 and model.classifiers[0].linear.out_features == 126
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    @torch.no_grad()
    def losses():
        features = [model.base_features(pixels, i) for i in range(2)]
        base = torch.stack([head(f) for head, f in zip(model.heads, features)], 1)
        return model._losses(features, base, model.combine(base), None, classes)

    before = {name: float(value) for name, value in losses().items()}
    for _ in range(20):
        optimizer.zero_grad()
        output = model(pixels, distortion_class=classes)
        output.loss.backward()
        optimizer.step()
    after = {name: float(value) for name, value in losses().items()}
    assert after["classification"] < 0.5 * before["classification"]
    assert after["ranking"] < before["ranking"] and after["ranking"] < 0.02
    assert float(model(pixels, distortion_class=classes).loss.detach()) == pytest.approx(sum(after.values()), rel=1e-4)
    with pytest.raises(ValueError, match="needs distortion_class"):
        model(pixels, labels=torch.rand(8))
    regression = _tiny_model({"regression": 1.0})
    assert len(regression.classifiers) == 0
    with pytest.raises(ValueError, match="needs labels"):
        regression(pixels, distortion_class=classes)


def test_pretraining_with_every_objective(pristine_dir, tmp_path):
    weights = {"regression": 1.0, "classification": 0.5, "ranking": 2.0}
    final = pretrain(pristine_dir, tmp_path / "run", backbones=TINY, pretrained=False, steps=3, batch_size=4,
                     objectives=list(weights), objective_weights={"classification": 0.5, "ranking": 2.0}, **RUN)
    settings = json.loads((tmp_path / "run" / "pretraining.json").read_text())
    assert settings["objectives"] == weights and settings["samples_per_epoch"] == 12
    assert settings["validation_samples"] == 8
    assert json.loads((final / "config.json").read_text())["pretraining_objectives"] == weights
    saved = load_file(final / "model.safetensors")
    assert saved["classifiers.1.linear.weight"].shape[0] == 126
    start = _tiny_model(weights)
    assert not torch.equal(saved["classifiers.0.linear.weight"], start.classifiers[0].linear.weight)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [3]
    # Its backbones hand on to a plain model, as regression-only pretraining's do.
    plain = create_model(TINY, pretrained=False, backbones_from=final, **PRETRAINING_MODEL_OPTIONS)
    assert all(torch.equal(value, saved[f"backbones.1.{key}"])
               for key, value in plain.backbones[1].state_dict().items())

    with pytest.raises(ValueError, match="even"):
        pretrain(pristine_dir, tmp_path / "odd", backbones=TINY, pretrained=False, steps=1, batch_size=3,
                 objectives=["ranking"], **RUN)
    stream = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=2, metrics=METRICS,
                             calibration_samples=8)
    export_shards(stream, tmp_path / "shards", num_samples=12, shard_size=12)
    with pytest.raises(ValueError, match="only the stream"):
        pretrain(None, tmp_path / "replay", shards=tmp_path / "shards", backbones=TINY, pretrained=False, steps=1,
                 batch_size=2, objectives=["ranking"], **RUN)


def test_pretrain_command_objectives(pristine_dir, tmp_path, capsys):
    from metaqap_cli import main

    common = ["pretrain", "--pristine-dir", str(pristine_dir), "--backbones", "tiny", "--random-init",
              "--metrics", *METRICS, "--crop-size", str(CROP), "--steps", "1", "--batch-size", "4",
              "--calibration-samples", "8", "--validation-samples", "4", "--dtype", "float32", "--quiet"]
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in ("--objectives", "regression", "classification", "ranking",
                                              "--ranking-weight"))
    assert main([*common, "--output-dir", str(tmp_path / "run"), "--objectives", "classification", "ranking",
                 "--ranking-weight", "3"]) == 0
    final = Path(json.loads(capsys.readouterr().out)["checkpoint"])
    assert json.loads((final / "config.json").read_text())["pretraining_objectives"] == {
        "classification": 1.0, "ranking": 3.0}
    assert main([*common, "--output-dir", str(tmp_path / "x"), "--ranking-weight", "2"]) == 2
    assert "not selected: ['ranking']" in capsys.readouterr().err
