import numpy as np
import pytest
import torch
from transformers import pipeline

from metaqap_hf import ImageLoadError, ImageQualityPipeline

from _images import random_photo


@pytest.fixture
def scorer(tiny_checkpoint):
    return pipeline("image-quality", model=str(tiny_checkpoint))


def test_task_is_registered_and_returns_plain_python(scorer):
    assert isinstance(scorer, ImageQualityPipeline)
    result = scorer(random_photo(0))
    assert set(result) == {"score", "base_scores", "std"}
    assert isinstance(result["score"], float) and isinstance(result["std"], float)
    assert list(result["base_scores"]) == ["test_efficientnet", "test_resnet"]
    assert 0.0 <= result["std"]


def test_paths_pil_numpy_and_tensors_give_the_same_score(scorer, tmp_path):
    image = random_photo(1)
    path = tmp_path / "photo.png"
    image.save(path)
    array = np.asarray(image)
    scores = [
        scorer(str(path))["score"],
        scorer(path)["score"],
        scorer(image)["score"],
        scorer(array)["score"],
        scorer(array.astype(np.float32) / 255)["score"],
        scorer(torch.from_numpy(array).permute(2, 0, 1).contiguous())["score"],
        scorer({"image": image})["score"],
    ]
    assert scores == pytest.approx([scores[0]] * len(scores), abs=1e-6)


def test_batched_equals_one_by_one(scorer):
    images = [random_photo(seed, size=(60 + 7 * seed, 90)) for seed in range(5)]
    single = [scorer(image) for image in images]
    batched = scorer(images, batch_size=4)
    assert len(batched) == 5
    for one, many in zip(single, batched):
        assert many["score"] == pytest.approx(one["score"], abs=1e-5)
        assert many["std"] == pytest.approx(one["std"], abs=1e-5)
        for name in one["base_scores"]:
            assert many["base_scores"][name] == pytest.approx(one["base_scores"][name], abs=1e-5)
    assert len({round(r["score"], 6) for r in single}) > 1, "different images should score differently"


def test_datasets_input_streams_results(scorer):
    import datasets

    images = [random_photo(seed) for seed in range(3)]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    streamed = list(scorer(dataset, batch_size=2))
    direct = scorer(images)
    assert [r["score"] for r in streamed] == pytest.approx([r["score"] for r in direct], abs=1e-5)


def test_scores_are_identical_run_to_run(tiny_checkpoint):
    image = random_photo(7)
    first = pipeline("image-quality", model=str(tiny_checkpoint))(image)
    second = pipeline("image-quality", model=str(tiny_checkpoint))(image)
    assert first == second


def test_bad_inputs_raise_errors_naming_the_problem(scorer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        scorer(str(broken))
    with pytest.raises(ImageLoadError, match="no such file"):
        scorer(str(tmp_path / "missing.png"))
    with pytest.raises(ImageLoadError, match="float arrays"):
        scorer(np.full((8, 8, 3), 2.0, dtype=np.float32))
    with pytest.raises(TypeError, match="unexpected arguments"):
        scorer(random_photo(0), top_k=3)
