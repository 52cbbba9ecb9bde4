"""Re-evaluate a MetaQAP checkpoint on a dataset split and print the accuracy table (and write it as JSON).

Rows: every base model, their plain average (the ablation without the meta-learner) and the meta-learner (the
checkpoint's score). Columns: SROCC, KROCC, PLCC and RMSE on raw predictions, and PLCC/RMSE after the 4- and
5-parameter logistic mappings (VQEG). Scores go through `pipeline("image-quality")`, exactly as users get them.

    python benchmarks/accuracy.py --model src/metaqap_hf/checkpoints/metaqap-lite-biq2021 \
        --dataset biq2021 --data-dir /path/to/BIQ2021 --split test --dtype bfloat16 --output accuracy.json
    python benchmarks/accuracy.py --model M --prepared /path/to/prepared-biq2021 --split test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

import metaqap_hf
from metaqap_hf.metrics import compute_iqa_metrics

COLUMNS = ("srocc", "krocc", "plcc", "rmse", "plcc_4pl", "rmse_4pl", "plcc_5pl", "rmse_5pl")


def load_split(args: argparse.Namespace):
    if args.prepared:
        from datasets import load_dataset

        return load_dataset(args.prepared, split=args.split)
    from metaqap_hf.data import load_iqa_dataset

    return load_iqa_dataset(args.dataset, args.data_dir)[args.split]


def evaluate(model: str, split, *, dtype: torch.dtype, batch_size: int, device: str) -> dict:
    scorer = pipeline("image-quality", model=model, dtype=dtype, device=device)
    low, high = scorer.model.config.mos_range
    started = time.time()
    results = list(scorer(split, batch_size=batch_size))
    elapsed = time.time() - started
    mos = np.asarray(split["mos"], dtype=np.float64)
    if "mos_normalized" in split.column_names:  # compare on the checkpoint's scale
        mos = low + (high - low) * np.asarray(split["mos_normalized"], dtype=np.float64)
    base = np.array([[r["base_scores"][b] for b in scorer.model.config.backbone_ids] for r in results])
    rows = {b: compute_iqa_metrics(base[:, i], mos) for i, b in enumerate(scorer.model.config.backbone_ids)}
    rows["mean of base models"] = compute_iqa_metrics(base.mean(1), mos)
    rows["meta-learner (model score)"] = compute_iqa_metrics([r["score"] for r in results], mos)
    return {"rows": rows, "images": len(results), "seconds": round(elapsed, 1),
            "predictions": [r["score"] for r in results], "mos": mos.tolist()}


def format_table(rows: dict) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>8}" for c in COLUMNS)]
    for name, metrics in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{metrics[c]:>8.4f}" for c in COLUMNS))
    return "\n".join(lines)


def scatter_plot(predictions, mos, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    axis.scatter(mos, predictions, s=4, alpha=0.4)
    axis.set_xlabel("MOS")
    axis.set_ylabel("predicted score")
    axis.set_title(title, fontsize=9)
    lo, hi = min(min(mos), min(predictions)), max(max(mos), max(predictions))
    axis.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(metaqap_hf.DEFAULT_MODEL_PATH), help="checkpoint folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="benchmark name (biq2021, koniq10k, live_challenge, spaq, kadid10k)")
    source.add_argument("--prepared", help="a folder written by `metaqap data prepare`")
    parser.add_argument("--data-dir", help="the dataset's folder in its official layout (with --dataset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="write the table as JSON here")
    parser.add_argument("--scatter", help="write a predicted-vs-MOS scatter plot PNG here")
    args = parser.parse_args()
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")

    split = load_split(args)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    result = evaluate(args.model, split, dtype=dtype, batch_size=args.batch_size, device=args.device)
    name = args.dataset or Path(args.prepared).name
    print(f"{name} {args.split}: {result['images']} images, {args.dtype}, {result['seconds']} s "
          f"(PLCC/RMSE raw, and after 4-/5-parameter logistic fits)")
    print(format_table(result["rows"]))
    if args.scatter:
        scatter_plot(result["predictions"], result["mos"], Path(args.scatter),
                     f"{Path(args.model).name} on {name} {args.split}: "
                     f"SROCC {result['rows']['meta-learner (model score)']['srocc']:.3f}")
    if args.output:
        summary = {"model": args.model, "dataset": name, "split": args.split, "dtype": args.dtype,
                   "images": result["images"], "seconds": result["seconds"], "rows": result["rows"]}
        Path(args.output).write_text(json.dumps(summary, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
