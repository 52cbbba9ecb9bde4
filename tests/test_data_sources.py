"""load_dataset_source: one resolver for registered benchmarks, tables of your own data, prepared folders and
DatasetDicts (hub ids offline: tests/test_hub.py), with every problem of a table reported at once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _datasets import write_biq2021_layout, write_own_dataset, write_photos, write_score_table
from datasets import Dataset, DatasetDict, Image

from metaqap_hf import load_image
from metaqap_hf.data import (
    DatasetLayoutError,
    image_column,
    load_biq2021,
    load_dataset_image,
    load_dataset_source,
    prepare_dataset,
)
from metaqap_hf.data.splits import hold_out
from metaqap_hf.training.data import build_image_cache


def _rows(split) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "image"} for row in split.remove_columns("image")]


def test_a_csv_table_with_splits(tmp_path):
    table = write_own_dataset(tmp_path / "mine", count=30, test=6)
    source = load_dataset_source(table, mos_range=(1, 5))

    assert (source.name, source.dataset_id, source.mos_range, source.mos_name) == (
        "scores", "scores", (1.0, 5.0), "scores MOS (1-5)")
    assert list(source.dataset) == ["train", "validation", "test"]
    assert [len(split) for split in source.dataset.values()] == [22, 2, 6]  # validation carved from the 24 train
    assert source.dataset["test"]["image_name"] == [f"photos/photo_{index:02d}.png" for index in range(24, 30)]
    row = source.dataset["train"][0]
    assert row["mos_normalized"] == pytest.approx((row["mos"] - 1) / 4) and row["mos_std"] is None
    path = image_column(source.dataset["train"])[0]["path"]
    assert Path(path) == (tmp_path / "mine" / row["image_name"]).resolve()  # relative to the table, not the cwd
    assert "table" in source.origin and "22 train, 2 validation, 6 test" in source.describe()


def test_a_jsonl_table_without_splits_is_all_train_and_validation_is_seeded(tmp_path):
    table = write_own_dataset(tmp_path / "mine", count=20, suffix=".jsonl", split=False)
    first = load_dataset_source(table, mos_range=(1, 5), validation_fraction=0.25, seed=3)
    again = load_dataset_source(table, mos_range=(1, 5), validation_fraction=0.25, seed=3)
    other = load_dataset_source(table, mos_range=(1, 5), validation_fraction=0.25, seed=4)

    assert list(first.dataset) == ["train", "validation"] and len(first.dataset["validation"]) == 5
    names = [f"photos/photo_{index:02d}.png" for index in range(20)]
    kept, held = hold_out(names, 0.25, 3, group_of=lambda name: name)  # the benchmarks' own hold-out
    assert first.dataset["validation"]["image_name"] == held and first.dataset["train"]["image_name"] == kept
    assert again.dataset["validation"]["image_name"] == held
    assert other.dataset["validation"]["image_name"] != held


def test_a_table_keeps_its_own_validation_and_reads_std(tmp_path):
    levels = write_photos(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = write_score_table(tmp_path / "scores.csv", [
        {"image": "photos/a.png", "mos": 60, "split": "train", "std": 4.5},
        {"image": "photos/b.png", "mos": 20, "split": "validation", "std": ""},
        {"image": str((tmp_path / "photos" / "c.png").resolve()), "mos": 90, "split": "TRAIN", "std": 0},
    ])
    source = load_dataset_source(table, mos_range=(0, 100))
    assert len(levels) == 3 and {split: len(rows) for split, rows in source.dataset.items()} == {
        "train": 2, "validation": 1}
    assert source.dataset["train"]["mos_std"] == [4.5, 0.0] and source.dataset["validation"]["mos_std"] == [None]


def test_every_problem_of_a_bad_table_is_reported_at_once_before_anything_is_built(tmp_path):
    write_photos(tmp_path / "photos", [f"p{index}.png" for index in range(14)])
    (tmp_path / "photos" / "notes.png").write_text("not an image")
    (tmp_path / "photos" / "empty.png").write_bytes(b"")
    rows = [{"image": f"photos/p{index}.png", "mos": 3, "split": "train"} for index in range(14)]
    rows[1]["mos"] = "good"
    rows[2]["mos"] = 7
    rows[3]["split"] = "val"
    rows[4]["image"] = ""
    rows += [{"image": f"photos/gone{index}.png", "mos": 2, "split": "train"} for index in range(12)]
    rows += [{"image": "photos/notes.png", "mos": 2, "split": "test"}, {"image": "photos/empty.png", "mos": 2,
                                                                        "split": "test"}]
    rows.append({"image": "photos/p0.png", "mos": 4, "split": "test"})
    table = write_score_table(tmp_path / "scores.csv", rows)

    with pytest.raises(DatasetLayoutError) as caught:
        load_dataset_source(table, mos_range=(1, 5))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{table} cannot be used:"
    assert lines[1:] == [
        "  - rows whose 'mos' is not a number: line 3 ('good') (1 in all)",
        "  - scores outside the scale 1-5: line 4 (7) (1 in all)",
        "  - rows whose split is not train, validation or test: line 5 ('val') (1 in all)",
        "  - rows without an image: line 6 (1 in all)",
        "  - images listed more than once: line 30 ('photos/p0.png') (1 in all)",
        "  - missing images: " + ", ".join(str((tmp_path / "photos" / f"gone{i}.png").resolve())
                                         for i in sorted(range(12), key=str)[:10]) + ", ... (12 in all)",
        f"  - images that cannot be opened: {(tmp_path / 'photos' / 'empty.png').resolve()} (empty file), "
        f"{(tmp_path / 'photos' / 'notes.png').resolve()} (not an image file PIL can read) (2 in all)",
    ]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("file,score\na.png,3\n", ".csv", "has no column 'image', 'mos'"),
        ("image,mos\n", ".csv", "holds no rows"),
        ('{"image": "a.png", "mos": 3}\n{"image": "b.png"\n', ".jsonl", "line 2: not valid JSON"),
        ('{"file": "a.png", "mos": 3}\n', ".jsonl", "no row has 'image'"),
        ("[1, 2]\n", ".jsonl", "line 1: expected a JSON object"),
    ],
)
def test_malformed_tables_name_the_file_and_problem(tmp_path, content, suffix, message):
    table = tmp_path / f"scores{suffix}"
    table.write_text(content)
    with pytest.raises(DatasetLayoutError, match=message) as caught:
        load_dataset_source(table, mos_range=(1, 5))
    assert str(table) in str(caught.value)


def test_source_errors_say_what_to_give(tmp_path):
    table = write_own_dataset(tmp_path / "mine", count=4)
    with pytest.raises(ValueError, match=r"give the scale of its 'mos' column, e\.g\. mos_range=\(1, 5\)"):
        load_dataset_source(table)
    with pytest.raises(ValueError, match="mos_range must be two finite numbers LOW < HIGH"):
        load_dataset_source(table, mos_range=(5, 1))
    with pytest.raises(ValueError, match="data_dir is only read for the registered benchmarks"):
        load_dataset_source(table, tmp_path, mos_range=(1, 5))
    with pytest.raises(FileNotFoundError, match="nowhere.csv: no such file or folder"):
        load_dataset_source(tmp_path / "nowhere.csv", mos_range=(1, 5))
    (tmp_path / "notes.txt").write_text("image,mos\n")
    with pytest.raises(ValueError, match="a table must be a .csv or .jsonl file"):
        load_dataset_source(tmp_path / "notes.txt", mos_range=(1, 5))
    biq = write_biq2021_layout(tmp_path / "biq", train=4, test=2)
    with pytest.raises(ValueError, match="BIQ2021's MOS scale is 0-1; mos_range 1-5 contradicts it"):
        load_dataset_source("biq2021", biq, mos_range=(1, 5))


def test_a_registered_benchmark_is_its_loader(tmp_path):
    biq = write_biq2021_layout(tmp_path / "biq", train=20, test=4)
    source = load_dataset_source("BIQ-2021", biq, validation_fraction=0.2, seed=1)
    expected = load_biq2021(biq, validation_fraction=0.2, seed=1)
    assert (source.name, source.dataset_id, source.mos_range) == ("BIQ2021", "biq2021", (0.0, 1.0))
    assert {split: _rows(rows) for split, rows in source.dataset.items()} == {
        split: _rows(rows) for split, rows in expected.items()}


def test_a_prepared_folder_trains_from_its_embedded_images_alone(tmp_path):
    biq = write_biq2021_layout(tmp_path / "biq", train=10, test=4, size=40)
    originals = {path.name: load_image(path) for path in (biq / "Images").iterdir()}
    prepared = prepare_dataset("biq2021", biq, tmp_path / "prepared", validation_fraction=0.2)
    expected = {split: _rows(rows) for split, rows in load_biq2021(biq, validation_fraction=0.2).items()}
    shutil.rmtree(biq)  # no image file left on disk

    source = load_dataset_source(prepared)
    assert (source.name, source.dataset_id, source.mos_range) == ("BIQ2021", "biq2021", (0.0, 1.0))
    assert {split: _rows(rows) for split, rows in source.dataset.items()} == expected
    items = image_column(source.dataset["train"])
    assert items[0]["bytes"] and not Path(items[0]["path"]).exists()  # the stored name is not a file here
    decoded = load_dataset_image(items[0])
    assert np.array_equal(np.asarray(decoded), np.asarray(originals[items[0]["path"]]))

    from _training import tiny_processor

    processor = tiny_processor()
    cache = build_image_cache(items, processor)
    expected_pixels = processor(images=[originals[item["path"]] for item in items], do_rescale=False,
                                return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.from_numpy(np.asarray(cache)), expected_pixels)

    with pytest.raises(ValueError, match=r"is on the scale 0-1 \(from its 'mos_normalized'\); mos_range 1-5"):
        load_dataset_source(prepared, mos_range=(1, 5))


def test_a_dataset_dict_needs_a_scale_or_mos_normalized_and_known_splits(tmp_path):
    paths = [str(tmp_path / f"p{index}.png") for index in range(6)]
    write_photos(tmp_path, [Path(path).name for path in paths])
    train = Dataset.from_dict({"image": paths, "mos": [1.0, 2.0, 3.0, 4.0, 5.0, 2.5]})
    with pytest.raises(ValueError, match="no 'mos_normalized' column to read it from"):
        load_dataset_source(DatasetDict(train=train))
    source = load_dataset_source(DatasetDict(train=train), mos_range=(1, 5), name="lab photos",
                                 validation_fraction=0.34)
    assert (source.name, source.dataset_id, source.mos_name) == ("lab photos", "lab-photos", "lab photos MOS (1-5)")
    assert [len(split) for split in source.dataset.values()] == [4, 2]
    assert isinstance(source.dataset["train"].features["image"], Image)  # file paths, read as images
    assert source.dataset["train"]["image_name"][0] == paths[0]

    with pytest.raises(DatasetLayoutError, match=r"has the splits \['train', 'dev'\]"):
        load_dataset_source(DatasetDict(train=train, dev=train), mos_range=(1, 5))
    bad = Dataset.from_dict({"image": paths[:2] + [str(tmp_path / "gone.png")], "mos": [1.0, None, 9.0]})
    with pytest.raises(DatasetLayoutError) as caught:
        load_dataset_source(DatasetDict(test=bad), mos_range=(1, 5))
    message = str(caught.value)
    assert "rows whose 'mos' is not a number: test" in message and "scores outside the scale 1-5: test" in message
    assert f"missing images: test {tmp_path / 'gone.png'} (1 in all)" in message


def test_a_benchmark_loaded_in_python_keeps_its_name(tmp_path):
    biq = write_biq2021_layout(tmp_path / "biq", train=10, test=2)
    source = load_dataset_source(load_biq2021(biq))
    assert (source.name, source.dataset_id, source.mos_range, source.mos_name) == (
        "BIQ2021", "biq2021", (0.0, 1.0), "BIQ2021 MOS (0-1)")
    assert source.origin == "a DatasetDict given in Python"


def test_pretraining_content_is_the_train_and_validation_files_and_never_embedded_images(tmp_path):
    from metaqap_hf.pretraining.content import training_image_files

    biq = write_biq2021_layout(tmp_path / "biq", train=10, test=4, size=40)
    files = training_image_files("biq2021", biq)
    test_names = set(load_biq2021(biq)["test"]["image_name"])
    assert len(files) == 10 and all(Path(path).is_file() for path in files)
    assert len(test_names) == 4 and test_names <= {path.name for path in (biq / "Images").iterdir()}
    assert not {Path(path).name for path in files} & test_names  # the test split is never read
    prepared = prepare_dataset("biq2021", biq, tmp_path / "prepared", validation_fraction=0.2)
    with pytest.raises(ValueError, match="its images are embedded in the dataset, and pretraining reads image files"):
        training_image_files(prepared)
