"""prepare_dataset: hub-layout parquet shards and card, read back by datasets.load_dataset byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import Image, load_dataset
from PIL import Image as PILImage

from metaqap_hf.data import DATASETS, get_benchmark, load_iqa_dataset, load_kadid10k, prepare_dataset

REFERENCES = [f"I{index:02d}" for index in range(1, 6)]
DISTORTED = [f"{ref}_{kind:02d}_{level:02d}.png" for ref in REFERENCES for kind in (3, 7) for level in (1, 2, 3)]


@pytest.fixture
def tiny_kadid(tmp_path: Path) -> Path:
    root = tmp_path / "kadid"
    (root / "images").mkdir(parents=True)
    for seed, name in enumerate(DISTORTED + [f"{ref}.png" for ref in REFERENCES]):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(root / "images" / name)
    lines = ["dist_img,ref_img,dmos,var"] + [
        f"{name},{name[:3]}.png,{1.5 + index / 20:.2f},0.3" for index, name in enumerate(DISTORTED)
    ]
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    return root


def _rows_without_images(dataset) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "image"} for row in dataset.remove_columns("image")]


def test_prepared_folder_reads_back_identically(tiny_kadid: Path, tmp_path: Path):
    output = prepare_dataset("kadid10k", tiny_kadid, tmp_path / "out", max_shard_size="20KB", split_index=1)
    assert output == tmp_path / "out"
    train_shards = sorted(path.name for path in (output / "data").glob("train-*"))
    count = len(train_shards)
    assert count > 1 and train_shards == [f"train-{index:05d}-of-{count:05d}.parquet" for index in range(count)]
    test_shards = sorted(path.name for path in (output / "data").glob("test-*"))
    assert test_shards == [f"test-{index:05d}-of-{len(test_shards):05d}.parquet" for index in range(len(test_shards))]
    assert test_shards, "the test split is written too"

    original = load_kadid10k(tiny_kadid, split_index=1)
    loaded = load_dataset(str(output), cache_dir=str(tmp_path / "hf-cache"))
    assert list(loaded) == list(original)
    for split in original:
        assert loaded[split].features == original[split].features
        assert _rows_without_images(loaded[split]) == _rows_without_images(original[split])
        stored = loaded[split].cast_column("image", Image(decode=False))["image"]
        assert [item["bytes"] for item in stored] == [
            (tiny_kadid / "images" / name).read_bytes() for name in original[split]["image_name"]
        ]
        assert [item["path"] for item in stored] == list(original[split]["image_name"])  # no local paths leak
        assert loaded[split][0]["image"].size == (32, 32)


def test_card_declares_configs_features_licence_and_scale(tiny_kadid: Path, tmp_path: Path):
    output = prepare_dataset("KADID-10k", tiny_kadid, tmp_path / "out", validation_fraction=0.0)
    card = (output / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---\n")[1])
    assert metadata["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "test", "path": "data/test-*"},
    ]
    assert metadata["license"] == DATASETS["kadid10k"].info.license
    assert [feature["name"] for feature in metadata["dataset_info"]["features"]][:5] == [
        "image", "image_name", "mos", "mos_normalized", "mos_std",
    ]
    assert {split["name"]: split["num_examples"] for split in metadata["dataset_info"]["splits"]} == {
        "train": 24, "test": 6,
    }
    assert "Scale 1-5" in card and "@inproceedings{lin2019kadid" in card
    assert "`validation_fraction=0.0`" in card and "`split_index=0`" in card


def test_existing_output_needs_overwrite(tiny_kadid: Path, tmp_path: Path):
    output = prepare_dataset("kadid10k", tiny_kadid, tmp_path / "out", max_shard_size="20KB")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        prepare_dataset("kadid10k", tiny_kadid, output)
    prepare_dataset("kadid10k", tiny_kadid, output, overwrite=True)
    assert sorted(path.name for path in (output / "data").iterdir()) == [  # the earlier, smaller shards are gone
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet",
    ]


def test_registry_names_loaders_and_scales(tiny_kadid: Path):
    assert set(DATASETS) == {"biq2021", "koniq10k", "live_challenge", "spaq", "kadid10k"}
    assert {name: entry.info.mos_range for name, entry in DATASETS.items()} == {
        "biq2021": (0.0, 1.0), "koniq10k": (1.0, 5.0), "live_challenge": (0.0, 100.0),
        "spaq": (0.0, 100.0), "kadid10k": (1.0, 5.0),
    }
    assert get_benchmark("LIVE-Challenge") is DATASETS["live_challenge"]
    assert load_iqa_dataset("kadid10k", tiny_kadid, split_index=4)["test"].num_rows == 6
    with pytest.raises(ValueError, match=r"Unknown IQA dataset 'tid2013'; choose one of"):
        get_benchmark("tid2013")
    assert set(DATASETS["koniq10k"].options) == {"resolution", "strict", "download", "cache_dir"}
    assert [name for name, entry in DATASETS.items() if entry.downloadable] == ["biq2021", "koniq10k"]
    with pytest.raises(ValueError, match=r"KADID-10k takes no option resolution; its options are split_index"):
        prepare_dataset("kadid10k", tiny_kadid, tiny_kadid.parent / "out", resolution="512x384")
