"""Score a large image collection on a Ray cluster with Ray Data (`pip install 'ray[data]'`).

Ray reads the files where they are (a shared filesystem or object storage), `map_batches` runs one
`metaqap_hf.scoring.ImageScorer` per actor (a GPU each with `--gpus-per-actor 1`), and every row comes back with
its score, or the reason its file could not be scored. On one machine this starts a local Ray instance; on a
cluster, `ray.init(address="auto")` joins it.

    python examples/score_with_ray.py photos/ --output scores.jsonl --actors 2
    python examples/score_with_ray.py s3://bucket/photos/ --output scores.jsonl --actors 8 --gpus-per-actor 1 \
        --address auto --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json

import numpy as np


class RayScorer:
    """One model per Ray actor: a batch of (path, bytes) rows in, one result row per file out."""

    def __init__(self, model: str | None, device: str, dtype: str):
        from metaqap_hf.scoring import ImageScorer

        self.scorer = ImageScorer(model, device=device, dtype=dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from metaqap_hf.scoring import ImageInput

        items = [ImageInput(str(path), bytes(data)) for path, data in zip(batch["path"], batch["bytes"])]
        results = list(self.scorer.score(items, batch_size=len(items)))
        return {
            "path": [item.path for item in results],
            "score": [item.score for item in results],
            "raw_score": [item.raw_score for item in results],
            "std": [item.std for item in results],
            "skipped": [item.reason or "" for item in results],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="image files or folders (local, or any filesystem Ray reads)")
    parser.add_argument("--output", required=True, help="a .jsonl file for the results")
    parser.add_argument("--model", help="checkpoint folder or hub id (default: the bundled model)")
    parser.add_argument("--actors", type=int, default=2, help="model replicas")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--gpus-per-actor", type=float, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 where the hardware computes it natively")
    parser.add_argument("--address", help="a Ray cluster to join (default: start a local instance)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local instance")
    args = parser.parse_args()

    import ray

    ray.init(address=args.address, num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    # The actors hold their CPUs for the whole run and reading the files needs one more: without it Ray waits forever.
    needed, available = args.actors * args.cpus_per_actor + 1, ray.cluster_resources().get("CPU", 0)
    if needed > available:
        raise SystemExit(f"error: {args.actors} actors x {args.cpus_per_actor:g} CPUs plus one CPU to read the files "
                         f"need {needed:g} CPUs; Ray has {available:g}: lower --actors or --cpus-per-actor, or give "
                         f"the local instance more with --num-cpus")
    files = ray.data.read_binary_files(args.paths, include_paths=True)
    scored = files.map_batches(RayScorer, fn_constructor_kwargs={"model": args.model, "device": args.device,
                                                                 "dtype": args.dtype},
                               batch_size=args.batch_size, concurrency=args.actors, num_cpus=args.cpus_per_actor,
                               num_gpus=args.gpus_per_actor)
    counts = {"scored": 0, "skipped": 0}
    with open(args.output, "w") as output:
        for row in scored.iter_rows():
            row = {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
            counts["skipped" if row["skipped"] else "scored"] += 1
            output.write(json.dumps(row) + "\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
