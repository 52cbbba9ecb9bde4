"""The quality-aware pretraining stage: a short run on real photos, its checkpoint, and handing its backbones on."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from _datasets import write_biq2021_layout

from metaqap_hf.factory import create_model
from metaqap_hf.pretraining import DistortedStream, PseudoMOSLabeler, export_shards, find_images
from metaqap_hf.training import FinetuningOptions, prepare_finetuning
from metaqap_hf.pretraining.stage import (
    PRETRAINING_MODEL_OPTIONS,
    StreamSamples,
    load_backbones_from_checkpoint,
    pretrain,
)

CROP = 48
METRICS = ("gmsd", "haarpsi", "mdsi")
TINY = [{"name": "test_efficientnet", "image_size": 64}, {"name": "test_resnet", "image_size": 64}]
RUN = dict(crop_size=CROP, metrics=METRICS, calibration_samples=16, validation_samples=8, mixed_precision="no",
           progress_bar=False, tensorboard=False, seed=3)


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


@pytest.fixture(scope="module")
def pretrained_run(pristine_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("pretrain")
    final = pretrain(pristine_dir, output, backbones=TINY, pretrained=False, steps=3, batch_size=4, **RUN)
    return final


def _backbone_state(model, index: int) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.backbones[index].state_dict().items()}


def test_pretraining_writes_a_checkpoint_that_learned(pretrained_run):
    output = pretrained_run.parent
    assert pretrained_run == output / "final"
    assert (pretrained_run / "model.safetensors").is_file() and (pretrained_run / "config.json").is_file()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if record["kind"] == "train"]
    evals = [record for record in records if record["kind"] == "eval"]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert evals and math.isfinite(evals[-1]["eval_loss"]) and -1.0 <= evals[-1]["srocc"] <= 1.0
    result = json.loads((output / "training_result.json").read_text())
    assert result["global_step"] == 3
    settings = json.loads((output / "pretraining.json").read_text())
    assert settings["steps"] == 3 and settings["samples_per_epoch"] == 12 and settings["metrics"] == list(METRICS)
    labeler = PseudoMOSLabeler.load(output / "pseudo_mos_labeler.json")
    assert list(labeler.metrics) == list(METRICS)

    config = json.loads((pretrained_run / "config.json").read_text())
    assert config["mos_range"] == [0.0, 1.0] and config["loss"] == "quality_aware"
    # The run started from the model `create_model` gives for its seed; training moved the backbones.
    start = create_model(TINY, pretrained=False, seed=RUN["seed"], **PRETRAINING_MODEL_OPTIONS)
    saved = load_file(pretrained_run / "model.safetensors")
    for index in range(len(TINY)):
        changed = [not torch.equal(saved[f"backbones.{index}.{key}"], value)
                   for key, value in start.backbones[index].state_dict().items() if value.is_floating_point()]
        assert any(changed)


def test_backbones_load_into_a_fresh_model_by_name(pretrained_run):
    saved = load_file(pretrained_run / "model.safetensors")
    # Another order, another input size and other heads: matching goes by timm name only.
    fresh = create_model([{**TINY[1], "image_size": 96}, TINY[0]], pretrained=False, seed=11, **PRETRAINING_MODEL_OPTIONS)
    heads_before = {key: value.clone() for key, value in fresh.heads.state_dict().items()}
    assert any(not torch.equal(value, saved[f"backbones.1.{key}"])
               for key, value in fresh.backbones[0].state_dict().items() if value.is_floating_point())

    loaded = load_backbones_from_checkpoint(fresh, pretrained_run)

    assert loaded == ["test_resnet", "test_efficientnet"]
    for fresh_index, saved_index in ((0, 1), (1, 0)):
        state = fresh.backbones[fresh_index].state_dict()
        prefix = f"backbones.{saved_index}."
        expected = {key[len(prefix):]: value for key, value in saved.items() if key.startswith(prefix)}
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], expected[key]) for key in state)
    assert all(torch.equal(value, heads_before[key]) for key, value in fresh.heads.state_dict().items())


def test_loading_refuses_what_does_not_fit(tmp_path):
    single = create_model(TINY[:1], pretrained=False, seed=1, **PRETRAINING_MODEL_OPTIONS)
    single.save_pretrained(tmp_path / "single")
    both = create_model(TINY, pretrained=False, seed=2, **PRETRAINING_MODEL_OPTIONS)
    with pytest.raises(KeyError, match="no backbone 'test_resnet'"):
        load_backbones_from_checkpoint(both, tmp_path / "single")
    resnet_before = _backbone_state(both, 1)
    assert load_backbones_from_checkpoint(both, tmp_path / "single", strict=False) == ["test_efficientnet"]
    assert all(torch.equal(value, resnet_before[key]) for key, value in both.backbones[1].state_dict().items())
    assert all(torch.equal(value, single.backbones[0].state_dict()[key])
               for key, value in both.backbones[0].state_dict().items())
    with pytest.raises(FileNotFoundError, match="not a saved MetaQAPModel"):
        load_backbones_from_checkpoint(both, tmp_path)


def test_stream_view_follows_the_stream(pristine_dir):
    stream = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=5, seed=1, metrics=METRICS,
                             calibration_samples=8)
    view = StreamSamples(stream)
    assert len(view) == 5
    view.set_epoch(2)
    item = view[3]
    expected = stream.sample(3, epoch=2)
    assert set(item) == {"pixel_values", "labels"}
    assert torch.equal(item["pixel_values"], expected["pixel_values"]) and torch.equal(item["labels"],
                                                                                        expected["labels"])
    assert not torch.equal(view[3]["pixel_values"], stream.sample(3, epoch=0)["pixel_values"])


def test_pretraining_replays_exported_shards(pristine_dir, tmp_path):
    stream = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=2, metrics=METRICS,
                             calibration_samples=8)
    export_shards(stream, tmp_path / "shards", num_samples=12, shard_size=5)
    final = pretrain(None, tmp_path / "run", shards=tmp_path / "shards", backbones=TINY[:1], pretrained=False,
                     steps=2, batch_size=2, **{**RUN, "validation_samples": 4})
    settings = json.loads((final.parent / "pretraining.json").read_text())
    assert settings["samples_per_epoch"] == 8 and settings["validation_samples"] == 4
    assert not (final.parent / "pseudo_mos_labeler.json").exists()
    assert json.loads((final.parent / "training_result.json").read_text())["global_step"] == 2
    with pytest.raises(ValueError, match="too few"):
        pretrain(None, tmp_path / "run2", shards=tmp_path / "shards", backbones=TINY[:1], pretrained=False,
                 steps=1, batch_size=2, **{**RUN, "validation_samples": 12})
    with pytest.raises(ValueError, match="pristine images"):
        pretrain(None, tmp_path / "run3", backbones=TINY[:1], pretrained=False, steps=1, batch_size=2, **RUN)


def test_pretrain_command(pristine_dir, tmp_path, capsys):
    from metaqap_cli import main

    status = main(["pretrain", "--pristine-dir", str(pristine_dir), "--output-dir", str(tmp_path / "run"),
                   "--backbones", "tiny", "--random-init", "--metrics", *METRICS, "--crop-size", str(CROP),
                   "--steps", "2", "--batch-size", "2", "--calibration-samples", "8", "--validation-samples", "4",
                   "--dtype", "float32", "--quiet"])
    assert status == 0
    final = Path(json.loads(capsys.readouterr().out)["checkpoint"])
    assert final == tmp_path / "run" / "final" and (final / "model.safetensors").is_file()
    assert main(["pretrain", "--pristine-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "missing: no such file" in capsys.readouterr().err
    assert main(["pretrain", "--pristine-dir", str(pristine_dir), "--shards", str(tmp_path),
                 "--output-dir", str(tmp_path / "x")]) == 2
    assert "--shards replaces --pristine-dir" in capsys.readouterr().err


def test_pretraining_content_then_fine_tuning_from_its_backbones(pristine_dir, tmp_path, capsys):
    """The paper's two stages from the command line: pretraining on the pristine photos plus a benchmark's training
    images (content only, never its test images), then fine-tuning whose backbones start from that checkpoint."""
    from metaqap_cli import main

    biq = write_biq2021_layout(tmp_path / "biq", train=20, test=4, size=64)
    listed = tmp_path / "more.png"
    Image.fromarray(data.coffee()).save(listed)
    (tmp_path / "list.txt").write_text(f"{listed}\n")
    assert main(["pretrain", "--pristine-dir", str(pristine_dir), "--files-from", str(tmp_path / "list.txt"),
                 "--content-dataset", "biq2021", "--data-dir", str(biq), "--output-dir", str(tmp_path / "qa"),
                 "--backbones", "tiny", "--random-init", "--metrics", *METRICS, "--crop-size", str(CROP),
                 "--steps", "2", "--batch-size", "2", "--calibration-samples", "8", "--validation-samples", "4",
                 "--dtype", "float32", "--quiet"]) == 0
    final = Path(json.loads(capsys.readouterr().out)["checkpoint"])
    content = [Path(path) for path in json.loads((tmp_path / "qa" / "pretraining.json").read_text())[
        "pristine_images"]]
    train_names = {line.split(",")[0] for line in (biq / "Train (Images and MOS).csv").read_text().splitlines()[1:]}
    test_names = {line.split(",")[0] for line in (biq / "Test (Images and MOS).csv").read_text().splitlines()[1:]}
    assert {path.name for path in content if path.parent == biq / "Images"} == train_names
    assert not test_names & {path.name for path in content} and listed in content
    assert len(content) == len(find_images(pristine_dir)) + 1 + len(train_names)

    # The fine-tuning model starts from the pretrained backbones (heads fresh); the command trains from there.
    saved = load_file(final / "model.safetensors")
    setup = prepare_finetuning("biq2021", FinetuningOptions(data_dir=biq, backbones="tiny", backbones_from=final,
                                                            image_size=64))
    for index in range(2):
        state = setup.model.backbones[index].state_dict()
        assert all(torch.equal(value, saved[f"backbones.{index}.{key}"]) for key, value in state.items())
    assert main(["train", "--data-dir", str(biq), "--output-dir", str(tmp_path / "ft"), "--backbones", "tiny",
                 "--backbones-from", str(final), "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--validation-fraction", "0.3",
                 "--dtype", "float32"]) == 0
    card = (tmp_path / "ft" / "best" / "README.md").read_text()
    assert f"backbones starting from the saved model {final}" in card
    assert main(["train", "--data-dir", str(biq), "--output-dir", str(tmp_path / "ft2"), "--backbones", "tiny",
                 "--backbones-from", str(tmp_path / "biq"), "--epochs", "1"]) == 2
    assert "not a saved MetaQAPModel" in capsys.readouterr().err
