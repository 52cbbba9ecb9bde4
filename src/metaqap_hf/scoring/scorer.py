"""`ImageScorer`: a MetaQAP checkpoint that scores a stream of inputs in batches, in input order, decoding either in
this process or in worker processes that work ahead through a bounded queue.

Memory: each image is decoded (large ones at a reduced size, see `load_image`) and resized to the processor's
input size before it joins a batch, so a batch holds `batch_size` small uint8 images whatever the photos' size; the
decoding processes hold one image each and at most `batch_size + 2 * num_workers` resized images wait for the model.
"""

from __future__ import annotations

import json
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from .. import devices
from ..default_model import DEFAULT_MODEL_PATH
from ..deprecation import moved_names
from ..image_processing_metaqap import MetaQAPImageProcessor
from ..image_utils import ImageLoadError, load_image, processor_input_size, rescale_pixels, resize_pixels
from ..onnx_runtime import OnnxRuntimeModel, resolve_runtime
from ..pipeline_image_quality import check_top_k_faults, quality_results
from .inputs import ImageInput, ImageInputs
from .options import OptionError, check_counts

__all__ = ["ImageScorer", "ScoredImage", "prepare_pixels"]

# Moved to metaqap_hf.devices in 0.2.0.
__getattr__ = moved_names(__name__, {"DTYPES": "..devices", "resolve_device": "..devices"})

_WORKER_DIED = "the decoding process died (a crash or out of memory) while decoding this file"


@dataclass
class ScoredImage:
    """One input's outcome: a score (clipped to the MOS range, with the unclipped `raw_score`, the base models'
    scores and their spread, and the most probable `faults` when asked), or why it was skipped."""

    path: str
    score: float | None = None
    raw_score: float | None = None
    base_scores: dict[str, float] = field(default_factory=dict)
    std: float | None = None
    reason: str | None = None
    faults: list[dict] | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", os.sep)) or name.count("/") > 1


def _load_checkpoint(model: str | os.PathLike | None):
    """(name, model, processor) of a MetaQAP checkpoint folder or hub id, or an `OptionError` that says what the
    folder is not."""
    from ..modeling_metaqap import MetaQAPModel

    name = str(model if model is not None else DEFAULT_MODEL_PATH)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OptionError("model", name, "is a file; give a checkpoint folder (config.json, model.safetensors, "
                                             "preprocessor_config.json) or a hub id")
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except FileNotFoundError:
            raise OptionError("model", name, "is not a model folder (it has no config.json)") from None
        except (OSError, ValueError, AttributeError) as error:
            raise OptionError("model", name, f"its config.json cannot be read ({error})") from None
        if model_type != "metaqap":
            raise OptionError("model", name, f"is a {model_type!r} checkpoint, not a MetaQAP one")
        name = str(path)
    elif _looks_like_path(name):
        raise OptionError("model", name, "no such folder (and not a hub id like 'owner/name')")
    progress_bars_were_on = transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()  # one bar for the whole run is the caller's to show
    transformers_logging.set_verbosity_error()  # the loading report: missing weights are an error below
    try:
        loaded, report = MetaQAPModel.from_pretrained(name, output_loading_info=True)
        processor = MetaQAPImageProcessor.from_pretrained(name)
    except Exception as error:  # missing or corrupt files, offline hub, wrong architecture: all "cannot load"
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OptionError("model", name, f"cannot load it ({type(error).__name__}: {message})") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
        if progress_bars_were_on:
            transformers_logging.enable_progress_bar()
    missing = sorted(report["missing_keys"])
    if missing:  # transformers would fill them with random values: scores would mean nothing
        raise OptionError("model", name, f"its weights lack {len(missing)} tensors ({', '.join(missing[:3])}"
                                         f"{', ...' if len(missing) > 3 else ''}); not a complete checkpoint")
    return name, loaded, processor


# ----------------------------------------------------------------------------------------------------- decoding
def prepare_pixels(item: ImageInput, processor, input_size: tuple[int, int] | None) -> torch.Tensor:
    """Decode one input and resize it (`image_utils.resize_pixels`): a uint8 (3, H, W) tensor, a quarter of the
    float's size to move between processes and devices. `score_pixels` rescales (`image_utils.rescale_pixels`):
    the steps `pipeline(...)` takes, so the values are the same."""
    return resize_pixels(load_image(item.source, reduce_for=input_size, name=item.key), processor)


