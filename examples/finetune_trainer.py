"""Fine-tune MetaQAP base models with `transformers.Trainer` (`MetaQAPTrainer`): the same model, datasets, loss and
optimizer as `metaqap train`, driven by Trainer (validation SROCC/PLCC every epoch, early stopping and best-model
selection on the validation split carved from train, never on test).

    python examples/finetune_trainer.py --data-dir /data/BIQ2021 --output-dir runs/trainer-lite --epochs 10 --bf16

Writes Trainer checkpoints under <output-dir> and the best model (with its image processor and its model card, the
validation figures on it) to <output-dir>/best.
"""

import argparse
import json

from metaqap_hf.cards import ModelCardFacts, card_evaluation, command_line, write_model_card
from metaqap_hf.training import FinetuningOptions, MetaQAPTrainer, prepare_finetuning, quality_training_arguments

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)  # what is not given keeps the defaults
parser.add_argument("--dataset", default="biq2021",
                    help="a registered benchmark, a .csv/.jsonl table (image, mos), a prepared folder or a hub id")
parser.add_argument("--data-dir", help="the registered benchmark's folder in its official layout")
parser.add_argument("--mos-range", nargs=2, type=float, help="the scale of a table's mos column, e.g. 1 5")
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
setup = prepare_finetuning(options.pop("dataset"), FinetuningOptions(**options))
arguments = quality_training_arguments(output_dir, **trainer_options)
trainer = MetaQAPTrainer(setup.model, arguments, setup.train, setup.validation, image_processor=setup.image_processor)
trainer.train()
metrics = trainer.evaluate()  # the best model's validation metrics (load_best_model_at_end)
trainer.save_model(f"{output_dir}/best")
source = setup.source
evaluation = card_evaluation({key.removeprefix("eval_"): value for key, value in metrics.items()},
                             dataset_name=source.name, dataset_id=source.dataset_id, split="validation",
                             num_images=len(setup.validation))
write_model_card(f"{output_dir}/best", ModelCardFacts(
    training_dataset=source.name, training_dataset_id=source.dataset_id, training_command=command_line(),
    training_notes=f"fine-tuned with transformers.Trainer (MetaQAPTrainer) on {source.describe()}; the figures are "
                   "on the validation split that chose this model",
    evaluations=[evaluation] if evaluation else []), overwrite=True)
print(json.dumps(metrics, indent=2))
