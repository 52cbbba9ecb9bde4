"""`metaqap distortions contact-sheet`: the command line of `metaqap_hf.pretraining.make_contact_sheet`."""

from __future__ import annotations

import argparse

from metaqap_hf.pretraining import make_contact_sheet

from . import EXIT_OK, HelpFormatter, command_parser, library_defaults


def build_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(make_contact_sheet)
    parser = command_parser(command, "The synthetic distortions of quality-aware pretraining.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sheet = actions.add_parser(
        "contact-sheet", help="one PNG showing every distortion type at every level", formatter_class=HelpFormatter,
        description="Write a PNG with a row per distortion type: the centred SIZE x SIZE crop of IMAGE, then "
                    "levels 1-5. Reproducible for a given --seed. "
                    "Python: metaqap_hf.pretraining.make_contact_sheet(IMAGE, PNG, size, seed).",
    )
    sheet.add_argument("image", metavar="IMAGE", help="a (pristine) photo")
    sheet.add_argument("--output", "-o", required=True, metavar="PNG", help="PNG file to write")
    sheet.add_argument("--size", type=int, default=defaults["size"], metavar="N", help="crop side in pixels")
    sheet.add_argument("--seed", type=int, default=defaults["seed"], metavar="N", help="seed of the random choices")
    sheet.set_defaults(func=run_contact_sheet)
    return parser


def run_contact_sheet(args: argparse.Namespace) -> int:
    print(make_contact_sheet(args.image, args.output, size=args.size, seed=args.seed))
    return EXIT_OK
