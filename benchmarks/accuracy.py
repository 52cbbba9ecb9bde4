"""Re-evaluate a MetaQAP checkpoint on a benchmark split and print the accuracy table (also written as JSON).

Rows: the checkpoint's score (meta-learner), every base model alone, and the plain average of the base models
(the ablation without the meta-learner). Columns: SROCC, KROCC, PLCC and RMSE on raw predictions, and PLCC/RMSE
after the 4- and 5-parameter logistic mappings (VQEG). The evaluation itself is
`metaqap_hf.evaluation.evaluate_checkpoint` (the `metaqap evaluate` command), which also writes predictions.csv and
scatter.png to --output-dir.

    python benchmarks/accuracy.py src/metaqap_hf/checkpoints/metaqap-lite-biq2021 \
        --dataset biq2021 --data-dir /path/to/BIQ2021 --split test --dtype bfloat16 --output-dir accuracy/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import metaqap_hf
from metaqap_hf.evaluation import evaluate_checkpoint

COLUMNS = ("srocc", "krocc", "plcc", "rmse", "plcc_4pl", "rmse_4pl", "plcc_5pl", "rmse_5pl")


def format_table(rows: dict) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>8}" for c in COLUMNS)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{metrics[c]:>8.4f}" for c in COLUMNS)
              for name, metrics in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(metaqap_hf.DEFAULT_MODEL_PATH))
    parser.add_argument("--dataset", default="biq2021")
    parser.add_argument("--data-dir", required=True, help="the dataset's folder in its official layout")
    parser.add_argument("--split", default="test")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output-dir", default="accuracy", help="metrics.json, predictions.csv, scatter.png")
    args = parser.parse_args()

    report = evaluate_checkpoint(args.checkpoint, args.dataset, args.output_dir, split=args.split,
                                 data_dir=args.data_dir, dtype=args.dtype, batch_size=args.batch_size)
    rows = {"meta-learner (model score)": report["metrics"], **report["ablations"]}
    print(f"{args.dataset} {args.split}: {report['metrics']['n']} images, {args.dtype}; "
          f"PLCC/RMSE raw and after 4-/5-parameter logistic fits")
    print(format_table(rows))
    table = {name: {c: metrics[c] for c in COLUMNS} for name, metrics in rows.items()}
    (Path(args.output_dir) / "accuracy_table.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
