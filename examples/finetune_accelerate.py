"""Fine-tune MetaQAP base models with the Accelerate loop from Python: `metaqap_hf.training.finetune`, the function
behind `metaqap train` (bf16, gradient accumulation, crash-safe checkpoints, exact resumption; rerun the same
command after an interruption and it continues from the last checkpoint).

    python examples/finetune_accelerate.py --data-dir /data/BIQ2021 --output-dir runs/lite --epochs 10
    python examples/finetune_accelerate.py --dataset mydata/scores.csv --mos-range 1 5 --output-dir runs/mine

Only the options below are exposed; every other setting keeps `finetune`'s default (`metaqap train --help` lists
them all), so this script and `metaqap train` with the same options write bit-identical checkpoints. Writes
<output-dir>/best (best validation SROCC) and final/ (each with its model card), checkpoints/, metrics.jsonl and
training_result.json; the test split is never read.
"""

import argparse
import json
from dataclasses import asdict

from metaqap_hf.training import AccelerateTrainingArguments, FinetuningOptions, finetune

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)  # what is not given keeps finetune's default
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
parser.add_argument("--epochs", type=int, dest="num_epochs")
parser.add_argument("--batch-size", type=int, dest="per_device_batch_size", help="per process and micro-batch")
parser.add_argument("--grad-accum", type=int, dest="gradient_accumulation_steps")
parser.add_argument("--save-every", type=int, dest="save_every_steps", help="checkpoint every N optimizer steps")
parser.add_argument("--seed", type=int)
options = vars(parser.parse_args())

loop = {name: options.pop(name) for name in ("num_epochs", "per_device_batch_size", "gradient_accumulation_steps",
                                             "save_every_steps") if name in options}
if "seed" in options:  # the seed of the splits and heads is also the loop's (order, dropout)
    loop["seed"] = options["seed"]
result = finetune(options.pop("dataset"), AccelerateTrainingArguments(options.pop("output_dir"), **loop),
                  FinetuningOptions(**options))
print(json.dumps(asdict(result), indent=2))
