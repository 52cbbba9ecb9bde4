"""What quality-aware pretraining brings to the frozen-feature recipe on BIQ2021, on a CPU budget.

1. Pretrain tf_efficientnet_lite0 (image_size 256, ImageNet start) on pseudo-MOS of distorted crops of the
   pristine photos (`metaqap_hf.pretraining.stage.pretrain`).
2. With each backbone FROZEN -- ImageNet-only and pretrained -- extract BIQ2021 pooled features (train, the
   validation carved from it, official test; `extract_features`, bfloat16, mean_std pooling, cached).
3. Train the same head on each (`train_head`, `FrozenRecipe()` defaults): epochs = argmax of the validation SROCC
   history, then refit on train+validation with that many epochs. Validation metrics come from the train-only
   head at the chosen epoch (so they carry the selection's optimism); test metrics from the refit head, computed
   once after every choice is made. Nothing is tuned on the test split.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 5 python benchmarks/pretraining_effect.py \
        --pristine-dir /work/shared/data/pristine --biq-dir /work/data/biq2021 --work-dir /work/data/qap_run

Prints a table and writes ``pretraining_effect.json`` to `--work-dir`. Rerunning reuses the pretraining run
and every feature cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from metaqap_hf.configuration_metaqap import MetaQAPConfig
from metaqap_hf.data import load_biq2021
from metaqap_hf.image_processing_metaqap import MetaQAPImageProcessor
from metaqap_hf.metrics import compute_iqa_metrics
from metaqap_hf.modeling_metaqap import MetaQAPModel
from metaqap_hf.pretraining.stage import load_backbones_from_checkpoint, pretrain
from metaqap_hf.training.features import extract_features, image_paths
from metaqap_hf.training.frozen import FrozenRecipe, train_head
from metaqap_hf.weights import load_pretrained_backbones

BACKBONE = {"name": "tf_efficientnet_lite0", "image_size": 256, "mean": [0.5] * 3, "std": [0.5] * 3}
SPLITS = ("train", "validation", "test")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pristine-dir", default="/work/shared/data/pristine")
    parser.add_argument("--biq-dir", default="/work/data/biq2021")
    parser.add_argument("--work-dir", default="/work/data/pretraining_effect",
                        help="pretraining run and the JSON report go here")
    parser.add_argument("--imagenet-features", default="/work/data/features",
                        help="feature cache of the ImageNet-only backbone")
    parser.add_argument("--pretrained-features", default="/work/data/features_qap",
                        help="feature cache root of pretrained backbones (a subfolder per checkpoint)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="FR metrics fused into pseudo-MOS (default: the labeler's DEFAULT_METRICS)")
    parser.add_argument("--validation-samples", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def run_pretraining(args: argparse.Namespace) -> tuple[Path, dict]:
    run_dir = Path(args.work_dir) / "pretrain"
    final = run_dir / "final"
    started = time.time()
    if not (final / "model.safetensors").is_file():
        options = {"metrics": tuple(args.metrics)} if args.metrics else {}
        # fp32: on this CPU a bf16-autocast training step of lite0 measured about twice as slow as fp32.
        pretrain(args.pristine_dir, run_dir, backbones=[BACKBONE], crop_size=args.crop_size, steps=args.steps,
                 batch_size=args.batch_size, validation_samples=args.validation_samples, seed=args.seed,
                 learning_rate=args.learning_rate, head_learning_rate=1e-3, warmup_steps=min(10, args.steps // 10),
                 mixed_precision="no", eval_every_steps=max(1, args.steps // 4),
                 save_every_steps=max(1, args.steps // 4), progress_bar=False, **options)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if record["kind"] == "train"]
    summary = {
        "run_dir": str(run_dir),
        "settings": json.loads((run_dir / "pretraining.json").read_text()),
        "wall_time_s_this_call": round(time.time() - started, 1),
        "train_loss_logged_first_last": [losses[0], losses[-1]],
        "pseudo_mos_validation": [{"step": r["step"], "srocc": r["srocc"], "plcc": r["plcc"]}
                                  for r in records if r["kind"] == "eval"],
    }
    return final, summary


def frozen_features(backbone_checkpoint: Path | None, cache_dir: str, dataset) -> dict[str, np.ndarray]:
    """Pooled features of every split, backbone frozen: ImageNet weights, then the checkpoint's when given."""
    config = MetaQAPConfig(backbones=[dict(BACKBONE)], head_hidden_size=256, head_dropout=0.2,
                           mos_range=[0.0, 1.0], loss="rank")
    model = MetaQAPModel(config).eval()
    load_pretrained_backbones(model)
    if backbone_checkpoint is not None:
        load_backbones_from_checkpoint(model, backbone_checkpoint)
    processor = MetaQAPImageProcessor()
    return {split: extract_features(model, processor, image_paths(dataset[split]), 0, dtype=torch.bfloat16,
                                    cache_dir=cache_dir, desc=f"lite0 {split}") for split in SPLITS}


