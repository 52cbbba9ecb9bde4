"""`metaqap export onnx`: a tiny checkpoint is exported once through the command line; onnxruntime then scores
processed photos, at batch sizes other than the traced one, as PyTorch and the pipeline do (within 1e-4)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from metaqap_cli import main
from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel
from metaqap_hf.factory import create_model

from _images import random_photo

PHOTOS = sorted((Path(__file__).parent / "fixtures" / "photos").glob("scene*"))

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = create_model("tiny", pretrained=False, mos_range=[1.0, 5.0], mos_name="test MOS (1-5)")
    model.config.set_meta_learner("ridge", [0.7, 0.4], -0.05)
    path = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(path)
    MetaQAPImageProcessor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The ONNX file and what the command printed (the export takes a few seconds: once per module)."""
    output = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "onnx", str(checkpoint), str(output)]) == 0
    return output, printed.getvalue()


def test_the_command_reports_the_contract_and_the_parity_check(exported):
    output, printed = exported
    assert f"wrote {output}" in printed and "pixel_values float32 (batch, 3, 512, 512) in [0, 1]" in printed
    assert "base_scores (batch, 2: test_efficientnet, test_resnet)" in printed
    assert "onnxruntime matches PyTorch" in printed
    assert not list(output.parent.glob(".*.tmp"))  # the temporary file was renamed into place
    assert not list(output.parent.glob("*.data"))  # weights inside the one file


def test_onnxruntime_scores_processed_photos_as_pytorch_and_the_pipeline(exported, checkpoint):
    output, _ = exported
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "pixel_values"
    assert session.get_inputs()[0].shape[1:] == [3, 512, 512] and isinstance(session.get_inputs()[0].shape[0], str)
    assert [o.name for o in session.get_outputs()] == ["score", "base_scores", "std"]

    photos = [random_photo(seed, size=(60 + 9 * seed, 80)) for seed in range(4)]
    pixels = MetaQAPImageProcessor.from_pretrained(checkpoint)(images=photos, return_tensors="pt")["pixel_values"]
    model = MetaQAPModel.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        expected = model(pixel_values=pixels, return_dict=False)
    for batch in (pixels[:1], pixels):  # the export traced a batch of 2: both sizes run on the dynamic dimension
        score, base_scores, std = session.run(None, {"pixel_values": batch.numpy()})
        count = len(batch)
        np.testing.assert_allclose(score, expected[0][:count].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(base_scores, expected[1][:count].numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(std, expected[2][:count].numpy(), rtol=0, atol=1e-4)
    assert len({round(float(s), 5) for s in score}) == 4, "different photos should score differently"

    # the file returns the model's own output: the pipeline's raw_score (its score is that, clipped to mos_range)
    results = pipeline("image-quality", model=str(checkpoint))(photos)
    np.testing.assert_allclose(score, [result["raw_score"] for result in results], rtol=0, atol=1e-4)
    low, high = model.config.mos_range
    np.testing.assert_allclose(np.clip(score, low, high), [result["score"] for result in results], rtol=0, atol=1e-4)


def test_onnxruntime_on_the_shared_pixel_path_gives_the_pipelines_scores(exported, checkpoint):
    """`image_utils.pixel_values` feeds the file what the pipeline feeds the model: the fixture photos score alike."""
    from metaqap_hf.image_utils import load_image, pixel_values

    output, _ = exported
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    processor = MetaQAPImageProcessor.from_pretrained(checkpoint)
    batch = pixel_values([load_image(path) for path in PHOTOS], processor)
    raw_scores = session.run(["score"], {"pixel_values": batch.numpy()})[0]
    results = pipeline("image-quality", model=str(checkpoint))([str(path) for path in PHOTOS])
    np.testing.assert_allclose(raw_scores, [result["raw_score"] for result in results], rtol=0, atol=1e-6)


def test_the_file_carries_the_mos_scale_and_the_input_contract(exported, checkpoint):
    output, _ = exported
    metadata = {entry.key: entry.value for entry in onnx.load(str(output)).metadata_props}
    assert json.loads(metadata["metaqap.mos_range"]) == [1.0, 5.0]
    assert metadata["metaqap.mos_name"] == "test MOS (1-5)"
    assert json.loads(metadata["metaqap.backbone_ids"]) == ["test_efficientnet", "test_resnet"]
    assert "512x512" in metadata["metaqap.input"] and metadata["metaqap.source"] == str(checkpoint)


def test_bad_requests_are_named_and_write_nothing(checkpoint, tmp_path, capsys):
    assert main(["export", "onnx", str(checkpoint), str(tmp_path / "a.onnx"), "--opset", "17"]) == 2
    assert "opset must be 18 or later" in capsys.readouterr().err
    assert main(["export", "onnx", str(checkpoint), str(tmp_path / "missing" / "a.onnx")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.onnx"))
