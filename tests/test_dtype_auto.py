"""`dtype="auto"`, the default of scoring, evaluation and train-frozen's feature extraction: bfloat16 on CPUs that
compute it natively, float32 on those that emulate it (25-40x slower there). The CPU's capability is faked both ways
(`metaqap_hf.devices.cpu_has_native_bfloat16`), so the test means the same on AVX2 and AVX-512 machines."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from metaqap_hf import MetaQAPImageProcessor, devices
from metaqap_hf.evaluation import evaluate_checkpoint
from metaqap_hf.factory import create_model
from metaqap_hf.scoring import ImageScorer, score_to_output
from metaqap_hf.training.frozen import extract_features, train_frozen

from _images import random_photo
from _scoring import save_tiny_checkpoint


@pytest.fixture(params=[False, True], ids=["avx2-only", "native-bfloat16"])
def native_bfloat16(request, monkeypatch):
    """This CPU as one without, then with, native bfloat16 (the real check is cached: the name is replaced)."""
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: request.param)
    return request.param


def expected_dtype(native: bool) -> torch.dtype:
    return torch.bfloat16 if native else torch.float32


def test_auto_is_the_default_everywhere():
    defaults = {
        "ImageScorer": inspect.signature(ImageScorer).parameters["dtype"].default,
        "score_to_output": inspect.signature(score_to_output).parameters["dtype"].default,
        "evaluate_checkpoint": inspect.signature(evaluate_checkpoint).parameters["dtype"].default,
        "train_frozen": inspect.signature(train_frozen).parameters["feature_dtype"].default,
        "extract_features": inspect.signature(extract_features).parameters["dtype"].default,
    }
    assert set(defaults.values()) == {"auto"}, defaults
    from metaqap_cli import evaluate, score, training

    for module, command, arguments in ((score, "score", []), (evaluate, "evaluate", ["ckpt", "--output-dir", "x"]),
                                       (training, "train-frozen", ["--output-dir", "x"])):
        assert module.build_parser(command).parse_args(arguments).dtype == "auto", command


def test_resolve_dtype_auto(native_bfloat16):
    assert devices.resolve_dtype("auto", "cpu") == expected_dtype(native_bfloat16)
    assert devices.resolve_dtype("float32", "cpu") == torch.float32  # an explicit choice always wins
    assert devices.resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_the_scorer_computes_in_the_resolved_dtype(native_bfloat16, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny")
    scorer = ImageScorer(checkpoint, device="cpu", runtime="torch")
    assert scorer.dtype == expected_dtype(native_bfloat16)
    assert {parameter.dtype for parameter in scorer.model.parameters()} == {expected_dtype(native_bfloat16)}
    assert ImageScorer(checkpoint, device="cpu", dtype="float32", runtime="torch").dtype == torch.float32


def test_feature_extraction_computes_in_the_resolved_dtype(native_bfloat16, tmp_path):
    """train-frozen's features: with "auto", exactly those of the precision the CPU computes natively."""
    paths = []
    for seed in range(3):
        paths.append(str(tmp_path / f"{seed}.png"))
        random_photo(seed, size=(48, 64)).save(paths[-1])
    model = create_model("tiny", pretrained=False).eval()
    processor = MetaQAPImageProcessor(size={"height": 64, "width": 64})
    features = {dtype: extract_features(model, processor, paths, 0, dtype=dtype)
                for dtype in ("auto", torch.float32, torch.bfloat16)}
    assert not np.array_equal(features[torch.float32], features[torch.bfloat16])  # the two really differ
    np.testing.assert_array_equal(features["auto"], features[expected_dtype(native_bfloat16)])
