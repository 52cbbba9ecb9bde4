"""`metaqap train`, `train-frozen`, `stack` and `pretrain`: the command lines of `metaqap_hf.training` and
`metaqap_hf.pretraining`. Every default shown here is read from the library function the command calls."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

from metaqap_hf.configuration_metaqap import META_LEARNER_METHODS
from metaqap_hf.devices import DTYPE_CHOICES
from metaqap_hf.factory import BACKBONE_PRESETS
from metaqap_hf.losses import LOSSES
from metaqap_hf.pretraining.objectives import DEFAULT_OBJECTIVE_WEIGHT, OBJECTIVES
from metaqap_hf.pretraining.stage import pretrain
from metaqap_hf.training import (
    AccelerateTrainingArguments,
    FinetuningOptions,
    FrozenRecipe,
    finetune,
    stack_checkpoints,
    train_frozen,
)

from . import EXIT_OK, command_parser, library_defaults
from .data import add_dataset_options, dataset_options

LOOP = library_defaults(AccelerateTrainingArguments)
FROZEN = library_defaults(FrozenRecipe)
# The precision of training and feature extraction, named as everywhere else in the command line.
MIXED_PRECISION = {"bfloat16": "bf16", "float32": "no"}
DTYPE_OF_MIXED_PRECISION = {value: key for key, value in MIXED_PRECISION.items()}


def _weight_source(text: str) -> tuple[str, str]:
    name, separator, path = text.partition("=")
    if not (separator and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, path


def _add_model_options(group, defaults: dict) -> None:
    group.add_argument("--backbones", default=defaults["backbones"], metavar="PRESET",
                       choices=sorted(BACKBONE_PRESETS),
                       help=f"backbone preset: lite (the four ImageNet backbones), one of them by its timm name, or "
                            f"tiny (random timm test models, smoke runs); one of {', '.join(sorted(BACKBONE_PRESETS))}")
    group.add_argument("--random-init", action="store_true", help="do not load ImageNet weights")
    group.add_argument("--weights", type=_weight_source, action="append", default=[], metavar="NAME=FILE",
                       help="ImageNet weights file for backbone NAME (repeatable; default: the weights cache)")


def _add_backbones_from(group) -> None:
    group.add_argument("--backbones-from", metavar="DIR",
                       help="start the backbones from this saved model instead of ImageNet, e.g. the final/ folder "
                            "of `metaqap pretrain` (quality-aware pretraining); the heads start fresh")


def _add_loop_options(group) -> None:
    group.add_argument("--lr", type=float, default=LOOP["learning_rate"], help="backbone learning rate")
    group.add_argument("--head-lr", type=float, default=LOOP["head_learning_rate"], help="heads' learning rate")
    group.add_argument("--dtype", choices=sorted(MIXED_PRECISION),
                       default=DTYPE_OF_MIXED_PRECISION[LOOP["mixed_precision"]],
                       help="training precision (bfloat16: autocast on CPU and GPU)")
    group.add_argument("--save-every", type=int, default=LOOP["save_every_steps"], metavar="N",
                       help="checkpoint every N optimizer steps")
    group.add_argument("--eval-every", type=int, default=LOOP["eval_every_steps"], metavar="N",
                       help="evaluate every N steps (default: every epoch)")


# ------------------------------------------------------------------------------------------------- train
def _train_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(FinetuningOptions)
    parser = command_parser(
        command,
        "Fine-tune the base models of a fresh MetaQAP model on a dataset's train split with the Accelerate loop "
        "(bf16, gradient accumulation, crash-safe checkpoints): validation is the dataset's own or carved from "
        "train, and the test split is never read. Rerun the same command to resume. Writes OUTPUT_DIR/best and "
        "final/ (each with its model card, README.md), checkpoints/, metrics.jsonl, training_result.json; prints "
        "the result. Several processes: on GPUs `accelerate launch --num_processes N -m metaqap_hf train ...`, on "
        "CPUs `accelerate launch --multi_gpu --num_processes N -m metaqap_hf train ...`. "
        "Python: metaqap_hf.training.finetune(DATASET, AccelerateTrainingArguments(OUTPUT_DIR, ...), "
        "FinetuningOptions(...)).",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="run folder (rerun to resume)")
    add_dataset_options(parser, "share of the training images held out for model selection, when the dataset "
                                "has no validation split")
    model = parser.add_argument_group("model")
    _add_model_options(model, defaults)
    _add_backbones_from(model)
    model.add_argument("--loss", default=defaults["loss"], choices=sorted(LOSSES), help="training loss")
    data = parser.add_argument_group("data")
    data.add_argument("--image-size", type=int, default=defaults["image_size"], metavar="N",
                      help="processor resize (512 = inference default)")
    data.add_argument("--train-limit", type=int, default=defaults["train_limit"], metavar="N",
                      help="use the first N training images")
    data.add_argument("--validation-limit", type=int, default=defaults["validation_limit"], metavar="N",
                      help="use the first N validation images")
    data.add_argument("--cache-dir", default=defaults["cache_dir"], metavar="DIR",
                      help="keep decoded images here (default: in memory)")
    data.add_argument("--no-cache", action="store_true", help="decode images on every access")
    data.add_argument("--num-workers", type=int, default=defaults["num_workers"], metavar="N",
                      help="decoding processes")
    loop = parser.add_argument_group("training loop")
    loop.add_argument("--epochs", type=int, default=LOOP["num_epochs"], metavar="N",
                      help="passes over the training set")
    loop.add_argument("--max-steps", type=int, default=LOOP["max_steps"], metavar="N",
                      help="stop after N optimizer steps (default: after --epochs)")
    loop.add_argument("--batch-size", type=int, default=LOOP["per_device_batch_size"], metavar="N",
                      help="per process and micro-batch")
    loop.add_argument("--grad-accum", type=int, default=LOOP["gradient_accumulation_steps"], metavar="N",
                      help="micro-batches per optimizer step")
    loop.add_argument("--freeze-backbones", action="store_true", help="train the heads only")
    loop.add_argument("--patience", type=int, default=LOOP["early_stopping_patience"], metavar="N",
                      help="early stopping, in evaluations")
    _add_loop_options(loop)
    loop.add_argument("--seed", type=int, default=defaults["seed"], metavar="N", help="seed of splits, order and heads")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    options = FinetuningOptions(
        **dataset_options(args), backbones=args.backbones, pretrained=not args.random_init,
        weight_sources=dict(args.weights), backbones_from=args.backbones_from, loss=args.loss,
        image_size=args.image_size, train_limit=args.train_limit, validation_limit=args.validation_limit,
        cache=not args.no_cache, cache_dir=args.cache_dir, num_workers=args.num_workers, seed=args.seed,
    )
    loop = AccelerateTrainingArguments(
        args.output_dir, seed=args.seed, num_workers=args.num_workers, num_epochs=args.epochs,
        max_steps=args.max_steps, per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, head_learning_rate=args.head_lr, mixed_precision=MIXED_PRECISION[args.dtype],
        train_backbones=not args.freeze_backbones, save_every_steps=args.save_every, eval_every_steps=args.eval_every,
        early_stopping_patience=args.patience,
    )
    result = finetune(args.dataset, loop, options)
    if int(os.environ.get("RANK", "0")) == 0:  # launched as several processes, one of them reports
        print(json.dumps(asdict(result), indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ train-frozen
def _train_frozen_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(train_frozen)
    parser = command_parser(
        command,
        "Train the default model's recipe on any dataset on a CPU (it reproduces metaqap-lite-biq2021 from the raw "
        "BIQ2021 folder): the lite backbones stay frozen with their ImageNet weights; their multi-stage pooled "
        "features are computed once (cached with --cache-dir); one MLP head per backbone is trained on them "
        "(epochs chosen on the validation split); the meta-learner is fitted on k-fold out-of-fold head "
        "predictions; heads are refit on all training images. A test split is predicted only for the report. "
        "Writes the checkpoint, its model card (README.md, with the test and out-of-fold figures) and "
        "training_report.json. Python: metaqap_hf.training.train_frozen(DATASET, OUTPUT_DIR, ...).",
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="checkpoint folder to write")
    add_dataset_options(parser, "share of the training images held out for choosing the head epochs, when the "
                                "dataset has no validation split")
    _add_model_options(parser, defaults)
    _add_backbones_from(parser)
    parser.add_argument("--image-size", type=int, default=defaults["image_size"], metavar="N",
                        help="backbone input side (default: the preset's)")
    parser.add_argument("--cache-dir", default=defaults["feature_cache"], metavar="DIR",
                        help="keep pooled features here and reuse them")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=defaults["feature_dtype"],
                        help="feature extraction precision; auto: bfloat16 on GPUs and on CPUs that compute it "
                             "natively (AVX512-BF16, AMX), float32 elsewhere")
    parser.add_argument("--device", default=defaults["device"], metavar="D",
                        help="where features are computed (default: cuda when available)")
    parser.add_argument("--hidden-size", type=int, default=FROZEN["hidden_size"], metavar="N",
                        help="MLP head width (0: linear)")
    parser.add_argument("--dropout", type=float, default=FROZEN["dropout"], help="head dropout")
    parser.add_argument("--max-epochs", type=int, default=FROZEN["max_epochs"], metavar="N",
                        help="most head epochs (the best is chosen on validation)")
    parser.add_argument("--folds", type=int, default=FROZEN["folds"], metavar="K", help="cross-fitting folds")
    parser.add_argument("--loss", default=FROZEN["loss"], choices=sorted(LOSSES), help="head loss")
    parser.add_argument("--meta-learner", default=FROZEN["meta_learner"], choices=META_LEARNER_METHODS,
                        help="how base scores are combined")
    parser.add_argument("--seed", type=int, default=FROZEN["seed"], metavar="N", help="seed of splits, folds and heads")
    parser.set_defaults(func=run_train_frozen)
    return parser


def run_train_frozen(args: argparse.Namespace) -> int:
    recipe = FrozenRecipe(hidden_size=args.hidden_size, dropout=args.dropout, max_epochs=args.max_epochs,
                          folds=args.folds, loss=args.loss, meta_learner=args.meta_learner, seed=args.seed)
    report = train_frozen(args.dataset, args.output_dir, **dataset_options(args), backbones=args.backbones,
                          image_size=args.image_size, recipe=recipe, feature_cache=args.cache_dir,
                          feature_dtype=args.dtype, pretrained=not args.random_init,
                          weight_sources=dict(args.weights), backbones_from=args.backbones_from,
                          device=args.device)
    print(json.dumps({
        "checkpoint": str(args.output_dir),
        "dataset": report["dataset"],
        "meta_learner": report["meta_learner"]["fits"][args.meta_learner],
        "out_of_fold_srocc": report["meta_learner"]["out_of_fold_srocc"],
        "test": {name: {key: round(value, 4) for key, value in metrics.items()
                        if key in ("srocc", "plcc", "krocc", "rmse")}
                 for name, metrics in report.get("test_from_cached_features", {}).items() if name != "note"},
        "wall_time_s": report["wall_time_s"],
    }, indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------- stack
def _stack_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(stack_checkpoints)
    parser = command_parser(
        command,
        "Combine trained MetaQAP checkpoints into one model and fit the meta-learner on their predictions for the "
        "dataset's validation split (its own, or carved from its train data; never the test split). Use the same "
        "dataset, --validation-fraction and --seed the base models were trained with, so those images were held "
        "out from them. Writes the checkpoint and its model card (README.md). "
        "Python: metaqap_hf.training.stack_checkpoints(CHECKPOINTS, DATASET, OUTPUT_DIR, ...).",
    )
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="trained base-model checkpoints")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="checkpoint folder to write")
    add_dataset_options(parser, "the base models' held-out share of the training images, when the dataset has no "
                                "validation split")
    parser.add_argument("--meta-learner", default=defaults["method"], choices=META_LEARNER_METHODS,
                        help="how base scores are combined")
    parser.add_argument("--seed", type=int, default=defaults["seed"], metavar="N", help="the base models' split seed")
    parser.set_defaults(func=run_stack)
    return parser


def run_stack(args: argparse.Namespace) -> int:
    fit = stack_checkpoints(args.checkpoints, args.dataset, args.output_dir, **dataset_options(args),
                            method=args.meta_learner, seed=args.seed)
    print(json.dumps({"method": fit.method, "coefficients": fit.coefficients, "intercept": fit.intercept,
                      "r2": fit.r2, "output_dir": str(args.output_dir)}, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- pretrain
def _pretrain_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(pretrain)
    parser = command_parser(
        command,
        "Train a fresh MetaQAP model's backbones and heads (ImageNet start) on synthetic distortions: random crops "
        "of the pristine photos, each distorted by a random KADID type and level, labelled by fused full-reference "
        "metrics (pseudo-MOS) and by their (type, level) class, learnt through --objectives; or replay parquet "
        "shards written by metaqap_hf.pretraining.export_shards (--shards). Rerun the same command to resume. "
        "Writes OUTPUT_DIR/final (hand it to `metaqap train` or `train-frozen` as --backbones-from), best/, "
        "checkpoints/, metrics.jsonl, pretraining.json, pseudo_mos_labeler.json; prints the checkpoint path. "
        "Python: metaqap_hf.pretraining.stage.pretrain(PRISTINE_DIR, OUTPUT_DIR, ...).",
    )
    source = parser.add_argument_group("content (--pristine-dir and --files-from add up; --shards replaces them)")
    source.add_argument("--pristine-dir", action="append", default=[], metavar="DIR",
                        help="folder of pristine images, searched recursively (repeatable)")
    source.add_argument("--files-from", action="append", default=[], metavar="LIST",
                        help="also the images listed in LIST, one path a line (relative to the current folder), "
                             "e.g. a benchmark's training images, whose content (not scores) is used (repeatable)")
    source.add_argument("--content-dataset", metavar="SOURCE",
                        help="also the training images (train and validation splits, never test) of a dataset, as "
                             "`metaqap train --dataset` takes it: their content is used, their scores are not read")
    source.add_argument("--data-dir", metavar="DIR", help="--content-dataset's folder, for a registered benchmark")
    source.add_argument("--mos-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="--content-dataset's score scale, for a table")
    source.add_argument("--shards", metavar="DIR", help="parquet shards from export_shards instead of the stream")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="run folder (rerun to resume)")
    _add_model_options(parser, defaults)
    parser.add_argument("--objectives", nargs="+", default=list(defaults["objectives"]), choices=OBJECTIVES,
                        metavar="NAME", help="what the model learns, the losses summed: regression (pseudo-MOS "
                        "from the FR metrics, with --loss), classification (which of 25 types x 5 levels, or "
                        "pristine: 126 classes), ranking (one crop at two levels of a type: the milder must score "
                        f"higher); some of {', '.join(OBJECTIVES)}")
    for name in OBJECTIVES:
        parser.add_argument(f"--{name}-weight", type=float, metavar="W",
                            help=f"weight of the {name} loss in the sum (default {DEFAULT_OBJECTIVE_WEIGHT:g})")
    parser.add_argument("--loss", default=defaults["loss"], choices=sorted(LOSSES),
                        help="the regression objective's loss")
    parser.add_argument("--metrics", nargs="+", default=list(defaults["metrics"]), metavar="NAME",
                        help="full-reference metrics fused into pseudo-MOS")
    parser.add_argument("--calibration-samples", type=int, default=defaults["calibration_samples"], metavar="N",
                        help="crops the pseudo-MOS labeler is calibrated on")
    parser.add_argument("--validation-samples", type=int, default=defaults["validation_samples"], metavar="N",
                        help="held-out samples (another seed; with --shards, the last rows) for model selection")
    parser.add_argument("--crop-size", type=int, default=defaults["crop_size"], metavar="N", help="crop side in pixels")
    parser.add_argument("--steps", type=int, default=defaults["steps"], metavar="N", help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], metavar="N", help="crops per step")
    _add_loop_options(parser)
    parser.add_argument("--seed", type=int, default=defaults["seed"], metavar="N",
                        help="seed of crops, distortions and heads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_pretrain)
    return parser


def run_pretrain(args: argparse.Namespace) -> int:
    from metaqap_hf.pretraining.content import training_image_files
    from metaqap_hf.scoring.inputs import iter_path_list

    content = list(args.pristine_dir)
    for listing in args.files_from:
        with open(listing, "rb") as stream:
            content.extend(iter_path_list(stream))
    if args.content_dataset is not None:
        content.extend(training_image_files(args.content_dataset, args.data_dir, mos_range=args.mos_range))
    if args.shards is not None and content:
        raise ValueError("--shards replaces --pristine-dir and --files-from: give one or the other")
    if args.shards is None and not content:
        raise ValueError("give the content to distort: --pristine-dir DIR and/or --files-from LIST (or --shards DIR)")
    final = pretrain(
        content or None, args.output_dir, backbones=args.backbones, crop_size=args.crop_size, steps=args.steps,
        batch_size=args.batch_size, loss=args.loss, objectives=args.objectives, objective_weights={
            name: weight for name in OBJECTIVES if (weight := getattr(args, f"{name}_weight")) is not None},
        shards=args.shards, pretrained=not args.random_init,
        weight_sources=dict(args.weights), seed=args.seed, metrics=tuple(args.metrics),
        validation_samples=args.validation_samples, calibration_samples=args.calibration_samples,
        learning_rate=args.lr, head_learning_rate=args.head_lr, mixed_precision=MIXED_PRECISION[args.dtype],
        eval_every_steps=args.eval_every, save_every_steps=args.save_every, progress_bar=not args.quiet,
    )
    print(json.dumps({"checkpoint": str(final), "output_dir": str(args.output_dir)}, indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ train-faults
def _train_faults_parser(command: str) -> argparse.ArgumentParser:
    from metaqap_hf.training.faults import FaultRecipe, train_faults

    defaults, recipe = library_defaults(train_faults), library_defaults(FaultRecipe)
    parser = command_parser(
        command,
        "Give a trained checkpoint a fault head, a classifier of what is wrong with a photo (the 25 synthetic "
        "distortion types and 'none', grouped into families: blur, noise, compression, exposure, colour, spatial, "
        "oversharpening), on its frozen backbones' pooled features. It learns from the pristine photos (every "
        "--holdout-every-th held out for benchmarks/diagnosis.py, never read) and a dataset's training images "
        "(never its test split), each distorted with (type, level) pairs dealt evenly; features are cached with "
        "--cache-dir. Writes the checkpoint with the head (scores unchanged) and fault_report.json. "
        "Python: metaqap_hf.training.faults.train_faults(CHECKPOINT, OUTPUT_DIR, pristine=[...], ...).",
    )
    parser.add_argument("--model", "-m", metavar="M", help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="checkpoint folder to write")
    parser.add_argument("--pristine-dir", action="append", required=True, metavar="DIR",
                        help="folder of pristine photos, searched recursively (repeatable)")
    parser.add_argument("--content-dataset", metavar="SOURCE",
                        help="also the training images (train and validation splits, never test) of a dataset, "
                             "as `metaqap train --dataset` takes it")
    parser.add_argument("--data-dir", metavar="DIR", help="--content-dataset's folder, for a registered benchmark")
    parser.add_argument("--mos-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="--content-dataset's score scale, for a table")
    parser.add_argument("--cache-dir", default=defaults["feature_cache"], metavar="DIR",
                        help="keep the features here (in chunks) and reuse them")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=defaults["feature_dtype"],
                        help="feature extraction precision (auto: bfloat16 where the hardware computes it natively)")
    parser.add_argument("--device", default=defaults["device"], metavar="D",
                        help="where features are computed (auto: a GPU when there is one)")
    parser.add_argument("--distorted-per-pristine", type=int, default=recipe["distorted_per_pristine"], metavar="N",
                        help="distorted versions of each pristine training photo")
    parser.add_argument("--distorted-per-image", type=int, default=recipe["distorted_per_image"], metavar="N",
                        help="distorted versions of each dataset training image")
    parser.add_argument("--none-min-quality", type=float, default=recipe["none_min_quality"], metavar="Q",
                        help="dataset images rated at least this (0-1 along the MOS range) also teach 'none'")
    parser.add_argument("--holdout-every", type=int, default=recipe["holdout_every"], metavar="N",
                        help="hold out every N-th pristine photo (for the benchmark)")
    parser.add_argument("--hidden-size", type=int, default=recipe["hidden_size"], metavar="N",
                        help="fault head width (0: linear)")
    parser.add_argument("--max-epochs", type=int, default=recipe["max_epochs"], metavar="N",
                        help="most epochs (the best is chosen on held-out source images)")
    parser.add_argument("--seed", type=int, default=recipe["seed"], metavar="N", help="seed of samples and head")
    parser.set_defaults(func=run_train_faults)
    return parser


def run_train_faults(args: argparse.Namespace) -> int:
    from metaqap_hf.training.faults import FaultRecipe, train_faults

    recipe = FaultRecipe(distorted_per_pristine=args.distorted_per_pristine,
                         distorted_per_image=args.distorted_per_image, none_min_quality=args.none_min_quality,
                         holdout_every=args.holdout_every, hidden_size=args.hidden_size,
                         max_epochs=args.max_epochs, seed=args.seed)
    report = train_faults(args.model, args.output_dir, pristine=args.pristine_dir,
                          content=args.content_dataset, data_dir=args.data_dir, mos_range=args.mos_range,
                          recipe=recipe, feature_cache=args.cache_dir, feature_dtype=args.dtype,
                          device=args.device)
    print(json.dumps({key: report[key] for key in ("samples", "epochs", "none_offset", "wall_time_s")} | {
        "checkpoint": str(args.output_dir),
        "validation_family_accuracy": max(report["validation_family_accuracy_by_epoch"])}, indent=2))
    return EXIT_OK


_PARSERS = {"train": _train_parser, "train-frozen": _train_frozen_parser, "stack": _stack_parser,
            "pretrain": _pretrain_parser, "train-faults": _train_faults_parser}


def build_parser(command: str) -> argparse.ArgumentParser:
    return _PARSERS[command](command)
