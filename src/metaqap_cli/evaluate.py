"""`metaqap evaluate`: the command line of `metaqap_hf.evaluation`."""

from __future__ import annotations

import argparse
import json

from metaqap_hf.devices import DTYPE_CHOICES
from metaqap_hf.evaluation import ALL_SPLITS, evaluate_checkpoint

from . import EXIT_OK, command_parser, library_defaults
from .data import add_dataset_options, dataset_options


def build_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(evaluate_checkpoint)
    parser = command_parser(
        command,
        "Score one split of a dataset (a benchmark, your own table, a prepared folder, a hub dataset) with "
        "CHECKPOINT through the inference path and write metrics.json (SROCC, KROCC, PLCC and RMSE raw and after "
        "logistic fits, per-base SROCC), predictions.csv and scatter.png to OUTPUT_DIR; prints the metrics. "
        "--add-to-card also puts the figures on the checkpoint's model card. Python: "
        "metaqap_hf.evaluation.evaluate_checkpoint(CHECKPOINT, DATASET, OUTPUT_DIR, ...).",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by save_pretrained")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the reports")
    add_dataset_options(parser, "share of the training images held out as validation, when the dataset has no "
                                "validation split (for --split validation)")
    parser.add_argument("--seed", type=int, default=defaults["seed"], metavar="N",
                        help="seed of that validation split")
    parser.add_argument("--split", default=defaults["split"], choices=["train", "validation", "test", ALL_SPLITS],
                        help=f"split to score (default: test when the dataset has one, else {ALL_SPLITS}: every "
                             "image)")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], metavar="N",
                        help="images per forward")
    parser.add_argument("--num-workers", type=int, default=defaults["num_workers"], metavar="N",
                        help="decoding processes")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=defaults["dtype"],
                        help="bfloat16 runs under autocast (CPU and GPU); auto: bfloat16 on GPUs and on CPUs that "
                             "compute it natively (AVX512-BF16, AMX), float32 elsewhere")
    parser.add_argument("--device", default=defaults["device"], metavar="D",
                        help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--limit", type=int, default=defaults["limit"], metavar="N",
                        help="evaluate the first N images only")
    parser.add_argument("--no-plot", action="store_true", help="skip scatter.png (no matplotlib needed)")
    parser.add_argument("--add-to-card", action="store_true",
                        help="add the figures to the checkpoint's model card (README.md and model_card.json)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.output_dir, split=args.split,
                                 **dataset_options(args), seed=args.seed, dtype=args.dtype,
                                 batch_size=args.batch_size, num_workers=args.num_workers, limit=args.limit,
                                 device=args.device, plot=not args.no_plot, add_to_card=args.add_to_card)
    print(json.dumps(report["metrics"], indent=2))
    return EXIT_OK
