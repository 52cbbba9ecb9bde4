"""A MetaQAP model as a differentiable loss: `QualityLoss` scores a batch of images and returns a scalar that is lower
for better quality, with gradients with respect to the images, for training or tuning restoration and enhancement
models (deblurring, denoising, super-resolution, tone mapping...).

    >>> import metaqap_hf
    >>> quality_loss = metaqap_hf.QualityLoss()                 # the bundled default model, frozen
    >>> loss = l1_loss(restored, clean) + 0.1 * quality_loss(restored)
    >>> loss.backward()                                          # gradients reach `restored`, never the quality model

The input path is the model's inference path made differentiable:

    images (B, 3, H, W) in [0, 1]
      -> resized whole to the processor's size (512x512), antialiased bicubic   <- the image processor's resize step
      -> MetaQAPModel: per-backbone resize and normalisation -> backbones -> heads -> meta-learner -> score
      -> loss per image = (best MOS - score) / (best MOS - worst MOS), i.e. 1 - score on the unit scale

What differs from `pipeline("image-quality")`: the pipeline decodes to 8-bit pixels and its torchvision resize works
on 8-bit values (rounded and saturated between its passes); the loss resizes float values and neither rounds nor
clips, so that every pixel keeps its gradient. Images already at the processor's size go through unresized on both
paths and score the same (8-bit input: within 1e-5 on the bundled model's 0-1 scale, measured on 12 BIQ2021
photos); images that are resized differ a little more, most where sharp edges make the bicubic kernel overshoot
(up to 7e-4 on the four 288x192 photos in tests/fixtures/photos). Values outside [0, 1] are passed on as they are:
keep a network's output in range (a clamp or a sigmoid) if it can leave it.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.image_utils import PILImageResampling

from .default_model import DEFAULT_MODEL_PATH
from .image_processing_metaqap import MetaQAPImageProcessor
from .modeling_metaqap import MetaQAPModel

__all__ = ["QualityLoss", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")
# The processor's resample filters that have a differentiable antialiased counterpart in `F.interpolate`.
_INTERPOLATION_MODES = {PILImageResampling.BICUBIC: "bicubic", PILImageResampling.BILINEAR: "bilinear"}


class QualityLoss(nn.Module):
    """
    No-reference quality as a loss: `(B, 3, H, W)` images in [0, 1] -> a scalar, lower for better quality.

    Args:
        model (`MetaQAPModel`, `str` or `os.PathLike`, *optional*):
            The quality model: a loaded model, or a checkpoint folder or hub id to load. Defaults to the bundled
            default model (`metaqap_hf.DEFAULT_MODEL_PATH`). It is frozen (`requires_grad=False`) and kept in eval
            mode, also when the loss, or a module holding it, is put in training mode: the loss never changes it.
            A model given as an object is frozen in place.
        image_processor (`MetaQAPImageProcessor`, *optional*):
            The processor whose resize step the loss reproduces (size and filter). Defaults to the checkpoint's own
            processor when `model` is a path or hub id, else `MetaQAPImageProcessor()` (512x512, bicubic).
        reduction (`str`, *optional*, defaults to `"mean"`):
            As in torch's losses: `"mean"` and `"sum"` over the batch, or `"none"` for one loss per image, `(B,)`.

    The loss of one image is `(best - score) / (best - worst)` with `[worst, best] = config.mos_range`: 0 for the
    best score on the checkpoint's scale, 1 for the worst, whatever that scale is, so weights and learning rates
    carry over between checkpoints. `score(images)` gives the differentiable scores themselves.

    The model follows the input: on the first call with images on another device or in another floating dtype it
    is moved there (like `loss.to(images)`); the loss comes back on the images' device and in their dtype. It is a
    submodule, so `.to()` moves it with a module that holds the loss, and its weights are in that module's
    `state_dict` (they load back unchanged). See the module docstring for how the input path compares with the
    pipeline's.
    """

    def __init__(
        self,
        model: MetaQAPModel | str | os.PathLike | None = None,
        *,
        image_processor: MetaQAPImageProcessor | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"QualityLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if model is None or isinstance(model, (str, os.PathLike)):
            path = str(model if model is not None else DEFAULT_MODEL_PATH)
            model = MetaQAPModel.from_pretrained(path)
            image_processor = image_processor or MetaQAPImageProcessor.from_pretrained(path)
        elif not isinstance(model, MetaQAPModel):
            raise TypeError(f"QualityLoss: model must be a MetaQAPModel, a checkpoint path or hub id, or None, "
                            f"got {type(model).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.reduction = reduction
        self.size, self.mode = self._resize_step(image_processor or MetaQAPImageProcessor())

    @staticmethod
    def _resize_step(processor: MetaQAPImageProcessor) -> tuple[tuple[int, int] | None, str]:
        """The processor's (height, width) and `F.interpolate` mode; size None when the processor does not resize."""
        if processor.do_normalize:
            raise ValueError("QualityLoss: the image processor normalises pixels, which MetaQAP processors never do "
                             "(each backbone normalises inside the model)")
        mode = _INTERPOLATION_MODES.get(PILImageResampling(processor.resample))
        if mode is None:
            raise ValueError(f"QualityLoss: the image processor resizes with {PILImageResampling(processor.resample)}"
                             f", which has no differentiable antialiased counterpart (use BICUBIC or BILINEAR)")
        if not processor.do_resize:
            return None, mode
        return (processor.size["height"], processor.size["width"]), mode

    def train(self, mode: bool = True) -> QualityLoss:
        super().train(mode)
        self.model.eval()  # dropout and batch-norm statistics of the quality model stay as they were trained
        return self

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable quality scores `(B,)` on the checkpoint's MOS scale (`config.mos_range`), float32."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"QualityLoss: images must be a floating-point tensor in [0, 1], got "
                            f"{getattr(images, 'dtype', type(images).__name__)}")
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(f"QualityLoss: images must have shape (B, 3, H, W) with B >= 1, got {tuple(images.shape)}")
        parameter = next(self.model.parameters())
        if parameter.device != images.device or parameter.dtype != images.dtype:
            self.model.to(device=images.device, dtype=images.dtype)
        # Half-precision images are resized in float32, as the model resizes per backbone (no such kernel in bf16).
        pixels = images if images.dtype in (torch.float32, torch.float64) else images.float()
        if self.size is not None and tuple(pixels.shape[-2:]) != self.size:
            pixels = F.interpolate(pixels, size=self.size, mode=self.mode, antialias=True, align_corners=False)
        return self.model(pixel_values=pixels, return_dict=True).score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        worst, best = self.model.config.mos_range
        losses = ((best - self.score(images)) / (best - worst)).to(images.dtype)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def extra_repr(self) -> str:
        size = "x".join(map(str, self.size)) if self.size else "none"
        return f"reduction={self.reduction!r}, resize={size} ({self.mode}, antialiased)"
