"""`metaqap_hf.scoring`: inputs (folders, lists, tar shards, datasets), decoding in worker processes, streamed and
resumable output, the out-of-range policy and option errors, through the library's Python API."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading

import numpy as np
import pytest

from metaqap_hf.scoring import (
    ImageInput,
    ImageInputs,
    ImageScorer,
    OptionError,
    ScoringInterrupted,
    score_to_output,
)
from metaqap_hf.scoring import scorer as scorer_module
from metaqap_hf.scoring.output import KeySet, read_rows

from _images import random_photo
from _scoring import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def scorer(checkpoint):
    return ImageScorer(checkpoint, device="cpu")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "b_sub").mkdir(parents=True)
    for index, name in enumerate(["c.png", "a.jpg", "b_sub/z.png", "b_sub/y.png", "d.png"]):
        random_photo(index, size=(40 + 8 * index, 56)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return folder


def _keys(inputs) -> list[str]:
    return [item.key for item in inputs]


# ------------------------------------------------------------------------------------------------------- inputs
def test_folders_are_walked_files_first_then_sub_folders_in_name_order(photos):
    names = [os.path.relpath(key, photos) for key in _keys(ImageInputs([photos]))]
    assert names == ["a.jpg", "broken.png", "c.png", "d.png", "b_sub/y.png", "b_sub/z.png"]


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\0"])
def test_path_lists_in_every_form(photos, separator):
    odd = os.fsdecode(b"odd\nname_\xff.png")  # a newline and a byte that is not UTF-8: only NUL lists can hold it
    random_photo(9).save(photos / odd, format="PNG")
    names = [photos / "c.png", photos / "b_sub", photos / odd] if separator == b"\0" else [photos / "c.png",
                                                                                          photos / "b_sub"]
    listing = separator.join(os.fsencode(str(path)) for path in names) + separator + separator
    keys = _keys(ImageInputs(files_from=io.BytesIO(listing)))
    expected = [str(photos / "c.png"), str(photos / "b_sub/y.png"), str(photos / "b_sub/z.png")]
    assert keys == expected + ([str(photos / odd)] if separator == b"\0" else [])


def test_a_list_file_and_arguments_together(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'd.png'}\n{photos / 'missing.png'}\n")
    items = list(ImageInputs([photos / "a.jpg"], files_from=listing))
    assert [(item.key, item.problem) for item in items] == [
        (str(photos / "a.jpg"), None), (str(photos / "d.png"), None),
        (str(photos / "missing.png"), "no such file or directory")]


def test_tar_shards_are_read_as_a_stream_of_their_image_members(photos, tmp_path):
    shard = tmp_path / "shard-000.tar.gz"
    with tarfile.open(shard, "w:gz") as archive:
        for name in ("0001.png", "0001.cls", "0002.png"):
            data = (photos / "c.png").read_bytes() if name.endswith(".png") else b"3"
            member = tarfile.TarInfo(f"samples/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    items = list(ImageInputs([shard]))
    assert _keys(items) == [f"{shard}/samples/0001.png", f"{shard}/samples/0002.png"]
    assert items[0].source == (photos / "c.png").read_bytes()


def test_datasets_saved_to_disk_or_as_parquet(tmp_path, scorer):
    import datasets

    images = [random_photo(seed, size=(30, 40)) for seed in range(3)]
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("int64")})
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"picture": images[:2], "label": [1, 2]}, features=features),
        "test": datasets.Dataset.from_dict({"picture": images[2:], "label": [3]}, features=features)})
    data.save_to_disk(tmp_path / "saved")
    (tmp_path / "parquet").mkdir()
    data["train"].to_parquet(tmp_path / "parquet" / "train.parquet")

    saved = list(scorer.score(ImageInputs(dataset=tmp_path / "saved")))
    assert [item.path for item in saved] == [f"{tmp_path / 'saved'}:train/0", f"{tmp_path / 'saved'}:train/1",
                                              f"{tmp_path / 'saved'}:test/0"]
    direct = list(scorer.score(ImageInput(f"image{index}", _png(image)) for index, image in enumerate(images)))
    assert [item.score for item in saved] == [item.score for item in direct]
    parquet = list(scorer.score(ImageInputs(dataset=tmp_path / "parquet", split="train")))
    assert [item.score for item in parquet] == [item.score for item in direct[:2]]

    with pytest.raises(OptionError, match="has the splits") as error:
        ImageInputs(dataset=tmp_path / "saved", split="validation")
    assert error.value.option == "split"
    with pytest.raises(OptionError, match=r"no such image column; its columns are \['label', 'picture'\], images in \['picture'\]"):
        ImageInputs(dataset=tmp_path / "saved", image_column="label")
    with pytest.raises(OptionError) as error:
        ImageInputs(dataset="nobody/no-such-dataset-here")
    assert error.value.option == "dataset"


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------ scoring
def test_decoding_in_worker_processes_gives_the_same_results_in_the_same_order(photos, scorer):
    here = list(scorer.score_files([photos], batch_size=2))
    for workers in (1, 2):
        there = list(scorer.score_files([photos], batch_size=2, num_workers=workers))
        assert [(item.path, item.score, item.reason) for item in there] == [
            (item.path, item.score, item.reason) for item in here]
    assert [item.ok for item in here] == [True, False, True, True, True, True]


def test_a_decoding_process_that_dies_costs_only_its_own_input(photos, scorer, monkeypatch):
    """A decoder crash (simulated here by exiting the worker on one input) breaks the pool; the inputs in flight
    are retried one at a time and only the one that kills its process is reported."""
    import multiprocessing

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the simulated crash reaches the workers by fork")
    real_prepare = scorer_module.prepare_pixels

    def crashing_prepare(item, processor, input_size):
        if item.key.endswith("d.png"):
            os._exit(1)
        return real_prepare(item, processor, input_size)

    monkeypatch.setattr(scorer_module, "prepare_pixels", crashing_prepare)  # the forked workers inherit it
    results = {os.path.basename(item.path): item for item in scorer.score_files([photos], num_workers=2)}
    assert results["d.png"].reason == scorer_module._WORKER_DIED
    assert all(results[name].ok for name in ("a.jpg", "c.png", "y.png", "z.png"))


def test_batches_do_not_change_scores_beyond_float_noise(photos, scorer):
    one = [item.score for item in scorer.score_files([photos], batch_size=1) if item.ok]
    many = [item.score for item in scorer.score_files([photos], batch_size=4) if item.ok]
    assert many == pytest.approx(one, abs=1e-5)
    assert len(set(one)) == len(one)


def test_scores_outside_the_range_are_clipped_and_the_raw_value_kept(tmp_path, photos):
    from transformers import pipeline

    import metaqap_hf  # noqa: F401 - registers the task

    low = save_tiny_checkpoint(tmp_path / "low", head_bias=-0.5)
    item = next(ImageScorer(low, device="cpu", dtype="float32").score_files([photos / "a.jpg"]))
    assert item.score == 0.0 and item.raw_score < 0.0
    assert list(item.base_scores.values()) == [0.0, 0.0]
    assert item.std > 0  # the spread of the unclipped base scores
    result = pipeline("image-quality", model=str(low))(str(photos / "a.jpg"))
    assert result == {"score": 0.0, "raw_score": pytest.approx(item.raw_score, abs=1e-6),
                      "base_scores": item.base_scores, "std": pytest.approx(item.std, abs=1e-6)}


@pytest.mark.parametrize(("arguments", "option", "message"), [
    ({"device": "cuda:99"}, "device", "accepted here: auto, cpu"),
    ({"device": "nonsense"}, "device", "unknown device"),
    ({"device": "meta"}, "device", "not available here"),
    ({"dtype": "float16"}, "dtype", "accepted: auto, float32, bfloat16"),
    ({"runtime": "tensorrt"}, "runtime", "accepted: auto, torch, onnx"),
    ({"runtime": "onnx", "dtype": "bfloat16"}, "runtime", "computes in float32"),
    ({"model": "/no/such/folder"}, "model", "no such folder"),
    ({"model": "nobody/no-model-here"}, "model", "cannot load it"),
])
def test_bad_scorer_options_name_the_option(arguments, option, message):
    if "cuda" in arguments.get("device", "") and __import__("torch").cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(OptionError, match=message) as error:
        ImageScorer(**arguments)
    assert error.value.option == option


def test_folders_that_are_not_checkpoints(tmp_path, photos, checkpoint):
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (partial / name).write_bytes((checkpoint / name).read_bytes())
    weights = load_file(checkpoint / "model.safetensors")
    save_file({key: value for key, value in weights.items() if not key.startswith("heads.1.")},
              partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OptionError, match=r"its weights lack 4 tensors \(heads.1.feature_mean, .*not a complete"):
        ImageScorer(partial)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    for folder, message in [(photos, "no config.json"), (tmp_path / "other", "a 'bert' checkpoint"),
                            (tmp_path / "broken", "config.json cannot be read"), (photos / "a.jpg", "is a file")]:
        with pytest.raises(OptionError, match=message):
            ImageScorer(folder)


# ------------------------------------------------------------------------------------------------------- output
def test_resume_cuts_off_a_half_written_row_and_scores_each_input_once(photos, checkpoint, tmp_path):
    output = tmp_path / "scores.csv"
    first = score_to_output([photos], output, model=checkpoint, device="cpu")
    assert (first.scored, first.skipped) == (5, 1)
    complete = output.read_bytes()
    output.write_bytes(complete[:-20])  # killed in the middle of the last row
    again = score_to_output([photos], output, model=checkpoint, device="cpu", resume=True)
    assert (again.scored, again.resumed, again.skipped) == (1, 4, 1)
    assert sorted(output.read_bytes().splitlines()) == sorted(complete.splitlines())
    output.write_text("path,score,std,another_backbone\n")
    with pytest.raises(OptionError, match="holds the columns"):
        score_to_output([photos], output, model=checkpoint, device="cpu", resume=True)


def test_a_results_file_inside_the_scored_folder_is_not_an_input(photos, checkpoint):
    output = photos / "scores.jsonl"
    run = score_to_output([photos], output, model=checkpoint, device="cpu")
    again = score_to_output([photos], output, model=checkpoint, device="cpu", resume=True)
    assert (run.scored, run.skipped, again.scored, again.resumed) == (5, 1, 0, 5)


def test_interrupted_runs_keep_what_was_scored_in_a_valid_document(photos, checkpoint, tmp_path):
    output = tmp_path / "scores.json"
    seen = []

    def stop_after_three(item):
        seen.append(item)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(ScoringInterrupted) as stop:
        score_to_output([photos], output, model=checkpoint, device="cpu", batch_size=1, on_result=stop_after_three)
    document = json.loads(output.read_text())
    assert stop.value.run.interrupted and stop.value.run.scored == 2  # broken.png was the second input
    assert [row["path"] for row in document["results"]] == [seen[0].path, seen[2].path]
    assert document["mos_range"] == [0.0, 1.0] and set(document["results"][0]) == {
        "path", "score", "raw_score", "std", "base_scores"}


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_a_signal_during_a_write_counts_the_row_it_waited_for(photos, checkpoint, tmp_path, monkeypatch):
    """Ctrl-C arriving while a row is being written waits for the write, and the row is counted as scored."""
    output = tmp_path / "scores.jsonl"
    real_write, rows_seen = os.write, []

    def write_then_interrupt(fd, data):
        if b'"path"' in bytes(data):
            rows_seen.append(fd)
            if len(rows_seen) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # held until the write and its count are done
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_then_interrupt)
    with pytest.raises(ScoringInterrupted) as stop:
        score_to_output([photos], output, model=checkpoint, device="cpu", batch_size=1)
    monkeypatch.undo()
    written = output.read_text().splitlines()
    assert len(written) == 3 and stop.value.run.scored == 3


def test_read_rows_stops_before_an_incomplete_last_row(tmp_path):
    complete = 'path,score\n"a\nb.png",0.5\nc.png,0.25\n'
    for cut in range(len(complete) - 1, 10, -1):
        path = tmp_path / "cut.csv"
        path.write_text(complete[:cut])
        rows = [row for row, _ in read_rows(path, "csv") if "header" not in row]
        expected = [] if cut < complete.index("c.png") else [{"path": "a\nb.png", "score": "0.5"}]
        assert rows == expected, cut
    (tmp_path / "bad.jsonl").write_text('{"path": "a"}\nnot json\n{"path": "b"}\n')
    with pytest.raises(OptionError, match="line 2"):
        list(read_rows(tmp_path / "bad.jsonl", "jsonl"))


def test_key_sets_hold_hashes():
    keys = KeySet([f"photo{index}.jpg" for index in range(1000)] + [os.fsdecode(b"\xff.png")])
    assert len(keys) == 1001 and "photo999.jpg" in keys and os.fsdecode(b"\xff.png") in keys
    assert "photo1000.jpg" not in keys and keys._hashes.nbytes == 8 * 1001
    assert np.all(np.diff(keys._hashes.astype(np.float64)) >= 0)


@pytest.mark.parametrize(("arguments", "option"), [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": True}, "batch_size"), ({"batch_size": 10**6}, "batch_size"),
    ({"num_workers": -1}, "num_workers"), ({"num_workers": 10**4}, "num_workers"),
    ({"format": "xml"}, "format"), ({"resume": True}, "resume"), ({"resume": True, "output": "x.json"}, "resume"),
])
def test_options_are_checked_before_anything_is_loaded(arguments, option, photos, tmp_path):
    arguments = {"output": None, **arguments}
    if arguments["output"]:
        arguments["output"] = tmp_path / arguments["output"]
    with pytest.raises(OptionError) as error:
        score_to_output([photos], model="/model/never/read", **arguments)
    assert error.value.option == option
