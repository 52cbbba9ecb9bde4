"""metaqap_hf.hub: model cards (render, lint) and pushes in both modes, against the loopback hub.

Pushing runs in this process, with `endpoint=` and `token=` given explicitly as a caller would; the `hub_online`
fixture lifts huggingface_hub's offline flag and disables Xet for one test (both are read at import time, and the
rest of the suite stays offline). Loading back runs as users do, in a fresh interpreter with a real environment
(`run_hub_client`): with the package installed for package mode, with `import metaqap_hf` blocked for remote-code
mode. Reference outputs come from the local checkpoint in this process, on one thread as in the client.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import tempfile
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from _datasets import write_biq2021_layout
from hub_server import client_env, loopback_hub, run_hub_client  # noqa: F401  (loopback_hub is a fixture)
from PIL import Image

from metaqap_hf.cards import (
    CARD_FACTS_NAME,
    CardEvaluation,
    ModelCardFacts,
    add_card_evaluation,
    card_evaluation,
    command_line,
    lint_card,
    model_card_template,
    read_model_card_facts,
    render_model_card,
    write_model_card,
)
from metaqap_hf.hub import HubPushError, push_dataset, push_model

# huggingface_hub's LFS PUT passes a file object as `data=`, which its HTTP client deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

EVALUATIONS = (
    CardEvaluation("BIQ2021", "biq2021", "test", srocc=0.8123, plcc=0.8345, krocc=0.6211, rmse=0.1087,
                   mapping="logistic-4", num_images=2000),
    CardEvaluation("KonIQ-10k", "koniq10k", "test", srocc=0.7102, plcc=0.7433, krocc=0.5208, rmse=0.4121),
)
TRAINING_COMMAND = "metaqap train --dataset biq2021 --data-dir /data/BIQ2021 --output runs/tiny --seed 0"


@pytest.fixture
def hub_online(monkeypatch):
    """Let this process's huggingface_hub reach the loopback hub (offline flag off, LFS instead of Xet)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Three different smooth random photos (gradients plus noise), saved as PNG."""
    paths = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        rows, cols = np.mgrid[0:72, 0:96]
        base = np.stack([np.sin(cols / (5 + seed)), np.cos(rows / 7), np.sin((rows + cols) / 11)], axis=-1)
        pixels = (base * 0.4 + 0.5 + rng.normal(0, 0.08, base.shape)).clip(0, 1)
        paths.append(tmp_path / f"photo{seed}.png")
        Image.fromarray((pixels * 255).astype(np.uint8)).save(paths[-1])
    return paths


def _write_card(checkpoint: Path, repo_id: str, *, remote_code: bool = False, **fields) -> Path:
    """Render the card for `checkpoint` and save it, with its scatter plot, into the checkpoint folder."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(checkpoint / "scatter.png")
    card = render_model_card(
        checkpoint, repo_id=repo_id, training_dataset="BIQ2021 (official train split)",
        training_dataset_id="biq2021", training_command=TRAINING_COMMAND, scatter_plot="scatter.png",
        remote_code=remote_code, limitations=["Tiny test checkpoint."], **{"evaluations": EVALUATIONS, **fields},
    )
    card.save(checkpoint / "README.md")
    return checkpoint / "README.md"


def _expected_eval_results() -> list[tuple]:
    return [(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value,
             r.metric_config) for row in EVALUATIONS for r in row.eval_results()]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _reference_outputs(checkpoint: Path, photos: list[Path]) -> list[dict]:
    """The local checkpoint's pipeline outputs, on one thread like the client processes."""
    from transformers import pipeline

    import metaqap_hf  # noqa: F401  (registers the pipeline)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pipeline("image-quality", model=str(checkpoint))([str(p) for p in photos])
    finally:
        torch.set_num_threads(threads)


