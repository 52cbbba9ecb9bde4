"""MetaQAP model cards, and the checkpoint folder they describe.

- `save_checkpoint`: model + image processor + card into one folder; every recipe that writes a checkpoint
  (fine-tuning, the frozen recipe, stacking) calls it.
- `render_model_card`: a model card from the packaged Jinja template, filled from the checkpoint's config and the
  training / evaluation facts you pass; its `model-index` metadata carries the evaluation as `EvalResult`s.
- `write_model_card`: the card of a checkpoint folder, saved as README.md with its facts (`ModelCardFacts`) beside
  it in model_card.json, so that it can be rendered again from the folder alone (`metaqap card render`, and every
  push, `metaqap_hf.hub`).
- `lint_card`: what is wrong with a card file (unparsable metadata or model-index, missing sections or licence,
  leftover template markup, images it links to that are not there). `metaqap_hf.hub.push_model` runs it before
  every push.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_metaqap import MetaQAPConfig
from .image_processing_metaqap import MetaQAPImageProcessor

__all__ = [
    "CARD_FACTS_NAME",
    "CARD_NAME",
    "CardEvaluation",
    "IQA_METRICS",
    "ModelCardFacts",
    "PLCC_MAPPINGS",
    "REQUIRED_SECTIONS",
    "TASK_TYPE",
    "add_card_evaluation",
    "card_evaluation",
    "card_is_rendered",
    "command_line",
    "lint_card",
    "model_card_template",
    "read_model_card_facts",
    "render_model_card",
    "save_checkpoint",
    "write_model_card",
]

TASK_TYPE = "image-quality-assessment"
IQA_METRICS = ("srocc", "plcc", "krocc", "rmse")
REQUIRED_SECTIONS = ("## Usage", "## Training", "## Evaluation", "## Limitations")
# How PLCC and RMSE were computed: on raw predictions, or after fitting a VQEG logistic mapping to MOS.
PLCC_MAPPINGS = {
    "none": "raw predictions",
    "logistic-4": "predictions after a 4-parameter logistic fit",
    "logistic-5": "predictions after a 5-parameter logistic fit",
}
TEMPLATE_NAME = "model_card_template.md"
CARD_NAME = "README.md"
CARD_FACTS_NAME = "model_card.json"
DEFAULT_LICENSE_NOTES = (
    "This checkpoint is released under {license}. The backbone weights training started from ({backbones}) and "
    "the training images ({dataset}) come with their own licences and terms of use: check both before commercial "
    "use."
)
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?")


@dataclass(frozen=True)
class CardEvaluation:
    """One evaluation of the checkpoint: a row of the card's table and four `model-index` results.

    `dataset_id` is the dataset's Hub id or a short stable slug (`model-index` `dataset.type`); `mapping` says how
    PLCC and RMSE were computed (a key of `PLCC_MAPPINGS`). RMSE is on the checkpoint's MOS scale.
    """

    dataset_name: str
    dataset_id: str
    split: str
    srocc: float
    plcc: float
    krocc: float
    rmse: float
    mapping: str = "none"
    num_images: int | None = None

    def __post_init__(self) -> None:
        if self.mapping not in PLCC_MAPPINGS:
            raise ValueError(f"CardEvaluation({self.dataset_name}): mapping must be one of {list(PLCC_MAPPINGS)}, "
                             f"got {self.mapping!r}")
        for metric in IQA_METRICS:
            value = getattr(self, metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"CardEvaluation({self.dataset_name}): {metric} must be a finite number, "
                                 f"got {value!r}")
            if metric != "rmse" and not -1.0 <= value <= 1.0:
                raise ValueError(f"CardEvaluation({self.dataset_name}): {metric} is a correlation in [-1, 1], "
                                 f"got {value!r}")
        if self.rmse < 0:
            raise ValueError(f"CardEvaluation({self.dataset_name}): rmse must be >= 0, got {self.rmse!r}")

    @property
    def mapping_description(self) -> str:
        return PLCC_MAPPINGS[self.mapping]

    def eval_results(self) -> list[EvalResult]:
        """The four metrics as `EvalResult`s (task `image-quality-assessment`)."""
        return [
            EvalResult(
                task_type=TASK_TYPE,
                task_name="Image Quality Assessment",
                dataset_type=self.dataset_id,
                dataset_name=self.dataset_name,
                dataset_split=self.split,
                metric_type=metric,
                metric_name=metric.upper(),
                metric_value=float(getattr(self, metric)),
                metric_config=self.mapping if metric in ("plcc", "rmse") and self.mapping != "none" else None,
            )
            for metric in IQA_METRICS
        ]


def card_evaluation(
    metrics: Mapping[str, float], *, dataset_name: str, dataset_id: str, split: str, num_images: int | None = None
) -> CardEvaluation | None:
    """The card row of raw metrics (``srocc``, ``plcc``, ``krocc``, ``rmse``, as `metaqap_hf.metrics` computes
    them); None when one of them is not a finite number (e.g. the SROCC of constant predictions): nothing to
    report then."""
    values = {metric: metrics.get(metric) for metric in IQA_METRICS}
    if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in values.values()):
        return None
    return CardEvaluation(dataset_name, dataset_id, split, **{k: float(v) for k, v in values.items()},
                          num_images=num_images)


@dataclass
class ModelCardFacts:
    """What a model card says beyond the checkpoint's own config: the training data and command, the evaluations,
    notes, limitations and licence (the arguments of `render_model_card` other than the checkpoint, repo id and
    mode). `write_model_card` saves them as ``model_card.json`` beside the card, so the card can be rendered again
    from the checkpoint folder alone, in either push mode and for any repo id."""

    training_dataset: str
    training_command: str
    evaluations: Sequence[CardEvaluation | Mapping] = ()
    training_dataset_id: str | None = None
    training_notes: str | None = None
    scatter_plot: str | None = None
    license: str = "apache-2.0"
    license_notes: str | None = None
    limitations: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.evaluations = [row if isinstance(row, CardEvaluation) else CardEvaluation(**row)
                            for row in self.evaluations]
        self.limitations = list(self.limitations)

    def with_evaluation(self, evaluation: CardEvaluation) -> ModelCardFacts:
        """These facts with `evaluation` added, replacing an earlier one of the same dataset and split."""
        kept = [row for row in self.evaluations
                if (row.dataset_id, row.split) != (evaluation.dataset_id, evaluation.split)]
        return replace(self, evaluations=[*kept, evaluation])


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this process was started (`sys.argv`), as a shell command: ``metaqap train ...`` for the command line,
    ``python -m PACKAGE ...`` or ``python SCRIPT ...`` for Python. The default training command of a card."""
    argv = list(sys.argv if argv is None else argv) or [""]
    program = Path(argv[0])
    if program.name == "__main__.py":
        start = ["python", "-m", program.parent.name]
    elif program.suffix == ".py" or argv[0] in ("", "-", "-c"):  # a script, stdin or `python -c`
        start = ["python", argv[0]] if argv[0] else ["python"]
    else:
        start = [program.name]
    return shlex.join([*start, *argv[1:]])


