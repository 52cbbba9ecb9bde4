"""`metaqap data prepare | push`: the command lines of `metaqap_hf.data.prepare_dataset` and
`metaqap_hf.hub.push_dataset`; and the dataset options every command that reads a dataset shares (`train`,
`train-frozen`, `stack`, `evaluate`), resolved by `metaqap_hf.data.load_dataset_source`."""

from __future__ import annotations

import argparse

from metaqap_hf.data import DATASETS, load_dataset_source, prepare_dataset
from metaqap_hf.hub import push_dataset

from . import EXIT_OK, HelpFormatter, command_parser, library_defaults
from .hub import add_hub_options

SOURCE_DEFAULTS = library_defaults(load_dataset_source)


def add_dataset_options(parser: argparse.ArgumentParser, validation_help: str) -> None:
    """The options naming a dataset, one set for every command (`dataset_options` turns them into keywords)."""
    group = parser.add_argument_group(
        "dataset", "a registered benchmark with --data-dir; your own CSV or JSONL table (columns image: a path "
                   "relative to the table, mos, optional split train/validation/test, optional std) with "
                   "--mos-range; a folder written by `metaqap data prepare`; or a hub dataset id (offline: the "
                   "local cache). Tables and datasets are checked before anything is built.")
    group.add_argument("--dataset", default="biq2021", metavar="SOURCE",
                       help=f"a registered benchmark ({', '.join(DATASETS)}), a .csv/.jsonl table, a folder or a "
                            "hub dataset id")
    group.add_argument("--data-dir", metavar="DIR", help="the registered benchmark's folder in its official layout")
    group.add_argument("--mos-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                       help="the scale of the table's mos column (also for datasets without mos_normalized)")
    group.add_argument("--validation-fraction", type=float, default=SOURCE_DEFAULTS["validation_fraction"],
                       metavar="F", help=validation_help)


def dataset_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of the library functions that `add_dataset_options` stands for."""
    return {"data_dir": args.data_dir, "mos_range": args.mos_range, "validation_fraction": args.validation_fraction}

# `data prepare` options that go to the benchmark's loader only when given (each loader takes a subset).
LOADER_OPTIONS = ("validation_fraction", "seed", "split_index", "resolution", "include_training_images", "strict",
                  "download", "cache_dir")


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = command_parser(command, "IQA benchmarks (BIQ2021, KonIQ-10k, LIVE Challenge, SPAQ, KADID-10k) read "
                                     "from their official layouts.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    prepare = actions.add_parser(
        "prepare", help="write a benchmark as parquet shards with a dataset card", formatter_class=HelpFormatter,
        description="Read benchmark NAME from its official layout and write it to OUTPUT_DIR in the hub's layout "
                    "(data/<split>-*.parquet with the images embedded, README.md dataset card), readable with "
                    "datasets.load_dataset(OUTPUT_DIR). Loader options are passed only when given, and only the "
                    "benchmarks that have them accept them. "
                    "Python: metaqap_hf.data.prepare_dataset(NAME, DATA_DIR, OUTPUT_DIR, **options).",
    )
    prepare.add_argument("name", metavar="NAME", help="registered benchmark (metaqap_hf.data.DATASETS), e.g. biq2021")
    prepare.add_argument("--data-dir", metavar="DIR",
                         help="the benchmark's folder in its official layout (may be omitted with --download)")
    prepare.add_argument("--output-dir", required=True, metavar="DIR", help="folder to write")
    prepare.add_argument("--max-shard-size", default="500MB", metavar="SIZE", help="largest parquet shard")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier data/ and README.md")
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
    prepare.set_defaults(func=run_prepare)

    push = actions.add_parser(
        "push", help="push a prepared dataset folder to a hub dataset repo", formatter_class=HelpFormatter,
        description="Upload a folder written by `metaqap data prepare` to dataset repo REPO_ID (created if needed; "
                    "it mirrors the folder), so that datasets.load_dataset(REPO_ID) reads it; prints the commit URL. "
                    "Python: metaqap_hf.hub.push_dataset(PREPARED_DIR, REPO_ID, ...).",
    )
    push.add_argument("prepared_dir", metavar="PREPARED_DIR", help="folder written by `metaqap data prepare`")
    push.add_argument("repo_id", metavar="REPO_ID", help="dataset repo, e.g. user/biq2021")
    add_hub_options(push)
    push.set_defaults(func=run_push)
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    loader_options = {name: getattr(args, name) for name in LOADER_OPTIONS if hasattr(args, name)}
    print(prepare_dataset(args.name, args.data_dir, args.output_dir, max_shard_size=args.max_shard_size,
                          overwrite=args.overwrite, **loader_options))
    return EXIT_OK


def run_push(args: argparse.Namespace) -> int:
    print(push_dataset(args.prepared_dir, args.repo_id, private=args.private, token=args.token,
                       endpoint=args.endpoint, commit_message=args.message))
    return EXIT_OK
