"""`metaqap push`, `metaqap card lint` and `metaqap card render`: the command lines of `metaqap_hf.hub` and
`metaqap_hf.cards`."""

from __future__ import annotations

import argparse

from metaqap_hf.cards import lint_card, write_model_card
from metaqap_hf.hub import push_model

from . import EXIT_OK, EXIT_SKIPPED, HelpFormatter, command_parser


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repo private (when it does not exist)")
    parser.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--token", metavar="T", help="access token (default: $HF_TOKEN or the saved login)")
    parser.add_argument("--message", metavar="M", help="commit message")


def build_parser(command: str) -> argparse.ArgumentParser:
    if command == "push":
        parser = command_parser(
            command,
            "Upload checkpoint folder CHECKPOINT (model, image processor, README.md card) to model repo REPO_ID; "
            "prints the commit URL. A card rendered by metaqap (every checkpoint the training commands write has "
            "one) is rendered again for the push, with REPO_ID and the usage of the mode; a card written or edited "
            "by hand is pushed as it is. Either way it is linted first, and the local folder is not changed. "
            "Package mode (default) is for users of `import metaqap_hf`; --remote-code adds the model code so that "
            "users load it with trust_remote_code=True. Python: metaqap_hf.hub.push_model(CHECKPOINT, REPO_ID, ...).",
        )
        parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder with its README.md model card")
        parser.add_argument("repo_id", metavar="REPO_ID", help="model repo, e.g. user/metaqap-lite-biq2021")
        parser.add_argument("--remote-code", action="store_true", help="push in remote-code mode")
        add_hub_options(parser)
        parser.set_defaults(func=run_push)
        return parser
    parser = command_parser(command, "Model cards of checkpoints: render them, check them.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    render = actions.add_parser(
        "render", help="render a checkpoint's model card again from its model_card.json",
        formatter_class=HelpFormatter,
        description="Write CHECKPOINT/README.md from the facts in CHECKPOINT/model_card.json (written with every "
                    "checkpoint the training commands make): for the other push mode, or another repo id. A card "
                    "written or edited by hand is kept unless --overwrite. Prints the card's path and lints it; "
                    "exit status 1 when it has problems. "
                    "Python: metaqap_hf.cards.write_model_card(CHECKPOINT, repo_id=..., remote_code=...).",
    )
    render.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder with its model_card.json")
    render.add_argument("--remote-code", action="store_true",
                        help="show the usage of a remote-code push (default: package mode)")
    render.add_argument("--repo-id", metavar="REPO_ID",
                        help="model id the card shows (default: as the card was last rendered)")
    render.add_argument("--overwrite", action="store_true", help="replace a README.md written or edited by hand")
    render.set_defaults(func=run_render)
    lint = actions.add_parser(
        "lint", help="report what makes model cards unfit to publish", formatter_class=HelpFormatter,
        description="Check model cards: metadata and model-index parse, evaluation results, licence, required "
                    "sections, leftover template markup, linked images. Prints each problem, or `PATH: ok`; exit "
                    "status 1 when any card has problems. Python: metaqap_hf.cards.lint_card(PATH).",
    )
    lint.add_argument("paths", nargs="+", metavar="PATH", help="model card files (README.md)")
    lint.set_defaults(func=run_lint)
    return parser


def run_push(args: argparse.Namespace) -> int:
    print(push_model(args.checkpoint, args.repo_id, private=args.private, remote_code=args.remote_code,
                     token=args.token, endpoint=args.endpoint, commit_message=args.message))
    return EXIT_OK


def run_render(args: argparse.Namespace) -> int:
    card = write_model_card(args.checkpoint, repo_id=args.repo_id, remote_code=args.remote_code,
                            overwrite=args.overwrite)
    return _report_lint([card])


def run_lint(args: argparse.Namespace) -> int:
    return _report_lint(args.paths)


def _report_lint(paths) -> int:
    """Print each card's problems, or `PATH: ok`; EXIT_SKIPPED when any card has problems."""
    status = EXIT_OK
    for path in paths:
        problems = lint_card(path)
        for problem in problems:
            print(problem)
        if problems:
            status = EXIT_SKIPPED
        else:
            print(f"{path}: ok")
    return status
