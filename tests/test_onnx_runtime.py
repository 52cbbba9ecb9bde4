"""The ONNX Runtime backend (`metaqap_hf.onnx_runtime`): a tiny checkpoint is exported once into the cache (the
module's own HF_HOME), then onnxruntime scores the fixture photos for `ImageScorer`, `metaqap score` and the pipeline
as PyTorch float32 does (within 1e-4); later scorers reuse the file; the cache key follows the weights, the
meta-learner and the input size; `runtime="auto"` takes ONNX only where its export is cached; outputs are taken by
name; a missing onnxruntime names the extra to install."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metaqap_cli import main
from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel
from metaqap_hf.onnx_runtime import (
    INSTALL_HINT,
    OnnxRuntimeModel,
    onnx_cache_dir,
    onnx_cache_key,
    resolve_runtime,
)
from metaqap_hf.scoring import ImageScorer, OptionError

from _scoring import save_tiny_checkpoint

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

PHOTOS = Path(__file__).parent / "fixtures" / "photos"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(autouse=True)
def _module_cache(hf_home, monkeypatch):
    """This module's exports stay in its own cache: other modules' `runtime="auto"` never finds them."""
    monkeypatch.setenv("HF_HOME", str(hf_home))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def torch_scores(checkpoint):
    scorer = ImageScorer(checkpoint, device="cpu", dtype="float32", runtime="torch")
    return {Path(item.path).name: item for item in scorer.score_files([PHOTOS], batch_size=4)}


@pytest.fixture(scope="module")
def onnx_scorer(checkpoint, hf_home):
    """The export (a few seconds), once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        return ImageScorer(checkpoint, device="cpu", runtime="onnx")


