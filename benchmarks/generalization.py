r"""How well a quality model ranks photos it never saw: three tables (markdown on stdout, everything in JSON).

1. official  - a checkpoint on BIQ2021's official test split, overall and per source subset (ss01 the authors'
               gallery, ss02 deliberately mis-captured, ss03 Unsplash): SROCC, raw PLCC, KROCC, n.
2. loso      - leave one subset out: for each subset S a recipe trains on the official TRAIN images of the other
               two subsets (validation carved from those) and is scored on the official TEST images of S. Nothing
               is chosen on a test image. Per fold and the mean.
3. synthetic - pristine photos through the project's 25 distortion types x 5 levels (`metaqap_hf.distortions`):
               per type, the Spearman correlation between level and score averaged over photos (expected
               negative; a constant series counts as 0), and the share of (photo, type) series whose score falls
               at every level.

Every score comes from `pipeline("image-quality")` on the file or the distorted array, i.e. blind, exactly as a
user gets it.

    # the bundled default: official and synthetic tables
    python benchmarks/generalization.py --model src/metaqap_hf/checkpoints/metaqap-lite-biq2021 \
        --data-dir /data/BIQ2021 --pristine-dir ../shared/data/pristine --photos 40 --output generalization.json
    # a recipe, leave one subset out (one checkpoint per fold in --work-dir; a finished fold is reused)
    python benchmarks/generalization.py --tables loso --recipe frozen --backbones lite \
        --data-dir /data/BIQ2021 --work-dir runs/loso --feature-cache runs/features --output loso.json

`--recipe frozen` is `metaqap_hf.training.train_frozen` (the recipe of metaqap-lite-biq2021) with `--backbones`
and `--image-size`; `--recipe finetune` is `metaqap_hf.training.finetune` (`metaqap train`: whole backbones
trained, `--epochs`, best validation epoch kept); both start from `--backbones-from` when given (quality-aware
pretraining's final/), else from ImageNet. `--recipe package.module:function` runs any
`function(splits: DatasetDict with train and validation, output_dir, *, args) -> None` that writes a checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from scipy import stats
from transformers import pipeline

import metaqap_hf  # noqa: F401  (registers the image-quality pipeline)
from metaqap_hf.data import load_biq2021
from metaqap_hf.data.images import image_column, load_dataset_image
from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS, distort
from metaqap_hf.image_utils import load_image_tensor
from metaqap_hf.pretraining.dataset import find_images

SUBSETS = ("ss01", "ss02", "ss03")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def subset_of(image_name: str) -> str:
    return re.match(r"\s*(ss0\d)", image_name.casefold()).group(1)


def correlations(scores, mos) -> dict:
    scores, mos = np.asarray(scores, float), np.asarray(mos, float)
    return {"srocc": float(stats.spearmanr(scores, mos)[0]), "plcc": float(stats.pearsonr(scores, mos)[0]),
            "krocc": float(stats.kendalltau(scores, mos)[0]), "n": int(len(mos))}


def make_scorer(checkpoint, dtype: str, batch_size: int):
    scorer = pipeline("image-quality", model=str(checkpoint), dtype=DTYPES[dtype])

    def score(images) -> np.ndarray:
        return np.array([result["score"] for result in scorer(list(images), batch_size=batch_size)])
    return score


def pipeline_inputs(split) -> list:
    """A split's images as the pipeline takes them: the file path, or the decoded image when it is embedded."""
    return [item["path"] if not item.get("bytes") else load_dataset_image(item) for item in image_column(split)]


