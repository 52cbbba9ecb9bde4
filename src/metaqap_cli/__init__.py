"""The `metaqap` command: a thin layer that parses arguments and calls the `metaqap_hf` library.

`metaqap --help` answers from the table below without importing the library (torch, transformers and timm take
seconds to import); `metaqap COMMAND ...` imports that command's module, which builds its parser with the
library's own defaults and calls the library. One module per command group:

    score.py        score                               metaqap_hf.scoring
    training.py     train, train-frozen, stack, pretrain metaqap_hf.training, metaqap_hf.pretraining
    evaluate.py     evaluate                            metaqap_hf.evaluation
    weights.py      weights fetch | list                metaqap_hf.weights
    data.py         data prepare | push                 metaqap_hf.data, metaqap_hf.hub
    hub.py          push, card lint | render            metaqap_hf.hub, metaqap_hf.cards
    distortions.py  distortions contact-sheet           metaqap_hf.pretraining

Errors a user can act on are printed as one `error: ...` line with a non-zero exit status, never as a traceback
(`--debug`, or METAQAP_DEBUG=1, shows it): a bad option value names the option and what it accepts. Ctrl-C and
SIGTERM end a command with "interrupted" and status 130 (`metaqap score` first writes what it scored). This
package lives outside `metaqap_hf` because importing anything from `metaqap_hf` registers the model with
transformers, which imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import signal
import sys

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NOTHING_SCORED", "EXIT_OK", "EXIT_SKIPPED",
           "EXIT_USAGE", "main"]

EXIT_OK = 0  # everything done
EXIT_SKIPPED = 1  # done, but some inputs were skipped (each named on stderr)
EXIT_USAGE = 2  # a bad option, argument or input named in the error line; nothing was done
EXIT_NOTHING_SCORED = 3  # no input could be scored
EXIT_FAILED = 4  # the command failed while running (the error line says why)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; what was finished is kept

# command: (module in this package, one-line help)
COMMANDS = {
    "score": ("score", "score images or folders of images"),
    "evaluate": ("evaluate", "evaluate a checkpoint on one split of a benchmark"),
    "train": ("training", "fine-tune a MetaQAP model on a benchmark (Accelerate loop)"),
    "train-frozen": ("training", "train the default model's recipe: frozen backbones, MLP heads, stacking"),
    "stack": ("training", "combine trained base models and fit their meta-learner"),
    "pretrain": ("training", "quality-aware pretraining on synthetic distortions of pristine photos"),
    "weights": ("weights", "fetch and list ImageNet backbone weights"),
    "data": ("data", "prepare IQA benchmarks as hub datasets and push them"),
    "push": ("hub", "push a checkpoint with its model card to a hub model repo"),
    "card": ("hub", "check model cards"),
    "distortions": ("distortions", "look at the synthetic distortions"),
    "export": ("export", "export a checkpoint to ONNX, checked against PyTorch with onnxruntime"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help (options that take no value, and those without a default, aside);
    descriptions kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and action.default not in (None, [], argparse.SUPPRESS)
                and "%(default)" not in text):
            text += " (default: %(default)s)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one `error: ...` line for a bad option (it names the option and what it accepts), not the
    usage text."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def library_defaults(callable_or_dataclass) -> dict:
    """The defaults of a library function's keyword parameters, or of a dataclass's fields: every default a command
    shows is read from the library, so the two never disagree."""
    if dataclasses.is_dataclass(callable_or_dataclass):
        return {field.name: field.default for field in dataclasses.fields(callable_or_dataclass)
                if field.default is not dataclasses.MISSING}
    return {name: parameter.default for name, parameter in inspect.signature(callable_or_dataclass).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def command_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of one command, with the options every command has."""
    parser = ArgumentParser(prog=f"metaqap {command}", description=description, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also: METAQAP_DEBUG=1)")
    return parser


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    parser = ArgumentParser(
        prog="metaqap", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MetaQAP no-reference image quality assessment: score photos, prepare data, train and share "
                    "models.",
        epilog=f"commands:\n{listing}\n\nRun `metaqap COMMAND --help` for the options of each command. Exit status: "
               f"{EXIT_OK} done, {EXIT_SKIPPED} some inputs skipped, {EXIT_USAGE} bad option or input, "
               f"{EXIT_NOTHING_SCORED} nothing could be scored, {EXIT_FAILED} failed, {EXIT_INTERRUPTED} interrupted.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: METAQAP_DEBUG=1)")
    parser.add_argument("command", nargs="?", choices=sorted(COMMANDS), metavar="COMMAND", help="one of the commands below")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _is_user_error(error: BaseException) -> bool:
    """Errors about something the user gave (a path, an option, a file's content), whose message names it: the
    standard ones the library raises for bad input and its own error classes, except network failures."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return False
    return isinstance(error, (ValueError, LookupError, ImportError, OSError)) or type(error).__module__.startswith(
        "metaqap_hf")


def _option_message(error: BaseException) -> str | None:
    """The library's `OptionError` (duck-typed: importing it would import torch) as `--flag value: problem`."""
    option = getattr(error, "option", None)
    if not isinstance(option, str) or not hasattr(error, "problem"):
        return None
    name = "PATH" if option == "paths" else f"--{option.replace('_', '-')}"
    value = getattr(error, "value", None)
    shown = "" if value is True or value in (None, [], "") else f" {value}"
    return f"{name}{shown}: {error.problem}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    options = top.parse_args(argv)
    if options.version:
        from importlib.metadata import version

        print(f"metaqap-hf {version('metaqap-hf')}")
        return EXIT_OK
    if options.command is None:
        top.print_help()
        return EXIT_USAGE
    debug = options.debug or os.environ.get("METAQAP_DEBUG", "") not in ("", "0")
    # SIGTERM stops a command as Ctrl-C does, unless the caller chose to ignore or handle it.
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if sigterm_handler is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        module = importlib.import_module(f"{__name__}.{COMMANDS[options.command][0]}")
        args = module.build_parser(options.command).parse_args(options.arguments)
        debug = debug or getattr(args, "debug", False)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            raise
        option_message = _option_message(error)
        if option_message is not None:
            print(f"error: {option_message}", file=sys.stderr)
            return EXIT_USAGE
        if _is_user_error(error):
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error: {type(error).__name__}: {error} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if sigterm_handler is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
