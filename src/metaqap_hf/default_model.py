"""Where the default model lives: it ships inside the package, so scoring works offline right after `pip install`.
At the ground floor (nothing of ours imported), so every room that falls back to it imports it from here."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_MODEL_PATH"]

DEFAULT_MODEL_NAME = "metaqap-lite-biq2021"
DEFAULT_MODEL_PATH = Path(__file__).parent / "checkpoints" / DEFAULT_MODEL_NAME
