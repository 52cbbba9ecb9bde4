"""Evaluate a MetaQAP checkpoint on one split of a benchmark: every IQA metric (raw and logistic-fitted, see
`metaqap_hf.metrics.compute_iqa_metrics`) to metrics.json, per-image predictions to predictions.csv, and a
predicted-versus-MOS scatter plot to scatter.png.

    python examples/evaluate_checkpoint.py --checkpoint runs/acc-lite/best --dataset biq2021 \
        --data-dir /data/BIQ2021 --split test --output-dir runs/acc-lite/eval-test

Images go through the same path as at inference: `load_image` + the checkpoint's image processor, no augmentation.
"""

from __future__ import annotations

import argparse
import json

from metaqap_hf.training.recipes import evaluate_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="folder written by save_pretrained (model + processor)")
    parser.add_argument("--dataset", default="biq2021", help="registered benchmark name (metaqap_hf.data.DATASETS)")
    parser.add_argument("--data-dir", required=True, help="the benchmark's folder in its official layout")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU and GPU)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only (CI)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.split, args.output_dir,
                                 dtype="bfloat16" if args.bf16 else "float32", batch_size=args.batch_size,
                                 num_workers=args.workers, limit=args.limit)
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()
