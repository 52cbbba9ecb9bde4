"""The limits of the scoring counts; `OptionError` (defined in `metaqap_hf.errors`) is re-exported here."""

from __future__ import annotations

import os

from ..errors import OptionError

__all__ = ["MAX_BATCH_SIZE", "MAX_NUM_WORKERS", "OptionError", "check_counts"]

MAX_BATCH_SIZE = 1024  # images wait for a batch resized (3 MB each at 512x512 in float32): a bound on memory
MAX_NUM_WORKERS = 4 * (os.cpu_count() or 1)  # each decoding process holds a full-resolution image at most


def _check_count(option: str, value: object, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise OptionError(option, value, f"must be a whole number from {minimum} to {maximum}")
    return value


def check_counts(batch_size: object, num_workers: object) -> tuple[int, int]:
    """`batch_size` (1 to `MAX_BATCH_SIZE`) and `num_workers` (0 to `MAX_NUM_WORKERS`), or an `OptionError`."""
    return (_check_count("batch_size", batch_size, 1, MAX_BATCH_SIZE),
            _check_count("num_workers", num_workers, 0, MAX_NUM_WORKERS))