def model_card_template() -> str:
    """The packaged Jinja model card template (`metaqap_hf/hub_cards/model_card_template.md`)."""
    return resources.files("metaqap_hf").joinpath("hub_cards", TEMPLATE_NAME).read_text(encoding="utf-8")


def _load_config(checkpoint_dir_or_config: str | Path | MetaQAPConfig) -> tuple[MetaQAPConfig, dict]:
    """Config and image-processor settings (empty when only a config is given)."""
    if isinstance(checkpoint_dir_or_config, MetaQAPConfig):
        return checkpoint_dir_or_config, {}
    folder = Path(checkpoint_dir_or_config)
    config = MetaQAPConfig.from_pretrained(folder)
    processor_file = folder / "preprocessor_config.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    return config, processor


def render_model_card(
    checkpoint_dir_or_config: str | Path | MetaQAPConfig,
    *,
    repo_id: str,
    training_dataset: str,
    training_command: str,
    evaluations: Sequence[CardEvaluation | Mapping] = (),
    training_dataset_id: str | None = None,
    training_notes: str | None = None,
    scatter_plot: str | None = None,
    remote_code: bool = False,
    license: str = "apache-2.0",
    license_notes: str | None = None,
    limitations: Sequence[str] = (),
    template: str | Path | None = None,
) -> ModelCard:
    """Fill the model card template for one checkpoint.

    Architecture, MOS scale and meta-learner come from the checkpoint's config (and the input size from its
    `preprocessor_config.json`); the rest from the arguments. `evaluations` (CardEvaluation or dicts with its
    fields) become the table and the `model-index`; `scatter_plot` is a link, relative to the card (put the file
    in the checkpoint folder) or absolute. `remote_code` picks the usage snippet of the push mode. Save the card as
    `README.md` in the checkpoint folder: `push_model` lints and pushes it. `template` overrides the packaged
    template (a file path); unknown template variables raise instead of rendering as blanks.
    """
    config, processor = _load_config(checkpoint_dir_or_config)
    rows = [row if isinstance(row, CardEvaluation) else CardEvaluation(**row) for row in evaluations]
    eval_results = [result for row in rows for result in row.eval_results()]
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        tags=["image-quality-assessment", "no-reference-iqa", "metaqap", "timm"],
        datasets=[training_dataset_id] if training_dataset_id else None,
        metrics=list(IQA_METRICS) if rows else None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    size = processor.get("size") or MetaQAPImageProcessor.size
    coefficients = config.meta_learner["coefficients"]
    backbones = [
        {"id": backbone_id, "image_size": spec["image_size"], "coefficient": coefficient}
        for backbone_id, spec, coefficient in zip(config.backbone_ids, config.backbones, coefficients)
    ]
    low, high = config.mos_range
    notes = license_notes or DEFAULT_LICENSE_NOTES.format(
        license=license, backbones=", ".join(f"`{spec['name']}`" for spec in config.backbones),
        dataset=training_dataset,
    )
    template_text = Path(template).read_text(encoding="utf-8") if template is not None else model_card_template()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    content = environment.from_string(template_text).render(
        card_data=card_data.to_yaml(),
        model_id=repo_id,
        untrained=bool(getattr(config, "untrained", False)),
        backbones=backbones,
        meta_method=config.meta_learner["method"],
        meta_intercept=config.meta_learner["intercept"],
        mos_name=config.mos_name,
        mos_low=f"{low:g}",
        mos_high=f"{high:g}",
        processor_size=f"{size['width']}x{size['height']}",
        remote_code=remote_code,
        training_dataset=training_dataset,
        training_dataset_id=training_dataset_id,
        training_notes=training_notes,
        training_command=training_command.strip(),
        evaluations=rows,
        scatter_plot=scatter_plot,
        limitations=list(limitations),
        license_notes=notes,
    )
    return ModelCard(content)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _card_record(checkpoint_dir: Path) -> dict | None:
    facts_file = checkpoint_dir / CARD_FACTS_NAME
    return json.loads(facts_file.read_text(encoding="utf-8")) if facts_file.is_file() else None


