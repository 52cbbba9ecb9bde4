"""Evaluate a checkpoint on one split of a dataset with `metaqap_hf.evaluation.evaluate_checkpoint` (the function
behind `metaqap evaluate`): metrics.json (SROCC, KROCC, PLCC and RMSE raw and after logistic fits, per-base SROCC),
predictions.csv and scatter.png.

    python examples/evaluate_checkpoint.py --checkpoint runs/lite/best --data-dir /data/BIQ2021 --split test \
        --output-dir runs/lite/eval-test --bf16
    python examples/evaluate_checkpoint.py --checkpoint runs/mine/best --dataset mydata/scores.csv --mos-range 1 5 \
        --output-dir runs/mine/eval
"""

import argparse
import json

from metaqap_hf.evaluation import evaluate_checkpoint

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--checkpoint", required=True, help="folder written by save_pretrained (model + processor)")
parser.add_argument("--dataset", default="biq2021",
                    help="a registered benchmark, a .csv/.jsonl table (image, mos), a prepared folder or a hub id")
parser.add_argument("--data-dir", help="the registered benchmark's folder in its official layout")
parser.add_argument("--mos-range", nargs=2, type=float, help="the scale of a table's mos column, e.g. 1 5")
parser.add_argument("--split", choices=["train", "validation", "test", "all"],
                    help="default: test when the dataset has one, else all")
parser.add_argument("--output-dir", required=True)
parser.add_argument("--bf16", action="store_true", help="bfloat16, on a CPU or a GPU")
parser.add_argument("--limit", type=int, help="evaluate the first N images only (smoke runs)")
args = parser.parse_args()

report = evaluate_checkpoint(args.checkpoint, args.dataset, args.output_dir, split=args.split, data_dir=args.data_dir,
                             mos_range=args.mos_range, dtype="bfloat16" if args.bf16 else "float32",
                             limit=args.limit)
print(json.dumps(report["metrics"], indent=2))
