"""Helpers of the scoring tests: a tiny checkpoint that can be built once per module, and running the command line
in a subprocess (for signals, file descriptors and launchers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"


def save_tiny_checkpoint(path: Path, *, head_bias: float | None = None, fault_head: bool = False) -> Path:
    """timm's tiny test backbones on a 0-1 scale, images processed at 64x64 (fast); a negative `head_bias` pushes
    every score below the range; `fault_head` adds an (untrained, far from uniform) fault head, every other weight
    as without it."""
    import torch

    from metaqap_hf import MetaQAPImageProcessor, MetaQAPModel
    from metaqap_hf.distortions.families import fault_head_spec
    from metaqap_hf.factory import create_model

    model = create_model("tiny", pretrained=False, mos_range=(0.0, 1.0), mos_name="test MOS (0-1)")
    model.config.set_meta_learner("ridge", [0.6, 0.5], 0.0)
    for head in model.heads if head_bias is not None else ():
        head.set_output_bias(head_bias)
    if fault_head:
        model.config.fault_head = fault_head_spec()
        with_head = MetaQAPModel(model.config)
        torch.manual_seed(0)
        with torch.no_grad():
            with_head.fault_head.mlp.weight.normal_(std=0.5)
        with_head.load_state_dict(model.state_dict(), strict=False)
        model = with_head
    model.save_pretrained(path)
    MetaQAPImageProcessor(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


def write_photos(folder: Path, count: int) -> Path:
    """`count` small distinct photos, 00.png, 01.png..., in a new folder."""
    from _images import random_photo

    folder.mkdir()
    for index in range(count):
        random_photo(index, size=(24 + index, 32)).save(folder / f"{index:02d}.png")
    return folder


def cli_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def metaqap_command(*arguments: str) -> list[str]:
    """`metaqap ARGUMENTS` through the console entry point's function (a fast start, signals handled from the
    first moment)."""
    return [sys.executable, "-c", "import sys; from metaqap_cli import main; sys.exit(main())", *arguments]


def run_metaqap(*arguments: str, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(metaqap_command(*arguments), env=cli_environment(), capture_output=True, text=True,
                          timeout=timeout, **popen)
