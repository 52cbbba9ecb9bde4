"""`metaqap score`: the command line of `metaqap_hf.scoring.score_to_output`. Every default shown is read from it."""

from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from metaqap_hf.devices import DTYPE_CHOICES
from metaqap_hf.onnx_runtime import RUNTIMES
from metaqap_hf.scoring import (
    FORMATS,
    ImageInputs,
    OutputError,
    ScoredImage,
    ScoringInterrupted,
    ScoringRun,
    printable_path,
    score_to_output,
)
from metaqap_hf.pipeline_image_quality import DEFAULT_TOP_K_FAULTS
from metaqap_hf.scoring.options import MAX_BATCH_SIZE, MAX_NUM_WORKERS

from . import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_SCORED,
    EXIT_OK,
    EXIT_SKIPPED,
    command_parser,
    library_defaults,
)

DEFAULTS = library_defaults(score_to_output)


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = command_parser(
        command,
        "Score images with a MetaQAP model (higher is better, on the model's MOS scale). Folders are walked "
        "recursively (names starting with a dot are passed over); .tar/.tgz files are read as WebDataset shards. "
        "Rows are written as they are scored; inputs that cannot be read are named on stderr with the reason and "
        "skipped. Scores outside the MOS range are clipped to it (raw_score keeps the value).\n\n"
        f"exit status: {EXIT_OK} every input scored, {EXIT_SKIPPED} some skipped, 2 bad option (nothing done), "
        f"{EXIT_NOTHING_SCORED} nothing could be scored, {EXIT_FAILED} failed while running (e.g. the output could "
        f"not be written), {EXIT_INTERRUPTED} interrupted (Ctrl-C, SIGTERM; the rows scored so far are written).\n\n"
        "Several processes: accelerate launch --multi_gpu --num_processes N -m metaqap_hf score ... --output "
        "FILE (or torchrun --nproc_per_node N -m metaqap_hf score ...). "
        "Python: metaqap_hf.scoring.score_to_output(ImageInputs(PATHS), OUTPUT, ...).",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="image files, folders or tar shards")
    parser.add_argument("--files-from", metavar="LIST",
                        help="also score the paths listed in LIST ('-': standard input), one a line, or "
                             "NUL-separated (find -print0)")
    parser.add_argument("--dataset", metavar="D",
                        help="also score a datasets dataset: a hub id (streamed; offline: the local cache) or a "
                             "local folder (save_to_disk, parquet, image folder)")
    parser.add_argument("--split", help="the dataset's split (default: all of them)")
    parser.add_argument("--image-column", metavar="C", help="the dataset's image column (default: its first)")
    parser.add_argument("--model", "-m", metavar="M",
                        help="checkpoint folder or hub id (default: the bundled metaqap-lite-biq2021)")
    parser.add_argument("--batch-size", "-b", type=int, default=DEFAULTS["batch_size"], metavar="N",
                        help=f"images per forward, 1 to {MAX_BATCH_SIZE}")
    parser.add_argument("--num-workers", "-j", type=int, default=DEFAULTS["num_workers"], metavar="N",
                        help=f"processes that decode and resize ahead of the model (0: this one; at most "
                             f"{MAX_NUM_WORKERS})")
    parser.add_argument("--device", "-d", default=DEFAULTS["device"], metavar="D",
                        help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=DEFAULTS["dtype"],
                        help="compute precision; auto: bfloat16 on GPUs and on CPUs that compute it natively "
                             "(AVX512-BF16, AMX), float32 elsewhere (bfloat16 is emulated and many times slower there)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULTS["runtime"],
                        help="torch, or onnx: ONNX Runtime on the CPU in float32, about 3x PyTorch's speed on CPUs "
                             "without native bfloat16 (pip install 'metaqap-hf[onnx]'; the model is exported once, "
                             "a minute or two, checked against PyTorch and cached under $HF_HOME/metaqap/onnx); auto: "
                             "onnx where that export is already cached (on the CPU, float32 or auto asked for), else "
                             "torch")
    parser.add_argument("--format", "-f", choices=FORMATS,
                        help="output format (default: from the --output suffix .csv, .jsonl or .json, else table)")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write rows to FILE as they are scored ('-': standard output, the default); a symbolic "
                             "link is written through, a pipe or device streamed into")
    parser.add_argument("--faults", nargs="?", type=int, const=DEFAULT_TOP_K_FAULTS, metavar="N",
                        help=f"also say what is wrong with each photo: the N most probable faults (default N: "
                             f"{DEFAULT_TOP_K_FAULTS}) as columns fault_1, fault_1_family, fault_1_score, ... (json: "
                             f"a 'faults' list; table: the most probable); needs a model with a fault head, as the "
                             f"bundled one")
    parser.add_argument("--resume", action="store_true",
                        help="skip the inputs already in FILE (.jsonl or .csv) and append the rest: rerun a killed "
                             "run with the same command and --resume")
    parser.set_defaults(func=run)
    return parser


def _note(text: str, progress: tqdm) -> None:
    progress.write(text, file=sys.stderr) if not progress.disable else print(text, file=sys.stderr)


def _where(run: ScoringRun) -> str:
    if run.parts:
        return f"in {len(run.parts)} part files beside {run.output} until a run with --resume merges them"
    return "to standard output" if run.output == "-" else f"to {run.output}"


def _summary(run: ScoringRun, progress: tqdm) -> None:
    if run.resumed:
        _note(f"{run.resumed} input(s) were already in {run.output} and were not scored again (--resume)", progress)
    if run.hidden:
        _note(f"passed over {run.hidden} hidden entries (names starting with '.') inside folders", progress)
    if run.clipped:
        _note(f"{run.clipped} score(s) lay outside the model's MOS range and were clipped to it (raw_score keeps "
              f"the unclipped value)", progress)


def run(args: argparse.Namespace) -> int:
    inputs = ImageInputs(args.paths, files_from=args.files_from, dataset=args.dataset, split=args.split,
                         image_column=args.image_column)
    with tqdm(unit="img", desc="scoring", file=sys.stderr, disable=None) as progress:
        def on_result(item: ScoredImage) -> None:
            if not item.ok:
                _note(f"skipped {printable_path(item.path)}: {item.reason}", progress)
            progress.update(1)

        try:
            result = score_to_output(inputs, args.output, model=args.model, device=args.device, dtype=args.dtype,
                                     runtime=args.runtime, batch_size=args.batch_size, num_workers=args.num_workers,
                                     format=args.format, resume=args.resume, top_k_faults=args.faults,
                                     on_result=on_result)
        except ScoringInterrupted as stop:
            progress.close()
            done = stop.run
            _summary(done, progress)
            print(f"interrupted: {done.scored} file(s) scored and written {_where(done)}, {done.skipped} skipped; "
                  f"run the same command with --resume to continue", file=sys.stderr)
            return EXIT_INTERRUPTED
        except OutputError as error:
            progress.close()
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILED
    if result.rank != 0:  # process 0 reports for all, and its exit status is the run's
        return EXIT_OK
    _summary(result, progress)
    low, high = result.mos_range
    if result.scored:
        print(f"scores are {result.mos_name}, from {low:g} (worst) to {high:g} (best), written {_where(result)}",
              file=sys.stderr)
    plural = "process" if result.processes == 1 else "processes"
    print(f"scored {result.scored} files in {result.processes} {plural}, {result.skipped} skipped", file=sys.stderr)
    if not result.scored and not result.resumed:
        return EXIT_NOTHING_SCORED
    return EXIT_SKIPPED if result.skipped else EXIT_OK