_worker_state: tuple = ()


def _start_worker(processor, input_size) -> None:
    global _worker_state
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    _worker_state = (processor, input_size)


def _prepare(item: ImageInput, processor, input_size) -> tuple[torch.Tensor | None, str | None]:
    """(pixels, None), or (None, why the input cannot be scored)."""
    try:
        return prepare_pixels(item, processor, input_size), None
    except ImageLoadError as error:
        return None, error.reason


def _prepare_in_worker(item: ImageInput) -> tuple[torch.Tensor | None, str | None]:
    return _prepare(item, *_worker_state)


class _Decoder:
    """Decodes inputs in order, here or in `workers` processes with at most `ahead` inputs in flight. A worker
    that dies (a decoder crash, the kernel's out-of-memory killer) costs only the input it was decoding: the inputs
    then in flight are retried one at a time in a fresh pool to find it."""

    def __init__(self, processor, input_size, workers: int):
        self.processor, self.input_size, self.workers = processor, input_size, workers
        self.pool = None

    def __enter__(self):
        if self.workers:
            self._start()
        return self

    def __exit__(self, *exc_info):
        if self.pool is not None:
            self.pool.shutdown(wait=exc_info[0] is None, cancel_futures=True)

    def _start(self) -> None:
        self.pool = ProcessPoolExecutor(self.workers, initializer=_start_worker,
                                        initargs=(self.processor, self.input_size))

    def decode(self, items: Iterable[ImageInput], ahead: int) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        if self.pool is None:
            for item in items:
                yield (item.key, None, item.problem) if item.problem else (
                    item.key, *_prepare(item, self.processor, self.input_size))
            return
        queue: deque = deque()
        for item in items:
            queue.append((item, None if item.problem else self.pool.submit(_prepare_in_worker, item)))
            while len(queue) > ahead:
                yield from self._next(queue)
        while queue:
            yield from self._next(queue)

    def _next(self, queue: deque) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        item, future = queue.popleft()
        if future is None:
            yield item.key, None, item.problem
            return
        try:
            result = future.result()
        except BrokenProcessPool:
            in_flight = [item, *(entry for entry, _ in queue)]
            queue.clear()
            yield from self._retry_one_at_a_time(in_flight)
            return
        yield (item.key, *result)

    def _retry_one_at_a_time(self, items: list[ImageInput]) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._start()
        for item in items:
            if item.problem:
                yield item.key, None, item.problem
                continue
            try:
                result = self.pool.submit(_prepare_in_worker, item).result()
            except BrokenProcessPool:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self._start()
                result = (None, _WORKER_DIED)
            yield (item.key, *result)


