"""The remote-code export loads in a Python where metaqap_hf cannot be imported."""

import json
import os
import shutil
import subprocess
import sys

import torch

from metaqap_hf import MetaQAPModel, export_remote_code

from _images import random_photo

BLOCK_PACKAGE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "metaqap_hf" or name.startswith("metaqap_hf."):
            raise ImportError("metaqap_hf is blocked in this test")
sys.meta_path.insert(0, Block())
"""

LOAD_AND_SCORE = BLOCK_PACKAGE + """
import json, sys, torch
from transformers import AutoModel, pipeline
try:
    import metaqap_hf
    raise SystemExit("metaqap_hf should not be importable here")
except ImportError:
    pass
folder, image = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
pixels = torch.linspace(0, 1, 2 * 3 * 80 * 80).reshape(2, 3, 80, 80)
with torch.no_grad():
    scores = model(pixels).score.tolist()
scorer = pipeline(model=folder, trust_remote_code=True)
print(json.dumps({"class": type(model).__module__, "scores": scores, "pipeline": scorer(image)}))
"""


def test_exported_checkpoint_loads_without_the_package(tiny_checkpoint, tmp_path):
    exported = export_remote_code(shutil.copytree(tiny_checkpoint, tmp_path / "exported"))
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_metaqap.MetaQAPModel"
    image = tmp_path / "photo.png"
    random_photo(4).save(image)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, str(exported), str(image)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert "metaqap_hf" not in remote["class"]

    local = MetaQAPModel.from_pretrained(tiny_checkpoint).eval()
    pixels = torch.linspace(0, 1, 2 * 3 * 80 * 80).reshape(2, 3, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(remote["scores"]), local(pixels).score, rtol=0, atol=1e-6)
    from transformers import pipeline

    assert remote["pipeline"]["score"] == pipeline("image-quality", model=str(tiny_checkpoint))(str(image))["score"]
