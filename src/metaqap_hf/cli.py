"""The `metaqap` command. Thin: it parses arguments and calls the library; every subcommand has a Python
equivalent named in its help."""

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
        return
    target = Path(output)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)


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
    print(f"scored {len(results)} image(s) on {config.mos_name} {config.mos_range} (higher is better)",
          file=sys.stderr)
    if not results:
        return EXIT_NOTHING_SCORED
    return EXIT_SKIPPED if skipped else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaqap",
        description="MetaQAP no-reference image quality assessment: score photos, prepare data, train and share "
                    "models.",
        epilog="Run `metaqap COMMAND --help` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
