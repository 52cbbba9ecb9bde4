"""Evaluate a checkpoint on one split of a benchmark with `metaqap_hf.evaluation.evaluate_checkpoint` (the function
behind `metaqap evaluate`): metrics.json (SROCC, KROCC, PLCC and RMSE raw and after logistic fits, per-base SROCC),
predictions.csv and scatter.png.

    python examples/evaluate_checkpoint.py --checkpoint runs/lite/best --data-dir /data/BIQ2021 --split test \
        --output-dir runs/lite/eval-test --bf16
"""

import argparse
import json

from metaqap_hf.evaluation import evaluate_checkpoint

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--checkpoint", required=True, help="folder written by save_pretrained (model + processor)")
parser.add_argument("--dataset", default="biq2021", help="registered benchmark (metaqap_hf.data.DATASETS)")
parser.add_argument("--data-dir", required=True, help="the benchmark's folder in its official layout")
parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
parser.add_argument("--output-dir", required=True)
parser.add_argument("--bf16", action="store_true", help="bfloat16, on a CPU or a GPU")
parser.add_argument("--limit", type=int, help="evaluate the first N images only (smoke runs)")
args = parser.parse_args()

report = evaluate_checkpoint(args.checkpoint, args.dataset, args.data_dir, args.split, args.output_dir,
                             dtype="bfloat16" if args.bf16 else "float32", limit=args.limit)
print(json.dumps(report["metrics"], indent=2))
