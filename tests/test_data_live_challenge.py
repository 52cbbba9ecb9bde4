"""LIVE Challenge loader on a tiny fixture written with savemat in the release's variable names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy.io import savemat

from metaqap_hf.data import DatasetLayoutError, UnlabeledImagesWarning, load_live_challenge

TRAINING = [f"t{index}.bmp" for index in range(1, 8)]
EVALUATION = [f"{index}.bmp" for index in range(10, 30)] + [f"{index}.JPG" for index in range(1000, 1005)]
NAMES = TRAINING + EVALUATION


def _write_image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path)


def _write_mats(data: Path, names: list[str], mos: np.ndarray, std: np.ndarray) -> None:
    cells = np.empty((len(names), 1), dtype=object)
    for index, name in enumerate(names):
        cells[index, 0] = name
    savemat(data / "AllImages_release.mat", {"AllImages_release": cells})
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": mos.reshape(1, -1)})
    savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": std.reshape(1, -1)})


@pytest.fixture
def tiny_live(tmp_path: Path) -> Path:
    release = tmp_path / "live" / "ChallengeDB_release"
    (release / "Images" / "trainingImages").mkdir(parents=True)
    (release / "Data").mkdir()
    for seed, name in enumerate(NAMES):
        folder = release / "Images" / ("trainingImages" if name in TRAINING else "")
        _write_image(folder / name, seed)
    mos = np.linspace(5.0, 95.0, len(NAMES))
    _write_mats(release / "Data", NAMES, mos, np.full(len(NAMES), 12.5))
    return tmp_path / "live"


def _names(dataset, split: str) -> set[str]:
    return set(dataset[split]["image_name"]) if split in dataset else set()


def test_training_images_never_reach_evaluation_splits(tiny_live: Path):
    dataset = load_live_challenge(tiny_live)
    assert not set(TRAINING) & (_names(dataset, "validation") | _names(dataset, "test") | _names(dataset, "train"))
    assert len(_names(dataset, "test")) == 5 and len(_names(dataset, "validation")) == 2
    assert _names(dataset, "train") | _names(dataset, "validation") | _names(dataset, "test") == set(EVALUATION)

    with_training = load_live_challenge(tiny_live, include_training_images=True)
    assert set(TRAINING) <= _names(with_training, "train")
    assert _names(with_training, "test") == _names(dataset, "test")
    assert _names(with_training, "validation") == _names(dataset, "validation")


def test_protocol_splits_are_seeded_and_distinct(tiny_live: Path):
    first = load_live_challenge(tiny_live, split_index=0, validation_fraction=0.0)
    assert list(first) == ["train", "test"] and first["train"].num_rows == 20
    again = load_live_challenge(tiny_live, split_index=0)
    assert list(again["test"]["image_name"]) == list(first["test"]["image_name"])
    tests = {frozenset(load_live_challenge(tiny_live, split_index=index)["test"]["image_name"]) for index in range(10)}
    assert len(tests) > 1


def test_scores_columns_and_images(tiny_live: Path):
    test = load_live_challenge(tiny_live)["test"]
    mos = np.array(test["mos"])
    assert ((mos >= 5.0) & (mos <= 95.0)).all()
    np.testing.assert_allclose(test["mos_normalized"], mos / 100.0)
    assert set(test["mos_std"]) == {12.5}
    assert test[0]["image"].size == (32, 32)
    assert "MOS scale 0-100" in test.info.description


def test_missing_and_unlabeled_images(tiny_live: Path):
    images = tiny_live / "ChallengeDB_release" / "Images"
    _write_image(images / "stray.bmp", seed=7)
    with pytest.warns(UnlabeledImagesWarning, match=r"1 images that no label file lists: 'stray.bmp'"):
        load_live_challenge(tiny_live)
    (images / "stray.bmp").unlink()
    (images / "12.bmp").unlink()
    (images / "1003.JPG").unlink()
    with pytest.raises(DatasetLayoutError, match=r"2 images listed in .*AllImages_release.mat are missing") as error:
        load_live_challenge(tiny_live)
    assert "'12.bmp'" in str(error.value) and "'1003.JPG'" in str(error.value)


def test_training_images_are_only_required_when_included(tiny_live: Path):
    (tiny_live / "ChallengeDB_release" / "Images" / "trainingImages" / "t3.bmp").unlink()
    assert load_live_challenge(tiny_live)["test"].num_rows == 5
    with pytest.raises(DatasetLayoutError, match="'t3.bmp'"):
        load_live_challenge(tiny_live, include_training_images=True)


def test_mat_file_problems_are_named(tiny_live: Path):
    data = tiny_live / "ChallengeDB_release" / "Data"
    savemat(data / "AllMOS_release.mat", {"MOS": np.ones((1, len(NAMES)))})
    with pytest.raises(DatasetLayoutError, match=r"AllMOS_release.mat has no variable 'AllMOS_release'; it holds"):
        load_live_challenge(tiny_live)
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 5))})
    with pytest.raises(DatasetLayoutError, match=r"AllMOS_release holds 5 values but .* lists 32 images"):
        load_live_challenge(tiny_live)
    savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.full((1, len(NAMES)), 140.0)})
    with pytest.raises(DatasetLayoutError, match=r"row 1: AllMOS_release 140 lies outside .* 0-100"):
        load_live_challenge(tiny_live)
    (data / "AllStdDev_release.mat").write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DatasetLayoutError, match=r"AllStdDev_release.mat is not a readable MATLAB file"):
        load_live_challenge(tiny_live)
    (data / "AllImages_release.mat").unlink()
    with pytest.raises(DatasetLayoutError, match=r"Missing label file .*Data/AllImages_release.mat"):
        load_live_challenge(tiny_live)


def test_missing_release_folder_shows_the_layout(tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)Missing directory .*ChallengeDB_release.*trainingImages"):
        load_live_challenge(tmp_path)
