"""`pipeline("image-quality")`: score images with a MetaQAP checkpoint and get plain Python results."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline
from transformers.pipelines.pt_utils import KeyDataset

from .image_processing_metaqap import ImageLoadError, load_image, to_rgb_image

__all__ = ["ImageQualityPipeline", "to_pil_image"]


def to_pil_image(image: Any) -> Image.Image:
    """Any supported input -> 8-bit RGB PIL image. File paths are decoded with EXIF orientation applied; a dict
    (a datasets row) is read from its `image` key; tensors are CHW or HWC, uint8 or float in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, dict):
        if "image" not in image:
            raise ImageLoadError("<dict>", f"a dict input needs an 'image' key, got keys {sorted(image)}")
        return to_pil_image(image["image"])
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    return to_rgb_image(image)


class ImageQualityPipeline(Pipeline):
    """
    No-reference image quality: one score per image on the checkpoint's MOS scale (higher is better).

    Inputs: a file path, PIL image, numpy array (HxW[xC], uint8 or float in [0, 1]), torch tensor, a dict with an
    `image` key, a list of any of these, or a `datasets.Dataset` with an `image` column (streamed: an iterator of
    results is returned, as for every transformers pipeline). Each result is
    `{"score": float, "base_scores": {backbone: float}, "std": float}`; `std` is the spread of the base scores, a
    per-image signal of how much the ensemble agrees. An unreadable file raises `ImageLoadError` naming it.

    Example:
        >>> import metaqap_hf
        >>> from transformers import pipeline
        >>> scorer = pipeline("image-quality")  # the bundled default model
        >>> scorer("photo.jpg")["score"]
    """

    _load_processor = False
    _load_image_processor = True
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"image-quality pipeline got unexpected arguments {sorted(kwargs)}")
        return {}, {}, {}

    def __call__(self, inputs, **kwargs):
        if hasattr(inputs, "column_names") and hasattr(inputs, "features"):  # a datasets.Dataset
            if "image" not in inputs.column_names:
                raise ValueError(f"the dataset needs an 'image' column, it has {inputs.column_names}")
            inputs = KeyDataset(inputs, "image")
        elif isinstance(inputs, tuple):
            inputs = list(inputs)
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image):
        return self.image_processor(images=to_pil_image(image), return_tensors="pt")

    def _forward(self, model_inputs):
        return self.model(pixel_values=model_inputs["pixel_values"])

    def postprocess(self, model_outputs):
        base_scores = model_outputs.base_scores[0].float().tolist()
        return {
            "score": float(model_outputs.score[0]),
            "base_scores": dict(zip(self.model.config.backbone_ids, base_scores)),
            "std": float(model_outputs.std[0]),
        }
