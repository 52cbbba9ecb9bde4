"""Seeded, reproducible hold-out splits for benchmarks without an official one.

The field's protocol for such benchmarks is ten random 80/20 train/test splits, reported as the median; for
synthetic datasets the split is drawn over reference images, so that no reference content is in both parts.
A validation split is always carved from the train part, never from test.

Rows are sorted by their group (or name) before shuffling, so a split depends only on the label contents and
the seed, not on file-system or label-file order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

__all__ = [
    "NUM_PROTOCOL_SPLITS",
    "PROTOCOL_TEST_FRACTION",
    "VALIDATION_FRACTION",
    "hold_out",
    "protocol_split",
    "train_validation_test",
]

NUM_PROTOCOL_SPLITS = 10
PROTOCOL_TEST_FRACTION = 0.2
# The share of the training images held out as validation by the training and evaluation functions, where a
# dataset has no validation split of its own.
VALIDATION_FRACTION = 0.1

Row = TypeVar("Row")


def hold_out(
    rows: Sequence[Row], fraction: float, seed: int, *, group_of: Callable[[Row], str]
) -> tuple[list[Row], list[Row]]:
    """Split ``rows`` into ``(kept, held_out)``, holding out ``fraction`` of the groups chosen at random.

    ``group_of`` gives each row's group (its own name when rows are independent); a group is never split. The
    number held out is ``round(fraction * number of groups)``, at least one and at most all but one when
    ``fraction`` is positive. Both lists keep the order of ``rows``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"A hold-out fraction must lie in [0, 1); got {fraction}.")
    if fraction == 0.0:
        return list(rows), []
    groups = sorted({group_of(row) for row in rows})
    if len(groups) < 2:
        raise ValueError(f"Cannot hold out a fraction of {len(groups)} group(s); at least 2 are needed.")
    count = min(max(round(fraction * len(groups)), 1), len(groups) - 1)
    order = np.random.default_rng(seed).permutation(len(groups))
    held_groups = {groups[index] for index in order[:count]}
    kept = [row for row in rows if group_of(row) not in held_groups]
    held = [row for row in rows if group_of(row) in held_groups]
    return kept, held


def protocol_split(
    rows: Sequence[Row], split_index: int, *, group_of: Callable[[Row], str]
) -> tuple[list[Row], list[Row]]:
    """Split number ``split_index`` of the 80/20 protocol: ``(train, test)``, seeded by ``split_index``.

    The protocol reports ``NUM_PROTOCOL_SPLITS`` splits (indices 0-9); any other non-negative index gives a
    further, equally valid split.
    """
    if split_index < 0:
        raise ValueError(f"split_index must be non-negative; got {split_index}.")
    return hold_out(rows, PROTOCOL_TEST_FRACTION, split_index, group_of=group_of)


def train_validation_test(
    train: Sequence[Row], test: Sequence[Row], validation_fraction: float, seed: int, *, group_of: Callable[[Row], str]
) -> dict[str, list[Row]]:
    """The ``train``/``validation``/``test`` splits, validation carved from ``train`` (none when the fraction is 0)."""
    kept, validation = hold_out(train, validation_fraction, seed, group_of=group_of)
    splits = {"train": kept}
    if validation:
        splits["validation"] = validation
    splits["test"] = list(test)
    return splits
