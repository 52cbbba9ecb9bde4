"""SPAQ loader on a tiny fixture: a TestImage folder and the annotation spreadsheet written with openpyxl."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from metaqap_hf.data import DatasetLayoutError, UnlabeledImagesWarning, load_spaq

openpyxl = pytest.importorskip("openpyxl", reason="SPAQ's spreadsheet needs openpyxl")

LABELS = "Annotations/MOS and Image attribute scores.xlsx"
HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
NAMES = [f"{index:05d}.jpg" for index in range(1, 16)]


def _write_sheet(path: Path, header: list[str], rows: list[list[object]]) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    workbook.save(path)


def _rows() -> list[list[object]]:
    return [[name, 6.0 * index, 50.0, 51.0, 52.0, 53.0, 10.0 + index] for index, name in enumerate(NAMES, start=1)]


@pytest.fixture
def tiny_spaq(tmp_path: Path) -> Path:
    root = tmp_path / "spaq"
    (root / "TestImage").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for seed, name in enumerate(NAMES):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(root / "TestImage" / name)
    _write_sheet(root / LABELS, HEADER, _rows())
    return root


def test_columns_scales_and_protocol_split(tiny_spaq: Path):
    dataset = load_spaq(tiny_spaq, split_index=2)
    assert [split.num_rows for split in dataset.values()] == [11, 1, 3]
    assert set(dataset["train"].features) == {
        "image", "image_name", "mos", "mos_normalized", "mos_std",
        "brightness", "colorfulness", "contrast", "noisiness", "sharpness",
    }
    everything = [row for split in dataset.values() for row in split]
    assert sorted(row["image_name"] for row in everything) == NAMES
    for row in everything:
        index = NAMES.index(row["image_name"]) + 1
        assert row["mos"] == pytest.approx(6.0 * index)
        assert row["mos_normalized"] == pytest.approx(0.06 * index)
        assert row["mos_std"] is None
        assert (row["brightness"], row["sharpness"]) == (50.0, 10.0 + index)
    assert "MOS scale 0-100" in dataset["test"].info.description
    assert list(load_spaq(tiny_spaq, split_index=2)["test"]["image_name"]) == list(dataset["test"]["image_name"])


def test_absent_attribute_columns_become_none(tiny_spaq: Path):
    _write_sheet(tiny_spaq / LABELS, HEADER[:2], [row[:2] for row in _rows()])
    train = load_spaq(tiny_spaq)["train"]
    assert set(train["brightness"]) == {None}


def test_missing_and_unlabeled_images(tiny_spaq: Path):
    PILImage.new("RGB", (8, 8)).save(tiny_spaq / "TestImage" / "99999.jpg")
    with pytest.warns(UnlabeledImagesWarning, match=r"'99999.jpg'"):
        load_spaq(tiny_spaq)
    with pytest.raises(DatasetLayoutError, match=r"1 images that no label file lists"):
        load_spaq(tiny_spaq, strict=True)
    (tiny_spaq / "TestImage" / NAMES[3]).unlink()
    with pytest.raises(DatasetLayoutError, match=rf"1 images listed in .*xlsx are missing .*'{NAMES[3]}'"):
        load_spaq(tiny_spaq)


def test_spreadsheet_problems_are_named(tiny_spaq: Path):
    label_file = tiny_spaq / LABELS
    _write_sheet(label_file, ["Image name", "Score"], [[NAMES[0], 40.0]])
    with pytest.raises(DatasetLayoutError, match=r"xlsx has no column 'MOS'"):
        load_spaq(tiny_spaq)
    _write_sheet(label_file, HEADER, [[NAMES[0], "n/a", 1, 1, 1, 1, 1]])
    with pytest.raises(DatasetLayoutError, match=r"row 2: column 'MOS' holds 'n/a', not a number"):
        load_spaq(tiny_spaq)
    label_file.write_bytes(b"this is not a spreadsheet")
    with pytest.raises(DatasetLayoutError, match=r"xlsx is not a readable .xlsx file"):
        load_spaq(tiny_spaq)
    label_file.unlink()
    with pytest.raises(DatasetLayoutError, match=r"Missing label file .*MOS and Image attribute scores.xlsx"):
        load_spaq(tiny_spaq)
