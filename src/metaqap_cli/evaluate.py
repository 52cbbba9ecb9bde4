"""`metaqap evaluate`: the command line of `metaqap_hf.evaluation`."""

from __future__ import annotations

import argparse
import inspect
import json

from metaqap_hf.evaluation import evaluate_checkpoint

from . import EXIT_OK, command_parser


def build_parser(command: str) -> argparse.ArgumentParser:
    defaults = {name: parameter.default for name, parameter in
                inspect.signature(evaluate_checkpoint).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    parser = command_parser(
        command,
        "Score one split of a benchmark with CHECKPOINT through the inference path and write metrics.json (SROCC, "
        "KROCC, PLCC and RMSE raw and after logistic fits, per-base SROCC), predictions.csv and scatter.png to "
        "OUTPUT_DIR; prints the metrics. Python: metaqap_hf.evaluation.evaluate_checkpoint(CHECKPOINT, DATASET, "
        "DATA_DIR, SPLIT, OUTPUT_DIR, ...).",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by save_pretrained")
    parser.add_argument("--dataset", default="biq2021", help="registered benchmark")
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="the benchmark's folder in its official layout")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split to score")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the reports")
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"], metavar="N", help="images per forward")
    parser.add_argument("--num-workers", type=int, default=defaults["num_workers"], metavar="N",
                        help="decoding processes")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=defaults["dtype"],
                        help="bfloat16 runs under autocast (CPU and GPU)")
    parser.add_argument("--device", default=defaults["device"], metavar="D",
                        help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--limit", type=int, default=defaults["limit"], metavar="N",
                        help="evaluate the first N images only")
    parser.add_argument("--no-plot", action="store_true", help="skip scatter.png (no matplotlib needed)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.split, args.output_dir,
                                 dtype=args.dtype, batch_size=args.batch_size, num_workers=args.num_workers,
                                 limit=args.limit, device=args.device, plot=not args.no_plot)
    print(json.dumps(report["metrics"], indent=2))
    return EXIT_OK