def evaluate_head(features: dict[str, np.ndarray], targets: dict[str, np.ndarray], recipe: FrozenRecipe) -> dict:
    """Frozen recipe for one feature set: epochs chosen on validation, refit on train+validation, test once."""
    _, history = train_head(features["train"], targets["train"], recipe, recipe.max_epochs, seed=recipe.seed,
                            validation=(features["validation"], targets["validation"]))
    epochs = int(np.argmax(history)) + 1
    train_only, _ = train_head(features["train"], targets["train"], recipe, epochs, seed=recipe.seed)
    refit, _ = train_head(np.concatenate([features["train"], features["validation"]]),
                          np.concatenate([targets["train"], targets["validation"]]), recipe, epochs, seed=recipe.seed)

    def predict(head, x: np.ndarray) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            return head(torch.from_numpy(x)).numpy()

    return {"epochs": epochs, "feature_dim": int(features["train"].shape[1]),
            "validation_srocc_by_epoch": [round(v, 4) for v in history],
            "validation": compute_iqa_metrics(predict(train_only, features["validation"]), targets["validation"]),
            "test": compute_iqa_metrics(predict(refit, features["test"]), targets["test"])}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    started = time.time()
    checkpoint, pretraining = run_pretraining(args)
    pretraining_done = time.time()

    recipe = FrozenRecipe()
    dataset = load_biq2021(args.biq_dir, validation_fraction=0.1, seed=recipe.seed)
    targets = {split: np.asarray(dataset[split]["mos"], dtype=np.float32) for split in SPLITS}
    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()[:12]
    feature_sets = {
        "imagenet": frozen_features(None, args.imagenet_features, dataset),
        "imagenet+quality_aware_pretraining": frozen_features(
            checkpoint, str(Path(args.pretrained_features) / digest), dataset),
    }
    features_done = time.time()
    results = {name: evaluate_head(features, targets, recipe) for name, features in feature_sets.items()}

    report = {
        "backbone": BACKBONE, "recipe": asdict(recipe),
        "splits": {split: len(targets[split]) for split in SPLITS},
        "pretraining": pretraining, "pretrained_checkpoint_sha256_12": digest,
        "results": results,
        "wall_time_s": {"pretraining": round(pretraining_done - started, 1),
                        "features": round(features_done - pretraining_done, 1),
                        "heads": round(time.time() - features_done, 1)},
        "threads": torch.get_num_threads(),
    }
    output = Path(args.work_dir) / "pretraining_effect.json"
    output.write_text(json.dumps(report, indent=2, default=float) + "\n")

    print("\nBIQ2021, tf_efficientnet_lite0@256 frozen, FrozenRecipe head (epochs chosen on validation)")
    print(f"{'backbone':<38} {'epochs':>6} {'val SROCC':>9} {'val PLCC':>8} {'test SROCC':>10} {'test PLCC':>9}")
    for name, result in results.items():
        print(f"{name:<38} {result['epochs']:>6} {result['validation']['srocc']:>9.4f} "
              f"{result['validation']['plcc']:>8.4f} {result['test']['srocc']:>10.4f} {result['test']['plcc']:>9.4f}")
    print(f"report: {output}")


if __name__ == "__main__":
    main()
