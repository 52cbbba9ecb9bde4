"""BIQ2021 loader: the real 600-image sample for counts and splits, tiny fixtures for every error case."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datasets import Image
from PIL import Image as PILImage

from metaqap_hf.data import DatasetDownloadError, DatasetLayoutError, UnlabeledImagesWarning, load_biq2021
from metaqap_hf.data import biq2021 as biq2021_module

DEFAULT_SAMPLE = Path("/work/shared/data/biq2021-sample")
TRAIN_CSV = "Train (Images and MOS).csv"
TEST_CSV = "Test (Images and MOS).csv"


def _sample_dir() -> Path:
    configured = os.environ.get("METAQAP_BIQ2021_SAMPLE")
    if configured:
        return Path(configured)
    if DEFAULT_SAMPLE.is_dir():
        return DEFAULT_SAMPLE
    pytest.skip(f"No BIQ2021 sample: set METAQAP_BIQ2021_SAMPLE or provide {DEFAULT_SAMPLE}.")


def _csv_names(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()[1:]
    return {line.split(",")[0] for line in lines if line.strip(", ")}


def _write_image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path, format="JPEG")


def _make_fixture(root: Path, train: dict[str, float], test: dict[str, float], files: list[str]) -> Path:
    """The official layout; the train CSV with the release's trailing empty columns, the test CSV with CRLF."""
    (root / "Images").mkdir(parents=True)
    for seed, name in enumerate(files):
        _write_image(root / "Images" / name, seed)
    train_lines = ["Image Name,MOS,,"] + [f"{name},{mos},," for name, mos in train.items()] + [",,,"]
    (root / TRAIN_CSV).write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    test_lines = ["Image Name,MOS"] + [f"{name},{mos}" for name, mos in test.items()]
    (root / TEST_CSV).write_bytes(("\r\n".join(test_lines) + "\r\n").encode())
    return root


@pytest.fixture
def tiny_biq(tmp_path: Path) -> Path:
    train = {f"ss01 ({index}).jpg": round(0.05 * index, 4) for index in range(1, 11)}
    train["ss02 (1014).jpg"] = 0.4357
    test = {f"ss03 ({index}).jpg": round(0.1 * index, 4) for index in range(1, 5)}
    files = [name for name in train if name != "ss02 (1014).jpg"] + ["ss02 (1014).JPG"] + list(test)
    return _make_fixture(tmp_path / "biq", train, test, files)


def test_sample_counts_follow_the_official_split():
    sample = _sample_dir()
    dataset = load_biq2021(sample, validation_fraction=0.0)
    assert set(dataset) == {"train", "test"}
    assert (dataset["train"].num_rows, dataset["test"].num_rows) == (480, 120)
    assert set(dataset["train"]["image_name"]) == _csv_names(sample / TRAIN_CSV)
    assert set(dataset["test"]["image_name"]) == _csv_names(sample / TEST_CSV)


