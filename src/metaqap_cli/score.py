"""`metaqap score`: the command line of `metaqap_hf.scoring`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from metaqap_hf.scoring import ImageScorer

from . import EXIT_NOTHING_SCORED, EXIT_OK, EXIT_SKIPPED, command_parser


def build_parser(command: str) -> argparse.ArgumentParser:
    parser = command_parser(
        command,
        "Score images with a MetaQAP model (higher is better, on the model's MOS scale). Folders are walked "
        "recursively. Files that cannot be read as images are reported with the reason and skipped; the exit "
        "status is 0 when every input was scored, 1 when some were skipped, 3 when none could be scored. "
        "Python: metaqap_hf.scoring.ImageScorer(MODEL).score_files(PATHS).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    parser.add_argument("--model", "-m", metavar="M",
                        help="checkpoint folder or hub id (default: the bundled metaqap-lite-biq2021)")
    parser.add_argument("--batch-size", "-b", type=int, default=8, metavar="N", help="images per forward")
    parser.add_argument("--device", "-d", default="cpu", metavar="D", help="cpu, cuda, cuda:1, mps...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="compute precision; bfloat16 is faster on CPUs with AVX512-BF16 and on GPUs")
    parser.add_argument("--format", "-f", choices=["table", "csv", "json"], default="table", help="output format")
    parser.add_argument("--output", "-o", metavar="FILE", help="write results to FILE instead of standard output")
    parser.set_defaults(func=run)
    return parser


def _format_results(results: list, backbone_ids: list[str], fmt: str, model_info: dict, skipped: list) -> str:
    if fmt == "json":
        rows = [{"path": r.path, "score": r.score, "base_scores": r.base_scores, "std": r.std} for r in results]
        return json.dumps({**model_info, "results": rows,
                           "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "std", *backbone_ids])
        for row in results:
            writer.writerow([row.path, f"{row.score:.6f}", f"{row.std:.6f}",
                             *(f"{row.base_scores[b]:.6f}" for b in backbone_ids)])
        return buffer.getvalue()
    width = max([len("path"), *(len(row.path) for row in results)])
    lines = [f"{'path':<{width}}  {'score':>8}  {'std':>7}", f"{'-' * width}  {'-' * 8}  {'-' * 7}"]
    lines += [f"{row.path:<{width}}  {row.score:>8.4f}  {row.std:>7.4f}" for row in results]
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


def run(args: argparse.Namespace) -> int:
    scorer = ImageScorer(args.model, device=args.device, dtype=args.dtype)
    config = scorer.config
    results, skipped = [], []
    with tqdm(unit="img", desc="scoring", file=sys.stderr, disable=None) as progress:
        for item in scorer.score_files(args.paths, batch_size=args.batch_size):
            (results if item.ok else skipped).append(item)
            progress.update(1)
    model_info = {"model": scorer.model_path, "mos_name": config.mos_name, "mos_range": config.mos_range}
    _write_output(_format_results(results, config.backbone_ids, args.format, model_info, skipped), args.output)
    if skipped:
        print(f"skipped {len(skipped)} of {len(results) + len(skipped)} input(s):", file=sys.stderr)
        for item in skipped:
            print(f"  {item.path}: {item.reason}", file=sys.stderr)
    low, high = config.mos_range
    print(f"scored {len(results)} image(s); scores are {config.mos_name}, from {low:g} (worst) to {high:g} (best)",
          file=sys.stderr)
    if not results:
        return EXIT_NOTHING_SCORED
    return EXIT_SKIPPED if skipped else EXIT_OK
