"""`metaqap export onnx`: the command line of `metaqap_hf.export`."""

from __future__ import annotations

import argparse
import sys

from metaqap_hf.export import INPUT_NAME, MIN_OPSET, OUTPUT_NAMES, OnnxParityError, export_onnx

from . import EXIT_FAILED, EXIT_OK, HelpFormatter, command_parser, library_defaults


def build_parser(command: str) -> argparse.ArgumentParser:
    defaults = library_defaults(export_onnx)
    parser = command_parser(command, "Export a checkpoint for other runtimes.")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="export to ONNX, checked against PyTorch with onnxruntime", formatter_class=HelpFormatter,
        description=f"Export CHECKPOINT to the ONNX file OUTPUT: input {INPUT_NAME}, float32 (batch, 3, H, W) "
                    f"in [0, 1] as the checkpoint's image processor returns it (H x W is the processor's size, "
                    f"512x512 for the bundled model; the batch is dynamic); outputs {', '.join(OUTPUT_NAMES)}. "
                    "The file holds the weights and the MOS scale in its metadata. onnxruntime then runs it and "
                    "every output must match PyTorch within --tolerance, else nothing is written (exit status 4). "
                    "Needs `pip install 'metaqap-hf[onnx]'`. Python: metaqap_hf.export.export_onnx(CHECKPOINT, "
                    "OUTPUT, ...).",
    )
    onnx.add_argument("checkpoint", metavar="CHECKPOINT", help="folder written by save_pretrained, or a hub id")
    onnx.add_argument("output", metavar="OUTPUT", help="the .onnx file to write")
    onnx.add_argument("--opset", type=int, default=defaults["opset"], metavar="N",
                      help=f"ONNX opset, {MIN_OPSET} or later (default: the exporter's)")
    onnx.add_argument("--tolerance", type=float, default=defaults["tolerance"], metavar="T",
                      help="largest |onnxruntime - PyTorch| accepted for any output")
    onnx.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    onnx.set_defaults(func=run_onnx)
    return parser


def run_onnx(args: argparse.Namespace) -> int:
    try:
        report = export_onnx(args.checkpoint, args.output, opset=args.opset, verify=not args.no_verify,
                             tolerance=args.tolerance)
    except OnnxParityError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    height, width = report.input_size
    size_mb = report.path.stat().st_size / 1e6
    print(f"wrote {report.path} ({size_mb:.1f} MB, opset {report.opset}): {INPUT_NAME} float32 "
          f"(batch, 3, {height}, {width}) in [0, 1] -> score (batch,), base_scores (batch, "
          f"{len(report.backbone_ids)}: {', '.join(report.backbone_ids)}), std (batch,)")
    if report.max_abs_diff is not None:
        differences = ", ".join(f"{name} {value:.2g}" for name, value in report.max_abs_diff.items())
        print(f"onnxruntime matches PyTorch: largest absolute differences {differences}")
    return EXIT_OK