# ----------------------------------------------------------------------------------------------- official test
def official_table(score, data_dir, limit=None) -> dict:
    test = load_biq2021(data_dir, validation_fraction=0.0)["test"]
    if limit:  # smoke runs: every limit-th image, so each subset keeps its share
        test = test.select(range(0, len(test), max(1, len(test) // limit)))
    predictions = score(pipeline_inputs(test))
    subsets = np.array([subset_of(name) for name in test["image_name"]])
    mos = np.asarray(test["mos"])
    rows = {"official test": correlations(predictions, mos)}
    for subset in SUBSETS:
        rows[subset] = correlations(predictions[subsets == subset], mos[subsets == subset])
    return {"rows": rows, "predictions": dict(zip(test["image_name"], predictions.round(6).tolist()))}


# ------------------------------------------------------------------------------------------ leave one subset out
def loso_splits(official: DatasetDict, held_out: str, args) -> tuple[DatasetDict, object]:
    """From BIQ2021's official splits: training splits (the other subsets' official train images, validation carved
    from them, at most `args.train_limit` of them in a seeded order) and the held-out subset's official test images."""
    train = official["train"].filter(lambda row: subset_of(row["image_name"]) != held_out)
    if args.train_limit and len(train) > args.train_limit:
        train = train.shuffle(seed=args.seed).select(range(args.train_limit))
    test = official["test"].filter(lambda row: subset_of(row["image_name"]) == held_out)
    carved = train.train_test_split(test_size=args.validation_fraction, seed=args.seed)
    return DatasetDict(train=carved["train"], validation=carved["test"]), test


def loso_table(recipe, args) -> dict:
    rows = {}
    official = load_biq2021(args.data_dir, validation_fraction=0.0)
    for held_out in SUBSETS:
        splits, test = loso_splits(official, held_out, args)
        fold_dir = Path(args.work_dir) / f"without-{held_out}"
        started = time.time()
        if not (fold_dir / "config.json").is_file():
            recipe(splits, fold_dir, args=args)
        train_s = time.time() - started
        predictions = make_scorer(fold_dir, args.dtype, args.batch_size)(pipeline_inputs(test))
        rows[f"{held_out} held out"] = {**correlations(predictions, test["mos"]), "n_train": len(splits["train"]),
                                        "train_wall_s": round(train_s, 1)}
    rows["mean"] = {key: float(np.mean([row[key] for row in rows.values()])) for key in ("srocc", "plcc", "krocc")}
    return {"rows": rows}


def frozen_recipe(splits: DatasetDict, output_dir: Path, *, args) -> None:
    from metaqap_hf.training import FrozenRecipe, train_frozen

    train_frozen(splits, output_dir, mos_range=(0.0, 1.0), backbones=args.backbones, image_size=args.image_size,
                 recipe=FrozenRecipe(seed=args.seed), feature_cache=args.feature_cache,
                 feature_dtype=DTYPES[args.dtype], backbones_from=args.backbones_from)


def finetune_recipe(splits: DatasetDict, output_dir: Path, *, args) -> None:
    """`metaqap train`'s loop (whole backbones, quality-keeping augmentation), the best validation checkpoint kept."""
    from metaqap_hf.training import AccelerateTrainingArguments, FinetuningOptions, finetune

    run_dir = output_dir.with_name(output_dir.name + "-training")  # rerun: resumes from its last checkpoint
    loop = AccelerateTrainingArguments(str(run_dir), num_epochs=args.epochs, per_device_batch_size=args.batch_size,
                                       mixed_precision={"bfloat16": "bf16", "float32": "no"}[args.dtype],
                                       seed=args.seed)
    options = FinetuningOptions(mos_range=(0.0, 1.0), backbones=args.backbones, backbones_from=args.backbones_from,
                                image_size=args.image_size or 512, seed=args.seed)
    finetune(splits, loop, options)
    shutil.copytree(run_dir / "best", output_dir)


RECIPES = {"frozen": frozen_recipe, "finetune": finetune_recipe}


def resolve_recipe(name: str):
    if name in RECIPES:
        return RECIPES[name]
    module, _, function = name.partition(":")
    if not function:
        raise SystemExit(f"unknown recipe {name!r}: use one of {sorted(RECIPES)} or package.module:function")
    return getattr(importlib.import_module(module), function)


# --------------------------------------------------------------------------------------------- synthetic response
def synthetic_series(pristine_dir, photos: int | None, seed: int):
    """Yield (photo name, the 25 x 5 distorted images of it as HxWx3 uint8 arrays in type-major order) for the
    first `photos` pristine photos in a seeded order. Each image is a pure function of (seed, photo, type, level);
    distortions are applied at the photo's own size."""
    paths = find_images(pristine_dir)
    for index in np.random.default_rng(seed).permutation(len(paths))[:photos]:
        image = load_image_tensor(paths[index])[None]
        arrays = []
        for type_index, kind in enumerate(DISTORTION_TYPES):
            for level in range(1, NUM_LEVELS + 1):
                state = np.random.SeedSequence([seed, int(index), type_index, level]).generate_state(1)[0]
                distorted = distort(image, kind, level, generator=torch.Generator().manual_seed(int(state)))[0]
                arrays.append((distorted.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        yield paths[index].name, arrays


def synthetic_response(scores: np.ndarray) -> dict:
    """`scores` (photos, types, levels) -> per type: mean Spearman(level, score), % series falling at every level."""
    levels = np.arange(1, scores.shape[2] + 1)
    rho = np.zeros(scores.shape[:2])
    for p in range(scores.shape[0]):
        for t in range(scores.shape[1]):
            if np.ptp(scores[p, t]) > 0:
                rho[p, t] = stats.spearmanr(levels, scores[p, t])[0]
    falling = (np.diff(scores, axis=2) < 0).all(axis=2)
    rows = {kind: {"spearman": float(rho[:, t].mean()), "falling_pct": float(100 * falling[:, t].mean())}
            for t, kind in enumerate(DISTORTION_TYPES)}
    rows["mean"] = {"spearman": float(rho.mean()), "falling_pct": float(100 * falling.mean())}
    return rows


def synthetic_table(score, pristine_dir, photos, seed) -> dict:
    names, scores = [], []
    for name, arrays in synthetic_series(pristine_dir, photos, seed):
        names.append(name)
        scores.append(score(arrays).reshape(len(DISTORTION_TYPES), NUM_LEVELS))
    scores = np.stack(scores)
    return {"rows": synthetic_response(scores), "photos": names, "scores": scores.round(6).tolist()}


# ----------------------------------------------------------------------------------------------------- printing
def markdown(title: str, rows: dict, columns: tuple[str, ...]) -> str:
    lines = [f"### {title}", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c])) if c in row else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", choices=["official", "loso", "synthetic"],
                        default=["official", "synthetic"])
    parser.add_argument("--model", default=str(metaqap_hf.DEFAULT_MODEL_PATH),
                        help="checkpoint for the official and synthetic tables (default: the bundled model)")
    parser.add_argument("--data-dir", help="BIQ2021 in its official layout (official and loso tables)")
    parser.add_argument("--pristine-dir", help="pristine photos (synthetic table)")
    parser.add_argument("--photos", type=int, default=40, help="pristine photos in the synthetic table")
    parser.add_argument("--limit", type=int, help="official table: about this many test images, spread evenly")
    parser.add_argument("--recipe", default="frozen", help=f"loso: {sorted(RECIPES)} or package.module:function")
    parser.add_argument("--backbones", default="lite", help="loso recipes: a preset of metaqap_hf.factory")
    parser.add_argument("--backbones-from", help="loso recipes: start the backbones from this saved model (e.g. "
                                                 "`metaqap pretrain`'s final/) instead of ImageNet")
    parser.add_argument("--image-size", type=int, help="loso recipes: every backbone's input size (frozen: the "
                                                       "preset's; finetune: the processor's, 512)")
    parser.add_argument("--epochs", type=int, default=10, help="finetune recipe: passes over the training images")
    parser.add_argument("--train-limit", type=int, help="loso: at most this many training images per fold")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="loso: carved from training images")
    parser.add_argument("--work-dir", default="runs/generalization", help="loso: one checkpoint per fold")
    parser.add_argument("--feature-cache", help="loso: frozen features, shared by the folds")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="generalization.json")
    args = parser.parse_args()
    if {"official", "loso"} & set(args.tables) and not args.data_dir:
        parser.error("the official and loso tables need --data-dir")
    if "synthetic" in args.tables and not args.pristine_dir:
        parser.error("the synthetic table needs --pristine-dir")

    report = {"model": args.model, "dtype": args.dtype, "seed": args.seed, "threads": torch.get_num_threads()}
    output = Path(args.output)
    needs_model = {"official", "synthetic"} & set(args.tables)
    score = make_scorer(args.model, args.dtype, args.batch_size) if needs_model else None  # one model, both tables
    for table in args.tables:
        started = time.time()
        if table == "official":
            result = official_table(score, args.data_dir, args.limit)
            print(markdown("BIQ2021 official test (PLCC raw)", result["rows"], ("srocc", "plcc", "krocc", "n")))
        elif table == "loso":
            result = loso_table(resolve_recipe(args.recipe), args)
            result["recipe"] = {"name": args.recipe, "backbones": args.backbones, "image_size": args.image_size,
                                "train_limit": args.train_limit, "backbones_from": args.backbones_from}
            print(markdown(f"Leave one subset out ({args.recipe} recipe, backbones {args.backbones})",
                           result["rows"], ("srocc", "plcc", "krocc", "n", "n_train")))
        else:
            result = synthetic_table(score, args.pristine_dir, args.photos, args.seed)
            print(markdown(f"Synthetic response ({len(result['photos'])} pristine photos x "
                           f"{len(DISTORTION_TYPES)} types x {NUM_LEVELS} levels)",
                           result["rows"], ("spearman", "falling_pct")))
        result["wall_s"] = round(time.time() - started, 1)
        print(f"\n({table}: {result['wall_s']:.0f} s)\n", flush=True)
        report[table] = result
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")  # after every table, so a long run keeps its parts


if __name__ == "__main__":
    main()
