"""From any image input to the model's `pixel_values`: the one path every caller takes (the pipeline, the batch
scorer, training data, the frozen recipe, evaluation and the demo).

    file path / bytes / URL / base64 / data: URI / PIL / array / tensor / datasets cell
      -> `to_pil_image` (-> `fetch_image_bytes` for URLs) -> `load_image` (files, bytes) or `to_rgb_image` (pixels)
      -> `resize_pixels`  (the image processor's resize: uint8 (3, H, W), a quarter of the float's bytes to move)
      -> `rescale_pixels` (the processor's own rescale to [0, 1], on whatever device the batch is on)
    `pixel_values` = the last two for a list of decoded images.

Decoding (`load_image`, `to_rgb_image`): every input becomes 8-bit RGB the same way, whatever its colour mode
(16-bit and float images scaled without float64 copies, palettes expanded, alpha dropped), upright by its EXIF
orientation. Given the size the processor will resize to (`reduce_for`), an image far larger than that is decoded at
a reduced size or averaged down right after decoding (`REDUCED_DECODE_MARGIN`), so memory never holds a batch of
full-resolution photos and scores move by noise only. Bad input raises `ImageLoadError` naming it and the problem.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import os
import re
import stat
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image

__all__ = [
    "MAX_ENCODED_BYTES",
    "MAX_IMAGE_PIXELS",
    "REDUCED_DECODE_MARGIN",
    "ImageLoadError",
    "fetch_image_bytes",
    "load_image",
    "load_image_tensor",
    "pixel_values",
    "processor_input_size",
    "reduction_factors",
    "rescale_pixels",
    "resize_pixels",
    "to_pil_image",
    "to_rgb_image",
]

# Decompression-bomb guard: PIL's default limit, stated explicitly so it is an error (named file) not a warning.
MAX_IMAGE_PIXELS = 178_956_970
# Encoded images read whole into memory (downloads, archive members) stop being read past this size.
MAX_ENCODED_BYTES = 1 << 30
# Reduced decoding: an image at least 2 x REDUCED_DECODE_MARGIN times the processor's size on a side is decoded (JPEG
# DCT scaling) or box-averaged to a whole fraction of its size that stays at least REDUCED_DECODE_MARGIN times that
# size, before the processor's antialiased resize. Scores move by < 1e-3 (benchmarks/score_throughput.py, tests);
# images under 4096 pixels a side at the default 512 take the full-resolution path unchanged.
REDUCED_DECODE_MARGIN = 4
# Modes whose pixels can be box-averaged as they are; others become 8-bit first (palettes, 1-bit, 16-bit, float).
_AVERAGEABLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # 16-bit (or 32-bit) greyscale, 0-65535
_STRIP_ROWS = 256  # rows converted at a time from 16-bit or float images, so no full-size temporary is made
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
_MIN_BASE64_LENGTH = 32  # shorter strings are taken as (missing) file names, never as image data
_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright (as PIL's ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageLoadError(ValueError):
    """An input image could not be used. `path` names it (or says what was given) and `reason` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # survives pickling between decoding processes
        return type(self), (self.path, self.reason)


