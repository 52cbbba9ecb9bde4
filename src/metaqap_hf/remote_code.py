"""Export a checkpoint folder that loads without this package installed, through transformers' remote code:
`AutoModel.from_pretrained(dir, trust_remote_code=True)` and `pipeline(model=dir, trust_remote_code=True)`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["REMOTE_CODE_FILES", "export_remote_code"]

# The model, its config, processor and pipeline, and what they import (relative imports only among these).
REMOTE_CODE_FILES = (
    "configuration_metaqap.py",
    "modeling_metaqap.py",
    "image_processing_metaqap.py",
    "image_utils.py",
    "deprecation.py",
    "pipeline_image_quality.py",
    "losses.py",
    "onnx_runtime.py",  # the pipeline's runtime="onnx", and what it imports
    "export.py",
    "devices.py",
    "errors.py",
    "version.py",
)
TASK = "image-quality"


def _update_json(path: Path, update: dict) -> None:
    data = json.loads(path.read_text())
    data.update(update)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def export_remote_code(checkpoint_dir: str | Path) -> Path:
    """Add the code files and the `auto_map` / `custom_pipelines` entries to a checkpoint folder written by
    `save_pretrained` (model and image processor). The folder then no longer needs `import metaqap_hf`; pick one
    mode per checkpoint, since `custom_pipelines` in a config overrides the in-process pipeline registration."""
    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir / "config.json"
    processor_file = checkpoint_dir / "preprocessor_config.json"
    for required in (config_file, processor_file):
        if not required.is_file():
            raise FileNotFoundError(f"{required}: missing; save the model and its image processor there first")
    source_dir = Path(__file__).parent
    for name in REMOTE_CODE_FILES:
        shutil.copyfile(source_dir / name, checkpoint_dir / name)
    _update_json(config_file, {
        "auto_map": {
            "AutoConfig": "configuration_metaqap.MetaQAPConfig",
            "AutoModel": "modeling_metaqap.MetaQAPModel",
        },
        "custom_pipelines": {
            TASK: {"impl": "pipeline_image_quality.ImageQualityPipeline", "pt": ["AutoModel"], "tf": [],
                   "type": "image"},
        },
    })
    _update_json(processor_file, {"auto_map": {"AutoImageProcessor": "image_processing_metaqap.MetaQAPImageProcessor"}})
    return checkpoint_dir
