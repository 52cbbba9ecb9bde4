"""Train MetaQAP base models with a plain Accelerate loop: mixed precision, gradient accumulation, `accelerate
launch` across processes, crash-safe periodic checkpoints, and exact resumption.

    accelerate launch examples/finetune_accelerate.py ...   # or plain `python`: one process

Exact resumption: a run killed at any moment (SIGKILL included) and restarted with the same arguments ends with
the same weights and metrics as a run that was never stopped. Everything random is a function of the seed and the
position in training rather than of RNG state carried along the way:
- the shuffling order of epoch e comes from (seed, e) (accelerate's seedable sampler);
- each image's augmentation comes from (seed, epoch, index) (`QualityImageDataset.set_epoch`);
- dropout and other in-model randomness are reseeded before every micro-batch from (seed, epoch, batch, process).
A checkpoint (`accelerator.save_state`, written atomically, see `checkpointing`) holds model, optimizer, scheduler
and the loop's position: epoch, micro-batches done, step, best metric, early-stopping count, logging window. On
resume the first batches of the epoch are skipped (`accelerator.skip_first_batches`). Checkpoints are taken only
at optimizer-step boundaries, so no half-accumulated gradient is ever lost.

Gradient accumulation groups the micro-batches of an epoch in runs of `gradient_accumulation_steps`; the last
group of an epoch may be shorter, and its loss is averaged over its real size.

Processes: launched as N processes (`accelerate launch --num_processes N` on GPUs; on CPUs `accelerate launch
--multi_gpu --num_processes N` or `torchrun --nproc_per_node N`), the loop joins them in one group (gloo on CPUs:
it asks for `Accelerator(cpu=True)` there itself, without which each process would train alone on every image) and
refuses to run when the group has fewer processes than were launched. Each process takes every N-th batch of the
shuffled order, so N processes with batch B step exactly as one process with batch B and N accumulation steps:
the same images per step, and in-model randomness seeded by the global micro-batch number (BatchNorm running
statistics aside: DDP keeps those of the first process, one process those of all its micro-batches).

The loop reads only the two datasets it is given, `train` and `eval` (validation carved from train): model
selection and early stopping cannot see a test split.

Every model folder it writes (``best/``, ``final/``) gets its model card (README.md, with the validation figures
of that model; `metaqap_hf.cards.save_checkpoint`), described by the `card` facts the caller gives.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import is_tensorboard_available
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from .. import evaluation
from ..cards import ModelCardFacts, card_evaluation, command_line, save_checkpoint
from ..deprecation import moved_names
from ..metrics import ensemble_metrics
from ..modeling_metaqap import MetaQAPModel
from .checkpointing import (
    atomic_directory,
    checkpoint_path,
    latest_checkpoint,
    remove_incomplete,
    save_training_state,
)
from .data import QualityDataCollator

__all__ = [
    "AccelerateTrainingArguments",
    "MetricsLog",
    "TrainingResult",
    "initialize_head_bias",
    "read_metrics_log",
    "set_trainable",
    "train_mode",
    "train_with_accelerate",
]

# Moved to metaqap_hf.evaluation in 0.2.0 (evaluation no longer imports training).
__getattr__ = moved_names(__name__, {"Predictions": "..evaluation", "predict": "..evaluation"})

MIXED_PRECISIONS = ("no", "bf16")
OPTIMIZERS = ("adamw", "sgd")
LOWER_IS_BETTER = ("rmse", "eval_loss")


@dataclass
class AccelerateTrainingArguments:
    """Settings of `train_with_accelerate`. Steps are optimizer steps (one per `gradient_accumulation_steps`
    micro-batches); `per_device_batch_size` is per process and micro-batch.

    Args:
        output_dir: gets ``checkpoints/``, ``best/`` (best validation model), ``final/``, ``metrics.jsonl`` and
            ``training_result.json``.
        num_epochs / max_steps: train for `num_epochs` epochs, or stop earlier at `max_steps` optimizer steps.
        learning_rate: for the backbones. head_learning_rate: for heads (and the meta-learner when trained);
            None uses `learning_rate`. Fresh heads learn faster than pretrained backbones should.
        optimizer: "adamw" or "sgd" (momentum 0.9, as the official KonIQ recipe).
        lr_scheduler: a `transformers.get_scheduler` name ("cosine", "linear", "constant", ...).
        mixed_precision: "bf16" (autocast on CPU and GPU) or "no". fp16 is left out: it needs loss scaling,
            which skips steps and breaks exact resumption; bf16 does not.
        train_backbones: whether the backbones learn; heads always do, the meta-learner never (it is fitted by
            stacking afterwards). Frozen backbones stay in eval mode.
        eval_every_steps: evaluate every N steps; None evaluates at the end of every epoch. The run always ends
            with an evaluation of the final weights.
        save_every_steps / keep_checkpoints: checkpoint cadence and how many to keep.
        early_stopping_patience: stop after this many evaluations without improving `metric_for_best_model`.
        resume: continue from the latest checkpoint in ``output_dir/checkpoints`` if there is one. With
            resume=False an output_dir that already holds checkpoints is refused.
        tensorboard: also log to ``output_dir/tensorboard``; None does so when tensorboard is installed.
    """

    output_dir: str
    seed: int = 0
    num_epochs: int = 10
    max_steps: int | None = None
    per_device_batch_size: int = 8
    eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    head_learning_rate: float | None = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "bf16"
    train_backbones: bool = True
    eval_every_steps: int | None = None
    save_every_steps: int = 100
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = 5
    metric_for_best_model: str = "srocc"
    num_workers: int = 0
    log_every_steps: int = 10
    resume: bool = True
    tensorboard: bool | None = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("num_epochs", "per_device_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                     "save_every_steps", "keep_checkpoints", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every_steps", "early_stopping_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")


@dataclass
class TrainingResult:
    """What a run did: steps and epochs trained and in how many processes, the last validation metrics, the best
    model's and where it is."""

    global_step: int
    epochs: float
    num_processes: int
    final_metrics: dict[str, float]
    best_metric: float | None
    best_step: int | None
    best_metrics: dict[str, float]
    stopped_early: bool
    resumed_from: str | None
    best_model_dir: str | None
    final_model_dir: str


