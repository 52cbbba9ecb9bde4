import json
import subprocess
import sys

import pytest

from metaqap_cli import main

from _images import random_photo


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    random_photo(0).save(folder / "good1.jpg")
    random_photo(1).save(folder / "nested" / "good2.png")
    random_photo(2, size=(200, 200)).save(folder / "truncated.jpg", quality=95)
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_score_folder_scores_good_files_names_bad_ones_and_exits_non_zero(photo_folder, tiny_checkpoint, capsys):
    status = main(["score", str(photo_folder), "--model", str(tiny_checkpoint), "--format", "json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    scored = sorted(r["path"].rsplit("/", 1)[-1] for r in report["results"])
    assert scored == ["good1.jpg", "good2.png"]
    skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"truncated.jpg", "zero.jpg", "notes.txt"}
    assert "truncated" in skipped["truncated.jpg"] and "empty" in skipped["zero.jpg"]
    for name in skipped:
        assert name in captured.err  # also reported on stderr for people
    assert status == 1


def test_score_all_good_exits_zero_and_writes_csv(photo_folder, tiny_checkpoint, tmp_path, capsys):
    output = tmp_path / "scores.csv"
    status = main(["score", str(photo_folder / "good1.jpg"), str(photo_folder / "nested"),
                   "--model", str(tiny_checkpoint), "--format", "csv", "--output", str(output), "--batch-size", "2"])
    lines = output.read_text().splitlines()
    assert status == 0
    assert lines[0] == "path,score,std,test_efficientnet,test_resnet" and len(lines) == 3


def test_nothing_scorable_exits_three(tmp_path, tiny_checkpoint):
    (tmp_path / "a.txt").write_text("x")
    assert main(["score", str(tmp_path / "a.txt"), str(tmp_path / "missing.jpg"),
                 "--model", str(tiny_checkpoint)]) == 3


def test_help_reads_well():
    result = subprocess.run([sys.executable, "-m", "metaqap_hf", "--help"], capture_output=True, text=True, check=True)
    assert "score" in result.stdout and "COMMAND" in result.stdout
    result = subprocess.run([sys.executable, "-m", "metaqap_hf", "score", "--help"],
                            capture_output=True, text=True, check=True)
    for option in ("--model", "--batch-size", "--device", "--format", "--output", "exit status"):
        assert option in result.stdout