# ------------------------------------------------------------------------------------------------------ scoring
class ImageScorer:
    """A MetaQAP checkpoint ready to score images on `device` (``"auto"``: a GPU when there is one) in `dtype`
    (``"auto"``: bfloat16 on GPUs and on CPUs that compute it natively, float32 elsewhere; or ``"float32"``,
    ``"bfloat16"``), by `runtime`: ``"torch"``; ``"onnx"``, ONNX Runtime on the CPU in float32 (the checkpoint is
    exported once into `cache_dir`, default ``$HF_HOME/metaqap/onnx``, and checked against PyTorch: see
    `metaqap_hf.onnx_runtime`); or ``"auto"``, ONNX Runtime where its export of this checkpoint is already cached
    (on the CPU, with the `onnx` extra, float32 or auto asked for), else PyTorch. `runtime` and `dtype` then say
    what was chosen. Scores are those `pipeline(...)` computes. With `top_k_faults`, each result also names the most
    probable faults (a checkpoint with a fault head; PyTorch runs it). `model` is a checkpoint folder or hub id
    (default: the bundled model). Bad values raise `OptionError` naming the option.

        >>> scorer = ImageScorer()
        >>> for item in scorer.score_files(["photos/"]):   # results in input order, as they come
        ...     print(item.path, item.score if item.ok else item.reason)
    """

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
                 runtime: str = "auto", cache_dir: str | os.PathLike | None = None, top_k_faults: int | None = None):
        self.device = devices.resolve_device(device)
        self.runtime = resolve_runtime(runtime, self.device, dtype)
        torch_dtype = devices.resolve_dtype(dtype, self.device)
        self.model_path, model_object, self.processor = _load_checkpoint(model)
        if top_k_faults is not None:
            try:
                check_top_k_faults(top_k_faults, model_object.config)
            except ValueError as error:
                raise OptionError("top_k_faults", top_k_faults, str(error)) from None
            if runtime == "onnx":
                raise OptionError("runtime", runtime, "the ONNX Runtime backend gives no faults; use runtime torch "
                                                      "(or auto) with top_k_faults")
            self.runtime = "torch"
        self.top_k_faults = top_k_faults
        runtime_model = None
        if self.runtime == "onnx":  # called as the model is: (pixel_values=...) -> score, base_scores, std
            runtime_model = OnnxRuntimeModel.from_model(model_object.eval().float(), self.processor,
                                                        cache_dir=cache_dir, export=runtime == "onnx")
        if runtime_model is None:
            self.runtime, self.dtype = "torch", torch_dtype
            self.model = model_object.eval().to(self.device, self.dtype)
        else:
            self.dtype, self.model = torch.float32, runtime_model
        self.config = self.model.config
        self.input_size = processor_input_size(self.processor)

    def score(self, inputs: Iterable[ImageInput | str | os.PathLike], *, batch_size: int = 8,
              num_workers: int = 0) -> Iterator[ScoredImage]:
        """Score `inputs` (`ImageInput`s, e.g. from `ImageInputs`, or image file paths), yielding one `ScoredImage`
        per input in input order, each batch's as soon as it is scored. `num_workers` processes decode and resize
        ahead of the model (0: this process)."""
        batch_size, num_workers = check_counts(batch_size, num_workers)
        inputs = (item if isinstance(item, ImageInput) else ImageInput(str(item), str(item)) for item in inputs)
        pending: list[tuple[str, torch.Tensor | None, str | None]] = []
        waiting = 0
        with _Decoder(self.processor, self.input_size, num_workers) as decoder:
            for key, pixels, reason in decoder.decode(inputs, ahead=batch_size + 2 * num_workers):
                if pixels is None and not pending:
                    yield ScoredImage(key, reason=reason)
                    continue
                pending.append((key, pixels, reason))
                waiting += pixels is not None
                if waiting == batch_size:
                    yield from self._score_batch(pending)
                    pending, waiting = [], 0
            yield from self._score_batch(pending)

    def score_files(self, paths: Iterable[str | os.PathLike], *, batch_size: int = 8,
                    num_workers: int = 0) -> Iterator[ScoredImage]:
        """`score` over files, folders (walked recursively) and tar shards; arguments that do not exist and files
        that are not readable images come out skipped, with the reason."""
        return self.score(ImageInputs(paths), batch_size=batch_size, num_workers=num_workers)

    @torch.inference_mode()
    def score_pixels(self, images: list[torch.Tensor], top_k_faults: int | None = None) -> list[dict]:
        """The results of images decoded and resized by `prepare_pixels` (uint8 (3, H, W) tensors), in order, as
        `quality_results` gives them: the batch step of `score` (and of `metaqap_hf.serving`), one forward for
        images of one size. `top_k_faults` (default: the scorer's) adds each image's most probable faults."""
        top_k_faults = self.top_k_faults if top_k_faults is None else top_k_faults
        if not images:
            return []
        shapes = {tuple(image.shape) for image in images}
        groups = [torch.stack(images)] if len(shapes) == 1 else [image[None] for image in images]
        outputs = []
        for group in groups:
            if self.device.type == "cuda":
                group = group.pin_memory()
            group = group.to(self.device, non_blocking=True)
            pixel_values = rescale_pixels(group, self.processor)
            output = (self.model(pixel_values=pixel_values, output_faults=True) if top_k_faults
                      else self.model(pixel_values=pixel_values))
            outputs += quality_results(output, self.config, top_k_faults)
        return outputs

    def _score_batch(self, pending: list[tuple[str, torch.Tensor | None, str | None]]) -> Iterator[ScoredImage]:
        results = iter(self.score_pixels([pixels for _, pixels, _ in pending if pixels is not None]))
        for key, pixels, reason in pending:
            if pixels is None:
                yield ScoredImage(key, reason=reason)
            else:
                yield ScoredImage(key, **next(results))
