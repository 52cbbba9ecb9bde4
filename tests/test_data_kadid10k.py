"""KADID-10k loader on a tiny fixture: splits by reference image, parsed distortion fields, errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from metaqap_hf.data import DatasetLayoutError, UnlabeledImagesWarning, load_kadid10k

REFERENCES = [f"I{index:02d}" for index in range(1, 11)]
DISTORTED = [f"{ref}_{kind:02d}_{level:02d}.png" for ref in REFERENCES for kind in (1, 24) for level in (1, 5)]


def _write_image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(path)


@pytest.fixture
def tiny_kadid(tmp_path: Path) -> Path:
    root = tmp_path / "kadid"
    (root / "images").mkdir(parents=True)
    for seed, name in enumerate(DISTORTED + [f"{ref}.png" for ref in REFERENCES]):
        _write_image(root / "images" / name, seed)
    lines = ["dist_img,ref_img,dmos,var"]
    for index, name in enumerate(DISTORTED):
        lines.append(f"{name},{name[:3]}.png,{1.0 + index / 10:.2f},{0.25 + index / 100:.2f}")
    (root / "dmos.csv").write_text("\n".join(lines) + "\n")
    return root


def _references(dataset, split: str) -> set[str]:
    return set(dataset[split]["ref_image"])


def test_splits_are_drawn_over_reference_images(tiny_kadid: Path):
    for split_index in range(3):
        dataset = load_kadid10k(tiny_kadid, split_index=split_index)
        train, validation, test = (_references(dataset, split) for split in ("train", "validation", "test"))
        assert (len(train), len(validation), len(test)) == (7, 1, 2)
        assert not train & validation and not train & test and not validation & test
        assert [split.num_rows for split in dataset.values()] == [28, 4, 8]
    tests = {frozenset(_references(load_kadid10k(tiny_kadid, split_index=index), "test")) for index in range(10)}
    assert len(tests) > 1


def test_distortion_fields_and_scores(tiny_kadid: Path):
    dataset = load_kadid10k(tiny_kadid, validation_fraction=0.0)
    assert list(dataset) == ["train", "test"]
    rows = {row["image_name"]: row for split in dataset.values() for row in split}
    assert sorted(rows) == sorted(DISTORTED)
    row = rows["I03_24_05.png"]
    index = DISTORTED.index("I03_24_05.png")
    assert (row["ref_image"], row["distortion_type"], row["distortion_level"]) == ("I03.png", 24, 5)
    assert row["mos"] == pytest.approx(1.0 + index / 10)
    assert row["mos_normalized"] == pytest.approx(index / 40)
    assert row["mos_std"] == pytest.approx(math.sqrt(0.25 + index / 100))
    assert dataset["test"].features["distortion_type"].dtype == "int32"


def test_reference_files_count_as_labelled_but_strays_do_not(tiny_kadid: Path):
    _write_image(tiny_kadid / "images" / "I99_01_01.png", seed=1)
    with pytest.warns(UnlabeledImagesWarning, match=r"1 images that no label file lists: 'I99_01_01.png'"):
        load_kadid10k(tiny_kadid)
    with pytest.raises(DatasetLayoutError, match="I99_01_01.png"):
        load_kadid10k(tiny_kadid, strict=True)


def test_missing_distorted_images_are_named(tiny_kadid: Path):
    for name in DISTORTED[:12]:
        (tiny_kadid / "images" / name).unlink()
    with pytest.raises(DatasetLayoutError, match=r"12 images listed in .*dmos.csv are missing .*\(12 in all\)"):
        load_kadid10k(tiny_kadid)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("dist_img,ref_img,dmos\nI01_01_01.png,I01.png,3.0\n", r"no column 'var'"),
        ("dist_img,ref_img,dmos,var\nblurred.png,I01.png,3.0,0.2\n", r"row 2: dist_img 'blurred.png' is not of"),
        ("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,3.0,-1\n", r"row 2: var -1 is negative"),
        ("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,7.5,0.2\n", r"row 2: dmos 7.5 lies outside .* 1-5"),
        ("dist_img,ref_img,dmos,var\nI01_01_01.png,,3.0,0.2\n", r"row 2: column 'ref_img' holds no image name"),
    ],
)
def test_malformed_label_file(tiny_kadid: Path, content: str, problem: str):
    (tiny_kadid / "dmos.csv").write_text(content)
    with pytest.raises(DatasetLayoutError, match=problem):
        load_kadid10k(tiny_kadid)


def test_missing_label_file_and_folder(tiny_kadid: Path, tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match=r"Missing directory .*images"):
        load_kadid10k(tmp_path / "empty")
    (tiny_kadid / "dmos.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"Missing label file .*dmos.csv"):
        load_kadid10k(tiny_kadid)