def assert_same_scores(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name, item in expected.items():
        other = got[name]
        assert other.ok and item.ok, name
        for field in ("score", "raw_score", "std"):
            assert getattr(other, field) == pytest.approx(getattr(item, field), abs=1e-4), (name, field)
        assert other.base_scores.keys() == item.base_scores.keys()
        np.testing.assert_allclose(list(other.base_scores.values()), list(item.base_scores.values()), atol=1e-4)


def test_the_scorer_runs_onnxruntime_with_pytorchs_scores(onnx_scorer, torch_scores):
    assert onnx_scorer.runtime == "onnx" and onnx_scorer.dtype == torch.float32
    assert isinstance(onnx_scorer.model, OnnxRuntimeModel)
    # the export traced a batch of 2: other sizes run on its dynamic dimension; decoding processes work ahead of it
    for batch_size, num_workers in ((1, 0), (3, 1)):
        scores = {Path(item.path).name: item for item in onnx_scorer.score_files([PHOTOS], batch_size=batch_size,
                                                                                  num_workers=num_workers)}
        assert_same_scores(scores, torch_scores)
    assert len({round(item.raw_score, 4) for item in torch_scores.values()}) == 4, "photos should score differently"


def test_the_export_is_cached_and_reused(onnx_scorer, checkpoint):
    path = onnx_scorer.model.path
    assert path.parent == onnx_cache_dir() and list(path.parent.iterdir()) == [path]  # no temporary file left
    written = path.stat().st_mtime_ns
    for runtime in ("onnx", "auto"):  # auto takes ONNX Runtime once the export is cached
        again = ImageScorer(checkpoint, device="cpu", runtime=runtime)
        assert again.runtime == "onnx" and again.model.path == path
    assert path.stat().st_mtime_ns == written and list(path.parent.iterdir()) == [path]


def test_auto_stays_on_pytorch_until_an_export_is_cached(checkpoint, tmp_path):
    empty = tmp_path / "cache"
    scorer = ImageScorer(checkpoint, device="cpu", dtype="float32", cache_dir=empty)
    assert scorer.runtime == "torch" and isinstance(scorer.model, MetaQAPModel)
    assert not empty.exists()  # nothing was exported unasked


def test_the_cache_key_follows_weights_meta_learner_and_input_size(checkpoint):
    model = MetaQAPModel.from_pretrained(checkpoint).eval()
    key = onnx_cache_key(model, (64, 64))
    assert onnx_cache_key(MetaQAPModel.from_pretrained(checkpoint).eval(), (64, 64)) == key  # stable across loads
    assert onnx_cache_key(model, (96, 96)) != key
    model.config.set_meta_learner("ridge", [0.6, 0.5], 0.01)
    assert onnx_cache_key(model, (64, 64)) != key
    model.config.set_meta_learner("ridge", [0.6, 0.5], 0.0)
    assert onnx_cache_key(model, (64, 64)) == key
    with torch.no_grad():
        next(model.heads[0].parameters()).add_(1e-3)
    assert onnx_cache_key(model, (64, 64)) != key


def test_the_pipeline_takes_a_runtime(onnx_scorer, checkpoint, torch_scores):
    from transformers import pipeline

    names = sorted(torch_scores)
    photos = [str(PHOTOS / name) for name in names]
    fast = pipeline("image-quality", model=str(checkpoint), runtime="onnx")
    assert fast.runtime == "onnx" and fast.runtime_model.path == onnx_scorer.model.path  # the cached export
    plain = pipeline("image-quality", model=str(checkpoint))
    assert plain.runtime == "torch" and plain.runtime_model is None
    for got, expected in zip(fast(photos, batch_size=3), plain(photos)):
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
        assert got["raw_score"] == pytest.approx(expected["raw_score"], abs=1e-4)
        np.testing.assert_allclose(list(got["base_scores"].values()), list(expected["base_scores"].values()),
                                   atol=1e-4)


def test_metaqap_score_runtime_onnx(onnx_scorer, checkpoint, torch_scores, tmp_path):
    output = tmp_path / "scores.jsonl"
    assert main(["score", str(PHOTOS), "--model", str(checkpoint), "--runtime", "onnx", "-o", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    scores = {Path(row["path"]).name: row["score"] for row in rows if "path" in row}
    assert scores.keys() == torch_scores.keys()
    for name, item in torch_scores.items():
        assert scores[name] == pytest.approx(item.score, abs=1e-4), name


def test_outputs_are_taken_by_name(onnx_scorer, tmp_path):
    """An output the file adds (issue 20's `faults`, say), listed first, changes nothing."""
    graph_model = onnx.load(str(onnx_scorer.model.path))
    graph_model.graph.node.append(onnx.helper.make_node("Identity", ["std"], ["faults"]))
    graph_model.graph.output.insert(0, onnx.helper.make_tensor_value_info("faults", onnx.TensorProto.FLOAT,
                                                                          ["batch"]))
    extended = tmp_path / "extended.onnx"
    onnx.save(graph_model, str(extended))
    runtime_model = OnnxRuntimeModel(extended, onnx_scorer.config, threads=1)
    assert runtime_model.output_names[0] == "faults"
    processor = MetaQAPImageProcessor(size={"height": 64, "width": 64})
    pixels = processor(images=[np.full((40, 50, 3), value, np.uint8) for value in (30, 200)],
                       return_tensors="pt")["pixel_values"]
    got, expected = runtime_model(pixel_values=pixels), onnx_scorer.model(pixel_values=pixels)
    for name in ("score", "base_scores", "std"):
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_a_file_that_is_not_an_export_is_refused(onnx_scorer, tmp_path):
    graph_model = onnx.load(str(onnx_scorer.model.path))
    graph_model.graph.output.pop()  # drop std
    broken = tmp_path / "broken.onnx"
    onnx.save(graph_model, str(broken))
    with pytest.raises(ValueError, match="not a MetaQAP export"):
        OnnxRuntimeModel(broken, onnx_scorer.config)


def test_runtime_choices():
    assert resolve_runtime("auto", "cpu", "auto") == "onnx"
    assert resolve_runtime("auto", "cpu", "float32") == "onnx"
    assert resolve_runtime("auto", "cpu", "bfloat16") == "torch"
    assert resolve_runtime("torch", "cpu", "auto") == "torch"
    with pytest.raises(OptionError, match="accepted: auto, torch, onnx"):
        resolve_runtime("tensorrt")
    with pytest.raises(OptionError, match="computes in float32"):
        resolve_runtime("onnx", "cpu", torch.bfloat16)


def test_a_missing_onnxruntime_names_the_extra(monkeypatch, checkpoint):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args))
    assert resolve_runtime("auto", "cpu", "auto") == "torch"
    with pytest.raises(OptionError, match="needs onnxruntime, not installed") as error:
        ImageScorer(checkpoint, device="cpu", runtime="onnx")
    assert INSTALL_HINT in str(error.value) and INSTALL_HINT == 'pip install "metaqap-hf[onnx]"'
