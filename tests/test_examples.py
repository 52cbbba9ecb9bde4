"""The training and evaluation examples run end to end on the BIQ2021 sample, with tiny backbones and few steps, and
write checkpoints with lint-clean model cards."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from metaqap_hf.cards import lint_card

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_SAMPLE = Path("/work/shared/data/biq2021-sample")
TINY = ["--backbones", "tiny", "--image-size", "64", "--train-limit", "32", "--validation-limit", "16",
        "--epochs", "2", "--batch-size", "8", "--seed", "0"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def biq2021_sample() -> Path:
    configured = os.environ.get("METAQAP_BIQ2021_SAMPLE")
    if configured:
        return Path(configured)
    if DEFAULT_SAMPLE.is_dir():
        return DEFAULT_SAMPLE
    pytest.skip(f"No BIQ2021 sample: set METAQAP_BIQ2021_SAMPLE or provide {DEFAULT_SAMPLE}.")


def _run(script: str, *arguments: str) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, str(EXAMPLES / script), *arguments], env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


def test_finetune_with_accelerate_then_evaluate_the_checkpoint(tmp_path, biq2021_sample):
    run_dir = tmp_path / "accelerate"
    output = _run("finetune_accelerate.py", "--data-dir", str(biq2021_sample), "--output-dir", str(run_dir),
                  "--grad-accum", "2", "--save-every", "1", "--cache-dir", str(tmp_path / "cache"), *TINY)
    result = json.loads(output[output.index("{"):])
    assert result["global_step"] == 4 and result["epochs"] == 2.0  # 32 images / (8 x 2) = 2 steps per epoch
    assert set(result["final_metrics"]) >= {"srocc", "plcc", "krocc", "rmse", "eval_loss"}
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2  # train and validation, decoded once
    for folder in ("best", "final"):
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {
            path.name for path in (run_dir / folder).iterdir()}
        assert lint_card(run_dir / folder / "README.md") == []
        assert f"python {EXAMPLES / 'finetune_accelerate.py'} --data-dir" in (run_dir / folder / "README.md").read_text()

    evaluation = tmp_path / "evaluation"
    _run("evaluate_checkpoint.py", "--checkpoint", str(run_dir / "best"), "--data-dir", str(biq2021_sample),
         "--split", "test", "--limit", "24", "--output-dir", str(evaluation), "--bf16")
    report = json.loads((evaluation / "metrics.json").read_text())
    assert (report["split"], report["precision"], report["metrics"]["n"]) == ("test", "bf16", 24)
    assert {"srocc", "plcc", "plcc_4pl", "rmse_5pl", "srocc_test_efficientnet"} <= set(report["metrics"])
    with open(evaluation / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and {"image_name", "mos", "score"} <= set(rows[0])
    with Image.open(evaluation / "scatter.png") as plot:
        assert plot.format == "PNG" and plot.width > 300


def test_the_example_and_the_command_write_identical_checkpoints(tmp_path, biq2021_sample):
    """`examples/finetune_accelerate.py` wraps `finetune`, as `metaqap train` does: same options, same bytes."""
    arguments = ["--data-dir", str(biq2021_sample), *TINY, "--train-limit", "16", "--epochs", "1"]
    _run("finetune_accelerate.py", "--output-dir", str(tmp_path / "example"), *arguments)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-m", "metaqap_hf", "train", "--output-dir", str(tmp_path / "command"),
                                *arguments], env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    for name in ("model.safetensors", "config.json"):
        example = (tmp_path / "example" / "final" / name).read_bytes()
        assert example == (tmp_path / "command" / "final" / name).read_bytes(), name


def test_finetune_with_trainer(tmp_path, biq2021_sample):
    run_dir = tmp_path / "trainer"
    output = _run("finetune_trainer.py", "--data-dir", str(biq2021_sample), "--output-dir", str(run_dir), "--bf16",
                  *TINY)
    metrics = json.loads(output[output.index("{\n"):])
    assert {"eval_srocc", "eval_plcc", "eval_loss"} <= set(metrics) and metrics["epoch"] == 2.0
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        path.name for path in (run_dir / "best").iterdir()}
    assert lint_card(run_dir / "best" / "README.md") == []
    assert f"| {metrics['eval_srocc']:.4f} |" in (run_dir / "best" / "README.md").read_text()
