"""The bundled default model itself: its scores on four committed photos (tests/fixtures/make_photos.py) are pinned,
so any change to the checkpoint or to the path from file to score shows up here.

When the bundled model is replaced on purpose, update `WEIGHTS_SHA256` and `PINNED` from
`metaqap score tests/fixtures/photos --format json` (float32) and say so in the commit."""

import hashlib
from pathlib import Path

import pytest
import torch

import metaqap_hf
from metaqap_hf.scoring import ImageScorer

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
WEIGHTS_SHA256 = "a819ff0d2ed10281"  # first 16 hex digits of the bundled model.safetensors
PINNED = {  # float32, through the library's scoring path
    "scene.png": 0.671163,
    "scene_blur.png": 0.442273,
    "scene_jpeg.jpg": 0.658955,
    "scene_noise.png": 0.629667,
}


@pytest.fixture(scope="module")
def scores():
    scorer = ImageScorer(dtype="float32", runtime="torch")  # the pins' precision, whatever this CPU's "auto" is
    return {Path(item.path).name: item.score for item in scorer.score_files([PHOTOS], batch_size=4)}


def test_the_bundled_weights_are_stored_in_half_precision_and_load_in_float32():
    """Stored as `weights.store_in_half_precision` writes them (float16 matrices and dense kernels, float32 vectors
    and depthwise kernels), which halves the file; the model computes in the config's float32."""
    from safetensors import safe_open

    from metaqap_hf import MetaQAPModel

    with safe_open(metaqap_hf.DEFAULT_MODEL_PATH / "model.safetensors", "pt") as weights:
        stored = {key: weights.get_slice(key) for key in weights.keys()}
        dtypes = {key: (piece.get_dtype(), len(piece.get_shape()), piece.get_shape()[1:2]) for key, piece in stored.items()}
    for key, (dtype, ndim, in_channels) in dtypes.items():
        if dtype == "I64":
            continue
        expected = "F32" if ndim <= 1 or (ndim == 4 and in_channels == [1]) else "F16"
        assert dtype == expected, key
    model = MetaQAPModel.from_pretrained(metaqap_hf.DEFAULT_MODEL_PATH)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}


def test_the_pins_belong_to_the_bundled_weights():
    weights = metaqap_hf.DEFAULT_MODEL_PATH / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert digest == WEIGHTS_SHA256, "the bundled model changed: update WEIGHTS_SHA256 and PINNED (see the docstring)"


def test_scores_are_pinned(scores):
    assert scores.keys() == PINNED.keys()
    for name, expected in PINNED.items():
        assert scores[name] == pytest.approx(expected, abs=1e-4), name


def test_the_undamaged_photo_scores_best_and_blur_worst(scores):
    assert max(scores, key=scores.get) == "scene.png"
    assert min(scores, key=scores.get) == "scene_blur.png"


def test_pipeline_gives_the_same_scores(scores):
    from transformers import pipeline

    scorer = pipeline("image-quality")
    for name, score in scores.items():
        assert scorer(str(PHOTOS / name))["score"] == pytest.approx(score, abs=1e-5), name


@pytest.mark.slow
def test_onnx_runtime_gives_the_pinned_scores(tmp_path):
    """`metaqap score --runtime onnx` (the export of the bundled model: a minute or two on 2 cores) scores the
    fixture photos as PyTorch float32 does, within 1e-4."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    scorer = ImageScorer(runtime="onnx", cache_dir=tmp_path)
    assert scorer.runtime == "onnx"
    onnx_scores = {Path(item.path).name: item.score for item in scorer.score_files([PHOTOS], batch_size=3)}
    assert onnx_scores.keys() == PINNED.keys()
    for name, expected in PINNED.items():
        assert onnx_scores[name] == pytest.approx(expected, abs=1e-4), name
