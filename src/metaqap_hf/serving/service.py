"""`ScoringService`: a MetaQAP checkpoint behind a queue, independent of any web framework. Requests hand it encoded
images; it decodes them on a few threads with the library's decoder (`load_image` through `prepare_pixels`, as
`metaqap score` does), batches the decoded images of concurrent requests (`DynamicBatcher`) for `ImageScorer`'s batch
step, and answers each request with `quality_results`' dicts (the same out-of-range policy as the pipeline).

Its limits protect the process: a bounded number of requests in flight (more are refused with `RequestRejected`,
503 and Retry-After), a pixel count checked on the image header before anything is decoded, and `stop()` that
scores everything accepted before it returns.
"""

from __future__ import annotations

import asyncio
import functools
import contextlib
import io
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from PIL import Image

from ..errors import OptionError
from ..image_utils import ImageLoadError
from ..pipeline_image_quality import DEFAULT_TOP_K_FAULTS
from ..scoring.inputs import ImageInput
from ..scoring.options import MAX_BATCH_SIZE
from ..scoring.scorer import ImageScorer, prepare_pixels
from .batcher import DynamicBatcher
from .metrics import ServiceMetrics

__all__ = ["RequestRejected", "ScoringService", "ServiceLimits"]


@dataclass(frozen=True)
class ServiceLimits:
    """How a service batches and what it accepts. `max_batch` images per forward pass, gathered for at most
    `max_wait_ms` after the first; `max_queue` requests in flight (accepted, not yet answered) before new ones get
    503; `max_body_bytes` per request body; `max_files` per multipart request; `max_pixels` per image (read from its
    header before decoding); `timeout` seconds from a request's arrival to its answer; `decode_threads` decoding
    at once; `retry_after` the seconds a refused client is told to wait."""

    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_body_bytes: int = 32 * 1024 * 1024
    max_files: int = 64
    max_pixels: int = 64_000_000
    timeout: float = 30.0
    decode_threads: int = 2
    retry_after: int = 1

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":  # whole numbers, at least 1
                valid, accepted = isinstance(value, int) and value >= 1, "a whole number, at least 1"
            elif field.name == "max_wait_ms":
                valid, accepted = isinstance(value, (int, float)) and 0 <= value < math.inf, "a number of ms, 0 or more"
            else:
                valid, accepted = isinstance(value, (int, float)) and 0 < value < math.inf, "a positive number"
            if isinstance(value, bool) or not valid:
                raise OptionError(field.name, value, f"must be {accepted}")
        if self.max_batch > MAX_BATCH_SIZE:
            raise OptionError("max_batch", self.max_batch, f"must be at most {MAX_BATCH_SIZE}")