def _closed_port_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# ---------------------------------------------------------------------------------------------- cards
def test_rendered_card_lints_clean_and_round_trips(tiny_checkpoint, tiny_config):
    card_path = _write_card(tiny_checkpoint, "loopback-user/tiny")
    assert lint_card(card_path) == []

    loaded = ModelCard.load(card_path)
    model_name, parsed = model_index_to_eval_results(loaded.data.to_dict()["model-index"])
    assert model_name == "tiny"
    assert [(r.task_type, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value,
             r.metric_config) for r in parsed] == _expected_eval_results()
    assert loaded.data.license == "apache-2.0"
    text = loaded.text
    assert tiny_config.mos_name in text and "Higher is better" in text and "from 1 (worst) to 5 (best)" in text
    assert all(f"`{backbone_id}`" in text for backbone_id in tiny_config.backbone_ids)
    assert TRAINING_COMMAND in text and "| 0.8123 | 0.8345 | 0.6211 | 0.1087 |" in text
    assert "import metaqap_hf" in text and "trust_remote_code" not in text


def test_remote_code_card_shows_remote_code_usage(tiny_checkpoint):
    text = _write_card(tiny_checkpoint, "loopback-user/tiny", remote_code=True).read_text()
    assert 'pipeline("image-quality", model="loopback-user/tiny", trust_remote_code=True)' in text
    assert "import metaqap_hf" not in text


def test_repository_template_is_the_packaged_one():
    # hub_cards/ at the repository root keeps a copy for browsing; the package ships and uses its own.
    repository_copy = Path(__file__).resolve().parents[1] / "hub_cards" / "model_card_template.md"
    assert repository_copy.read_text(encoding="utf-8") == model_card_template()


def _drop_srocc_value(text: str) -> str:
    return re.sub(r"(type: srocc\n\s+)value:", r"\1amount:", text, count=1)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda text: text.replace("\n## Limitations\n", "\n## Caveats\n"), "missing section '## Limitations'"),
        (lambda text: re.sub(r"^license: .*\n", "", text, flags=re.MULTILINE), "no licence in the metadata"),
        (_drop_srocc_value, "metadata does not parse"),
        (lambda text: text.replace("type: image-quality-assessment", "type: image-classification", 1),
         "expected 'image-quality-assessment'"),
        (lambda text: text + "\n{{ training_command }}\n", "template markup"),
        (lambda text: text.replace("(scatter.png)", "(plots/scatter.png)"), "links image 'plots/scatter.png', but"),
    ],
    ids=["section", "licence", "model-index", "task", "jinja", "image"],
)
def test_lint_card_names_each_problem(tiny_checkpoint, mutate, expected):
    card_path = _write_card(tiny_checkpoint, "loopback-user/tiny")
    card_path.write_text(mutate(card_path.read_text()))
    problems = lint_card(card_path)
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith(f"{card_path}: ")


def test_lint_card_requires_evaluation_and_a_file(tiny_checkpoint, tmp_path):
    card_path = _write_card(tiny_checkpoint, "loopback-user/tiny", evaluations=())
    assert lint_card(card_path) == [f"{card_path}: no evaluation results in the metadata (`model-index`)"]
    assert "no model card there" in lint_card(tmp_path / "missing" / "README.md")[0]


@pytest.mark.parametrize(
    "fields",
    [{"plcc": 1.2}, {"srocc": float("nan")}, {"rmse": -0.1}, {"mapping": "linear"}, {"krocc": True}],
)
def test_card_evaluation_rejects_impossible_values(fields):
    values = dict(dataset_name="BIQ2021", dataset_id="biq2021", split="test", srocc=0.8, plcc=0.8, krocc=0.6,
                  rmse=0.1)
    with pytest.raises(ValueError, match="CardEvaluation\\(BIQ2021\\)"):
        CardEvaluation(**{**values, **fields})


# ------------------------------------------------------------------------------- cards from saved facts
FACTS = ModelCardFacts(training_dataset="BIQ2021", training_dataset_id="biq2021", training_command=TRAINING_COMMAND,
                       evaluations=[EVALUATIONS[0]], limitations=["Tiny test checkpoint."])


