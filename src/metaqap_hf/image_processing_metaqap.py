"""Image processors for MetaQAP: the resize and rescale every backbone's input starts from. Decoding, and the one
path from any input to `pixel_values`, live in `image_utils`.

Resize policy (deterministic; no random crops at inference): every image is resized *whole* to
`size` (512x512 by default), bicubic with antialiasing, whatever its size and aspect ratio. Nothing is cropped away,
so no region of the photo goes unscored; images far from square are stretched, which changes their geometry but not
their blur, noise or compression artefacts the way a crop would drop them. BIQ2021 photos (512x512) pass unchanged.
Pixel values are scaled to [0, 1]; per-backbone resizing and mean/std normalisation happen inside the model, so one
processed tensor feeds every backbone.

Two backends, as in transformers 5: `MetaQAPImageProcessor` (torchvision, batched, any device) and
`MetaQAPImageProcessorPil` (PIL/NumPy only). Their bicubic kernels differ slightly, so scores differ in the
third decimal between backends; each is deterministic run to run.
"""

from __future__ import annotations

from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import PILImageResampling

from .deprecation import moved_names

__all__ = ["MetaQAPImageProcessor", "MetaQAPImageProcessorPil"]

# Moved to image_utils in 0.2.0.
__getattr__ = moved_names(__name__, {name: ".image_utils" for name in (
    "MAX_ENCODED_BYTES", "MAX_IMAGE_PIXELS", "REDUCED_DECODE_MARGIN", "ImageLoadError", "load_image",
    "load_image_tensor", "processor_input_size", "reduction_factors", "to_rgb_image")})


class _MetaQAPDefaults:
    resample = PILImageResampling.BICUBIC
    size = {"height": 512, "width": 512}
    do_resize = True
    do_rescale = True
    do_normalize = False  # each backbone normalises with its own statistics inside the model
    do_convert_rgb = True
    model_input_names = ["pixel_values"]


class MetaQAPImageProcessor(_MetaQAPDefaults, TorchvisionBackend):
    """Torchvision backend: batched resizing, runs on the device the images are on."""


class MetaQAPImageProcessorPil(_MetaQAPDefaults, PilBackend):
    """PIL backend: no torchvision needed at preprocessing time."""