@dataclass
class _Progress:
    """The loop's position and bookkeeping, saved in every checkpoint (registered with the accelerator)."""

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0  # micro-batches of `epoch` already trained
    best_metric: float | None = None
    best_step: int | None = None
    best_eval: dict[str, float] = field(default_factory=dict)
    evals_without_improvement: int = 0
    stopped_early: bool = False
    last_eval_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    window_loss_sum: float = 0.0  # training loss summed since the last log record
    window_steps: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def train_with_accelerate(
    model: MetaQAPModel,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    args: AccelerateTrainingArguments,
    *,
    image_processor=None,
    data_collator=None,
    card: ModelCardFacts | None = None,
) -> TrainingResult:
    """Train `model` on `train_dataset`, selecting and early-stopping on `eval_dataset` (a validation split).

    Datasets yield ``{"pixel_values", "labels"}`` samples (see `QualityImageDataset`); labels are MOS on the
    model's `mos_range`. `image_processor`, if given, is saved with the best and final models so that they load
    with `pipeline("image-quality", ...)`; its `rescale_factor` also sets the default collator. `card` describes
    the training data and command for the model cards of those folders (default: this process's command line, the
    data not described); the loop adds each model's validation figures.
    Returns a `TrainingResult`, also written to ``output_dir/training_result.json``.
    """
    return _AccelerateRun(model, train_dataset, eval_dataset, args, image_processor, data_collator, card).run()


def _micro_batch_seed(seed: int, epoch: int, global_batch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, global_batch]).generate_state(1)[0])