def test_write_model_card_saves_its_facts_and_renders_again_in_either_mode(tiny_checkpoint):
    card_path = write_model_card(tiny_checkpoint, FACTS)
    assert card_path == tiny_checkpoint / "README.md" and lint_card(card_path) == []
    package_text = card_path.read_text()
    assert f'model="{tiny_checkpoint}"' in package_text and "import metaqap_hf" in package_text  # a local model
    assert read_model_card_facts(tiny_checkpoint) == FACTS

    write_model_card(tiny_checkpoint, remote_code=True, repo_id="someone/tiny")  # from model_card.json alone
    remote_text = card_path.read_text()
    assert 'model="someone/tiny", trust_remote_code=True' in remote_text and lint_card(card_path) == []
    assert remote_text.split("## Training")[1] == package_text.split("## Training")[1]  # the same facts

    test_row = CardEvaluation("BIQ2021", "biq2021", "test", srocc=0.9, plcc=0.91, krocc=0.7, rmse=0.05, num_images=9)
    add_card_evaluation(tiny_checkpoint, test_row)  # keeps the last rendering's mode and repo id
    text = card_path.read_text()
    assert "| BIQ2021 | test | 9 | 0.9000 | 0.9100 | 0.7000 | 0.0500 |" in text and "someone/tiny" in text
    assert "0.8123" not in text  # the row of the same dataset and split it replaces
    add_card_evaluation(tiny_checkpoint, CardEvaluation(**{**test_row.__dict__, "split": "validation"}))
    assert [(row.split, row.srocc) for row in read_model_card_facts(tiny_checkpoint).evaluations] == [
        ("test", 0.9), ("validation", 0.9)]


def test_a_card_edited_by_hand_is_never_replaced_silently(tiny_checkpoint):
    card_path = write_model_card(tiny_checkpoint, FACTS)
    card_path.write_text(card_path.read_text() + "\nNotes written by hand.\n")
    with pytest.raises(FileExistsError, match="written or edited by hand; pass overwrite=True"):
        write_model_card(tiny_checkpoint, remote_code=True)
    assert card_path.read_text().endswith("Notes written by hand.\n")
    write_model_card(tiny_checkpoint, remote_code=True, overwrite=True)
    assert "Notes written by hand" not in card_path.read_text()
    with pytest.raises(FileNotFoundError, match=f"{CARD_FACTS_NAME}: missing"):
        write_model_card(tiny_checkpoint.parent)


def test_card_rows_from_metrics_and_the_command_line():
    metrics = {"srocc": 0.8, "plcc": 0.7, "krocc": 0.6, "rmse": 0.2, "n": 5}
    row = card_evaluation(metrics, dataset_name="Mine", dataset_id="mine", split="test", num_images=5)
    assert (row.srocc, row.rmse, row.num_images) == (0.8, 0.2, 5)
    assert card_evaluation({**metrics, "srocc": float("nan")}, dataset_name="M", dataset_id="m", split="t") is None
    assert command_line(["/venv/bin/metaqap", "train", "--dataset", "my scores.csv"]) == (
        "metaqap train --dataset 'my scores.csv'")
    assert command_line(["/src/metaqap_hf/__main__.py", "train"]) == "python -m metaqap_hf train"
    assert command_line(["examples/finetune_accelerate.py", "--epochs", "2"]) == (
        "python examples/finetune_accelerate.py --epochs 2")


def test_push_renders_a_saved_card_for_its_mode_and_repo(tiny_checkpoint, loopback_hub, hub_online):
    write_model_card(tiny_checkpoint, FACTS)
    before = _tree_digest(tiny_checkpoint)
    for remote_code in (True, False):
        push_model(tiny_checkpoint, "loopback-user/tiny", remote_code=remote_code, endpoint=loopback_hub.endpoint,
                   token="dummy")
        pushed = loopback_hub.read_file("model", "loopback-user/tiny", "README.md").decode()
        assert pushed.startswith("---") and "# loopback-user/tiny" in pushed
        assert ("trust_remote_code=True" in pushed) == remote_code
        assert read_model_card_facts(tiny_checkpoint) == FACTS
    stored = loopback_hub.file_table("model", "loopback-user/tiny")
    assert CARD_FACTS_NAME in stored and not any(name.endswith(".py") for name in stored)
    assert _tree_digest(tiny_checkpoint) == before  # rendered in a staged copy only

    write_model_card(tiny_checkpoint, ModelCardFacts(training_dataset="BIQ2021", training_command=TRAINING_COMMAND))
    with pytest.raises(HubPushError, match=r"no evaluation results .* \(in the card rendered from model_card.json "
                                           r"for this push\)"):
        push_model(tiny_checkpoint, "loopback-user/tiny", endpoint=loopback_hub.endpoint)

    write_model_card(tiny_checkpoint, FACTS)
    card_path = tiny_checkpoint / "README.md"
    card_path.write_text(card_path.read_text().replace("## Limitations", "## Limitations\n\n- Edited by hand."))
    with pytest.raises(HubPushError, match="metaqap card render .* --remote-code --overwrite"):
        push_model(tiny_checkpoint, "loopback-user/tiny", remote_code=True, endpoint=loopback_hub.endpoint)
    push_model(tiny_checkpoint, "loopback-user/tiny", endpoint=loopback_hub.endpoint, token="dummy")
    assert "- Edited by hand." in loopback_hub.read_file("model", "loopback-user/tiny", "README.md").decode()


