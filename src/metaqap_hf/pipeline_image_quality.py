"""`pipeline("image-quality")`: score images with a MetaQAP checkpoint and get plain Python results.

Out-of-range policy (the same here, in `metaqap_hf.scoring` and in every `metaqap score` output): a linear
meta-learner can predict a little past the ends of the checkpoint's MOS scale for images unlike its training data.
`score` and `base_scores` are clipped to `config.mos_range`; `raw_score` keeps the meta-learner's unclipped value
(equal to `score` inside the range), and `std` is the spread of the unclipped base scores.

Diagnosis (checkpoints with a fault head, `config.fault_head`): asked for, each result also has `faults`, the
`top_k_faults` most probable fault classes, `[{"label": "motion blur", "family": "blur", "score": 0.71}, ...]`,
most probable first; a "none" entry says how likely the photo has none of the faults the head knows.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import Pipeline
from transformers.pipelines.pt_utils import KeyDataset

from .deprecation import moved_names
from .image_utils import processor_input_size, rescale_pixels, resize_pixels
from .image_utils import to_pil_image as _to_pil_image  # private here: the public name warns (moved, below)
from .onnx_runtime import OnnxRuntimeModel, resolve_runtime

__all__ = ["DEFAULT_TOP_K_FAULTS", "ImageQualityPipeline", "check_top_k_faults", "fault_results", "quality_results"]

DEFAULT_TOP_K_FAULTS = 3  # faults=True: the three most probable

# Moved to image_utils in 0.2.0.
__getattr__ = moved_names(__name__, {"fetch_image_bytes": ".image_utils", "to_pil_image": ".image_utils"})


def check_top_k_faults(top_k_faults, config) -> int:
    """`top_k_faults` checked against the checkpoint (a positive int; at most its number of fault classes)."""
    if config.fault_head is None:
        raise ValueError("this model has no fault head (config.fault_head is None): it scores quality but cannot "
                         "say what is wrong; the bundled default model has one")
    classes = len(config.fault_head["types"])
    if isinstance(top_k_faults, bool) or not isinstance(top_k_faults, int) or not 1 <= top_k_faults <= classes:
        raise ValueError(f"top_k_faults must be an int from 1 to {classes} (this model's fault classes), "
                         f"got {top_k_faults!r}")
    return top_k_faults


def fault_results(fault_logits: torch.Tensor, config, top_k: int) -> list[list[dict[str, Any]]]:
    """Per image, the `top_k` most probable fault classes: `{"label", "family", "score"}` (a probability),
    most probable first."""
    head = config.fault_head
    probabilities, indices = fault_logits.float().softmax(dim=-1).topk(top_k, dim=-1)
    return [[{"label": head["labels"][i], "family": head["families"][i], "score": p}
             for p, i in zip(row_probabilities, row_indices)]
            for row_probabilities, row_indices in zip(probabilities.tolist(), indices.tolist())]


def quality_results(output, config, top_k_faults: int | None = None) -> list[dict[str, Any]]:
    """One plain-Python result per image of a batched `ImageQualityOutput`, with the out-of-range policy applied
    (module docstring): `{"score", "raw_score", "base_scores", "std"}`, and `"faults"` with `top_k_faults`."""
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
    if top_k_faults:
        for result, faults in zip(results, fault_results(output.fault_logits, config, top_k_faults)):
            result["faults"] = faults
    return results


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

    What is wrong with the photo (checkpoints with a fault head, as the default model): `faults=True` adds
    `"faults"`, the `DEFAULT_TOP_K_FAULTS` most probable fault classes (`top_k_faults=N`: the N most probable)
    as `{"label", "family", "score"}`, most probable first. Without either option the result is as above.

    `runtime="onnx"` runs the model with ONNX Runtime on the CPU (float32; exported once and cached, see
    `metaqap_hf.onnx_runtime`), `"auto"` does so where that export is already cached (a float32 model on the CPU);
    the default, `"torch"`, runs `self.model`. Faults always come from `self.model` (PyTorch).

    Example:
        >>> import metaqap_hf
        >>> from transformers import pipeline
        >>> scorer = pipeline("image-quality")  # the bundled default model
        >>> scorer("photo.jpg")["score"]
        >>> scorer("photo.jpg", faults=True)["faults"][0]   # {"label": "motion blur", "family": "blur", ...}
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

    def _sanitize_parameters(self, timeout=None, faults=None, top_k_faults=None, **kwargs):
        if kwargs:
            raise TypeError(f"image-quality pipeline got unexpected arguments {sorted(kwargs)}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if faults is not None and not isinstance(faults, bool):
            raise ValueError(f"faults must be True or False, got {faults!r}")
        forward_params, postprocess_params = {}, {}
        if top_k_faults is not None or faults:
            if faults is False:
                raise ValueError("top_k_faults asks for faults; it cannot go with faults=False")
            top_k = check_top_k_faults(DEFAULT_TOP_K_FAULTS if top_k_faults is None else top_k_faults,
                                       self.model.config)
            forward_params, postprocess_params = {"output_faults": True}, {"top_k_faults": top_k}
        elif faults is False:  # an explicit False in a call undoes a True given when the pipeline was made
            forward_params, postprocess_params = {"output_faults": False}, {"top_k_faults": None}
        return ({} if timeout is None else {"timeout": timeout}), forward_params, postprocess_params

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
        decoded = _to_pil_image(image, timeout=timeout, reduce_for=processor_input_size(self.image_processor))
        # uint8 until `_forward`, which rescales on the model's device: the steps `ImageScorer` takes, in its order
        return {"pixel_values": resize_pixels(decoded, self.image_processor)[None]}

    def _forward(self, model_inputs, output_faults=False):
        pixel_values = rescale_pixels(model_inputs["pixel_values"], self.image_processor)
        if output_faults:  # the ONNX Runtime model gives scores only
            return self.model(pixel_values=pixel_values, output_faults=True)
        model = self.model if self.runtime_model is None else self.runtime_model
        return model(pixel_values=pixel_values)

    def postprocess(self, model_outputs, top_k_faults=None):
        return quality_results(model_outputs, self.model.config, top_k_faults)[0]
