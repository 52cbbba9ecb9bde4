"""The streaming pretraining dataset: seeding, worker and rank sharding, parquet export and replay."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data
from torch.utils.data import DataLoader

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS
from metaqap_hf.pretraining import DistortedStream, ShardDataset, export_shards, find_images

CROP = 48
METRICS = ("ssim", "gmsd", "vif_p", "haarpsi")


@pytest.fixture(scope="module")
def pristine_dir(tmp_path_factory):
    """Three real photos (downscaled) as png, jpg and bmp, one in a sub-folder, plus a non-image file."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "nested").mkdir()
    (root / "notes.txt").write_text("not an image")
    for photo, name in ((data.astronaut(), "astronaut.png"), (data.chelsea(), "nested/chelsea.JPG"),
                        (data.coffee(), "coffee.bmp")):
        image = Image.fromarray(photo)
        image.resize((image.width // 4, image.height // 4), Image.Resampling.LANCZOS).save(root / name)
    Image.fromarray(data.astronaut()[:40, :30]).save(root / "small.png")  # below the crop size
    return root


@pytest.fixture(scope="module")
def stream(pristine_dir):
    return DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=5, metrics=METRICS,
                           calibration_samples=24)


def _fingerprints(samples) -> list[tuple]:
    return [(sample["distortion"], int(sample["level"]), round(float(sample["pixel_values"].sum()), 3))
            for sample in samples]


def test_finds_images_recursively_by_suffix(pristine_dir):
    names = sorted(path.name for path in find_images(pristine_dir))
    assert names == ["astronaut.png", "chelsea.JPG", "coffee.bmp", "small.png"]
    with pytest.raises(FileNotFoundError, match="missing: no such file"):
        find_images(pristine_dir / "missing")
    empty = pristine_dir.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="empty: folder holds no image files"):
        find_images(empty)


def test_finds_images_of_several_folders_and_files_in_the_order_given(pristine_dir, tmp_path):
    """Pretraining content from several places, e.g. a benchmark's training images listed one by one."""
    single = tmp_path / "listed.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(single)
    found = find_images([single, pristine_dir])
    assert found[0] == single and sorted(path.name for path in found[1:]) == sorted(
        path.name for path in find_images(pristine_dir))
    with pytest.raises(FileNotFoundError, match="gone.png: no such file"):
        find_images([pristine_dir, tmp_path / "gone.png"])


def test_samples_have_the_documented_form(stream):
    samples = list(stream)
    assert len(samples) == len(stream) == 12
    for sample in samples:
        assert sample["pixel_values"].shape == (3, CROP, CROP) and sample["pixel_values"].dtype == torch.float32
        assert 0.0 <= sample["pixel_values"].min() and sample["pixel_values"].max() <= 1.0
        assert sample["labels"].dtype == torch.float32 and 0.0 <= float(sample["labels"]) <= 1.0
        assert sample["distortion"] in DISTORTION_TYPES and 1 <= sample["level"] <= NUM_LEVELS
    batch = next(iter(DataLoader(stream, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, CROP, CROP) and batch["labels"].dtype == torch.float32


def test_reproducible_under_seed_and_epoch(pristine_dir, stream):
    twin = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=5, labeler=stream.labeler)
    assert _fingerprints(stream) == _fingerprints(twin)
    twin.set_epoch(1)
    assert _fingerprints(twin) != _fingerprints(stream)
    other_seed = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=6, labeler=stream.labeler)
    assert _fingerprints(other_seed) != _fingerprints(stream)


def test_calibration_is_deterministic(pristine_dir, stream):
    twin = DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=5, metrics=METRICS,
                           calibration_samples=24)
    assert twin.labeler.to_dict() == stream.labeler.to_dict()


def test_two_workers_split_the_epoch_into_disjoint_halves(stream):
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    from_workers = _fingerprints(loader)
    single = _fingerprints(stream)
    assert len(from_workers) == 12 and len(set(from_workers)) == 12
    assert sorted(from_workers) == sorted(single)


def test_ranks_get_disjoint_shards_that_cover_the_epoch(pristine_dir, stream):
    shards = [
        DistortedStream(pristine_dir, crop_size=CROP, samples_per_epoch=12, seed=5, labeler=stream.labeler,
                        rank=rank, world_size=2)
        for rank in (0, 1)
    ]
    rank0, rank1 = (_fingerprints(shard) for shard in shards)
    assert len(rank0) == len(rank1) == len(shards[0]) == 6
    assert not set(rank0) & set(rank1)
    assert sorted(rank0 + rank1) == sorted(_fingerprints(stream))
    with pytest.raises(ValueError, match="outside a world"):
        DistortedStream(pristine_dir, crop_size=CROP, labeler=stream.labeler, rank=2, world_size=2).__len__()


def test_export_then_read_back_gives_the_same_samples(tmp_path, stream):
    paths = export_shards(stream, tmp_path / "shards", num_samples=10, shard_size=4)
    assert [path.name for path in paths] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    replay = ShardDataset(tmp_path / "shards")
    assert len(replay) == 10
    for original, restored in zip(stream, replay):
        expected_pixels = original["pixel_values"].mul(255).round() / 255
        assert torch.equal(restored["pixel_values"], expected_pixels)
        assert restored["labels"] == original["labels"]
        assert restored["distortion"] == original["distortion"] and restored["level"] == original["level"]
    with pytest.raises(ValueError, match="yields 12 samples"):
        export_shards(stream, tmp_path / "too_many", num_samples=13)
