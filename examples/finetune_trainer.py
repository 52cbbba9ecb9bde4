"""Fine-tune MetaQAP base models with `transformers.Trainer` (`MetaQAPTrainer`): the same model, datasets, loss and
optimizer as `metaqap train`, driven by Trainer (validation SROCC/PLCC every epoch, early stopping and best-model
selection on the validation split carved from train, never on test).

    python examples/finetune_trainer.py --data-dir /data/BIQ2021 --output-dir runs/trainer-lite --epochs 10 --bf16

Writes Trainer checkpoints under <output-dir> and the best model (with its image processor) to <output-dir>/best.
"""

import argparse
import json

from metaqap_hf.training import MetaQAPTrainer, prepare_finetuning, quality_training_arguments

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)  # what is not given keeps the defaults
parser.add_argument("--dataset", default="biq2021", help="registered benchmark (metaqap_hf.data.DATASETS)")
parser.add_argument("--data-dir", required=True, help="the benchmark's folder in its official layout")
parser.add_argument("--output-dir", required=True)
parser.add_argument("--backbones", help="lite (default), one lite backbone by its timm name, or tiny (CI)")
parser.add_argument("--image-size", type=int, help="processor resize (default 512, the inference size)")
parser.add_argument("--train-limit", type=int, help="use the first N training images (smoke runs)")
parser.add_argument("--validation-limit", type=int, help="use the first N validation images")
parser.add_argument("--cache-dir", help="keep decoded images here (default: in memory)")
parser.add_argument("--epochs", type=float, dest="num_train_epochs")
parser.add_argument("--batch-size", type=int, dest="per_device_train_batch_size")
parser.add_argument("--bf16", action="store_true", help="bf16 autocast, on a CPU or a GPU")
parser.add_argument("--seed", type=int)
options = vars(parser.parse_args())

output_dir = options.pop("output_dir")
trainer_options = {key: options.pop(key) for key in ("num_train_epochs", "per_device_train_batch_size", "bf16")
                   if key in options}
if "seed" in options:  # the seed of the splits and heads is also Trainer's
    trainer_options["seed"] = options["seed"]
setup = prepare_finetuning(options.pop("dataset"), options.pop("data_dir"), **options)
arguments = quality_training_arguments(output_dir, **trainer_options)
trainer = MetaQAPTrainer(setup.model, arguments, setup.train, setup.validation, image_processor=setup.image_processor)
trainer.train()
metrics = trainer.evaluate()  # the best model's validation metrics (load_best_model_at_end)
trainer.save_model(f"{output_dir}/best")
print(json.dumps(metrics, indent=2))
