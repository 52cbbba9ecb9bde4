"""Share MetaQAP checkpoints and prepared datasets on the Hugging Face Hub (the cards they carry are
`metaqap_hf.cards`).

- `push_model`: one checkpoint folder -> one model repo, in one of two modes (pick one per checkpoint):
  *package mode* pushes weights and configs only (users `pip install metaqap-hf` and `import metaqap_hf`);
  *remote-code mode* pushes a staged copy with the model code added by `export_remote_code`, so users load it
  with `trust_remote_code=True` and no package. A card rendered by `write_model_card` is rendered again for the
  push (the repo id, the mode's usage); a card written or edited by hand is pushed as it is. The repo mirrors the
  pushed folder: remote files that are not in it (e.g. code left by an earlier remote-code push) are deleted in
  the same commit. `lint_card` runs before every push.
- `push_dataset`: a folder written by `metaqap_hf.data.prepare_dataset` (parquet shards under `data/` and a
  README.md card) -> one dataset repo that `datasets.load_dataset(repo_id)` reads.

Nothing local is modified: staging happens in a temporary folder that is removed whatever happens, and every
failure (bad card, unreachable endpoint, refused upload) is raised as `HubPushError` naming the cause.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from . import cards
from .configuration_metaqap import MetaQAPConfig
from .deprecation import moved_names
from .remote_code import export_remote_code

__all__ = ["HubPushError", "push_dataset", "push_model"]

# The model cards moved to metaqap_hf.cards in 0.2.0.
__getattr__ = moved_names(__name__, {name: ".cards" for name in (
    "CARD_FACTS_NAME", "CardEvaluation", "IQA_METRICS", "ModelCardFacts", "PLCC_MAPPINGS", "REQUIRED_SECTIONS",
    "TASK_TYPE", "add_card_evaluation", "card_evaluation", "card_is_rendered", "command_line", "lint_card",
    "model_card_template", "read_model_card_facts", "render_model_card", "write_model_card")})

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_FAILURE_DETAIL_LIMIT = 2000


class HubPushError(RuntimeError):
    """A push that did not happen: `problems` lists what to fix when the checkpoint or its card was refused."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        self.problems = list(problems)
        if self.problems:
            message += "\n" + "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(message)


def _checkpoint_problems(checkpoint_dir: Path, remote_code: bool) -> list[str]:
    """What must hold of a checkpoint folder's files before it is pushed in the given mode (the card aside)."""
    if not checkpoint_dir.is_dir():
        return [f"{checkpoint_dir}: not a folder"]
    problems = []
    config_file = checkpoint_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else None
    if config is None:
        problems.append(f"{config_file}: missing (save the model with save_pretrained)")
    elif config.get("model_type") != MetaQAPConfig.model_type:
        problems.append(f"{config_file}: model_type is {config.get('model_type')!r}, not a MetaQAP checkpoint")
    if not (checkpoint_dir / "preprocessor_config.json").is_file():
        problems.append(f"{checkpoint_dir / 'preprocessor_config.json'}: missing (save the image processor too)")
    if not any((checkpoint_dir / name).is_file() for name in WEIGHT_FILES):
        problems.append(f"{checkpoint_dir}: no weights ({' or '.join(WEIGHT_FILES)})")
    if not remote_code:
        code_files = sorted(p.name for p in checkpoint_dir.glob("*.py"))
        if code_files or (config or {}).get("auto_map"):
            problems.append(f"{checkpoint_dir}: carries remote code ({', '.join(code_files) or 'auto_map'}); push it "
                            "with remote_code=True, or push a folder saved without export_remote_code")
    return problems


def _card_problems(card_file: Path, remote_code: bool, checkpoint_dir: Path, rendered: bool) -> list[str]:
    """Lint problems of the card to be pushed (a staged copy, maybe), and whether its usage matches the mode; paths
    are shown as in `checkpoint_dir`, the folder the user named."""
    problems = cards.lint_card(card_file)
    if not problems:
        usage = card_file.read_text(encoding="utf-8")
        command = f"`metaqap card render {checkpoint_dir}{' --remote-code' if remote_code else ''} --overwrite`"
        if remote_code and "trust_remote_code=True" not in usage:
            problems.append(f"{card_file}: usage shows package mode but this is a remote-code push; render the card "
                            f"with remote_code=True ({command}), or edit its usage")
        if not remote_code and "import metaqap_hf" not in usage:
            problems.append(f"{card_file}: usage shows remote-code mode but this is a package-mode push; render the "
                            f"card with remote_code=False ({command}), or edit its usage")
    origin = f" (in the card rendered from {cards.CARD_FACTS_NAME} for this push)" if rendered else ""
    return [problem.replace(str(card_file.parent), str(checkpoint_dir)) + origin for problem in problems]