def _launched_processes() -> int:
    """How many processes the launcher started (torchrun and `accelerate launch` set WORLD_SIZE), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class _AccelerateRun:
    """One call of `train_with_accelerate`: the prepared objects and the loop over them."""

    def __init__(self, model, train_dataset, eval_dataset, args, image_processor, data_collator, card):
        self.args = args
        self.output_dir = Path(args.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.image_processor = image_processor
        self.train_dataset = train_dataset
        self.eval_size = len(eval_dataset)
        self.card = card or ModelCardFacts(
            training_dataset="not described", training_command=command_line(),
            training_notes="trained with metaqap_hf.training.train_with_accelerate, whose caller did not describe "
                           "the data (its `card` argument)")
        launched = _launched_processes()
        self.accelerator = Accelerator(
            # Without cpu=True, processes launched on a machine without a GPU each train alone, as if the only one.
            cpu=launched > 1 and not torch.cuda.is_available(),
            mixed_precision=args.mixed_precision,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        )
        if launched > 1 and self.accelerator.num_processes != launched:
            raise RuntimeError(f"{launched} processes were launched, but this one is in a group of "
                               f"{self.accelerator.num_processes}: each would train on every image by itself. "
                               "Launch with `accelerate launch --num_processes N` (GPUs), or on CPUs with "
                               "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`")
        self.backbone_ids = model.config.backbone_ids
        set_trainable(model, backbones=args.train_backbones)
        collator = data_collator or QualityDataCollator(getattr(image_processor, "rescale_factor", 1 / 255))
        # drop_last: a batch of one image has no correlation for the quality-aware loss to use.
        loader_options = dict(collate_fn=collator, num_workers=args.num_workers,
                              pin_memory=self.accelerator.device.type == "cuda")
        train_loader = DataLoader(train_dataset, batch_size=args.per_device_batch_size, shuffle=True,
                                  drop_last=True, **loader_options)
        eval_loader = DataLoader(eval_dataset, batch_size=args.eval_batch_size, shuffle=False, **loader_options)
        # Backbones get channels_last inputs, so their weight gradients come channels_last too: parameters in the
        # same layout spare DDP a copy per bucket (and a warning) and change no value.
        model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, args)
        self.model, self.optimizer, self.train_loader, self.eval_loader = self.accelerator.prepare(
            model, optimizer, train_loader, eval_loader)
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch == 0:
            raise ValueError(f"the training set ({len(train_dataset)} images) is smaller than one batch of "
                             f"{args.per_device_batch_size} x {self.accelerator.num_processes} process(es)")
        steps_per_epoch = math.ceil(self.batches_per_epoch / args.gradient_accumulation_steps)
        self.total_steps = steps_per_epoch * args.num_epochs
        if args.max_steps is not None:
            self.total_steps = min(self.total_steps, args.max_steps)
        # The scheduler counts optimizer steps and is stepped by hand once per step: not passed to `prepare`,
        # which would step it once per process.
        self.scheduler = get_scheduler(args.lr_scheduler, self.optimizer.optimizer,
                                       num_warmup_steps=args.warmup_steps, num_training_steps=self.total_steps)
        self.progress = _Progress()
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.accelerator.register_for_checkpointing(self.progress)
        self.log: MetricsLog | None = None  # the main process's metrics log, open while `run` runs

    @property
    def unwrapped(self) -> MetaQAPModel:
        return self.accelerator.unwrap_model(self.model)

    def run(self) -> TrainingResult:
        resumed_from = self._resume()
        if self.accelerator.is_main_process:
            use_tensorboard = self.args.tensorboard
            if use_tensorboard is None:
                use_tensorboard = is_tensorboard_available()
            self.log = MetricsLog(self.output_dir / "metrics.jsonl",
                                  keep_until_step=self.progress.global_step if resumed_from else None,
                                  tensorboard_dir=self.output_dir / "tensorboard" if use_tensorboard else None)
        try:
            self._train()
            if self.progress.last_eval_step != self.progress.global_step:
                self._evaluate()
            if not checkpoint_path(self.checkpoint_root, self.progress.global_step).is_dir():
                save_training_state(self.accelerator, self.checkpoint_root, self.progress.global_step,
                                self.args.keep_checkpoints)
            final_dir = self.output_dir / "final"
            if self.accelerator.is_main_process:
                atomic_directory(final_dir, lambda folder: self._save_model(folder, final_dir, self.progress.last_eval))
            result = TrainingResult(
                global_step=self.progress.global_step,
                epochs=self._epochs_done(),
                num_processes=self.accelerator.num_processes,
                final_metrics=dict(self.progress.last_eval),
                best_metric=self.progress.best_metric,
                best_step=self.progress.best_step,
                best_metrics=dict(self.progress.best_eval),
                stopped_early=self.progress.stopped_early,
                resumed_from=str(resumed_from) if resumed_from else None,
                best_model_dir=str(self.output_dir / "best") if self.progress.best_step is not None else None,
                final_model_dir=str(final_dir),
            )
            if self.accelerator.is_main_process:
                (self.output_dir / "training_result.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
            self.accelerator.wait_for_everyone()
            return result
        finally:
            if self.log is not None:
                self.log.close()
                self.log = None

    def _resume(self) -> Path | None:
        checkpoint = latest_checkpoint(self.checkpoint_root)
        if checkpoint is not None and not self.args.resume:
            raise FileExistsError(f"{self.checkpoint_root} already holds checkpoints ({checkpoint.name}); resume "
                                  "from them (resume=True) or choose another output_dir")
        if self.accelerator.is_main_process:
            remove_incomplete(self.checkpoint_root)
        self.accelerator.wait_for_everyone()
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
        return checkpoint

    def _train(self) -> None:
        args, progress, accelerator = self.args, self.progress, self.accelerator
        bar = tqdm(total=self.total_steps, initial=progress.global_step, desc="training", unit="step",
                   disable=not (args.progress_bar and accelerator.is_local_main_process))
        self._train_mode()
        done = progress.stopped_early or progress.global_step >= self.total_steps
        while not done and progress.epoch < args.num_epochs:
            epoch = progress.epoch
            self.train_loader.set_epoch(epoch)
            if hasattr(self.train_dataset, "set_epoch"):
                self.train_dataset.set_epoch(epoch)
            start = progress.batches_done
            if start < self.batches_per_epoch:
                loader = accelerator.skip_first_batches(self.train_loader, start) if start else self.train_loader
                done = self._train_batches(loader, epoch, start, bar)
            if done:
                break
            progress.epoch, progress.batches_done = epoch + 1, 0
            if args.eval_every_steps is None:
                done = self._evaluate()
        bar.close()

    def _train_batches(self, loader, epoch: int, start: int, bar) -> bool:
        """Train on `loader` (the epoch's batches from index `start`); True when training should stop."""
        args, progress, accelerator = self.args, self.progress, self.accelerator
        group_losses = []
        for index, batch in enumerate(loader, start=start):
            group_start = index - index % args.gradient_accumulation_steps
            group_size = min(args.gradient_accumulation_steps, self.batches_per_epoch - group_start)
            syncing = index + 1 == group_start + group_size
            global_batch = index * accelerator.num_processes + accelerator.process_index
            torch.manual_seed(_micro_batch_seed(args.seed, epoch, global_batch))
            with nullcontext() if syncing else accelerator.no_sync(self.model):
                loss = self.model(**batch).loss
                accelerator.backward(loss / group_size)
            group_losses.append(loss.detach().float())
            progress.batches_done = index + 1
            if not syncing:
                continue
            if args.max_grad_norm is not None:
                accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            progress.global_step += 1
            bar.update(1)
            step_loss = accelerator.reduce(torch.stack(group_losses).mean(), reduction="mean").item()
            group_losses.clear()
            self._log_training(step_loss)
            stop = False
            if args.eval_every_steps is not None and progress.global_step % args.eval_every_steps == 0:
                stop = self._evaluate()
            if progress.global_step % args.save_every_steps == 0:
                save_training_state(accelerator, self.checkpoint_root, progress.global_step, args.keep_checkpoints)
            if stop or progress.global_step >= self.total_steps:
                return True
        return False

    def _log_training(self, step_loss: float) -> None:
        progress = self.progress
        progress.window_loss_sum += step_loss
        progress.window_steps += 1
        if progress.global_step % self.args.log_every_steps and progress.global_step != self.total_steps:
            return
        if self.log is not None:
            self.log.log({
                "kind": "train", "step": progress.global_step,
                "epoch": self._epochs_done(),
                "loss": progress.window_loss_sum / progress.window_steps,
                "learning_rate": self.scheduler.get_last_lr()[0],
            })
        progress.window_loss_sum, progress.window_steps = 0.0, 0

    def _evaluate(self) -> bool:
        """Evaluate on the validation set, track the best model and early stopping; True to stop training."""
        args, progress = self.args, self.progress
        predictions = evaluation.predict(self.model, self.eval_loader, self.accelerator, progress=args.progress_bar)
        self._train_mode()
        metrics = {"eval_loss": predictions.loss, **ensemble_metrics(
            predictions.scores, predictions.base_scores, predictions.labels, self.backbone_ids)}
        if args.metric_for_best_model not in metrics:
            raise KeyError(f"metric_for_best_model {args.metric_for_best_model!r} is not computed; "
                           f"choose one of {sorted(metrics)}")
        value = metrics[args.metric_for_best_model]
        lower_is_better = args.metric_for_best_model in LOWER_IS_BETTER
        improved = not math.isnan(value) and (
            progress.best_metric is None
            or (value < progress.best_metric if lower_is_better else value > progress.best_metric))
        if improved:
            progress.best_metric, progress.best_step, progress.evals_without_improvement = value, \
                progress.global_step, 0
            progress.best_eval = metrics
            if self.accelerator.is_main_process:
                best_dir = self.output_dir / "best"
                atomic_directory(best_dir, lambda folder: self._save_model(folder, best_dir, metrics))
        else:
            progress.evals_without_improvement += 1
        patience = args.early_stopping_patience
        progress.stopped_early = patience is not None and progress.evals_without_improvement >= patience
        progress.last_eval_step, progress.last_eval = progress.global_step, metrics
        if self.log is not None:
            self.log.log({"kind": "eval", "step": progress.global_step, "epoch": self._epochs_done(), **metrics})
        self.accelerator.wait_for_everyone()
        return progress.stopped_early

    def _epochs_done(self) -> float:
        return self.progress.epoch + self.progress.batches_done / self.batches_per_epoch

    def _save_model(self, directory: Path, destination: Path, metrics: dict[str, float]) -> None:
        """Write the model (and image processor) to `directory`, with the card of its final place `destination`."""
        facts, processes = self.card, self.accelerator.num_processes
        evaluation = card_evaluation(metrics, dataset_name=facts.training_dataset,
                                     dataset_id=facts.training_dataset_id or "validation", split="validation",
                                     num_images=self.eval_size)
        steps, epochs = self.progress.global_step, self._epochs_done()
        run = (f"{steps} optimizer step{'s' * (steps != 1)} ({epochs:g} epoch{'s' * (epochs != 1)}) in {processes} "
               f"process{'es' * (processes > 1)}; the evaluation below is on the validation split that chose this "
               "model, not a held-out test (`metaqap evaluate --add-to-card` adds one)")
        notes = "; ".join(note for note in (facts.training_notes, run) if note)
        card = replace(facts, training_notes=notes, evaluations=[*facts.evaluations, *([evaluation] if evaluation else [])])
        save_checkpoint(self.unwrapped, self.image_processor, directory, card, repo_id=str(destination))

    def _train_mode(self) -> None:
        self.model.train()
        train_mode(self.unwrapped)


def build_optimizer(model: MetaQAPModel, args: AccelerateTrainingArguments) -> torch.optim.Optimizer:
    """Parameter groups: backbones at `learning_rate`, heads at `head_learning_rate`; weight decay only on weight
    matrices and kernels (not biases or norms). `MetaQAPTrainer` builds its optimizer here too."""
    head_lr = args.head_learning_rate if args.head_learning_rate is not None else args.learning_rate
    groups = []
    for module, lr in ((model.backbones, args.learning_rate), (model.heads, head_lr)):
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups += [{"params": decay, "lr": lr, "weight_decay": args.weight_decay},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.learning_rate, momentum=0.9)
    return torch.optim.AdamW(groups, lr=args.learning_rate)


# Parts of a run

def set_trainable(model: MetaQAPModel, *, backbones: bool = True) -> dict[str, int]:
    """Heads always learn; backbones when `backbones`. Returns the number of trainable parameters per part."""
    parts = {"backbones": (model.backbones, backbones), "heads": (model.heads, True)}
    counts = {}
    for name, (module, flag) in parts.items():
        module.requires_grad_(flag)
        counts[name] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return counts


def train_mode(model: torch.nn.Module) -> None:
    """`model.train()`, except that frozen backbones stay in eval mode: their BatchNorm running statistics must
    not drift with the training batches when their weights are not learning."""
    model.train()
    backbones = getattr(model, "backbones", [])
    for backbone in backbones:
        if not any(p.requires_grad for p in backbone.parameters()):
            backbone.eval()


@torch.no_grad()
def initialize_head_bias(model: MetaQAPModel, labels: Sequence[float]) -> float:
    """Start every head at the mean training label (unit scale) instead of 0.

    Fresh heads predict about 0 while MOS sit mid-scale; at fine-tuning learning rates the bias alone would take
    thousands of steps to get there. Returns the bias used. Call on a fresh model, before training.
    """
    unit = model.to_unit_scale(torch.as_tensor(labels, dtype=torch.float64))
    if unit.numel() == 0:
        raise ValueError("initialize_head_bias: no labels given")
    mean = float(unit.mean())
    for head in model.heads:
        head.set_output_bias(mean)
    return mean


def read_metrics_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics log, in order (a last line cut off by a kill is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Append-only JSONL log at `path`; `keep_until_step` None starts a new log, a step resumes one.

    `tensorboard_dir` (optional) also writes every numeric value as a scalar under its key.
    """

    def __init__(self, path: str | os.PathLike, keep_until_step: int | None = None,
                 tensorboard_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until_step is not None and self.path.is_file():
            kept = [record for record in read_metrics_log(self.path) if record.get("step", 0) <= keep_until_step]
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))
        os.replace(temporary, self.path)
        self._file = open(self.path, "a")
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; it must carry an integer ``step``. NaN values are written as null."""
        clean = {key: (None if isinstance(value, float) and math.isnan(value) else value)
                 for key, value in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._writer is not None:
            prefix = "eval/" if record.get("kind") == "eval" else "train/"
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(prefix + key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