def reduction_factors(width: int, height: int, reduce_for: tuple[int, int] | None) -> tuple[int, int]:
    """Whole factors (x, y) by which an image of `width` x `height` may be averaged down before being resized to
    `reduce_for` = (height, width) without changing its score beyond noise (see `REDUCED_DECODE_MARGIN`)."""
    if reduce_for is None:
        return 1, 1
    target_height, target_width = reduce_for
    return (max(1, width // (REDUCED_DECODE_MARGIN * target_width)),
            max(1, height // (REDUCED_DECODE_MARGIN * target_height)))


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    """uint8 (0-255), uint16 (0-65535) or float ([0, 1]) arrays, HxW, HxWxC or CxHxW, as an 8-bit PIL image."""
    shape = array.shape
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first input
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(name, f"array of shape {shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if array.size == 0:
        raise ImageLoadError(name, f"array of shape {shape} holds no pixels")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = _unit_floats_to_uint8(array.astype(np.float32) if array.dtype == np.float16 else array, name)
    else:
        raise ImageLoadError(name, f"unsupported array dtype {array.dtype} (use uint8, uint16 or float in [0, 1])")
    return Image.fromarray(np.ascontiguousarray(array))


def _unit_floats_to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ImageLoadError(name, "float images must hold finite values in [0, 1]")
    return np.round(values * 255).astype(np.uint8)


def _to_8bit_strips(image: Image.Image, convert) -> Image.Image:
    """A greyscale 16-bit, 32-bit or float image as 8-bit "L", converted a strip of rows at a time."""
    width, height = image.size
    result = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, _STRIP_ROWS):
        bottom = min(height, top + _STRIP_ROWS)
        result[top:bottom] = convert(np.asarray(image.crop((0, top, width, bottom))))
    return Image.fromarray(result)


def _averageable(image: Image.Image, name: str) -> Image.Image:
    """The image in a mode whose pixels can be averaged and converted to RGB: 16-bit and 32-bit greyscale scaled to
    8 bits (0-65535 -> 0-255), float greyscale taken as [0, 1], palettes and other modes converted to RGB."""
    if image.mode in _AVERAGEABLE_MODES:
        return image
    if image.mode in _INTEGER_MODES:
        return _to_8bit_strips(image, lambda strip: (np.clip(strip, 0, 65535) // 257).astype(np.uint8))
    if image.mode == "F":
        low, high = image.getextrema()
        if not (0.0 <= low and high <= 1.0):  # also false for NaN
            raise ImageLoadError(name, f"float images must hold finite values in [0, 1], found {low:g} to {high:g}")
        return _to_8bit_strips(image, lambda strip: np.round(strip * 255).astype(np.uint8))
    try:
        with warnings.catch_warnings():  # palette transparency is dropped, as alpha is: nothing to warn about
            warnings.simplefilter("ignore", UserWarning)
            return image.convert("RGB")
    except ValueError:
        raise ImageLoadError(name, f"colour mode {image.mode!r} cannot be converted to RGB") from None


def _finish(image: Image.Image, name: str, reduce_for: tuple[int, int] | None, orientation: int) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(name, f"image of {image.width}x{image.height} pixels holds no pixels")
    image = _averageable(image, name)
    if orientation in (5, 6, 7, 8) and reduce_for is not None:  # shown transposed: the target is too
        reduce_for = reduce_for[::-1]
    factors = reduction_factors(image.width, image.height, reduce_for)
    if factors != (1, 1):
        image = image.reduce(factors)
    if orientation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[orientation])
    image = image if image.mode == "RGB" else image.convert("RGB")
    image.info.pop("transparency", None)  # dropped like alpha (an image processor would composite it on white)
    return image


def to_rgb_image(
    image: Image.Image | np.ndarray, name: str = "<image>", *, reduce_for: tuple[int, int] | None = None
) -> Image.Image:
    """An 8-bit RGB PIL image from a PIL image or an array (HxW, HxWx1, HxWx3 or HxWx4; uint8 in 0-255, uint16 in
    0-65535, or float in [0, 1]). Alpha is dropped; greyscale is replicated to three channels; 16-bit images are
    scaled to 8 bits; float images (PIL mode "F") are taken as [0, 1], like float arrays. With `reduce_for` =
    (height, width), a very large image is averaged down first (see `reduction_factors`)."""
    if isinstance(image, np.ndarray):
        image = _array_to_image(image, name)
    if not isinstance(image, Image.Image):
        raise ImageLoadError(name, f"expected a file path, PIL image or numpy array, got {type(image).__name__}")
    return _finish(image, name, reduce_for, orientation=1)


def _check_file(path: str | os.PathLike, name: str) -> None:
    """Refuse, without opening it, what is not a non-empty regular file (opening a FIFO would block)."""
    try:
        status = os.stat(path)
    except ValueError:  # a NUL character
        raise ImageLoadError(name, "not a valid file name") from None
    except OSError as error:
        if error.errno == errno.ENOENT and os.path.islink(path):
            raise ImageLoadError(name, "broken symbolic link (its target does not exist)") from None
        raise ImageLoadError(name, (error.strerror or str(error)).lower()) from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageLoadError(name, "is a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise ImageLoadError(name, "not a regular file (a pipe, socket or device)")
    if status.st_size == 0:
        raise ImageLoadError(name, "empty file (0 bytes)")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright); unreadable EXIF data counts as upright, since the pixels are fine."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data"
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # malformed EXIF blocks raise assorted errors from PIL's parser
        return 1
    return orientation if orientation in _TRANSPOSE else 1


def load_image(
    source: str | os.PathLike | BinaryIO | bytes,
    *,
    reduce_for: tuple[int, int] | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode an image file (a path, a binary file object or the encoded bytes) fully, so truncated files fail here
    and not later, apply its EXIF orientation and return 8-bit RGB. Raises `ImageLoadError` naming the file (or
    `name`) and the problem.

    With `reduce_for` = (height, width), the size the image will be resized to, a very large image is decoded at a
    reduced size (JPEG) or averaged down right after decoding, so that memory holds one full-resolution decode at
    most and scores move by noise only (see `REDUCED_DECODE_MARGIN`); smaller images are unaffected.
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        _check_file(source, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<image bytes>"
        if not len(source):
            raise ImageLoadError(name, "empty file (0 bytes)")
        source = io.BytesIO(source)
    name = name or str(source)
    try:
        with warnings.catch_warnings():  # the size check below is ours; the outcome of bad data is an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(source) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(name, f"image of {image.width}x{image.height} pixels is too large to score "
                                               f"(the limit is {MAX_IMAGE_PIXELS} pixels)")
                orientation = _orientation(image)
                if reduce_for is not None:  # JPEG: decode at 1/2, 1/4 or 1/8 size when that stays large enough
                    height, width = reduce_for if orientation < 5 else reduce_for[::-1]
                    image.draft(None, (REDUCED_DECODE_MARGIN * width, REDUCED_DECODE_MARGIN * height))
                image.load()
                return _finish(image, name, reduce_for, orientation)
    except ImageLoadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageLoadError(name, "not an image file PIL can read") from None
    except Image.DecompressionBombError as error:  # PIL's own check, in Image.open, for the largest sizes
        raise ImageLoadError(name, f"too large to score ({error})") from None
    except MemoryError:
        raise ImageLoadError(name, "not enough memory to decode it") from None
    except Exception as error:  # a decoder meeting bad data raises many types; each is this file's problem
        reason = str(error) or type(error).__name__
        if "truncated" in reason.lower():
            reason = f"truncated or corrupt image data ({reason})"
        elif not isinstance(error, (OSError, SyntaxError, ValueError)):
            reason = f"corrupt image data ({type(error).__name__}: {reason})"
        raise ImageLoadError(name, reason) from None


def load_image_tensor(path: str | os.PathLike | BinaryIO) -> torch.Tensor:
    """`load_image` as a float tensor (3, H, W) in [0, 1], for code that works on tensors (distortions)."""
    return torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1).float() / 255.0


def processor_input_size(processor) -> tuple[int, int] | None:
    """(height, width) an image processor resizes every image to, or None when it keeps sizes (no reduced
    decoding then)."""
    size = getattr(processor, "size", None)
    height, width = getattr(size, "height", None), getattr(size, "width", None)
    if not getattr(processor, "do_resize", False) or not height or not width:
        return None
    return int(height), int(width)


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


# ------------------------------------------------------------------------------------------- decoded -> pixels
def resize_pixels(image: Image.Image, processor) -> torch.Tensor:
    """One decoded image resized by the image processor, not yet rescaled: a uint8 tensor (3, H, W). Raises
    `TypeError` for a processor that does not resize in uint8 (every MetaQAP processor does)."""
    pixels = processor(images=image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
    if pixels.dtype != torch.uint8:
        raise TypeError(f"{type(processor).__name__} returned {pixels.dtype} pixels with do_rescale=False; "
                        "MetaQAP needs an image processor that resizes in uint8")
    return pixels


def rescale_pixels(pixels: torch.Tensor, processor) -> torch.Tensor:
    """uint8 pixels (N, 3, H, W) from `resize_pixels` as the model's float `pixel_values`, with the processor's own
    rescale (and normalisation, when it has one), so the values are bit for bit those the processor computes in one
    call. The torchvision backend works on the batch's device; the PIL backend rounds through NumPy, on the CPU."""
    if hasattr(processor, "rescale_and_normalize"):  # TorchvisionBackend
        return processor.rescale_and_normalize(pixels, processor.do_rescale, processor.rescale_factor,
                                               processor.do_normalize, processor.image_mean, processor.image_std)
    images = []
    for image in pixels.cpu().numpy():
        if processor.do_rescale:
            image = processor.rescale(image, processor.rescale_factor)
        if processor.do_normalize:
            image = processor.normalize(image, processor.image_mean, processor.image_std)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32)))
    return torch.stack(images)


def pixel_values(images: Sequence[Image.Image], processor) -> torch.Tensor:
    """Decoded images (`load_image`, `to_pil_image`) as one float batch of the model's `pixel_values`: `resize_pixels`
    then `rescale_pixels`. The processor must resize every image to one size (MetaQAP's do)."""
    return rescale_pixels(torch.stack([resize_pixels(image, processor) for image in images]), processor)
