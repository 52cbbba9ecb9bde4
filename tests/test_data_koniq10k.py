"""KonIQ-10k loader on tiny fixtures in the official layout: official sets, scales, errors, download."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from metaqap_hf.data import DatasetLayoutError, UnlabeledImagesWarning, load_koniq10k
from metaqap_hf.data import koniq10k as koniq_module

SCORES = "koniq10k_scores_and_distributions.csv"
SETS = "koniq10k_distributions_sets.csv"
SET_OF = {index: ("training", "training", "training", "validation", "test")[index % 5] for index in range(15)}


def _name(index: int) -> str:
    return f"{1000000 + index}.jpg"


def _write_labels(root: Path) -> None:
    """The scores file with the release's quoted header, and the authors' sets file (MOS there is 0-100)."""
    scores = ['"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"']
    sets = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    for index, official_set in SET_OF.items():
        mos = 1.2 + 0.25 * index
        scores.append(f'"{_name(index)}",0,0.1,0.4,0.4,0.1,100,{mos:.4f},{0.1 + 0.01 * index:.3f},{20 * mos:.2f}')
        sets.append(f"{_name(index)},0,0.1,0.4,0.4,0.1,100,{25 * mos:.2f},0.5,{official_set}")
    (root / SCORES).write_text("\n".join(scores) + "\n")
    (root / SETS).write_text("\n".join(sets) + "\n")


def _write_images(image_dir: Path) -> None:
    image_dir.mkdir(parents=True)
    for index in SET_OF:
        pixels = np.random.default_rng(index).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(image_dir / _name(index))


@pytest.fixture
def tiny_koniq(tmp_path: Path) -> Path:
    root = tmp_path / "koniq"
    _write_images(root / "koniq10k_1024x768")
    _write_labels(root)
    return root


def test_official_sets_become_train_validation_test(tiny_koniq: Path):
    dataset = load_koniq10k(tiny_koniq)
    assert list(dataset) == ["train", "validation", "test"]
    expected = {"train": "training", "validation": "validation", "test": "test"}
    for split, official_set in expected.items():
        assert set(dataset[split]["image_name"]) == {_name(i) for i, s in SET_OF.items() if s == official_set}


def test_scores_keep_the_1_to_5_scale_and_sd(tiny_koniq: Path):
    train = load_koniq10k(tiny_koniq)["train"]
    row = train.filter(lambda name: name == _name(1), input_columns="image_name")[0]
    assert row["mos"] == pytest.approx(1.45)
    assert row["mos_normalized"] == pytest.approx((1.45 - 1) / 4)
    assert row["mos_std"] == pytest.approx(0.11)
    assert row["image"].size == (32, 24)
    assert "MOS scale 1-5" in train.info.description
    assert set(train.features) == {"image", "image_name", "mos", "mos_normalized", "mos_std"}


def test_the_512x384_folder_is_read_when_asked(tmp_path: Path):
    root = tmp_path / "koniq"
    _write_images(root / "512x384")
    _write_labels(root)
    assert load_koniq10k(root, resolution="512x384")["test"].num_rows == 3
    with pytest.raises(DatasetLayoutError, match=r"Missing directory .*koniq10k_1024x768"):
        load_koniq10k(root)


def test_missing_images_and_unlabeled_images(tiny_koniq: Path):
    PILImage.new("RGB", (8, 8)).save(tiny_koniq / "koniq10k_1024x768" / "999.jpg")
    with pytest.warns(UnlabeledImagesWarning, match=r"1 images that no label file lists: '999.jpg'"):
        load_koniq10k(tiny_koniq)
    with pytest.raises(DatasetLayoutError, match="999.jpg"):
        load_koniq10k(tiny_koniq, strict=True)
    (tiny_koniq / "koniq10k_1024x768" / _name(4)).unlink()
    with pytest.raises(DatasetLayoutError, match=rf"1 images listed in .*{SCORES} are missing .*'{_name(4)}'"):
        load_koniq10k(tiny_koniq)


def test_label_file_problems_are_named(tiny_koniq: Path):
    sets_lines = (tiny_koniq / SETS).read_text().splitlines()
    (tiny_koniq / SETS).write_text("\n".join(sets_lines[:-2]) + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"{SETS} gives no set for 2 images"):
        load_koniq10k(tiny_koniq)
    (tiny_koniq / SETS).write_text("\n".join(sets_lines).replace(",test", ",holdout") + "\n")
    with pytest.raises(DatasetLayoutError, match=r"set 'holdout' is none of"):
        load_koniq10k(tiny_koniq)
    (tiny_koniq / SCORES).write_text('"image_name","MOS"\n"1000000.jpg",3.0\n')
    with pytest.raises(DatasetLayoutError, match=rf"{SCORES} has no column 'SD'"):
        load_koniq10k(tiny_koniq)
    (tiny_koniq / SCORES).unlink()
    with pytest.raises(DatasetLayoutError, match=rf"Missing label file .*{SCORES}"):
        load_koniq10k(tiny_koniq)


def test_download_fetches_images_scores_and_sets(tmp_path: Path, monkeypatch):
    source = tmp_path / "source"
    _write_images(source / "1024x768")
    _write_labels(source)
    images_zip, scores_zip = tmp_path / "koniq10k_1024x768.zip", tmp_path / "scores.zip"
    with zipfile.ZipFile(images_zip, "w") as archive:
        for path in sorted((source / "1024x768").iterdir()):
            archive.write(path, f"1024x768/{path.name}")
    with zipfile.ZipFile(scores_zip, "w") as archive:
        archive.write(source / SCORES, SCORES)
    monkeypatch.setitem(koniq_module.DOWNLOADS, "images_1024x768", images_zip.as_uri())
    monkeypatch.setitem(koniq_module.DOWNLOADS, "scores", scores_zip.as_uri())
    monkeypatch.setitem(koniq_module.DOWNLOADS, "sets", (source / SETS).as_uri())
    dataset = load_koniq10k(cache_dir=tmp_path / "cache", download=True)
    assert sum(split.num_rows for split in dataset.values()) == len(SET_OF)
    assert (tmp_path / "cache" / "koniq10k" / SETS).is_file()
