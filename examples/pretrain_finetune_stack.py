"""The one-GPU recipe in one command: quality-aware pretraining of the backbones on BIQ2021's training images (their
content, never a test image) and the pristine photos, for a fixed time budget; fine-tuning of each backbone on
BIQ2021's MOS; stacking; the checkpoint written in shards of at most 15 MB (`metaqap_hf.pretraining.recipe`).

    # one H200: about 8 minutes with the full BIQ2021 (defaults: lite backbones at 448, 384 px pretraining crops)
    python examples/pretrain_finetune_stack.py --data-dir /data/BIQ2021 --pristine-dir /data/pristine \
        --output-dir runs/one-gpu --time-budget-s 180 --finetune-budget-s 40
    # CPU dry run (what CI runs): tiny backbones, a few steps
    python examples/pretrain_finetune_stack.py --data-dir BIQ2021-sample --pristine-dir pristine \
        --output-dir runs/dry --backbones tiny --random-init --image-side 96 --image-size 64 --crop-size 64 \
        --batch-size 8 --max-steps 3 --num-workers 0

Only the options below are exposed; every other setting keeps `OneGPURecipe`'s default. Writes the stacked
checkpoint (model-0000N-of-0000M.safetensors, config, processor, model card) and recipe.json (timings, steps,
throughput, losses) into --output-dir, and the intermediate checkpoints into --output-dir/stages.
"""

import argparse
import json

from metaqap_hf.pretraining.objectives import OBJECTIVES
from metaqap_hf.pretraining.recipe import OneGPURecipe, pretrain_finetune_stack

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)  # what is not given keeps the recipe's default
parser.add_argument("--data-dir", required=True, help="BIQ2021 in its official layout")
parser.add_argument("--pristine-dir", required=True, help="pristine photos, more pretraining content")
parser.add_argument("--output-dir", required=True)
parser.add_argument("--backbones", help="lite (default), one lite backbone by its timm name, or tiny (dry runs)")
parser.add_argument("--random-init", action="store_false", dest="pretrained", help="no ImageNet weights")
parser.add_argument("--objectives", nargs="+", choices=OBJECTIVES, type=str, help="pretraining objectives")
parser.add_argument("--time-budget-s", type=float, help="pretraining wall time, all backbones together")
parser.add_argument("--finetune-budget-s", type=float, help="fine-tuning wall time per backbone")
parser.add_argument("--max-steps", type=int, help="also stop each stage after N steps (dry runs)")
parser.add_argument("--batch-size", type=int, help="crops per step (even)")
parser.add_argument("--image-side", type=int, help="images are held at this side")
parser.add_argument("--image-size", type=int, help="the backbones' input side and fine-tuning crop")
parser.add_argument("--crop-size", type=int, help="pretraining crop side")
parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"])
parser.add_argument("--device", help="auto (a GPU when there is one), cpu, cuda, cuda:N")
parser.add_argument("--num-workers", type=int, help="decoding processes")
parser.add_argument("--log-every", type=int, help="read the loss back every N steps")
parser.add_argument("--seed", type=int)
options = vars(parser.parse_args())
if "objectives" in options:
    options["objectives"] = tuple(options["objectives"])

paths = [options.pop(name) for name in ("data_dir", "pristine_dir", "output_dir")]
report = pretrain_finetune_stack(*paths, OneGPURecipe(**options))
print(json.dumps({"output_dir": paths[2], "wall_s": report["wall_s"], "files": report["files"]}, indent=2))
