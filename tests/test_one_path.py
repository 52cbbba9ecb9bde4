"""One path from image to pixels: the pipeline, `ImageScorer`, `metaqap score` and the demo's scoring function give
the same scores for the fixture photos (they share `metaqap_hf.image_utils`; the ONNX export's agreement is in
test_export.py, beside its one export), names that moved still import from their old place with a warning, and a
checkpoint saved by 0.1 scores as it does once saved again."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from metaqap_cli import main
from metaqap_hf import DEFAULT_MODEL_PATH, MetaQAPImageProcessor, MetaQAPImageProcessorPil, MetaQAPModel
from metaqap_hf.cards import ModelCardFacts, save_checkpoint
from metaqap_hf.image_utils import pixel_values, rescale_pixels, resize_pixels
from metaqap_hf.scoring import ImageScorer

from _images import random_photo
from _scoring import save_tiny_checkpoint

PHOTOS = sorted((Path(__file__).parent / "fixtures" / "photos").glob("scene*"))
APP = Path(__file__).resolve().parents[1] / "spaces" / "metaqap-demo" / "app.py"
AGREE = 1e-6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def pipeline_scores(checkpoint):
    return [result["score"] for result in pipeline("image-quality", model=str(checkpoint))([str(p) for p in PHOTOS])]


def test_the_pipeline_scorer_command_line_and_demo_agree(checkpoint, pipeline_scores, tmp_path):
    assert len(PHOTOS) == 4 and len({round(score, 5) for score in pipeline_scores}) == 4  # distinct photos
    scorer = ImageScorer(checkpoint, device="cpu", dtype="float32")  # the pipeline's precision
    library = [item.score for item in scorer.score_files(PHOTOS)]
    output = tmp_path / "scores.jsonl"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["score", *map(str, PHOTOS), "--model", str(checkpoint), "--device", "cpu", "--dtype", "float32",
                     "--output", str(output)]) == 0
    command = {Path(row["path"]).name: row["score"] for row in map(json.loads, output.read_text().splitlines())}
    np.testing.assert_allclose(library, pipeline_scores, rtol=0, atol=AGREE)
    np.testing.assert_allclose([command[path.name] for path in PHOTOS], pipeline_scores, rtol=0, atol=AGREE)

    pytest.importorskip("gradio", reason="the demo extra is not installed")
    specification = importlib.util.spec_from_file_location("metaqap_demo_app", APP)
    app = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(app)
    demo = [item.score for item in app.score_photos(scorer, [str(path) for path in PHOTOS])]
    np.testing.assert_allclose(demo, pipeline_scores, rtol=0, atol=AGREE)


@pytest.mark.parametrize("processor_class", [MetaQAPImageProcessor, MetaQAPImageProcessorPil])
def test_pixel_values_are_the_processors_own_bit_for_bit(processor_class):
    processor = processor_class(size={"height": 48, "width": 40})
    photos = [random_photo(seed, size=(30 + 7 * seed, 50)) for seed in range(3)]
    expected = processor(images=photos, return_tensors="pt")["pixel_values"]
    resized = torch.stack([resize_pixels(photo, processor) for photo in photos])
    assert resized.dtype == torch.uint8 and tuple(resized.shape) == (3, 3, 48, 40)
    assert torch.equal(rescale_pixels(resized, processor), expected)
    assert torch.equal(pixel_values(photos, processor), expected)


@pytest.mark.parametrize(("old_module", "name", "new_module", "new_name"), [
    ("metaqap_hf.image_processing_metaqap", "load_image", "metaqap_hf.image_utils", "load_image"),
    ("metaqap_hf.image_processing_metaqap", "processor_input_size", "metaqap_hf.image_utils", "processor_input_size"),
    ("metaqap_hf.pipeline_image_quality", "to_pil_image", "metaqap_hf.image_utils", "to_pil_image"),
    ("metaqap_hf.pipeline_image_quality", "fetch_image_bytes", "metaqap_hf.image_utils", "fetch_image_bytes"),
    ("metaqap_hf.scoring.scorer", "resolve_device", "metaqap_hf.devices", "resolve_device"),
    ("metaqap_hf.scoring.scorer", "DTYPES", "metaqap_hf.devices", "DTYPES"),
    ("metaqap_hf.scoring", "resolve_device", "metaqap_hf.devices", "resolve_device"),
    ("metaqap_hf.data.images", "ImageInput", "metaqap_hf.data.images", "DatasetImage"),
    ("metaqap_hf.hub", "write_model_card", "metaqap_hf.cards", "write_model_card"),
    ("metaqap_hf.hub", "ModelCardFacts", "metaqap_hf.cards", "ModelCardFacts"),
    ("metaqap_hf.training", "predict", "metaqap_hf.evaluation", "predict"),
    ("metaqap_hf.training.loop", "Predictions", "metaqap_hf.evaluation", "Predictions"),
    ("metaqap_hf.training.checkpointing", "save_checkpoint", "metaqap_hf.training.checkpointing",
     "save_training_state"),
])
def test_moved_names_still_import_from_their_old_place_with_a_warning(old_module, name, new_module, new_name):
    with pytest.warns(DeprecationWarning, match=rf"{old_module}\.{name} moved to {new_module}\.{new_name}"):
        moved = getattr(importlib.import_module(old_module), name)
    assert moved is getattr(importlib.import_module(new_module), new_name)
    with pytest.raises(AttributeError):
        getattr(importlib.import_module(old_module), "no_such_name")


def test_a_checkpoint_saved_by_0_1_scores_the_same_saved_again(tmp_path):
    """The bundled model was written by 0.1.0; saved again by this version (`save_checkpoint`), it loads and scores
    identically."""
    assert json.loads((DEFAULT_MODEL_PATH / "config.json").read_text())["model_type"] == "metaqap"
    resaved = save_checkpoint(MetaQAPModel.from_pretrained(DEFAULT_MODEL_PATH),
                              MetaQAPImageProcessor.from_pretrained(DEFAULT_MODEL_PATH), tmp_path / "resaved",
                              ModelCardFacts(training_dataset="BIQ2021", training_command="resaved by this test"))
    photos = [str(PHOTOS[0])]
    old = pipeline("image-quality", model=str(DEFAULT_MODEL_PATH))(photos)
    new = pipeline("image-quality", model=str(resaved))(photos)
    # the same float32 values once loaded; stored half-size in one file and float32 in the other, they lie at other
    # offsets, and the last bits of a sum may differ (up to 1e-7 on the bundled model)
    assert [result["score"] for result in new] == pytest.approx([result["score"] for result in old], abs=1e-6)
    for old_result, new_result in zip(old, new):
        assert new_result["base_scores"] == pytest.approx(old_result["base_scores"], abs=1e-6)
