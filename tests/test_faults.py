"""Diagnosis: the fault head's shapes and labels, checkpoints without one unchanged, `metaqap train-faults`, the
pipeline's `faults`/`top_k_faults`, `metaqap score --faults` in every format, the ONNX output, and the bundled
model naming blur and noise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import pipeline

import metaqap_hf
from metaqap_cli import main
from metaqap_hf import MetaQAPConfig, MetaQAPImageProcessor, MetaQAPModel
from metaqap_hf.distortions import DISTORTION_TYPES, distort
from metaqap_hf.distortions.families import FAULT_FAMILIES, NO_FAULT, fault_head_spec

from _images import random_photo
from _scoring import save_tiny_checkpoint

NUM_CLASSES = len(DISTORTION_TYPES) + 1


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny model saved without and with a fault head (every other weight identical)."""
    root = tmp_path_factory.mktemp("faults")
    return save_tiny_checkpoint(root / "plain"), save_tiny_checkpoint(root / "with-faults", fault_head=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for index in range(3):
        random_photo(index, size=(60 + 8 * index, 80)).save(folder / f"{index}.png")
    return folder


def test_the_head_has_one_logit_per_class_and_the_classes_are_named(tiny_config):
    spec = fault_head_spec()
    assert spec["types"] == [*DISTORTION_TYPES, NO_FAULT]
    assert set(spec["families"]) == set(FAULT_FAMILIES) and len(spec["labels"]) == len(set(spec["labels"]))
    assert dict(zip(spec["types"], spec["families"]))["motion_blur"] == "blur"
    assert dict(zip(spec["types"], spec["families"]))["white_noise"] == "noise"
    config = MetaQAPConfig(**{**tiny_config.to_dict(), "fault_head": spec})
    model = MetaQAPModel(config).eval()
    pixels = torch.rand(2, 3, 80, 80)
    with torch.no_grad():
        output = model(pixel_values=pixels, output_faults=True)
        plain = model(pixel_values=pixels)
        as_tuple = model(pixel_values=pixels, output_faults=True, return_dict=False)
    assert output.fault_logits.shape == (2, NUM_CLASSES)
    assert plain.fault_logits is None and len(model(pixel_values=pixels, return_dict=False)) == 3
    assert len(as_tuple) == 4 and torch.equal(as_tuple[3], output.fault_logits)
    assert torch.equal(output.score, plain.score)


def test_the_config_keeps_the_head_and_refuses_a_malformed_one(tmp_path, tiny_config):
    config = MetaQAPConfig(**{**tiny_config.to_dict(), "fault_head": fault_head_spec(hidden_size=16)})
    config.save_pretrained(tmp_path)
    assert MetaQAPConfig.from_pretrained(tmp_path).fault_head == fault_head_spec(hidden_size=16)
    bad = [{"types": ["a", "b"], "labels": ["a"], "families": ["x", "y"]},
           {"types": ["a", "a"], "labels": ["a", "b"], "families": ["x", "y"]},
           {"types": ["a", "b"], "labels": ["a", "b"], "families": ["x", "y"], "hidden_size": -1},
           {"types": ["a", "b"], "labels": ["a", "b"], "families": ["x", "y"], "colours": 3}]
    for spec in bad:
        with pytest.raises(ValueError, match="fault_head"):
            MetaQAPConfig(**{**tiny_config.to_dict(), "fault_head": spec})


def test_a_checkpoint_without_a_head_loads_its_own_weights_and_scores_as_with_one(checkpoints):
    plain_path, faults_path = checkpoints
    plain = MetaQAPModel.from_pretrained(plain_path).eval()
    with_head = MetaQAPModel.from_pretrained(faults_path).eval()
    assert plain.config.fault_head is None and not hasattr(plain, "fault_head")
    with safe_open(plain_path / "model.safetensors", "pt") as stored:
        assert set(plain.state_dict()) == set(stored.keys())
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = plain(pixel_values=pixels), with_head(pixel_values=pixels, output_faults=True)
        unasked = with_head(pixel_values=pixels)
        for name in ("score", "base_scores", "std"):
            assert torch.equal(getattr(unasked, name), getattr(after, name)), name
            # the same weights at other offsets of the file: the last bits of a sum may differ
            torch.testing.assert_close(getattr(before, name), getattr(after, name), rtol=0, atol=1e-6)
        with pytest.raises(ValueError, match="no fault head"):
            plain(pixel_values=pixels, output_faults=True)


def test_the_pipeline_adds_sorted_faults_only_when_asked(checkpoints, photos):
    plain_path, faults_path = checkpoints
    image = str(photos / "0.png")
    diagnose = pipeline("image-quality", model=str(faults_path))
    unasked, result = diagnose(image), diagnose(image, faults=True)
    assert json.dumps({key: value for key, value in result.items() if key != "faults"}) == json.dumps(unasked)
    plain_result = pipeline("image-quality", model=str(plain_path))(image)
    assert list(unasked) == list(plain_result) == ["score", "raw_score", "base_scores", "std"]
    assert unasked["score"] == pytest.approx(plain_result["score"], abs=1e-6)
    spec = fault_head_spec()
    family_of = dict(zip(spec["labels"], spec["families"]))
    assert len(result["faults"]) == 3
    assert all(fault["family"] == family_of[fault["label"]] for fault in result["faults"])
    scores = [fault["score"] for fault in result["faults"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    every = diagnose(image, top_k_faults=NUM_CLASSES)["faults"]
    assert sum(fault["score"] for fault in every) == pytest.approx(1.0, abs=1e-5)
    assert every[:3] == result["faults"]
    batched = diagnose([image, str(photos / "1.png")], top_k_faults=2, batch_size=2)
    assert [fault["label"] for fault in batched[0]["faults"]] == [fault["label"] for fault in every[:2]]
    assert batched[0]["faults"][0]["score"] == pytest.approx(every[0]["score"], abs=1e-6)
    made_with_faults = pipeline("image-quality", model=str(faults_path), faults=True)
    assert made_with_faults(image)["faults"] == result["faults"]
    assert "faults" not in made_with_faults(image, faults=False)
    for bad in (0, NUM_CLASSES + 1, True, 2.0):
        with pytest.raises(ValueError, match="top_k_faults"):
            diagnose(image, top_k_faults=bad)
    with pytest.raises(ValueError, match="no fault head"):
        pipeline("image-quality", model=str(plain_path))(image, faults=True)


def _score(capsys, *arguments) -> tuple[int, str]:
    status = main(["score", *map(str, arguments)])
    return status, capsys.readouterr()


@pytest.mark.parametrize("format", ["csv", "jsonl", "json", "table"])
def test_score_faults_adds_columns_and_without_it_the_output_is_unchanged(checkpoints, photos, tmp_path, capsys,
                                                                          format):
    plain_path, faults_path = checkpoints
    outputs = {}
    for name, model, extra in (("plain", plain_path, []), ("unasked", faults_path, []),
                               ("faults", faults_path, ["--faults", "2"])):
        outputs[name] = tmp_path / f"{name}.out"
        status, _ = _score(capsys, photos, "-m", model, "-f", format, "-o", outputs[name], *extra)
        assert status == 0
    text = {name: path.read_text() for name, path in outputs.items()}
    # Unasked, a model with a fault head writes what a model without one writes (to the last bits of the sums,
    # which depend on where the weights lie in the file)
    assert _six_decimals(text["unasked"].replace(str(faults_path), str(plain_path))) == _six_decimals(text["plain"])
    labels = set(fault_head_spec()["labels"])
    if format == "csv":  # the fault columns come after today's, which are unchanged to the byte
        header, *rows = [line.split(",") for line in text["faults"].splitlines()]
        assert header[-6:] == ["fault_1", "fault_1_family", "fault_1_score", "fault_2", "fault_2_family",
                               "fault_2_score"]
        assert len(rows) == 3 and all(row[-6] in labels and float(row[-4]) >= float(row[-1]) for row in rows)
        assert "".join(",".join(row[:-6]) + "\n" for row in [header, *rows]) == text["unasked"]
    elif format in ("jsonl", "json"):
        document = None if format == "jsonl" else json.loads(text["faults"])
        rows = [json.loads(line) for line in text["faults"].splitlines()] if document is None else document["results"]
        assert len(rows) == 3 and all(len(row["faults"]) == 2 and row["faults"][0]["label"] in labels
                                      for row in rows)
        for row in rows:
            del row["faults"]
        if document is None:
            assert "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows) == text["unasked"]
        else:
            assert document == json.loads(text["unasked"])
    else:
        header, _, *rows = text["faults"].splitlines()
        assert "fault" in header.split() and len(rows) == 3
        assert all(any(row[19:].startswith(label) for label in labels) for row in rows)
        assert [row[:19] + row[19 + 27:] for row in rows] == text["unasked"].splitlines()[2:]


def _six_decimals(text: str) -> str:
    return re.sub(r"\d+\.\d{7,}", lambda number: f"{float(number.group()):.6f}", text)


def test_score_faults_needs_a_model_with_a_head(checkpoints, photos, capsys):
    status, captured = _score(capsys, photos, "-m", checkpoints[0], "--faults")
    assert status == 2 and "--faults 3: this model has no fault head" in captured.err


@pytest.mark.slow  # an ONNX export: 15-50 s on 2 shared cores
def test_onnx_carries_the_fault_probabilities(checkpoints, tmp_path):
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from metaqap_hf.export import FAULT_OUTPUT_NAME, OUTPUT_NAMES, export_onnx

    plain_path, faults_path = checkpoints
    report = export_onnx(faults_path, tmp_path / "faults.onnx", faults=True, verify_batch_sizes=(2,))
    assert set(report.max_abs_diff) == {*OUTPUT_NAMES, FAULT_OUTPUT_NAME} and max(report.max_abs_diff.values()) < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "faults.onnx"), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["metaqap.fault_labels"]) == fault_head_spec()["labels"]
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    probabilities = session.run([FAULT_OUTPUT_NAME], {"pixel_values": pixels.numpy()})[0]
    model = MetaQAPModel.from_pretrained(faults_path).eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels, output_faults=True).fault_logits.softmax(-1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    with pytest.raises(ValueError, match="no fault head"):
        export_onnx(plain_path, tmp_path / "plain.onnx", faults=True)


def test_train_faults_gives_a_checkpoint_a_head_and_leaves_its_scores(checkpoints, tmp_path, capsys):
    plain_path, _ = checkpoints
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for index in range(6):
        random_photo(10 + index, size=(64, 72)).save(pristine / f"{index}.png")
    output = tmp_path / "trained"
    status = main(["train-faults", "--model", str(plain_path), "--output-dir", str(output), "--pristine-dir",
                   str(pristine), "--distorted-per-pristine", "2", "--holdout-every", "3", "--max-epochs", "3",
                   "--dtype", "float32"])
    assert status == 0
    report = json.loads((output / "fault_report.json").read_text())
    assert [Path(path).name for path in report["pristine"]["held_out"]] == ["2.png", "5.png"]
    assert report["samples"] == 4 * 3 and report["epochs"] <= 3
    trained = MetaQAPModel.from_pretrained(output).eval()
    plain = MetaQAPModel.from_pretrained(plain_path).eval()
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        output_with_head = trained(pixel_values=pixels, output_faults=True)
        torch.testing.assert_close(output_with_head.score, plain(pixel_values=pixels).score, rtol=0, atol=1e-6)
    assert output_with_head.fault_logits.shape == (2, NUM_CLASSES)
    assert MetaQAPImageProcessor.from_pretrained(output).size == MetaQAPImageProcessor.from_pretrained(plain_path).size


@pytest.mark.parametrize(("kind", "family"), [(None, NO_FAULT), ("gaussian_blur", "blur"), ("white_noise", "noise")])
def test_the_default_model_names_blur_and_noise_in_a_photo_it_never_saw(kind, family):
    """scikit-image's cat photo (not among the pristine photos the head learnt from), as it is and with synthetic
    blur and noise of level 3: the most probable family, its classes' probabilities summed, is the right one."""
    data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    if kind is not None:
        photo = distort(photo, kind, 3, generator=torch.Generator().manual_seed(0))
    pixels = (photo[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    result = pipeline("image-quality")(pixels, top_k_faults=NUM_CLASSES)
    families: dict[str, float] = {}
    for fault in result["faults"]:
        families[fault["family"]] = families.get(fault["family"], 0.0) + fault["score"]
    assert max(families, key=families.get) == family, families
    assert metaqap_hf.DEFAULT_MODEL_PATH.joinpath("fault_report.json").is_file()
