"""Fine-tune MetaQAP base models with `transformers.Trainer` (`MetaQAPTrainer`): validation SROCC/PLCC every
epoch, early stopping and best-model selection on the validation split carved from train, never on test.

    python examples/finetune_trainer.py --dataset biq2021 --data-dir /data/BIQ2021 --output-dir runs/trainer-lite

Writes Trainer checkpoints under <output-dir> and the best model (with its image processor) to <output-dir>/best.
"""

from __future__ import annotations

import argparse
import json

from transformers import EarlyStoppingCallback

from metaqap_hf import MetaQAPImageProcessor
from metaqap_hf.training import (
    MetaQAPTrainer,
    QualityAugmentation,
    initialize_head_bias,
    quality_training_arguments,
    training_datasets,
)
from metaqap_hf.training.recipes import BACKBONE_PRESETS, build_model, load_training_splits


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
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU and GPU)")
    parser.add_argument("--freeze-backbones", action="store_true")
    parser.add_argument("--patience", type=int, default=5, help="early stopping, in evaluations")
    parser.add_argument("--cache-dir", default=None, help="keep decoded images here (memory when omitted)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training images (CI)")
    parser.add_argument("--validation-limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    splits = load_training_splits(args.dataset, args.data_dir, validation_fraction=args.validation_fraction,
                                  seed=args.seed, train_limit=args.train_limit, validation_limit=args.validation_limit)
    processor = MetaQAPImageProcessor(size={"height": args.image_size, "width": args.image_size})
    train, validation = training_datasets(splits, processor, augmentation=QualityAugmentation(),
                                          cache_dir=args.cache_dir, num_workers=args.workers, seed=args.seed)
    model = build_model(args.dataset, backbones=args.backbones, loss=args.loss, pretrained=not args.random_init,
                        seed=args.seed)
    initialize_head_bias(model, train.labels)

    training_args = quality_training_arguments(
        args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, bf16=args.bf16, dataloader_num_workers=args.workers, seed=args.seed,
    )
    trainer = MetaQAPTrainer(model, training_args, train, validation, train_backbones=not args.freeze_backbones,
                             image_processor=processor,
                             callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
    trainer.train()
    metrics = trainer.evaluate()  # the best model's validation metrics (load_best_model_at_end)
    trainer.save_model(f"{args.output_dir}/best")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