class RequestRejected(Exception):
    """A request the service will not score: `status` (HTTP), `message` (for the client), `reason` (the
    rejections counter's label) and `retry_after` (seconds, for 503s)."""

    def __init__(self, status: int, message: str, *, reason: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.reason, self.retry_after = status, message, reason, retry_after


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header alone, or None when PIL cannot tell (the decoder then names the
    problem)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Exception:  # anything unreadable is load_image's to report, with its reason
        return None


class ScoringService:
    """A checkpoint (`model`: a folder or hub id, default the bundled model) on `device` in `dtype` (``"auto"``:
    bfloat16 where the hardware has it natively, see `metaqap_hf.devices`), scoring encoded images in dynamic
    batches within `limits`. Call `start()` and `stop()` in the event loop that calls `score_images`.

        >>> service = ScoringService(limits=ServiceLimits(max_batch=8))
        >>> await service.start()
        >>> await service.score_images([("a.jpg", open("a.jpg", "rb").read())])
        [{'name': 'a.jpg', 'score': 0.63, 'raw_score': 0.63, 'base_scores': {...}, 'std': 0.02}]
    """

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
                 limits: ServiceLimits | None = None):
        self.limits = limits if limits is not None else ServiceLimits()
        self.scorer = ImageScorer(model, device=device, dtype=dtype)
        self.metrics = ServiceMetrics()
        # A model with a fault head computes faults for every batch (the head is a few thousand multiply-adds per
        # image), so requests that ask for them and requests that do not share batches; `score_images` drops them
        # from the results of requests that did not ask.
        self.has_fault_head = self.scorer.config.fault_head is not None
        self.gives_faults = self.has_fault_head and self.scorer.runtime == "torch"  # ONNX Runtime runs scores only
        top_k_faults = DEFAULT_TOP_K_FAULTS if self.gives_faults else None
        self.batcher = DynamicBatcher(functools.partial(self.scorer.score_pixels, top_k_faults=top_k_faults),
                                      max_batch=self.limits.max_batch,
                                      max_wait=self.limits.max_wait_ms / 1000, on_batch=self.metrics.batch_scored)
        self.ready = False
        self.draining = False
        self._decoders: ThreadPoolExecutor | None = None

    @property
    def description(self) -> dict[str, Any]:
        return {"model": self.scorer.model_path, "device": str(self.scorer.device),
                "dtype": str(self.scorer.dtype).removeprefix("torch."), "mos_range": list(self.scorer.config.mos_range),
                "mos_name": getattr(self.scorer.config, "mos_name", None)}

    async def start(self) -> None:
        self._decoders = ThreadPoolExecutor(self.limits.decode_threads, thread_name_prefix="metaqap-decode")
        self.batcher.start()
        self.draining, self.ready = False, True

    def drain(self) -> None:
        """Refuse new requests (503) from now on; those accepted are still scored. Called on SIGTERM."""
        self.draining, self.ready = True, False

    async def stop(self) -> None:
        """Score every accepted image, then release the threads."""
        self.drain()
        await self.batcher.stop()
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)

    @contextlib.contextmanager
    def admission(self):
        """Holds a place in the queue for one request, or raises `RequestRejected` (503) when the service is
        full or shutting down."""
        if self.draining or not self.ready:
            self.metrics.rejected("shutting_down" if self.draining else "starting")
            raise RequestRejected(503, "the service is shutting down" if self.draining else "the service is starting",
                                  reason="unavailable", retry_after=self.limits.retry_after)
        if self.metrics.requests_in_flight >= self.limits.max_queue:
            self.metrics.rejected("queue_full")
            raise RequestRejected(503, f"the service is busy ({self.limits.max_queue} requests waiting); retry later",
                                  reason="queue_full", retry_after=self.limits.retry_after)
        self.metrics.requests_in_flight += 1
        try:
            yield
        finally:
            self.metrics.requests_in_flight -= 1

    def _prepare(self, name: str, data: bytes):
        """(pixels, None) or (None, why this image cannot be scored)."""
        size = _header_size(data)
        if size is not None and size[0] * size[1] > self.limits.max_pixels:
            return None, (f"image of {size[0]}x{size[1]} pixels is over this service's limit of "
                          f"{self.limits.max_pixels} pixels")
        try:
            return prepare_pixels(ImageInput(name, data), self.scorer.processor, self.scorer.input_size), None
        except ImageLoadError as error:
            return None, error.reason

    async def score_images(self, images: list[tuple[str, bytes]], *, faults: bool = False) -> list[dict[str, Any]]:
        """One result per (name, encoded bytes), in order: `{"name", "score", "raw_score", "base_scores", "std"}`
        as `pipeline("image-quality")` gives them, or `{"name", "error"}` saying why that image was skipped.
        With `faults`, each result also has `"faults"`: the `DEFAULT_TOP_K_FAULTS` most probable faults, as
        `pipeline("image-quality", faults=True)` gives them (a model without a fault head refuses it)."""
        if faults and not self.has_fault_head:
            raise OptionError("faults", True, "this model has no fault head, so it gives no faults output")
        if faults and not self.gives_faults:
            raise OptionError("faults", True, f"the {self.scorer.runtime} runtime gives no faults output; serve with "
                                              "runtime torch")
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(loop.run_in_executor(self._decoders, self._prepare, name, data)
                                          for name, data in images))
        scores = iter(await asyncio.gather(*(self.batcher.submit(pixels) for pixels, _ in prepared
                                             if pixels is not None)))
        results = [{"name": name, **next(scores)} if pixels is not None else {"name": name, "error": reason}
                   for (name, _), (pixels, reason) in zip(images, prepared)]
        if not faults:
            for result in results:
                result.pop("faults", None)
        skipped = sum(pixels is None for pixels, _ in prepared)
        self.metrics.images_done(len(images) - skipped, skipped)
        return results

    def render_metrics(self) -> str:
        self.metrics.images_queued = self.batcher.waiting
        return self.metrics.render()
