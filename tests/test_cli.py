"""`metaqap score`: exit statuses, one `error:` line for every bad option, outputs that are written through or
streamed into and never replaced, and interrupted or killed runs that keep their rows and resume."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from metaqap_cli import main
from metaqap_hf.scoring.options import MAX_NUM_WORKERS

from _images import random_photo
from _scoring import cli_environment, metaqap_command, run_metaqap, save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


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


def test_score_folder_scores_good_files_names_bad_ones_and_exits_one(photo_folder, checkpoint, capfd):
    status = main(["score", str(photo_folder), "--model", str(checkpoint), "--format", "json"])
    captured = capfd.readouterr()
    report = json.loads(captured.out)
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in report["results"]) == ["good1.jpg", "good2.png"]
    skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"truncated.jpg", "zero.jpg", "notes.txt"}
    assert "truncated" in skipped["truncated.jpg"] and "empty" in skipped["zero.jpg"]
    for name in skipped:
        assert f"skipped {photo_folder / name}: {skipped[name]}" in captured.err.splitlines()
    assert captured.err.splitlines()[-1] == "scored 2 files in 1 process, 3 skipped"
    assert status == 1


def test_score_all_good_exits_zero_and_writes_csv(photo_folder, checkpoint, tmp_path):
    output = tmp_path / "scores.csv"
    status = main(["score", str(photo_folder / "good1.jpg"), str(photo_folder / "nested"),
                   "--model", str(checkpoint), "--output", str(output), "--batch-size", "2"])
    lines = output.read_text().splitlines()
    assert status == 0
    assert lines[0] == "path,score,raw_score,std,test_efficientnet,test_resnet" and len(lines) == 3


def test_nothing_scorable_exits_three(tmp_path, checkpoint, capsys):
    (tmp_path / "a.txt").write_text("x")
    assert main(["score", str(tmp_path / "a.txt"), str(tmp_path / "missing.jpg"), "--model", str(checkpoint)]) == 3
    assert capsys.readouterr().err.splitlines()[-1] == "scored 0 files in 1 process, 2 skipped"


def test_help_reads_well(capsys):
    for arguments in (["--help"], ["score", "--help"]):
        with pytest.raises(SystemExit) as exit_request:
            main(arguments)
        assert exit_request.value.code == 0
    text = capsys.readouterr().out
    for option in ("COMMAND", "--model", "--batch-size", "--num-workers", "--device", "--format", "--output",
                   "--resume", "--files-from", "--dataset", "exit status", "(default: 8)", "(default: auto)"):
        assert option in text


# --------------------------------------------------------------------------------------------- one error line
def _option_cases(tmp_path, photo_folder, checkpoint):
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "model_file").write_text("x")
    (tmp_path / "list.txt").write_text(f"{photo_folder / 'good1.jpg'}\n")
    return [
        (["--batch-size", "0"], "error: --batch-size 0: must be a whole number from 1 to 1024"),
        (["--batch-size", "-3"], "error: --batch-size -3: must be a whole number from 1 to 1024"),
        (["--batch-size", "100000"], "error: --batch-size 100000: must be a whole number from 1 to 1024"),
        (["--batch-size", "many"], "error: argument --batch-size/-b: invalid int value: 'many'"),
        (["--num-workers", "-1"], f"error: --num-workers -1: must be a whole number from 0 to {MAX_NUM_WORKERS}"),
        (["--output", str(photo_folder / "good1.jpg")], f"error: --output {photo_folder / 'good1.jpg'}: is an image "
                                                        f"file; results would overwrite it"),
        (["--files-from", "/dev/zero"], "error: --files-from /dev/zero: is a device; give a file or pipe that lists "
                                        "paths"),
        (["--files-from", str(tmp_path / "list.txt"), "--output", str(tmp_path / "list.txt")],
         f"error: --output {tmp_path / 'list.txt'}: is the list of paths being read (files_from)"),
        (["--split", "test"], "error: --split test: is only used with a dataset"),
        (["--image-column", "jpg"], "error: --image-column jpg: is only used with a dataset"),
        (["--format", "xml"], "error: argument --format/-f: invalid choice: 'xml' (choose from 'table', 'csv', "
                              "'jsonl', 'json')"),
        (["--dtype", "float64"], "error: argument --dtype: invalid choice: 'float64' (choose from 'auto', "
                                 "'float32', 'bfloat16')"),
        (["--runtime", "onnx", "--dtype", "bfloat16"], "error: --runtime onnx: computes in float32; use dtype float32 "
                                                       "or auto, or runtime torch for bfloat16"),
        (["--device", "tpu7"], "error: --device tpu7: unknown device; accepted here: auto, cpu"),
        (["--device", "cuda"], "error: --device cuda: no CUDA GPU is available here; accepted here: auto, cpu"),
        (["--device", "mps"], "error: --device mps: not available here; accepted here: auto, cpu"),
        (["--model", "/no/such/model"], "error: --model /no/such/model: no such folder (and not a hub id like "
                                        "'owner/name')"),
        (["--model", str(tmp_path / "not_a_model")], f"error: --model {tmp_path / 'not_a_model'}: is not a model "
                                                     f"folder (it has no config.json)"),
        (["--model", str(tmp_path / "model_file")], f"error: --model {tmp_path / 'model_file'}: is a file; give a "
                                                    f"checkpoint folder"),
        (["--output", str(tmp_path)], f"error: --output {tmp_path}: is a folder; give a file name"),
        (["--output", str(tmp_path / "no" / "x.csv")], f"error: --output {tmp_path / 'no' / 'x.csv'}: its folder "
                                                       f"{tmp_path / 'no'} does not exist"),
        (["--resume"], "error: --resume: needs an output file (csv or jsonl) to read back"),
        (["--resume", "--output", str(tmp_path / "r.json")], "error: --resume: needs a csv or jsonl output, not json"),
        (["--files-from", str(tmp_path / "missing.txt")], f"error: --files-from {tmp_path / 'missing.txt'}: cannot "
                                                          f"read it (No such file or directory)"),
        (["--files-from", str(tmp_path)], f"error: --files-from {tmp_path}: is a folder; give a file that lists "
                                          f"paths, one a line"),
        (["--dataset", str(tmp_path / "nothing")], f"error: --dataset {tmp_path / 'nothing'}: cannot load it"),
        (["--frobnicate"], "error: unrecognized arguments: --frobnicate"),
    ]


def _status(arguments: list[str]) -> int:
    """`main`'s exit status, also when argparse exits on its own."""
    try:
        return main(arguments)
    except SystemExit as exit_request:
        return exit_request.code


