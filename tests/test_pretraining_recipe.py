"""The one-GPU recipe's CPU dry run: a handful of BIQ2021 sample images and pristine photos, tiny backbones, three
steps a stage; its checkpoint comes in shards and loads through `AutoModel` and `pipeline("image-quality")`. Also the
device-side batches it trains on."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data

from metaqap_hf.distortions import NUM_LEVELS
from metaqap_hf.pretraining.objectives import DISTORTION_CLASSES, PRISTINE_CLASS, class_severity
from metaqap_hf.pretraining.recipe import (
    DeviceDistortionBatches,
    MOSCropBatches,
    OneGPURecipe,
    _crops,
    pretrain_finetune_stack,
)

SAMPLE = Path(os.environ.get("METAQAP_BIQ2021_SAMPLE", "/work/shared/data/biq2021-sample"))
PRISTINE = Path(os.environ.get("METAQAP_PRISTINE_DIR", "/work/shared/data/pristine"))
LABELS = {"train": "Train (Images and MOS).csv", "test": "Test (Images and MOS).csv"}


@pytest.fixture(scope="module")
def handful(tmp_path_factory) -> tuple[Path, Path]:
    """BIQ2021's layout holding 24 train and 4 test images of the shared sample, and three pristine photos."""
    if not SAMPLE.is_dir():
        pytest.skip(f"No BIQ2021 sample: set METAQAP_BIQ2021_SAMPLE or provide {SAMPLE}.")
    root = tmp_path_factory.mktemp("recipe-data")
    images = {path.name.casefold(): path for path in (SAMPLE / "Images").iterdir()}
    (root / "biq" / "Images").mkdir(parents=True)
    for split, count in (("train", 24), ("test", 4)):
        with open(SAMPLE / LABELS[split], newline="") as stream:
            rows = list(csv.reader(stream))
        for name, *_ in rows[1:count + 1]:
            source = images[name.strip().casefold()]
            shutil.copy(source, root / "biq" / "Images" / source.name)
        with open(root / "biq" / LABELS[split], "w", newline="") as stream:
            csv.writer(stream).writerows(rows[:count + 1])
    (root / "pristine").mkdir()
    for photo, name in ((data.astronaut(), "astronaut.png"), (data.chelsea(), "chelsea.png"),
                        (data.coffee(), "coffee.png")):
        Image.fromarray(photo[:160, :200]).save(root / "pristine" / name)
    return root / "biq", root / "pristine"


