"""`pipeline("image-quality")`: score images with a MetaQAP checkpoint and get plain Python results.

Out-of-range policy (the same here, in `metaqap_hf.scoring` and in every `metaqap score` output): a linear
meta-learner can predict a little past the ends of the checkpoint's MOS scale for images unlike its training data.
`score` and `base_scores` are clipped to `config.mos_range`; `raw_score` keeps the meta-learner's unclipped value
(equal to `score` inside the range), and `std` is the spread of the unclipped base scores.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
import urllib.error
import urllib.request
from typing import Any

import torch
from PIL import Image
from transformers import Pipeline
from transformers.pipelines.pt_utils import KeyDataset

from .image_processing_metaqap import (
    MAX_ENCODED_BYTES,
    ImageLoadError,
    load_image,
    processor_input_size,
    to_rgb_image,
)
from .onnx_runtime import OnnxRuntimeModel, resolve_runtime

__all__ = ["ImageQualityPipeline", "fetch_image_bytes", "quality_results", "to_pil_image"]

_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
_MIN_BASE64_LENGTH = 32  # shorter strings are taken as (missing) file names, never as image data


def quality_results(output, config) -> list[dict[str, Any]]:
    """One plain-Python result per image of a batched `ImageQualityOutput`, with the out-of-range policy applied
    (module docstring): `{"score", "raw_score", "base_scores", "std"}`."""
    low, high = config.mos_range
    results = []
    for raw, bases, std in zip(output.score.float().tolist(), output.base_scores.float().tolist(),
                               output.std.float().tolist()):
        results.append({
            "score": min(max(raw, low), high),
            "raw_score": raw,
            "base_scores": {name: min(max(value, low), high) for name, value in zip(config.backbone_ids, bases)},
            "std": std,
        })
    return results


def fetch_image_bytes(url: str, timeout: float | None = None) -> bytes:
    """The body of an http(s) URL (redirects followed, no time limit unless `timeout` in seconds), with the failure
    named: an `ImageLoadError` for an HTTP error status, a timeout, a refused connection or a body over
    `MAX_ENCODED_BYTES`. The standard library's client: the HTTP library under huggingface_hub changes between its
    major versions, and a URL needs nothing more."""
    try:
        body = bytearray()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                body += chunk
                if len(body) > MAX_ENCODED_BYTES:
                    raise ImageLoadError(url, f"larger than {MAX_ENCODED_BYTES} bytes, not read")
    except ImageLoadError:
        raise
    except urllib.error.HTTPError as error:
        raise ImageLoadError(url, f"HTTP {error.code} {error.reason}".rstrip()) from None
    except TimeoutError:
        raise ImageLoadError(url, f"no answer within the timeout ({timeout} s)") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise ImageLoadError(url, f"no answer within the timeout ({timeout} s)") from None
        raise ImageLoadError(url, f"could not fetch it ({type(error.reason).__name__}: {error.reason})") from None
    except (OSError, ValueError) as error:
        raise ImageLoadError(url, f"could not fetch it ({type(error).__name__}: {error})") from None
    return bytes(body)


def _decode_base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImageLoadError(name, "not valid base64 image data") from None


def to_pil_image(image: Any, *, timeout: float | None = None, reduce_for: tuple[int, int] | None = None) -> Image.Image:
    """Any supported input -> 8-bit RGB PIL image.

    Strings are http(s) URLs (fetched with `timeout`), `data:` URIs, file paths, or base64-encoded image files, in
    this order, as transformers' image pipelines take them; files are decoded with EXIF orientation applied. Also:
    `os.PathLike`, encoded `bytes`, a dict (a datasets row) read from its `image` key or a datasets image cell
    `{"bytes", "path"}`, PIL images, numpy arrays and tensors (CHW or HWC; uint8, uint16 or float in [0, 1]).
    `reduce_for` = (height, width) allows reduced decoding of very large images (see `load_image`).
    Raises `ImageLoadError` naming the input and the problem.
    """
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            return load_image(fetch_image_bytes(image, timeout), name=image, reduce_for=reduce_for)
        if image.startswith("data:"):
            header, comma, payload = image.partition(",")
            if not comma or not header.endswith(";base64"):
                raise ImageLoadError(header[:64] or "data:", "a data URI needs ';base64,' and the image data")
            return load_image(_decode_base64(payload, header), name=header, reduce_for=reduce_for)
        if (not os.path.lexists(image) and len(image) >= _MIN_BASE64_LENGTH and len(image) % 4 == 0
                and _BASE64.fullmatch(image)):
            try:
                return load_image(base64.b64decode("".join(image.split())), name="<base64 image>",
                                  reduce_for=reduce_for)
            except (ImageLoadError, binascii.Error):
                raise ImageLoadError(image if len(image) < 80 else f"{image[:77]}...",
                                     "neither an existing file nor base64-encoded image data") from None
        return load_image(image, reduce_for=reduce_for)
    if isinstance(image, os.PathLike):
        return load_image(image, reduce_for=reduce_for)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return load_image(image, reduce_for=reduce_for)
    if isinstance(image, dict):
        if "image" in image:
            return to_pil_image(image["image"], timeout=timeout, reduce_for=reduce_for)
        if image.get("bytes") is not None:  # a datasets Image cell read with decode=False
            return load_image(image["bytes"], name=image.get("path") or "<image bytes>", reduce_for=reduce_for)
        if image.get("path") is not None:
            return load_image(image["path"], reduce_for=reduce_for)
        raise ImageLoadError("<dict>", f"a dict input needs an 'image' key (or 'bytes'/'path'), got {sorted(image)}")
    if isinstance(image, torch.Tensor):
        if image.is_meta:
            raise ImageLoadError("<tensor>", "a tensor on the meta device holds no pixel values")
        if image.is_complex():
            raise ImageLoadError("<tensor>", f"unsupported tensor dtype {image.dtype}")
        image = image.detach().cpu()
        if image.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            image = image.float()
        return to_rgb_image(image.numpy(), "<tensor>", reduce_for=reduce_for)
    return to_rgb_image(image, reduce_for=reduce_for)


class ImageQualityPipeline(Pipeline):
    """
    No-reference image quality: one score per image on the checkpoint's MOS scale (higher is better).

    Inputs: a file path, an http(s) URL, a base64 string or `data:` URI, PIL image, numpy array (HxW[xC], uint8,
    uint16 or float in [0, 1]), torch tensor, a dict with an `image` key, a list of any of these, or a
    `datasets.Dataset` with an `image` column (streamed: an iterator of results is returned, as for every
    transformers pipeline). `timeout` (seconds) limits each URL fetch (default: none, as in transformers).
    Each result is `{"score": float, "raw_score": float, "base_scores": {backbone: float}, "std": float}`: `score`
    and `base_scores` are clipped to `config.mos_range` and `raw_score` is the unclipped score (module docstring);
    `std` is the spread of the base scores, a per-image signal of how much the ensemble agrees. An input that
    cannot be read raises `ImageLoadError` naming it; an empty list gives an empty list.

    `runtime="onnx"` runs the model with ONNX Runtime on the CPU (float32; exported once and cached, see
    `metaqap_hf.onnx_runtime`), `"auto"` does so where that export is already cached (a float32 model on the CPU);
    the default, `"torch"`, runs `self.model`.

    Example:
        >>> import metaqap_hf
        >>> from transformers import pipeline
        >>> scorer = pipeline("image-quality")  # the bundled default model
        >>> scorer("photo.jpg")["score"]
        >>> fast = pipeline("image-quality", runtime="onnx")  # ONNX Runtime on the CPU
    """

    _load_processor = False
    _load_image_processor = True
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, runtime: str = "torch", **kwargs):
        super().__init__(*args, **kwargs)
        self.runtime = resolve_runtime(runtime, self.device, self.model.dtype)
        self.runtime_model = None
        if self.runtime == "onnx":
            self.runtime_model = OnnxRuntimeModel.from_model(self.model, self.image_processor,
                                                             export=runtime == "onnx")
            self.runtime = "torch" if self.runtime_model is None else "onnx"

    def _sanitize_parameters(self, timeout=None, **kwargs):
        if kwargs:
            raise TypeError(f"image-quality pipeline got unexpected arguments {sorted(kwargs)}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return ({} if timeout is None else {"timeout": timeout}), {}, {}

    def __call__(self, inputs, **kwargs):
        if hasattr(inputs, "column_names") and hasattr(inputs, "features"):  # a datasets.Dataset
            if "image" not in inputs.column_names:
                raise ValueError(f"the dataset needs an 'image' column, it has {inputs.column_names}")
            if hasattr(inputs, "__len__") and len(inputs) == 0:
                return []
            inputs = KeyDataset(inputs, "image")
        elif isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image, timeout=None):
        pil_image = to_pil_image(image, timeout=timeout, reduce_for=processor_input_size(self.image_processor))
        return self.image_processor(images=pil_image, return_tensors="pt")

    def _forward(self, model_inputs):
        model = self.model if self.runtime_model is None else self.runtime_model
        return model(pixel_values=model_inputs["pixel_values"])

    def postprocess(self, model_outputs):
        return quality_results(model_outputs, self.model.config)[0]