# ------------------------------------------------------------------------------------ refused pushes
def test_push_refuses_invalid_card_before_any_request(tiny_checkpoint, loopback_hub, hub_online):
    card_path = _write_card(tiny_checkpoint, "loopback-user/tiny")
    text = re.sub(r"^license: .*\n", "", card_path.read_text(), flags=re.MULTILINE)
    card_path.write_text(text.replace("\n## Evaluation\n", "\n## Results\n"))
    before = _tree_digest(tiny_checkpoint)

    with pytest.raises(HubPushError, match="refusing to push") as caught:
        push_model(tiny_checkpoint, "loopback-user/tiny", endpoint=loopback_hub.endpoint, token="dummy")

    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [
        "no licence in the metadata (`license:`, or `license_name:` with `license_link:`)",
        "missing section '## Evaluation'",
    ]
    assert loopback_hub.requests == [] and _tree_digest(tiny_checkpoint) == before


def test_push_refuses_a_card_or_folder_of_the_other_mode(tiny_checkpoint, loopback_hub, hub_online):
    from metaqap_hf import export_remote_code

    _write_card(tiny_checkpoint, "loopback-user/tiny")
    with pytest.raises(HubPushError, match="render the card with remote_code=True"):
        push_model(tiny_checkpoint, "loopback-user/tiny", remote_code=True, endpoint=loopback_hub.endpoint)
    export_remote_code(tiny_checkpoint)
    with pytest.raises(HubPushError, match="carries remote code .*modeling_metaqap.py"):
        push_model(tiny_checkpoint, "loopback-user/tiny", endpoint=loopback_hub.endpoint)
    assert loopback_hub.requests == []


@pytest.mark.parametrize("remote_code", [False, True], ids=["package", "remote-code"])
def test_unreachable_endpoint_fails_clearly_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, hub_online,
                                                               remote_code):
    _write_card(tiny_checkpoint, "loopback-user/tiny", remote_code=remote_code)
    before = _tree_digest(tiny_checkpoint)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where push_model stages its copy
    endpoint = _closed_port_endpoint()

    with pytest.raises(HubPushError, match=f"could not reach {re.escape(endpoint)} to push loopback-user/tiny"):
        push_model(tiny_checkpoint, "loopback-user/tiny", remote_code=remote_code, endpoint=endpoint, token="dummy")

    assert _tree_digest(tiny_checkpoint) == before and list(scratch.iterdir()) == []


def test_offline_mode_is_reported_as_such(tiny_checkpoint):
    _write_card(tiny_checkpoint, "loopback-user/tiny")
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # the suite's default
    with pytest.raises(HubPushError, match="offline mode is on"):
        push_model(tiny_checkpoint, "loopback-user/tiny", endpoint=_closed_port_endpoint(), token="dummy")


# ------------------------------------------------------------------------ pushes that load back
_PACKAGE_CONSUMER = """
import torch
torch.set_num_threads(1)
import metaqap_hf  # package mode: the installed package provides the code
from huggingface_hub import ModelCard
from transformers import pipeline

outputs = pipeline("image-quality", model={repo_id!r})({photos!r})
card = ModelCard.load({repo_id!r})
emit({{"outputs": outputs, "eval_results": [
    [r.task_type, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_value, r.metric_config]
    for r in card.data.eval_results]}})
"""

_REMOTE_CODE_CONSUMER = """
import sys
import torch
torch.set_num_threads(1)
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

scorer = pipeline("image-quality", model={repo_id!r}, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained({repo_id!r}, trust_remote_code=True)
model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True).eval()
with torch.inference_mode():
    direct = model(**processor(images=Image.open({photos!r}[0]).convert("RGB"), return_tensors="pt")).score
emit({{"outputs": scorer({photos!r}), "direct_score": float(direct[0]),
      "classes": [type(scorer).__module__, type(model).__module__, type(processor).__module__],
      "package_loaded": any(name.split(".")[0] == "metaqap_hf" for name in sys.modules)}})
"""


