"""Small generated datasets for tests: BIQ2021's official layout, and tables of your own images and scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

BIQ2021_LABELS = {"train": "Train (Images and MOS).csv", "test": "Test (Images and MOS).csv"}


def write_photos(folder: Path, names: list[str], *, size: int = 32, seed: int = 0) -> list[float]:
    """Noisy flat photos saved under `names` in `folder`; returns each one's brightness on 0-1, which its quality
    label follows (something a tiny model can learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    brightness = []
    for name in names:
        level = float(rng.uniform(0.1, 0.9))
        pixels = np.clip(rng.normal(level * 255, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
        brightness.append(level)
    return brightness


def write_biq2021_layout(root: Path, *, train: int = 24, test: int = 8, size: int = 48,
                         subsets: tuple[str, ...] | None = None) -> Path:
    """BIQ2021's official layout (``Images/`` and the two label CSVs): JPEGs whose MOS (0-1) is their brightness.
    Train images are named after subset ss01 and test images after ss02, or both splits cycle through `subsets`."""
    def subset(split: str, index: int) -> str:
        return subsets[index % len(subsets)] if subsets else {"train": "ss01", "test": "ss02"}[split]

    first = {"train": 1, "test": train + 1 if subsets else 1}  # names stay unique across the two splits
    names = {split: [f"{subset(split, i)} ({first[split] + i}).jpg" for i in range(count)]
             for split, count in (("train", train), ("test", test))}
    for seed, (split, split_names) in enumerate(names.items()):
        levels = write_photos(root / "Images", split_names, size=size, seed=seed)
        rows = [f"{name},{level:.4f}" for name, level in zip(split_names, levels)]
        (root / BIQ2021_LABELS[split]).write_text("\n".join(["Image Name,MOS", *rows]) + "\n")
    return root


def write_score_table(path: Path, rows: list[dict]) -> Path:
    """A table of your own data: CSV (header from the first row) or JSONL, by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def write_own_dataset(folder: Path, *, count: int = 30, test: int = 6, suffix: str = ".csv", split: bool = True,
                      size: int = 32) -> Path:
    """`count` photos under ``folder/photos`` and a table ``folder/scores<suffix>`` of their scores on 1-5 (image
    paths relative to the table); the last `test` rows are the test split when `split`, else there is no split
    column."""
    names = [f"photo_{index:02d}.png" for index in range(count)]
    levels = write_photos(folder / "photos", names, size=size)
    rows = []
    for index, (name, level) in enumerate(zip(names, levels)):
        row = {"image": f"photos/{name}", "mos": round(1 + 4 * level, 4)}
        if split:
            row["split"] = "test" if index >= count - test else "train"
        rows.append(row)
    return write_score_table(folder / f"scores{suffix}", rows)