def test_every_bad_option_value_gets_one_error_line(tmp_path, photo_folder, checkpoint, capsys):
    for arguments, expected in _option_cases(tmp_path, photo_folder, checkpoint):
        if ("cuda" in arguments and torch.cuda.is_available()) or ("mps" in arguments and
                                                                   torch.backends.mps.is_available()):
            continue
        model = [] if "--model" in arguments else ["--model", str(checkpoint)]
        status = _status(["score", str(photo_folder), *model, *arguments])
        err = capsys.readouterr().err
        assert status == 2, (arguments, err)
        assert len(err.splitlines()) == 1 and err.startswith(expected), (arguments, err)


def test_no_paths_at_all(checkpoint, capsys):
    assert main(["score", "--model", str(checkpoint)]) == 2
    assert capsys.readouterr().err == "error: PATH: give image files or folders, a list of them, or a dataset\n"


def test_debug_shows_the_traceback(photo_folder):
    with pytest.raises(ValueError, match="unknown device"):
        main(["score", str(photo_folder), "--device", "tpu7", "--debug"])


# --------------------------------------------------------------------------------------------------- outputs
def test_a_symbolic_link_is_written_through_and_a_file_rewritten_in_place(photo_folder, checkpoint, tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_text("old content\n")
    alias = tmp_path / "alias.jsonl"
    os.link(target, alias)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    inode = target.stat().st_ino
    assert main(["score", str(photo_folder / "nested"), "--model", str(checkpoint), "--output", str(link)]) == 0
    assert link.is_symlink() and target.stat().st_ino == inode
    rows = [json.loads(line) for line in alias.read_text().splitlines()]
    assert [row["path"] for row in rows] == [str(photo_folder / "nested" / "good2.png")]


def test_a_fifo_is_streamed_into(photo_folder, checkpoint, tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    status = main(["score", str(photo_folder / "nested"), str(photo_folder / "good1.jpg"), "--model",
                   str(checkpoint), "--format", "csv", "--output", str(fifo)])
    reader.join(timeout=60)
    assert status == 0 and fifo.exists() and not fifo.is_file()
    assert received[0].decode().splitlines()[0].startswith("path,score,raw_score")
    assert len(received[0].decode().splitlines()) == 3


def test_dev_stdout_and_dash_write_to_standard_output(photo_folder, checkpoint, capfd):
    result = run_metaqap("score", str(photo_folder / "nested"), "--model", str(checkpoint), "--format", "jsonl",
                         "--output", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    assert main(["score", str(photo_folder / "nested"), "--model", str(checkpoint), "-f", "jsonl", "-o", "-"]) == 0
    for text in (result.stdout, capfd.readouterr().out):
        assert json.loads(text)["path"] == str(photo_folder / "nested" / "good2.png")


def test_a_full_disk_fails_with_status_four(photo_folder, checkpoint, capsys):
    status = main(["score", str(photo_folder / "nested"), "--model", str(checkpoint), "-f", "csv", "-o", "/dev/full"])
    assert status == 4
    assert capsys.readouterr().err == "error: cannot write /dev/full: No space left on device\n"


def test_two_runs_cannot_write_one_file(photo_folder, checkpoint, tmp_path, capsys):
    import fcntl

    output = tmp_path / "scores.csv"
    with open(output, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        status = main(["score", str(photo_folder), "--model", str(checkpoint), "--output", str(output)])
    assert status == 2
    assert capsys.readouterr().err == f"error: --output {output}: another process is writing it (it is locked)\n"


def test_the_table_keeps_one_line_per_image(tmp_path, checkpoint, capfd):
    random_photo(3).save(tmp_path / "two\nlines.png", format="PNG")
    random_photo(3).save(tmp_path / "plain.png")
    assert main(["score", str(tmp_path), "--model", str(checkpoint)]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[3].endswith(repr(str(tmp_path / "two\nlines.png")))


def test_paths_from_standard_input(photo_folder, checkpoint, monkeypatch, capfd):
    listing = f"{photo_folder / 'good1.jpg'}\n{photo_folder / 'nested'}\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing)))
    assert main(["score", "--files-from", "-", "--model", str(checkpoint), "-f", "csv"]) == 0
    assert [line.split(",")[0] for line in capfd.readouterr().out.splitlines()[1:]] == [
        str(photo_folder / "good1.jpg"), str(photo_folder / "nested" / "good2.png")]


def test_paths_from_standard_input_resume_into_a_file(photo_folder, checkpoint, monkeypatch, tmp_path):
    output = tmp_path / "scores.jsonl"
    for resume in ([], ["--resume"]):  # "-" is no file to compare the output with
        listing = f"{photo_folder / 'good1.jpg'}\n{photo_folder / 'nested'}\n".encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listing)))
        assert main(["score", "--files-from", "-", "--model", str(checkpoint), "-o", str(output), *resume]) == 0
    assert len(output.read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------ interrupts and resume
def _tiny_photos(folder, count: int):
    for index in range(count):
        random_photo(index % 50, size=(8, 8)).save(folder / f"{index:04d}.png")
    return folder


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory):
    return _tiny_photos(tmp_path_factory.mktemp("many"), 2000)


@pytest.fixture(scope="module")
def some_photos(tmp_path_factory):
    return _tiny_photos(tmp_path_factory.mktemp("some"), 300)


def _start_and_stop(arguments, output, rows_before_stop: int, stop_signal) -> subprocess.CompletedProcess:
    process = subprocess.Popen(metaqap_command(*arguments), env=cli_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_bytes().count(b"\n") >= rows_before_stop:
            process.send_signal(stop_signal)
            break
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=240)
    return subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr)


def _paths_once(output) -> list[str]:
    paths = [json.loads(line)["path"] for line in output.read_text().splitlines()]
    assert len(paths) == len(set(paths)), "a row written twice"
    return paths


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_keep_the_rows_and_say_so(some_photos, checkpoint, tmp_path, stop_signal):
    output = tmp_path / "scores.jsonl"
    arguments = ["score", str(some_photos), "--model", str(checkpoint), "-b", "4", "-j", "1", "-o", str(output)]
    stopped = _start_and_stop(arguments, output, 40, stop_signal)
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    last = stopped.stderr.splitlines()[-1]
    assert last.startswith("interrupted: ") and "run the same command with --resume to continue" in last
    written = _paths_once(output)
    assert f"interrupted: {len(written)} file(s) scored and written to {output}" in last
    assert main([*arguments, "--resume"]) == 0
    assert sorted(_paths_once(output)) == sorted(str(path) for path in some_photos.iterdir())


def test_sigkill_half_way_then_resume_gives_every_row_exactly_once(many_photos, checkpoint, tmp_path, capsys):
    output = tmp_path / "scores.jsonl"
    arguments = ["score", str(many_photos), "--model", str(checkpoint), "-b", "16", "-o", str(output)]
    killed = _start_and_stop(arguments, output, 1000, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    before = output.read_bytes()
    assert 1000 <= before.count(b"\n") < 2000
    assert main([*arguments, "--resume"]) == 0
    assert f"were already in {output}" in capsys.readouterr().err
    assert sorted(_paths_once(output)) == sorted(str(path) for path in many_photos.iterdir())
    assert output.read_bytes().startswith(before[: before.rfind(b"\n") + 1])  # nothing written before was lost
