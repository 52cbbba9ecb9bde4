"""`QualityLoss`: a real differentiable loss on the model's inference path. Gradients reach the images (and agree
with finite differences) but never the frozen quality model; the bundled model's loss ranks a blurred photo worse
and a gradient step on its pixels lowers it as predicted; batches, reductions and dtypes behave as torch losses do;
the restoration example runs and raises the pipeline's score."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel, QualityLoss, load_image

from _images import random_photo

PHOTOS = Path(__file__).parent / "fixtures" / "photos"


def as_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture
def tiny_loss(tiny_checkpoint) -> QualityLoss:
    return QualityLoss(str(tiny_checkpoint), reduction="none")


@pytest.fixture(scope="module")
def default_loss() -> QualityLoss:
    return QualityLoss()


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return {name: as_tensor(load_image(PHOTOS / f"{name}.png")) for name in ("scene", "scene_blur")}


def test_gradients_reach_the_images_and_match_finite_differences(tiny_checkpoint):
    # float64 images keep the finite differences above the float32 rounding inside the model (its resize, pooling
    # and score are float32); the processor's size is 96 here to keep the test fast.
    loss_fn = QualityLoss(str(tiny_checkpoint), image_processor=MetaQAPImageProcessor(size={"height": 96, "width": 96}),
                          reduction="sum")
    torch.manual_seed(0)
    images = torch.rand(2, 3, 40, 56, dtype=torch.float64, requires_grad=True)
    loss_fn(images).backward()
    gradient = images.grad
    assert gradient.shape == images.shape and torch.isfinite(gradient).all() and gradient.abs().sum() > 0

    direction = torch.randn_like(images)
    step = 1e-3
    with torch.no_grad():
        change = (loss_fn(images + step * direction) - loss_fn(images - step * direction)) / (2 * step)
    assert float(change) == pytest.approx(float((gradient * direction).sum()), rel=0.1)


def test_the_quality_model_is_frozen_and_never_updated(tiny_checkpoint):
    loss_fn = QualityLoss(str(tiny_checkpoint))
    restoration = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid())
    holder = torch.nn.ModuleDict({"restoration": restoration, "quality": loss_fn}).train()
    assert not loss_fn.model.training and loss_fn.training  # train() on a parent leaves the quality model in eval
    assert not any(parameter.requires_grad for parameter in loss_fn.model.parameters())
    before = {name: value.clone() for name, value in loss_fn.model.state_dict().items()}
    restoration_before = restoration[0].weight.detach().clone()

    optimizer = torch.optim.SGD(holder.parameters(), lr=0.5)
    images = as_tensor(random_photo(3, size=(48, 48)))
    for _ in range(2):
        optimizer.zero_grad()
        loss_fn(restoration(images)).backward()
        optimizer.step()
    assert not torch.equal(restoration[0].weight, restoration_before)  # the restoration model learns
    for name, value in loss_fn.model.state_dict().items():  # weights and batch-norm statistics alike
        assert torch.equal(value, before[name]), name
    assert all(parameter.grad is None for parameter in loss_fn.model.parameters())


def test_reductions_and_batches_agree_with_one_image_at_a_time(tiny_checkpoint):
    images = torch.stack([as_tensor(random_photo(seed, size=(64, 80)))[0] for seed in range(3)])
    per_image = QualityLoss(str(tiny_checkpoint), reduction="none")
    losses = per_image(images)
    assert losses.shape == (3,)
    one_by_one = torch.cat([per_image(images[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(losses, one_by_one, atol=1e-6, rtol=0)
    assert len({round(float(v), 6) for v in losses}) == 3, "different images should get different losses"
    torch.testing.assert_close(QualityLoss(str(tiny_checkpoint))(images), losses.mean())
    torch.testing.assert_close(QualityLoss(str(tiny_checkpoint), reduction="sum")(images), losses.sum())


def test_the_loss_is_the_score_from_the_top_of_the_mos_scale(tiny_loss):
    images = as_tensor(random_photo(5))
    worst, best = tiny_loss.model.config.mos_range
    score = tiny_loss.score(images)
    torch.testing.assert_close(tiny_loss(images), (best - score) / (best - worst))


def test_scores_match_the_pipeline_at_the_processor_size(tiny_loss, tiny_checkpoint):
    """Images already at the processor's size pass unresized on both paths: the same score up to 8-bit rounding."""
    image = random_photo(9, size=(512, 512))
    expected = pipeline("image-quality", model=str(tiny_checkpoint))(image)["score"]
    with torch.no_grad():
        assert float(tiny_loss.score(as_tensor(image))) == pytest.approx(expected, abs=1e-5)