def _is_unreachable(error: BaseException | None) -> bool:
    """Whether a failure comes from the network (refused, unresolvable, timed out) rather than the hub's answer."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any(cls.__name__ == "TransportError" for cls in type(error).__mro__):  # httpx / httpcore transport
            return True
        error = error.__cause__ or error.__context__
    return False


@contextmanager
def _hub_errors(endpoint: str, repo_id: str) -> Iterator[None]:
    """Turn client failures into `HubPushError`s that say what went wrong where."""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise HubPushError(f"cannot push {repo_id} to {endpoint}: offline mode is on (HF_HUB_OFFLINE=1); unset it "
                           "to push") from error
    except HfHubHTTPError as error:
        detail = str(error)[:_FAILURE_DETAIL_LIMIT]
        raise HubPushError(f"{endpoint} refused the push of {repo_id}: {detail}") from error
    except Exception as error:
        if _is_unreachable(error):
            raise HubPushError(f"could not reach {endpoint} to push {repo_id}: {error}") from error
        raise


def _check_repo_id(repo_id: str) -> list[str]:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        return [f"invalid repo id {repo_id!r}: {error}"]
    return []


def push_model(
    checkpoint_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    remote_code: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a checkpoint folder (model, image processor, README.md card) to a model repo; returns the commit URL.

    The card: one rendered by `write_model_card` (as every checkpoint the training commands write has) is rendered
    again for this push, with `repo_id` and the usage snippet of the mode; one written or edited by hand is pushed
    as it is and must match the mode. Either way it is linted first, and the local folder is left untouched (the
    push is staged in a temporary copy whenever anything changes). Package mode refuses folders that carry remote
    code; remote-code mode adds the model code (`export_remote_code`). The repo is created if needed (`private`
    applies then) and mirrors the pushed folder. `token` and `endpoint` default to huggingface_hub's (`HF_TOKEN`,
    `HF_ENDPOINT`). Raises `HubPushError`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    refusal = f"refusing to push {checkpoint_dir} to {repo_id}:"
    problems = _check_repo_id(repo_id) + _checkpoint_problems(checkpoint_dir, remote_code)
    if problems:
        raise HubPushError(refusal, problems)
    api = HfApi(endpoint=endpoint, token=token)
    mode = "remote-code" if remote_code else "package"
    message = commit_message or f"Upload MetaQAP checkpoint ({mode} mode)"
    rendered = cards.card_is_rendered(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="metaqap-push-") as staging:
        folder = checkpoint_dir
        if remote_code or rendered:
            folder = Path(staging) / checkpoint_dir.name
            shutil.copytree(checkpoint_dir, folder, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        if rendered:
            cards.write_model_card(folder, repo_id=repo_id, remote_code=remote_code)
        if remote_code:
            export_remote_code(folder)
        problems = _card_problems(folder / cards.CARD_NAME, remote_code, checkpoint_dir, rendered)
        if problems:
            raise HubPushError(refusal, problems)
        with _hub_errors(api.endpoint, repo_id):
            api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                folder_path=folder, repo_id=repo_id, commit_message=message, delete_patterns="*",
                ignore_patterns=["__pycache__", "*.pyc", ".*"],
            )
    return commit.commit_url


def _dataset_problems(prepared_dir: Path) -> list[str]:
    """A prepared dataset folder must hold parquet shards and a card whose `configs` point at existing files."""
    if not prepared_dir.is_dir():
        return [f"{prepared_dir}: not a folder"]
    problems = []
    files = sorted(p.relative_to(prepared_dir).as_posix() for p in prepared_dir.rglob("*") if p.is_file())
    if not any(name.startswith("data/") and name.endswith(".parquet") for name in files):
        problems.append(f"{prepared_dir / 'data'}: no parquet shards (write the folder with prepare_dataset)")
    card_file = prepared_dir / cards.CARD_NAME
    if not card_file.is_file():
        return [*problems, f"{card_file}: missing dataset card"]
    try:
        card = DatasetCard.load(card_file)
    except (ValueError, yaml.YAMLError) as error:
        return [*problems, f"{card_file}: metadata does not parse: {error}"]
    for config in card.data.to_dict().get("configs") or []:
        data_files = config.get("data_files") or []
        entries = [{"split": "train", "path": data_files}] if isinstance(data_files, str) else data_files
        for entry in entries:
            patterns = [entry["path"]] if isinstance(entry["path"], str) else entry["path"]
            for pattern in patterns:
                if not any(fnmatch.fnmatch(name, pattern) for name in files):
                    problems.append(f"{card_file}: config {config.get('config_name')!r} split "
                                    f"{entry.get('split')!r} points at {pattern!r}, which matches no file")
    return problems


def push_dataset(
    prepared_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a prepared parquet dataset folder to a dataset repo so `load_dataset(repo_id)` reads it; returns the
    commit URL. The repo is created if needed and mirrors the folder (stale shards are deleted). Raises
    `HubPushError`."""
    prepared_dir = Path(prepared_dir)
    problems = _check_repo_id(repo_id) + _dataset_problems(prepared_dir)
    if problems:
        raise HubPushError(f"refusing to push {prepared_dir} to {repo_id}:", problems)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(api.endpoint, repo_id):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=prepared_dir, repo_id=repo_id, repo_type="dataset", delete_patterns="*",
            commit_message=commit_message or "Upload prepared dataset", ignore_patterns=["__pycache__", ".*"],
        )
    return commit.commit_url
