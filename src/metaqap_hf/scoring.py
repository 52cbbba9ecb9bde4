"""Scoring many image files: walk folders, decode and process each image, score in batches, and report every input
that could not be scored with the reason, without stopping. The library behind `metaqap score`, so a Python user
gets exactly the command's behaviour.

    >>> from metaqap_hf.scoring import ImageScorer
    >>> scorer = ImageScorer()                        # the bundled default model; or ImageScorer("path/or/hub-id")
    >>> for item in scorer.score_files(["photos/"]):  # results in input order, as they come
    ...     print(item.path, item.score if item.ok else item.reason)

Each image is decoded and resized to the processor's input size before the next is decoded, so memory holds a
batch of processed images, never a batch of full-resolution photos.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from .files import walk_files
from .image_processing_metaqap import ImageLoadError, MetaQAPImageProcessor, load_image

__all__ = ["ImageScorer", "ScoredImage"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class ScoredImage:
    """One input's outcome: a score (with the base models' scores and their spread), or why it was skipped."""

    path: str
    score: float | None = None
    base_scores: dict[str, float] = field(default_factory=dict)
    std: float | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class ImageScorer:
    """A MetaQAP checkpoint ready to score files on `device` with its weights in `dtype` (``"float32"`` or
    ``"bfloat16"``, much faster on CPUs with AVX512-BF16 and on GPUs), as `pipeline(..., dtype=...)` runs it."""

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "cpu", dtype: str = "float32"):
        from . import DEFAULT_MODEL_PATH
        from .modeling_metaqap import MetaQAPModel

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.model_path = str(model if model is not None else DEFAULT_MODEL_PATH)
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.model = MetaQAPModel.from_pretrained(self.model_path).eval().to(self.device, self.dtype)
        self.processor = MetaQAPImageProcessor.from_pretrained(self.model_path)
        self.config = self.model.config

    def score_files(self, paths: Iterable[str | os.PathLike], *, batch_size: int = 8) -> Iterator[ScoredImage]:
        """Score every file under `paths` (files, or folders walked recursively), yielding one `ScoredImage` per
        input in input order; arguments that do not exist and files that are not readable images come out
        skipped, with the reason."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        walk = walk_files(paths)
        for path, reason in walk.problems:
            yield ScoredImage(path, reason=reason)
        pending: list[tuple[str, torch.Tensor | None, str | None]] = []
        for path in walk.files:
            try:
                pixels = self.processor(images=load_image(path), return_tensors="pt")["pixel_values"][0]
                pending.append((str(path), pixels, None))
            except ImageLoadError as error:
                pending.append((str(path), None, error.reason))
            if sum(pixels is not None for _, pixels, _ in pending) == batch_size:
                yield from self._score_pending(pending)
                pending = []
        yield from self._score_pending(pending)

    @torch.inference_mode()
    def _score_pending(self, pending: list[tuple[str, torch.Tensor | None, str | None]]) -> Iterator[ScoredImage]:
        batch = [pixels for _, pixels, _ in pending if pixels is not None]
        outputs = iter(())
        if batch:
            output = self.model(pixel_values=torch.stack(batch).to(self.device))
            outputs = zip(output.score.float().tolist(), output.base_scores.float().tolist(),
                          output.std.float().tolist())
        for path, pixels, reason in pending:
            if pixels is None:
                yield ScoredImage(path, reason=reason)
                continue
            score, bases, std = next(outputs)
            yield ScoredImage(path, score, dict(zip(self.config.backbone_ids, bases)), std)