def test_bundled_model_prefers_the_sharp_photo_and_scores_as_the_pipeline(default_loss, scene):
    with torch.no_grad():
        sharp, blurred = (float(default_loss(scene[name])) for name in ("scene", "scene_blur"))
        blurred_score = float(default_loss.score(scene["scene_blur"]))
    assert sharp < blurred
    # Resized from 288x192 to 512x512: the float resize against the pipeline's 8-bit one (see the module docstring).
    expected = pipeline("image-quality")(str(PHOTOS / "scene_blur.png"))["score"]
    assert blurred_score == pytest.approx(expected, abs=1e-3)


def test_a_gradient_step_on_the_pixels_lowers_the_bundled_model_loss_as_predicted(default_loss, scene):
    pixels = scene["scene_blur"].clone().requires_grad_(True)
    loss = default_loss(pixels)
    (gradient,) = torch.autograd.grad(loss, pixels)
    step = 0.5 / 255 / gradient.abs().max()  # half a grey level at most
    with torch.no_grad():
        decrease = float(loss - default_loss(pixels - step * gradient))
    predicted = float(step * gradient.pow(2).sum())  # first order: step * |gradient|^2
    assert decrease > 0 and decrease == pytest.approx(predicted, rel=0.3)


def test_dtype_follows_the_input(tiny_checkpoint):
    loss_fn = QualityLoss(str(tiny_checkpoint))
    images = as_tensor(random_photo(2))
    reference = float(loss_fn(images))
    for dtype in (torch.float64, torch.bfloat16):
        value = loss_fn(images.to(dtype))
        assert value.dtype == dtype and next(loss_fn.model.parameters()).dtype == dtype
        assert float(value) == pytest.approx(reference, abs=0.05 if dtype == torch.bfloat16 else 1e-5)


def test_a_loaded_model_is_frozen_in_place_and_the_resize_follows_the_processor(tiny_checkpoint):
    model = MetaQAPModel.from_pretrained(tiny_checkpoint).train()
    loss_fn = QualityLoss(model, image_processor=MetaQAPImageProcessor(size={"height": 96, "width": 96}))
    assert loss_fn.model is model and not model.training
    assert (loss_fn.size, loss_fn.mode) == ((96, 96), "bicubic")
    assert "resize=96x96" in repr(loss_fn).splitlines()[1]


def test_bad_input_is_named(tiny_loss):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(3, 8, 8\)"):
        tiny_loss(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="got \\(1, 1, 8, 8\\)"):
        tiny_loss(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point.*uint8"):
        tiny_loss(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="reduction must be one of"):
        QualityLoss(tiny_loss.model, reduction="average")
    with pytest.raises(TypeError, match="MetaQAPModel, a checkpoint path"):
        QualityLoss(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_the_restoration_example_raises_the_pipeline_score(tmp_path):
    """examples/restore_with_quality_loss.py as README shows it for CI: two Adam steps on a blurred fixture photo."""
    script = Path(__file__).resolve().parents[1] / "examples" / "restore_with_quality_loss.py"
    completed = subprocess.run(
        [sys.executable, str(script), str(PHOTOS / "scene.png"), "--steps", "2", "--max-side", "128",
         "--output-dir", str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    scores = dict(re.findall(r"^  (original|blur|restored)\s+([0-9.]+)", completed.stdout, flags=re.MULTILINE))
    assert set(scores) == {"original", "blur", "restored"}, completed.stdout
    assert float(scores["blur"]) < float(scores["original"])  # the damage is seen
    assert float(scores["restored"]) > float(scores["blur"])  # the steps raise the score on the 8-bit PNG
    assert {"original.png", "blur.png", "restored.png"} <= {path.name for path in tmp_path.iterdir()}