def test_sample_validation_is_carved_from_train_only_and_seeded():
    sample = _sample_dir()
    dataset = load_biq2021(sample, validation_fraction=0.1, seed=3)
    train, validation, test = (set(dataset[split]["image_name"]) for split in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (432, 48, 120)
    assert validation <= _csv_names(sample / TRAIN_CSV)
    assert not validation & test and not validation & train and not train & test

    again = load_biq2021(sample, validation_fraction=0.1, seed=3)
    assert list(again["validation"]["image_name"]) == list(dataset["validation"]["image_name"])
    other_seed = load_biq2021(sample, validation_fraction=0.1, seed=4)
    assert set(other_seed["validation"]["image_name"]) != validation
    assert set(other_seed["test"]["image_name"]) == test


def test_sample_scores_and_lazy_images():
    dataset = load_biq2021(_sample_dir())
    test = dataset["test"]
    assert test.info.description.startswith("BIQ2021. MOS scale 0-1")
    mos = np.array(test["mos"])
    assert 0.0 <= mos.min() < mos.max() <= 1.0
    np.testing.assert_allclose(test["mos_normalized"], mos)
    assert set(test["mos_std"]) == {None}
    stored = test.cast_column("image", Image(decode=False))[0]["image"]
    assert stored["bytes"] is None and Path(stored["path"]).is_file()
    assert test[0]["image"].size == PILImage.open(stored["path"]).size


def test_file_names_match_case_insensitively(tiny_biq: Path):
    dataset = load_biq2021(tiny_biq, validation_fraction=0.0)
    row = dataset["train"].filter(lambda name: name == "ss02 (1014).jpg", input_columns="image_name")
    stored = row.cast_column("image", Image(decode=False))[0]["image"]
    assert Path(stored["path"]).name == "ss02 (1014).JPG"
    assert row[0]["mos"] == pytest.approx(0.4357)
    assert dataset["train"].num_rows == 11 and dataset["test"].num_rows == 4


def test_missing_images_are_named_with_their_count(tiny_biq: Path):
    for name in ("ss01 (3).jpg", "ss01 (7).jpg"):
        (tiny_biq / "Images" / name).unlink()
    with pytest.raises(DatasetLayoutError, match=r"2 images listed in .*Train.* are missing") as error:
        load_biq2021(tiny_biq)
    assert "'ss01 (3).jpg'" in str(error.value) and "'ss01 (7).jpg'" in str(error.value)


def test_many_missing_images_list_ten_names_and_the_count(tiny_biq: Path):
    for path in (tiny_biq / "Images").glob("ss01 *"):
        path.unlink()
    message = str(pytest.raises(DatasetLayoutError, load_biq2021, tiny_biq).value)
    assert "(10 in all)" in message and message.count("'ss01 (") == 10


def test_unlabeled_images_warn_or_fail_when_strict(tiny_biq: Path):
    _write_image(tiny_biq / "Images" / "stray.jpg", seed=99)
    with pytest.warns(UnlabeledImagesWarning, match=r"1 images that no label file lists: 'stray.jpg'"):
        dataset = load_biq2021(tiny_biq)
    assert all("stray.jpg" not in list(split["image_name"]) for split in dataset.values())
    with pytest.raises(DatasetLayoutError, match="stray.jpg"):
        load_biq2021(tiny_biq, strict=True)


def test_missing_folder_and_label_files_name_the_expected_path(tiny_biq: Path, tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match=r"Missing directory .*Images.*Expected BIQ2021 layout"):
        load_biq2021(tmp_path / "nowhere")
    (tiny_biq / TEST_CSV).unlink()
    with pytest.raises(DatasetLayoutError, match=r"Missing label file .*Test \(Images and MOS\)\.csv"):
        load_biq2021(tiny_biq)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("Image Name,Score\nss01 (1).jpg,0.5\n", r"no column 'MOS'"),
        ("Image Name,MOS\nss01 (1).jpg,good\n", r"row 2: column 'MOS' holds 'good', not a number"),
        ("Image Name,MOS\nss01 (1).jpg,3.5\n", r"row 2: MOS 3.5 lies outside BIQ2021's documented scale 0-1"),
        ("Image Name,MOS\nss01 (1).jpg,0.5\nss01 (1).JPG,0.6\n", r"more than once: 'ss01 \(1\).JPG'"),
        ("", r"is empty"),
        (b"\xff\xfe\x00garbage", r"not a readable CSV file"),
    ],
)
def test_malformed_label_files_name_the_file_and_problem(tiny_biq: Path, content: str | bytes, problem: str):
    label_file = tiny_biq / TRAIN_CSV
    label_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetLayoutError, match=problem) as error:
        load_biq2021(tiny_biq)
    assert str(label_file) in str(error.value)


def test_an_image_in_both_official_splits_is_an_error(tiny_biq: Path):
    with (tiny_biq / TEST_CSV).open("a") as handle:
        handle.write("ss01 (1).jpg,0.3\r\n")
    with pytest.raises(DatasetLayoutError, match=r"both list 'ss01 \(1\).jpg'"):
        load_biq2021(tiny_biq)


def test_download_unpacks_the_github_archive_once(tiny_biq: Path, tmp_path: Path, monkeypatch):
    archive = tmp_path / "main.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(tiny_biq.rglob("*")):
            handle.write(path, Path("BIQ2021-main") / path.relative_to(tiny_biq))
    monkeypatch.setattr(biq2021_module, "ARCHIVE_URL", archive.as_uri())
    cache = tmp_path / "cache"
    downloaded = load_biq2021(cache_dir=cache, download=True, validation_fraction=0.0)
    assert downloaded["train"].num_rows == 11 and (cache / "biq2021" / TRAIN_CSV).is_file()
    archive.unlink()  # a second call finds the files and fetches nothing
    assert load_biq2021(cache_dir=cache, download=True)["test"].num_rows == 4


def test_failed_download_says_what_to_put_where(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(biq2021_module, "ARCHIVE_URL", (tmp_path / "absent.zip").as_uri())
    with pytest.raises(DatasetDownloadError, match=r"Could not download BIQ2021") as error:
        load_biq2021(cache_dir=tmp_path / "cache", download=True)
    assert TRAIN_CSV in str(error.value) and "Images/" in str(error.value)


def test_data_dir_is_required_without_download():
    with pytest.raises(ValueError, match="pass data_dir"):
        load_biq2021()