def test_crops_are_the_slices_at_the_drawn_offsets():
    images = torch.randint(0, 256, (5, 3, 20, 24), dtype=torch.uint8)
    indices = np.array([4, 0, 4])
    crops = _crops(images, indices, 8, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    tops, lefts = rng.integers(0, 13, 3), rng.integers(0, 17, 3)
    for crop, index, top, left in zip(crops, indices, tops, lefts):
        assert torch.equal(crop, images[index, :, top:top + 8, left:left + 8].float() / 255)


def test_device_batches_hold_pairs_of_one_crop_at_two_levels():
    content = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    batches = DeviceDistortionBatches(content, 32, 64, seed=1)
    pristine, distorted, classes = batches.draw()
    assert distorted.shape == (64, 3, 32, 32) and classes.shape == (64,)
    assert torch.equal(pristine[0::2], pristine[1::2])  # one crop per pair
    first, second = classes[0::2], classes[1::2]
    kept = first == PRISTINE_CLASS
    assert (second != PRISTINE_CLASS).all() and (class_severity(first) != class_severity(second)).all()
    same_type = (first[~kept] - 1) // NUM_LEVELS == (second[~kept] - 1) // NUM_LEVELS
    assert same_type.all()
    assert torch.equal(distorted[0::2][kept], pristine[0::2][kept])
    assert not torch.equal(distorted[1::2], pristine[1::2])
    # Seeded by (seed, batch number): the next batch differs, a new stream repeats the first.
    assert not torch.equal(batches.draw()[2], classes)
    assert torch.equal(DeviceDistortionBatches(content, 32, 64, seed=1).draw()[2], classes)
    labeler = batches.calibrate(2, ("gmsd", "mdsi"))
    batch = batches()
    assert set(batch) == {"pixel_values", "distortion_class", "labels"}
    assert ((batch["labels"] >= 0) & (batch["labels"] <= 1)).all() and labeler is batches.labeler
    # Over many pairs every class appears about as often: pristine at about 1/126 of the crops.
    classes = torch.cat([DeviceDistortionBatches(content, 8, 128, seed=s).draw()[2] for s in range(12)])
    share = float((classes == PRISTINE_CLASS).float().mean())
    assert 0.4 / len(DISTORTION_CLASSES) < share < 2 / len(DISTORTION_CLASSES)
    assert len(torch.unique(classes)) > 0.95 * len(DISTORTION_CLASSES)


def test_mos_batches_crop_and_mirror_with_their_scores():
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 10, 10).contiguous()
    batch = MOSCropBatches(images, torch.tensor([0.1, 0.2, 0.3, 0.4]), 6, 16, seed=2)()
    assert batch["pixel_values"].shape == (16, 3, 6, 6)
    image_of = (batch["pixel_values"][:, 0, 0, 0] * 255).round().long()
    assert torch.allclose(batch["labels"], (image_of + 1).float() / 10)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model, one file or shards."""
    return {key: value for path in sorted(folder.glob("*.safetensors")) for key, value in load_file(path).items()}


def test_recipe_dry_run_writes_a_sharded_checkpoint_that_scores(handful, tmp_path):
    from transformers import AutoModel, pipeline

    import metaqap_hf  # noqa: F401  (registers the model and the pipeline)

    biq, pristine = handful
    recipe = OneGPURecipe(backbones="tiny", pretrained=False, image_side=96, image_size=64, crop_size=64,
                          batch_size=8, max_steps=3, num_workers=0, log_every=2, calibration_batches=2,
                          validation_fraction=0.25, meta_learner="ridge", max_shard_size="1MB")
    records = []
    report = pretrain_finetune_stack(biq, pristine, tmp_path / "out", recipe, log=records.append)

    out = tmp_path / "out"
    assert report["data"] == {**report["data"], "train_images": 18, "validation_images": 6, "pristine_images": 3,
                              "test_images_read": 0}
    stages = report["stages"]
    assert [name for name in stages] == ["pretraining", "finetuning test_efficientnet", "finetuning test_resnet",
                                         "stacking"]
    assert all(stages[name]["steps"] == 3 and stages[name]["samples"] == 24 for name in list(stages)[:3])
    losses = [record["loss"] for record in records if "loss" in record]
    assert [record["step"] for record in records if "loss" in record] == [2, 2, 2]  # read back every 2 steps
    assert all(math.isfinite(loss) for loss in losses)
    assert json.loads((out / "recipe.json").read_text())["stages"]["stacking"] == stages["stacking"]

    shards = sorted(out.glob("*.safetensors"))
    # tensors of at most 1 MB per file, plus the file's header (the largest tiny tensor is 0.66 MB)
    assert len(shards) > 1 and all(path.stat().st_size <= 1_000_000 + 65_536 for path in shards)
    assert (out / "model.safetensors.index.json").is_file() and (out / "README.md").is_file()
    # The stacked model holds each fine-tuned backbone, and fine-tuning started from the pretrained ones.
    pretrained = _weights(out / "stages" / "pretrained")
    assert len(list((out / "stages" / "pretrained").glob("*.safetensors"))) > 1  # stages come back in shards too
    assert "classifiers.0.linear.weight" in pretrained
    model = AutoModel.from_pretrained(out).eval()
    assert [(spec["name"], spec["image_size"]) for spec in model.config.backbones] == [
        ("test_efficientnet", 64), ("test_resnet", 64)]
    for index, name in enumerate(["test_efficientnet", "test_resnet"]):
        tuned = _weights(out / "stages" / f"finetuned-{index}-{name}")
        state = model.backbones[index].state_dict()
        assert all(torch.equal(value, tuned[f"backbones.0.{key}"]) for key, value in state.items())
        moved = [not torch.equal(value, pretrained[f"backbones.{index}.{key}"])
                 for key, value in state.items() if value.is_floating_point()]
        assert any(moved)
    assert model.config.meta_learner["coefficients"] == stages["stacking"]["coefficients"]

    scorer = pipeline("image-quality", model=str(out))
    results = scorer([str(path) for path in sorted((biq / "Images").iterdir())[:2]])
    assert len(results) == 2 and all(math.isfinite(result["score"]) for result in results)


def test_recipe_settings_are_checked_before_any_work():
    with pytest.raises(ValueError, match="even"):
        OneGPURecipe(batch_size=7)
    with pytest.raises(ValueError, match="fit in"):
        OneGPURecipe(image_side=256, image_size=448)
    with pytest.raises(ValueError, match="objectives"):
        OneGPURecipe(objectives=("regression", "colourfulness"))
    assert OneGPURecipe().max_shard_size == "15MB"  # what a remote GPU machine can return, file by file


def test_a_zero_budget_trains_nothing():
    """`time_budget_s=0` is the recipe's control arm: fine-tuning straight from the starting backbones."""
    from metaqap_hf.factory import create_model
    from metaqap_hf.pretraining.recipe import train_for

    model = create_model("tiny", pretrained=False, mos_range=(0.0, 1.0))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    batches = MOSCropBatches(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0.2, 0.8]), 8, 4)
    result = train_for(model, batches, budget_s=0.0, max_steps=None, learning_rate=1e-3, head_learning_rate=1e-3,
                       dtype=torch.float32, log_every=1, log=print)
    assert result["steps"] == 0 and batches.batches_drawn == 0
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_backbones_load_from_a_sharded_checkpoint(tmp_path):
    from metaqap_hf.factory import create_model

    saved = create_model("tiny", pretrained=False, seed=3, mos_range=(0.0, 1.0))
    saved.save_pretrained(tmp_path / "sharded", max_shard_size="1MB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    fresh = create_model("tiny", pretrained=False, seed=4, backbones_from=tmp_path / "sharded", mos_range=(0.0, 1.0))
    for source, target in zip(saved.backbones, fresh.backbones):
        assert all(torch.equal(value, target.state_dict()[key]) for key, value in source.state_dict().items())