@pytest.mark.slow
def test_package_mode_push_loads_back_identically(tiny_checkpoint, photos, loopback_hub, hub_online, tmp_path):
    repo_id = "loopback-user/tiny-package"
    _write_card(tiny_checkpoint, repo_id)
    before = _tree_digest(tiny_checkpoint)

    commit_url = push_model(tiny_checkpoint, repo_id, endpoint=loopback_hub.endpoint, token="dummy")

    stored = loopback_hub.file_table("model", repo_id)
    head = loopback_hub.repos[("model", repo_id)].refs["main"]
    assert commit_url == f"{loopback_hub.endpoint}/{repo_id}/commit/{head}"
    assert sorted(stored) == sorted([".gitattributes", *before])  # the folder as is: no code added
    assert stored["model.safetensors"].lfs and not stored["README.md"].lfs
    assert "auto_map" not in json.loads(loopback_hub.read_file("model", repo_id, "config.json"))
    assert _tree_digest(tiny_checkpoint) == before

    script = _PACKAGE_CONSUMER.format(repo_id=repo_id, photos=[str(p) for p in photos])
    result = run_hub_client(script, client_env(loopback_hub.endpoint, tmp_path / "hf_home"), cwd=tmp_path)
    reference = _reference_outputs(tiny_checkpoint, photos)
    assert result["outputs"] == reference
    assert len({round(out["score"], 6) for out in reference}) == len(photos)  # distinct images, distinct scores
    assert [tuple(r) for r in result["eval_results"]] == _expected_eval_results()


@pytest.mark.slow
def test_remote_code_push_loads_without_the_package(tiny_checkpoint, photos, loopback_hub, hub_online, tmp_path):
    repo_id = "loopback-user/tiny-remote"
    _write_card(tiny_checkpoint, repo_id, remote_code=True)
    before = _tree_digest(tiny_checkpoint)

    push_model(tiny_checkpoint, repo_id, remote_code=True, private=True, endpoint=loopback_hub.endpoint,
               token="dummy")

    assert _tree_digest(tiny_checkpoint) == before  # the code was added to a staged copy only
    stored = loopback_hub.file_table("model", repo_id)
    assert {"modeling_metaqap.py", "configuration_metaqap.py", "pipeline_image_quality.py"} <= set(stored)
    config = json.loads(loopback_hub.read_file("model", repo_id, "config.json"))
    assert config["auto_map"]["AutoModel"] == "modeling_metaqap.MetaQAPModel" and "image-quality" in config[
        "custom_pipelines"]
    assert loopback_hub.repos[("model", repo_id)].private

    script = _REMOTE_CODE_CONSUMER.format(repo_id=repo_id, photos=[str(p) for p in photos])
    env = client_env(loopback_hub.endpoint, tmp_path / "hf_home")
    result = run_hub_client(script, env, cwd=tmp_path, blocked_modules=["metaqap_hf"])
    reference = _reference_outputs(tiny_checkpoint, photos)
    assert result["outputs"] == reference
    assert result["direct_score"] == pytest.approx(reference[0]["score"], abs=1e-6)  # direct call, own batching
    assert all(module.startswith("transformers_modules.") for module in result["classes"])
    assert result["package_loaded"] is False

    # Re-pushing the same checkpoint in package mode mirrors the folder: the remote code is deleted.
    _write_card(tiny_checkpoint, repo_id)
    push_model(tiny_checkpoint, repo_id, endpoint=loopback_hub.endpoint, token="dummy")
    assert not any(name.endswith(".py") for name in loopback_hub.file_table("model", repo_id))


_DATASET_CONSUMER = """
import hashlib
import datasets

def rows(dataset_dict):
    return {{split: [{{**{{k: v for k, v in row.items() if k != "image"}},
                      "image": hashlib.sha256(row["image"]["bytes"]).hexdigest()}}
                    for row in dataset.cast_column("image", datasets.Image(decode=False))]
            for split, dataset in dataset_dict.items()}}

emit({{"hub": rows(datasets.load_dataset({repo_id!r})), "local": rows(datasets.load_dataset({folder!r}))}})
"""


