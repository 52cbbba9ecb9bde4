r"""How well the fault head says what is wrong with a photo: tables on stdout (markdown), everything in JSON, and a
contact sheet (PNG) of the lowest-scored BIQ2021 ss02 photos with their diagnosis, for a person to judge.

1. synthetic - the held-out pristine photos (every `holdout_every`-th, which `metaqap train-faults` never read),
               each distortion type at each level: top-1 and top-2 family accuracy per level and per family, the
               family confusion matrix, and how often "none" is said of the undistorted photos. A family's
               probability is the sum of its classes' probabilities.
2. real      - BIQ2021 photos (the sample's train and test images; ss02 shot with deliberate ISO, focus, motion and
               exposure errors, ss01/ss03 mostly well taken): no per-fault labels exist, so the table is the share
               of photos whose most probable family is each family, per subset; plus the contact sheet.

Every diagnosis comes from `pipeline("image-quality", top_k_faults=...)` on the file or on the distorted image (the
same rendering as training: `metaqap_hf.training.faults.render_sample`), i.e. blind, as a user gets it.

    python benchmarks/diagnosis.py --pristine-dir ../shared/data/pristine \
        --data-dir ../shared/data/biq2021-sample --photos-per-condition 8 --dtype bfloat16 \
        --output benchmarks/results/diagnosis-metaqap-lite-biq2021.json \
        --contact-sheet runs/diagnosis-ss02-lowest.png
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from transformers import pipeline

import metaqap_hf
from metaqap_hf.data import load_biq2021
from metaqap_hf.data.images import image_column
from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS
from metaqap_hf.distortions.families import NO_FAULT
from metaqap_hf.image_utils import load_image
from metaqap_hf.training.faults import REPORT_FILE, FaultRecipe, FaultSample, render_sample, split_pristine

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SUBSETS = ("ss01", "ss02", "ss03")


class Diagnoser:
    """The checkpoint's pipeline with every fault class's probability, and its families."""

    def __init__(self, model: str, dtype: str, batch_size: int):
        self.pipe = pipeline("image-quality", model=model, dtype=DTYPES[dtype], batch_size=batch_size)
        head = self.pipe.model.config.fault_head
        if head is None:
            raise SystemExit(f"{model} has no fault head: nothing to benchmark")
        self.labels = head["labels"]
        self.families = list(dict.fromkeys(head["families"]))
        self.family_of = dict(zip(head["labels"], head["families"]))
        self.family_of_type = dict(zip(head["types"], head["families"]))

    def __call__(self, images: list) -> tuple[np.ndarray, list[dict]]:
        """(family probabilities (N, families), pipeline results) of `images`."""
        results = self.pipe(images, top_k_faults=len(self.labels))
        probabilities = np.zeros((len(results), len(self.families)))
        for row, result in zip(probabilities, results):
            for fault in result["faults"]:
                row[self.families.index(self.family_of[fault["label"]])] += fault["score"]
        return probabilities, results


def held_out_photos(model: str, pristine_dirs: list[str], every: int) -> list[str]:
    """The pristine photos the fault head never saw; checked against the training report when the checkpoint has
    one (the same photos, or the benchmark refuses)."""
    _, held_out = split_pristine(pristine_dirs, every)
    report_file = Path(model) / REPORT_FILE
    if report_file.is_file():
        trained_held_out = {Path(path).name for path in json.loads(report_file.read_text())["pristine"]["held_out"]}
        if {Path(path).name for path in held_out} != trained_held_out:
            raise SystemExit(f"these held-out photos differ from those in {report_file}: give the same "
                             "--pristine-dir and --holdout-every as training")
    return held_out


def synthetic_table(diagnoser: Diagnoser, photos: list[str], per_condition: int, seed: int,
                    batch: int = 32) -> dict:
    rng = np.random.default_rng(seed)
    conditions = [(kind, level) for kind in DISTORTION_TYPES for level in range(1, NUM_LEVELS + 1)]
    per_condition = min(per_condition, len(photos))
    samples = [FaultSample(photo, NO_FAULT, 0, 0, 0) for photo in photos]
    for number, (kind, level) in enumerate(conditions):  # photos rotate over conditions: each used equally often
        for offset in range(per_condition):
            photo = photos[(number * per_condition + offset) % len(photos)]
            samples.append(FaultSample(photo, kind, level, int(rng.integers(2**62)), 0))
    families = diagnoser.families
    truth, probabilities = [], []
    started = time.time()
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        probabilities.append(diagnoser([render_sample(sample) for sample in chunk])[0])
        truth += [families.index(diagnoser.family_of_type[sample.kind]) for sample in chunk]
        print(f"  synthetic: {start + len(chunk)}/{len(samples)} images, {time.time() - started:.0f} s", flush=True)
    probabilities, truth = np.concatenate(probabilities), np.array(truth)
    ranked = np.argsort(-probabilities, axis=1)
    top1, top2 = ranked[:, 0] == truth, (ranked[:, :2] == truth[:, None]).any(1)
    levels = np.array([s.level for s in samples])
    kinds = np.array([s.kind for s in samples])

    def accuracy(mask: np.ndarray) -> dict:
        return {"top1": float(top1[mask].mean()), "top2": float(top2[mask].mean()), "n": int(mask.sum())}

    distorted = levels > 0
    confusion = np.zeros((len(families), len(families)), dtype=int)
    for true, predicted in zip(truth, ranked[:, 0]):
        confusion[true, predicted] += 1
    return {
        "photos": [Path(photo).name for photo in photos],
        "photos_per_condition": per_condition,
        "none_rate_on_undistorted": float((ranked[~distorted, 0] == families.index(NO_FAULT)).mean()),
        "undistorted_n": int((~distorted).sum()),
        "by_level": {str(level): accuracy(levels == level) for level in range(1, NUM_LEVELS + 1)},
        "levels_3_to_5": accuracy(levels >= 3),
        "levels_1_to_2": accuracy(distorted & (levels <= 2)),
        "by_family": {family: {level_name: accuracy(distorted & (truth == families.index(family)) & mask)
                               for level_name, mask in (("levels 1-2", levels <= 2), ("levels 3-5", levels >= 3))}
                      for family in families if family != NO_FAULT},
        "by_type_levels_3_to_5": {kind: accuracy((kinds == kind) & (levels >= 3)) for kind in DISTORTION_TYPES},
        "confusion": {"families": families, "rows_true_columns_predicted": confusion.tolist()},
    }


def real_table(diagnoser: Diagnoser, data_dir: str, batch: int = 32) -> tuple[dict, list[dict]]:
    dataset = load_biq2021(data_dir, validation_fraction=0.0)
    rows = []
    for split in dataset.values():
        for image, name in zip(image_column(split), split["image_name"][:]):
            rows.append({"path": image.get("path") if isinstance(image, dict) else str(image),
                         "subset": re.match(r"\s*(ss0\d)", name.casefold()).group(1)})
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        probabilities, results = diagnoser([row["path"] for row in chunk])
        for row, family_probabilities, result in zip(chunk, probabilities, results):
            row.update(score=result["score"], family=diagnoser.families[int(family_probabilities.argmax())],
                       faults=result["faults"][:2])
        print(f"  real: {start + len(chunk)}/{len(rows)} photos", flush=True)
    table = {}
    for subset in SUBSETS:
        members = [row for row in rows if row["subset"] == subset]
        table[subset] = {"n": len(members), **{family: sum(row["family"] == family for row in members) / len(members)
                                                for family in diagnoser.families}}
    return table, rows


def contact_sheet(rows: list[dict], output: Path, count: int = 24, columns: int = 6, thumb: int = 160) -> None:
    lowest = sorted((row for row in rows if row["subset"] == "ss02"), key=lambda row: row["score"])[:count]
    caption = 42
    sheet = Image.new("RGB", (columns * (thumb + 4), -(-len(lowest) // columns) * (thumb + caption + 4)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for number, row in enumerate(lowest):
        left, top = (number % columns) * (thumb + 4), (number // columns) * (thumb + caption + 4)
        image = load_image(row["path"])
        image.thumbnail((thumb, thumb))
        sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
        lines = [f"{Path(row['path']).name}  score {row['score']:.2f}",
                 *(f"{fault['label']} {fault['score']:.2f}" for fault in row["faults"])]
        for line_number, line in enumerate(lines):
            draw.text((left + 2, top + thumb + 2 + 13 * line_number), line, fill="black", font=font)
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output, optimize=True)  # true colour: a palette would add the banding a person is asked to judge


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else ())
             if line.startswith("model name")]
    return f"{names[0]}, {len(names)} cores" if names else platform.processor() or platform.machine()


def markdown(synthetic: dict, real: dict, families: list[str]) -> str:
    lines = ["## Held-out pristine photos, family accuracy", "", "| levels | top-1 | top-2 | n |", "|---|---|---|---|"]
    for name, row in [*synthetic["by_level"].items(), ("3-5", synthetic["levels_3_to_5"]),
                      ("1-2", synthetic["levels_1_to_2"])]:
        lines.append(f"| {name} | {row['top1']:.3f} | {row['top2']:.3f} | {row['n']} |")
    lines += ["", f"'none' said of undistorted photos: {synthetic['none_rate_on_undistorted']:.3f} "
                  f"(n={synthetic['undistorted_n']})", "",
              "| family | top-1 levels 1-2 | top-1 levels 3-5 | top-2 levels 3-5 |", "|---|---|---|---|"]
    for family, row in synthetic["by_family"].items():
        lines.append(f"| {family} | {row['levels 1-2']['top1']:.3f} | {row['levels 3-5']['top1']:.3f} | "
                     f"{row['levels 3-5']['top2']:.3f} |")
    confusion = synthetic["confusion"]
    lines += ["", "Confusion (rows: true family, columns: predicted; all levels and the undistorted photos)", "",
              "| true \\ predicted | " + " | ".join(confusion["families"]) + " |",
              "|---" * (len(confusion["families"]) + 1) + "|"]
    for family, row in zip(confusion["families"], confusion["rows_true_columns_predicted"]):
        lines.append(f"| {family} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## BIQ2021 photos: share whose most probable family is ...", "",
              "| subset | n | " + " | ".join(families) + " |", "|---" * (len(families) + 2) + "|"]
    for subset, row in real.items():
        lines.append(f"| {subset} | {row['n']} | " + " | ".join(f"{row[f]:.2f}" for f in families) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(metaqap_hf.DEFAULT_MODEL_PATH))
    parser.add_argument("--pristine-dir", action="append", required=True)
    parser.add_argument("--holdout-every", type=int, default=FaultRecipe.holdout_every)
    parser.add_argument("--photos-per-condition", type=int, default=1000,
                        help="held-out photos per (type, level) (default: all of them)")
    parser.add_argument("--data-dir", help="BIQ2021 folder (official layout) for the real-photo table")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="JSON results (a .md with the tables is written beside it)")
    parser.add_argument("--contact-sheet", type=Path, help="PNG of the 24 lowest-scored ss02 photos")
    args = parser.parse_args()

    started = time.time()
    diagnoser = Diagnoser(args.model, args.dtype, args.batch_size)
    photos = held_out_photos(args.model, args.pristine_dir, args.holdout_every)
    synthetic = synthetic_table(diagnoser, photos, args.photos_per_condition, args.seed)
    real, rows = real_table(diagnoser, args.data_dir) if args.data_dir else ({}, [])
    text = markdown(synthetic, real, diagnoser.families)
    print(text)
    if args.contact_sheet and rows:
        contact_sheet(rows, args.contact_sheet)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "model": args.model, "dtype": args.dtype, "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "wall_time_s": round(time.time() - started),
            "synthetic": synthetic, "real": real,
            "ss02_lowest_24": [{"image": Path(row["path"]).name, "score": row["score"], "faults": row["faults"]}
                               for row in sorted((r for r in rows if r["subset"] == "ss02"),
                                                 key=lambda r: r["score"])[:24]],
        }, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
