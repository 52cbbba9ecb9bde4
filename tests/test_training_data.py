"""Augmentation, the decoded-image cache, the training datasets and the collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _training import tiny_processor, write_labelled_images
from datasets import Dataset, DatasetDict, Image

from metaqap_hf import ImageLoadError, load_image
from metaqap_hf.training.data import (
    AugmentationParams,
    DecodedImages,
    QualityAugmentation,
    QualityDataCollator,
    QualityImageDataset,
    build_image_cache,
    training_datasets,
)


def _image(size=64, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)


def _params(size=64, **changes) -> AugmentationParams:
    values = dict(flip=False, angle=0.0, scale=1.0, translate=(0.0, 0.0), crop_top=0, crop_left=0,
                  crop_height=size, crop_width=size)
    return AugmentationParams(**{**values, **changes})


def test_augmentation_is_a_function_of_its_generator():
    augmentation, image = QualityAugmentation(), _image()
    first = augmentation(image, np.random.default_rng([0, 0, 5]))
    again = augmentation(image, np.random.default_rng([0, 0, 5]))
    other = augmentation(image, np.random.default_rng([0, 1, 5]))
    assert first.dtype == torch.uint8 and first.shape == (3, 56, 56)  # crop_fraction 0.875 of 64
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_identity_flip_and_shift_geometry():
    augmentation, image = QualityAugmentation(), _image()
    assert torch.equal(augmentation.apply(image, _params()), image)
    assert torch.equal(augmentation.apply(image, _params(flip=True)), image.flip(-1))
    crop = augmentation.apply(image, _params(crop_top=3, crop_left=7, crop_height=20, crop_width=30))
    assert torch.equal(crop, image[:, 3:23, 7:37])
    shifted = augmentation.apply(image, _params(translate=(5.0, 0.0))).int()
    assert (shifted[:, :, 5:] - image[:, :, :-5].int()).abs().max() <= 1


def test_rotation_and_zoom_out_leave_no_black_corners():
    augmentation = QualityAugmentation(max_rotation=10, scale_range=(0.9, 0.9), max_translation=20)
    flat = torch.full((3, 128, 128), 200, dtype=torch.uint8)
    for seed in range(5):
        out = augmentation(flat, np.random.default_rng(seed))
        assert out.min() == 200 and out.max() == 200


def test_augmentation_rejects_bad_settings():
    with pytest.raises(ValueError, match="crop_fraction"):
        QualityAugmentation(crop_fraction=0)
    with pytest.raises(ValueError, match="scale_range"):
        QualityAugmentation(scale_range=(1.2, 0.9))


def test_cached_and_decoded_batches_equal_the_processor_output(tmp_path):
    paths, labels = write_labelled_images(tmp_path / "images", 6)
    processor = tiny_processor()
    expected = processor(images=[load_image(path) for path in paths], return_tensors="pt")["pixel_values"]
    collate = QualityDataCollator(processor.rescale_factor)
    for source in (build_image_cache(paths, processor), DecodedImages(paths, processor)):
        dataset = QualityImageDataset(source, labels)
        batch = collate([dataset[i] for i in range(len(dataset))])
        assert torch.equal(batch["pixel_values"], expected)
        assert torch.equal(batch["labels"], torch.tensor(labels, dtype=torch.float32))


def test_disk_cache_is_reused_and_keyed_by_the_files(tmp_path):
    paths, _ = write_labelled_images(tmp_path / "images", 4)
    processor, cache_dir = tiny_processor(), tmp_path / "cache"
    first = build_image_cache(paths, processor, cache_dir)
    assert isinstance(first, np.memmap) and len(list(cache_dir.glob("*.npy"))) == 1
    again = build_image_cache(paths, processor, cache_dir)
    assert again.filename == first.filename and np.array_equal(again, first)

    write_labelled_images(tmp_path / "other", 1, offset=9)
    (tmp_path / "other" / "image_009.png").replace(paths[2])  # the file changes: a new cache, new pixels
    changed = build_image_cache(paths, processor, cache_dir)
    assert changed.filename != first.filename and len(list(cache_dir.glob("*.npy"))) == 2
    assert np.array_equal(changed[:2], first[:2]) and not np.array_equal(changed[2], first[2])


def test_a_failed_cache_build_names_the_file_and_leaves_nothing(tmp_path):
    paths, _ = write_labelled_images(tmp_path / "images", 3)
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(open(paths[0], "rb").read()[:60])
    cache_dir = tmp_path / "cache"
    with pytest.raises(ImageLoadError, match="broken.png"):
        build_image_cache([*paths, str(broken)], tiny_processor(), cache_dir)
    assert list(cache_dir.iterdir()) == []


def test_augmented_samples_follow_seed_epoch_and_index(tmp_path):
    paths, labels = write_labelled_images(tmp_path / "images", 3)
    images = build_image_cache(paths, tiny_processor())
    dataset = QualityImageDataset(images, labels, augmentation=QualityAugmentation(), seed=3)
    twin = QualityImageDataset(images, labels, augmentation=QualityAugmentation(), seed=3)
    epoch0 = dataset[1]["pixel_values"]
    assert torch.equal(epoch0, twin[1]["pixel_values"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["pixel_values"], epoch0)
    twin.set_epoch(1)
    assert torch.equal(dataset[1]["pixel_values"], twin[1]["pixel_values"])


def _split(paths, labels):
    return Dataset.from_dict({"image": paths, "mos": labels}).cast_column("image", Image())


def test_training_datasets_read_train_and_validation_only(tmp_path):
    paths, labels = write_labelled_images(tmp_path / "images", 8)
    missing = [str(tmp_path / "nowhere" / f"{i}.png") for i in range(2)]  # test images that cannot be read
    splits = DatasetDict(train=_split(paths[:6], labels[:6]), validation=_split(paths[6:], labels[6:]),
                         test=_split(missing, [3.0, 3.0]))
    processor = tiny_processor()
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation())
    assert (len(train), len(validation)) == (6, 2)
    assert train.augmentation is not None and validation.augmentation is None
    expected = processor(images=[load_image(paths[6])], do_rescale=False, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(validation[0]["pixel_values"], expected)

    with pytest.raises(ValueError, match="validation"):
        training_datasets(DatasetDict(train=splits["train"], test=splits["test"]), processor)
    with pytest.raises(ValueError, match="label column 'mos_normalized'"):
        training_datasets(splits, processor, label_column="mos_normalized")