@pytest.mark.slow
def test_push_dataset_loads_back_identically(loopback_hub, hub_online, tmp_path):
    from metaqap_hf.data import prepare_dataset

    biq = write_biq2021_layout(tmp_path / "biq", train=6, test=3, size=24)
    prepared = prepare_dataset("biq2021", biq, tmp_path / "prepared", validation_fraction=0.34)
    repo_id = "loopback-user/tiny-biq2021"

    push_dataset(prepared, repo_id, endpoint=loopback_hub.endpoint, token="dummy")

    stored = loopback_hub.file_table("dataset", repo_id)
    assert all(entry.lfs for name, entry in stored.items() if name.endswith(".parquet"))
    script = _DATASET_CONSUMER.format(repo_id=repo_id, folder=str(prepared))
    result = run_hub_client(script, client_env(loopback_hub.endpoint, tmp_path / "hf_home"), cwd=tmp_path)
    assert sorted(result["hub"]) == ["test", "train", "validation"]
    assert result["hub"] == result["local"] and len(result["hub"]["test"]) == 3


_CACHE_FILLER = """
import datasets

emit({{"rows": datasets.load_dataset({repo_id!r})["test"].num_rows}})
"""

_OFFLINE_SOURCE = """
import json
from metaqap_cli import main
from metaqap_hf.data import load_dataset_source

source = load_dataset_source({repo_id!r})
status = main(["evaluate", {checkpoint!r}, "--dataset", {repo_id!r}, "--output-dir", {output!r}, "--no-plot",
               "--device", "cpu"])
emit({{"describe": source.describe(), "scale": source.mos_range, "test": source.dataset["test"]["image_name"][:],
      "status": status, "report": json.load(open({output!r} + "/metrics.json"))}})
"""


@pytest.mark.slow
def test_a_hub_dataset_id_is_read_from_the_local_cache_offline(tiny_checkpoint, loopback_hub, hub_online, tmp_path):
    from metaqap_hf.data import prepare_dataset

    biq = write_biq2021_layout(tmp_path / "biq", train=6, test=3, size=24)
    prepared = prepare_dataset("biq2021", biq, tmp_path / "prepared", validation_fraction=0.34)
    repo_id = "loopback-user/tiny-biq2021"
    push_dataset(prepared, repo_id, endpoint=loopback_hub.endpoint, token="dummy")
    hf_home, output = tmp_path / "hf_home", str(tmp_path / "evaluation")
    online = run_hub_client(_CACHE_FILLER.format(repo_id=repo_id), client_env(loopback_hub.endpoint, hf_home),
                            cwd=tmp_path)
    assert online == {"rows": 3}

    # Offline, with the endpoint pointing nowhere: the cache alone serves the dataset, to the library and the CLI.
    offline_env = client_env(_closed_port_endpoint(), hf_home, extra={"HF_HUB_OFFLINE": "1"})
    script = _OFFLINE_SOURCE.format(repo_id=repo_id, checkpoint=str(tiny_checkpoint), output=output)
    offline = run_hub_client(script, offline_env, cwd=tmp_path)
    assert offline["describe"] == f"BIQ2021 (hub dataset {repo_id}; images: 4 train, 2 validation, 3 test)"
    assert offline["scale"] == [0.0, 1.0] and offline["test"] == ["ss02 (1).jpg", "ss02 (2).jpg", "ss02 (3).jpg"]
    assert offline["status"] == 0
    assert (offline["report"]["dataset"], offline["report"]["split"], offline["report"]["metrics"]["n"]) == (
        repo_id, "test", 3)


def test_push_dataset_refuses_a_card_pointing_at_missing_shards(loopback_hub, hub_online, tmp_path):
    from metaqap_hf.data import prepare_dataset

    biq = write_biq2021_layout(tmp_path / "biq", train=6, test=3, size=24)
    prepared = prepare_dataset("biq2021", biq, tmp_path / "prepared")
    for shard in (prepared / "data").glob("test-*.parquet"):
        shard.unlink()
    with pytest.raises(HubPushError, match="split 'test' points at 'data/test-\\*', which matches no file"):
        push_dataset(prepared, "loopback-user/tiny-biq2021", endpoint=loopback_hub.endpoint, token="dummy")
    assert loopback_hub.requests == []