def read_model_card_facts(checkpoint_dir: str | Path) -> ModelCardFacts | None:
    """The facts the checkpoint's card was rendered from (its ``model_card.json``), or None."""
    record = _card_record(Path(checkpoint_dir))
    return ModelCardFacts(**record["facts"]) if record is not None else None


def card_is_rendered(checkpoint_dir: str | Path) -> bool:
    """Whether the folder has card facts (model_card.json) and its README.md is absent or exactly what
    `write_model_card` last wrote there: a card that can be rendered again without losing anything."""
    checkpoint_dir = Path(checkpoint_dir)
    record = _card_record(checkpoint_dir)
    card_file = checkpoint_dir / CARD_NAME
    return record is not None and (not card_file.exists() or _sha256(card_file) == record["rendered"]["sha256"])


def write_model_card(
    checkpoint_dir: str | Path,
    facts: ModelCardFacts | None = None,
    *,
    repo_id: str | None = None,
    remote_code: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Render the card of a checkpoint folder and save it as its README.md; returns the card's path.

    `facts` are saved beside it as ``model_card.json``; without them, the card is rendered again from the
    ``model_card.json`` already there (another mode, another repo id). `repo_id` is the model id the card shows
    and `remote_code` picks the usage snippet of that push mode; both default to those of the card's last
    rendering, and for a new card to the folder's path (how a local checkpoint loads) and package mode. A README.md
    that this function did not write, or that was edited since, is kept unless `overwrite` (a `FileExistsError`
    says so): nothing written by hand is replaced silently.
    """
    folder = Path(checkpoint_dir)
    card_file = folder / CARD_NAME
    record = _card_record(folder)
    if facts is None:
        if record is None:
            raise FileNotFoundError(f"{folder / CARD_FACTS_NAME}: missing, so there is nothing to render the card "
                                    "from (checkpoints written by metaqap's training commands have one; else call "
                                    "write_model_card with ModelCardFacts)")
        facts = ModelCardFacts(**record["facts"])
    if card_file.exists() and not overwrite and not card_is_rendered(folder):
        raise FileExistsError(f"{card_file} was written or edited by hand; pass overwrite=True (--overwrite) to "
                              f"replace it with a card rendered from {CARD_FACTS_NAME}")
    last = record["rendered"] if record is not None else {"repo_id": str(folder), "remote_code": False}
    model_id = repo_id or last["repo_id"]
    remote_code = last["remote_code"] if remote_code is None else remote_code
    card = render_model_card(folder, repo_id=model_id, remote_code=remote_code, **_render_arguments(facts))
    card_file.write_text(str(card), encoding="utf-8", newline="")
    record = {"facts": asdict(facts),
              "rendered": {"repo_id": model_id, "remote_code": remote_code, "sha256": _sha256(card_file)}}
    (folder / CARD_FACTS_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return card_file


def add_card_evaluation(checkpoint_dir: str | Path, evaluation: CardEvaluation) -> Path:
    """Add `evaluation` to the checkpoint's card facts (replacing an earlier one of the same dataset and split) and
    render its card again, as it was last rendered; returns the card's path."""
    facts = read_model_card_facts(checkpoint_dir)
    if facts is None:
        raise FileNotFoundError(f"{Path(checkpoint_dir) / CARD_FACTS_NAME}: missing; there is no card to add "
                                "figures to (checkpoints written by metaqap's training commands have one)")
    return write_model_card(checkpoint_dir, facts.with_evaluation(evaluation))


def _render_arguments(facts: ModelCardFacts) -> dict:
    return {name: getattr(facts, name) for name in facts.__dataclass_fields__}


def lint_card(path: str | Path) -> list[str]:
    """Problems that make a model card unfit to publish, each prefixed with the card's path; [] means fine.

    Checked: the metadata block and its `model-index` parse (`ModelCard.load`, which runs
    `model_index_to_eval_results`), the model-index holds `image-quality-assessment` results with finite values of
    known metrics, a licence is declared, the sections `REQUIRED_SECTIONS` exist, no Jinja markup is left, and
    images linked by relative path exist next to the card.
    """
    path = Path(path)
    if not path.is_file():
        return [f"{path}: no model card there (render one with render_model_card and save it as {CARD_NAME})"]
    problems = []
    text = path.read_text(encoding="utf-8")
    if "{{" in text or "{%" in text:
        problems.append("template markup ({{ or {%) left in the card: render it, do not copy the template")
    try:
        card = ModelCard.load(path)
    except (ValueError, yaml.YAMLError) as error:
        return [f"{path}: {problem}" for problem in [*problems, f"metadata does not parse: {error}"]]
    metadata = card.data.to_dict()
    if not metadata:
        problems.append("no YAML metadata block (--- ... ---) at the top")
    if not (metadata.get("license") or (metadata.get("license_name") and metadata.get("license_link"))):
        problems.append("no licence in the metadata (`license:`, or `license_name:` with `license_link:`)")
    problems += _eval_result_problems(card.data.eval_results)
    for section in REQUIRED_SECTIONS:
        if not re.search(rf"^{re.escape(section)}\s*$", card.text, flags=re.MULTILINE):
            problems.append(f"missing section '{section}'")
    for link in _IMAGE_LINK.findall(card.text):
        if "://" not in link and not link.startswith(("/", "#", "data:")) and not (path.parent / link).is_file():
            problems.append(f"links image '{link}', but {path.parent / link} does not exist")
    return [f"{path}: {problem}" for problem in problems]


def _eval_result_problems(eval_results: Sequence[EvalResult] | None) -> list[str]:
    if not eval_results:
        return ["no evaluation results in the metadata (`model-index`)"]
    problems = []
    for result in eval_results:
        where = f"model-index result {result.dataset_name}/{result.metric_type}"
        if result.task_type != TASK_TYPE:
            problems.append(f"model-index results on {result.dataset_name}: task type is {result.task_type!r}, "
                            f"expected {TASK_TYPE!r}")
        if result.metric_type not in IQA_METRICS:
            problems.append(f"{where}: unknown metric, expected one of {list(IQA_METRICS)}")
        value = result.metric_value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{where}: value must be a finite number, got {value!r}")
    return list(dict.fromkeys(problems))  # one line per problem, not one per metric sharing it


def save_checkpoint(
    model, image_processor, folder: str | Path, card: ModelCardFacts, *, repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder: the model (`save_pretrained`), its image processor (when given) and its model
    card (`write_model_card` with `card`; `repo_id` is the id the card shows, by default the folder; a README.md
    written by hand is kept unless `overwrite`, and then nothing else is written either). Returns the folder."""
    folder = Path(folder)
    if (folder / CARD_NAME).exists() and not overwrite and not card_is_rendered(folder):
        raise FileExistsError(f"{folder / CARD_NAME} was written or edited by hand; pass overwrite=True to replace "
                              "it with the checkpoint's own card")
    model.save_pretrained(folder)
    if image_processor is not None:
        image_processor.save_pretrained(folder)
    write_model_card(folder, card, repo_id=repo_id, overwrite=overwrite)
    return folder
