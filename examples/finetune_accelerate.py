"""Fine-tune MetaQAP base models with the Accelerate loop (bf16, gradient accumulation, crash-safe checkpoints,
exact resumption). Rerun the same command after an interruption and it continues from the last checkpoint.

    python examples/finetune_accelerate.py --dataset biq2021 --data-dir /data/BIQ2021 --output-dir runs/acc-lite
    accelerate launch --num_processes 2 examples/finetune_accelerate.py --dataset biq2021 --data-dir ... \
        --output-dir runs/acc-lite

Writes <output-dir>/best (best validation SROCC), final/, checkpoints/, metrics.jsonl, training_result.json.
The test split is never read: validation is carved from the training images.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from metaqap_hf.training.recipes import BACKBONE_PRESETS, finetune


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="biq2021", help="registered benchmark name (metaqap_hf.data.DATASETS)")
    parser.add_argument("--data-dir", required=True, help="the benchmark's folder in its official layout")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--backbones", choices=sorted(BACKBONE_PRESETS), default="lite",
                        help="lite: the four ImageNet backbones; tiny: random timm test models (CI)")
    parser.add_argument("--random-init", action="store_true", help="do not load ImageNet weights")
    parser.add_argument("--image-size", type=int, default=512, help="processor resize (512 = inference default)")
    parser.add_argument("--loss", default="quality_aware", choices=["quality_aware", "rank", "mse"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8, help="per process and micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4, help="backbone learning rate")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    parser.add_argument("--freeze-backbones", action="store_true")
    parser.add_argument("--save-every", type=int, default=100, help="checkpoint every N optimizer steps")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate every N steps (default: per epoch)")
    parser.add_argument("--patience", type=int, default=5, help="early stopping, in evaluations")
    parser.add_argument("--cache-dir", default=None, help="keep decoded images here (memory when omitted)")
    parser.add_argument("--no-cache", action="store_true", help="decode images on every access")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training images (CI)")
    parser.add_argument("--validation-limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    result = finetune(
        args.dataset, args.data_dir, args.output_dir, backbones=args.backbones, pretrained=not args.random_init,
        loss=args.loss, image_size=args.image_size, validation_fraction=args.validation_fraction,
        train_limit=args.train_limit, validation_limit=args.validation_limit, cache=not args.no_cache,
        cache_dir=args.cache_dir, num_workers=args.workers, seed=args.seed,
        num_epochs=args.epochs, max_steps=args.max_steps, per_device_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, head_learning_rate=args.head_lr,
        mixed_precision=args.precision, train_backbones=not args.freeze_backbones, save_every_steps=args.save_every,
        eval_every_steps=args.eval_every, early_stopping_patience=args.patience,
    )
    print(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
