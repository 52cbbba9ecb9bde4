"""The distortions against their implementation before the batched rewrite (commit 338716b), and the batched API.

Reference: tests/fixtures/distortion_reference.npz (written once by make_distortion_reference.py at 338716b), every
type at levels 1, 3 and 5 on a 64 px crop of the committed scene, seeded. Tolerances, on the 8-bit outputs:
- 23 types kept their definition and computation up to float rounding (lens blur and wide Gaussians now filter
  through the FFT, the nearest-colour search runs in blocks, Lab conversions take branch-free curves with folded
  matrices, within 0.01/255 of kornia's): at most 1/255 per value;
- denoise (a separable bilateral filter instead of the 2-D one, same noise): PSNR against the old output at least
  33 dB and mean absolute difference at most 0.015 (measured 52, 43 and 35 dB; 0.001, 0.005, 0.011);
- jpeg2000 (a JPEG 2000-like wavelet coder in torch instead of OpenJPEG) cannot match a codec's bits, so its
  distortion strength is compared with OpenJPEG's, run here through Pillow, on real photos at 256 px: PSNR to the
  pristine within 1.5 dB of the codec's for every photo and level (measured within 1.1 dB). The rate model was
  fitted on photos; on synthetic graphics such as the scene it compresses harder than OpenJPEG (2-6 dB lower).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS, distort, distort_batch, random_distortion
from metaqap_hf.distortions.compression import JPEG2000_COMPRESSION_RATIO
from metaqap_hf.image_utils import load_image_tensor
from metaqap_hf.pretraining import find_images

FIXTURE = Path(__file__).parent / "fixtures" / "distortion_reference.npz"
PRISTINE_DIR = Path(os.environ.get("METAQAP_PRISTINE_DIR", "/work/shared/data/pristine"))
REFERENCE_LEVELS = (1, 3, 5)
REDEFINED_TYPES = {"denoise", "jpeg2000"}
# Types whose output is the same for every seed: the batched path must give exactly the per-image result.
SEED_FREE_TYPES = ("gaussian_blur", "lens_blur", "color_diffusion", "jpeg", "jpeg2000", "brighten", "pixelate",
                   "quantization", "high_sharpen", "color_saturation_1")


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as stored:
        return {name: stored[name] for name in stored.files}


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255.0


def _to_pixels(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).mul(255).round().byte().numpy().astype(np.int16)


def _psnr(first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray, peak: float) -> float:
    error = np.mean((np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / error))


def _reference_output(source: np.ndarray, kind: str, level: int) -> np.ndarray:
    return _to_pixels(distort(_to_tensor(source), kind, level, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kind", [kind for kind in DISTORTION_TYPES if kind not in REDEFINED_TYPES])
def test_unchanged_types_give_the_previous_output(reference, kind):
    for level in REFERENCE_LEVELS:
        difference = np.abs(_reference_output(reference["source"], kind, level) - reference[f"{kind}/{level}"])
        assert difference.max() <= 1, f"{kind} level {level}: {int((difference > 1).sum())} values off by > 1/255"


def test_denoise_keeps_the_look_of_the_2d_bilateral_filter(reference):
    for level in REFERENCE_LEVELS:
        new = _reference_output(reference["source"], "denoise", level)
        old = reference[f"denoise/{level}"]
        assert _psnr(new, old, 255.0) >= 33.0, f"level {level}"
        assert np.abs(new - old).mean() / 255.0 <= 0.015, f"level {level}"


def _openjpeg(pixels: np.ndarray, ratio: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG2000", quality_mode="rates", quality_layers=[ratio],
                                 irreversible=True)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))


def test_jpeg2000_is_as_strong_as_openjpeg_on_photos():
    if not features.check("jpg_2000"):
        pytest.skip("needs Pillow built with OpenJPEG, the reference codec")
    files = find_images(PRISTINE_DIR) if PRISTINE_DIR.is_dir() else []
    if len(files) < 4:
        pytest.skip(f"needs pristine photos in {PRISTINE_DIR} (set METAQAP_PRISTINE_DIR)")
    size = 256
    for path in files[:: len(files) // 4][:4]:
        image = load_image_tensor(path)
        top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        pixels = _to_pixels(image[None, :, top : top + size, left : left + size]).astype(np.uint8)
        for level, ratio in enumerate(JPEG2000_COMPRESSION_RATIO, start=1):
            ours = _psnr(_to_pixels(distort(_to_tensor(pixels), "jpeg2000", level)), pixels, 255.0)
            codec = _psnr(_openjpeg(pixels, ratio), pixels, 255.0)
            assert abs(ours - codec) <= 1.5, f"{path.name} level {level}: {ours:.2f} dB, OpenJPEG {codec:.2f} dB"


def _batch(reference, count: int = 6) -> torch.Tensor:
    """Six different 32 px crops of the fixture's source."""
    source = _to_tensor(reference["source"])[0]
    return torch.stack([source[:, top : top + 32, left : left + 32] for top in (0, 16, 32) for left in (0, 32)])[:count]


def test_batch_of_mixed_types_and_levels_equals_one_call_per_image(reference):
    images = _batch(reference)
    kinds = ["gaussian_blur", "jpeg2000", "gaussian_blur", "quantization", "lens_blur", "jpeg"]
    levels = [1, 5, 4, 2, 3, 3]
    batched = distort_batch(images, kinds, levels)
    for index, (kind, level) in enumerate(zip(kinds, levels)):
        alone = distort(images[index : index + 1], kind, level)[0]
        torch.testing.assert_close(batched[index], alone, atol=1e-6, rtol=0, msg=f"image {index}: {kind} {level}")


@pytest.mark.parametrize("kind", SEED_FREE_TYPES)
def test_batch_of_one_type_at_every_level_equals_one_call_per_level(reference, kind):
    images = _batch(reference, count=NUM_LEVELS)
    levels = torch.arange(NUM_LEVELS, 0, -1)
    batched = distort_batch(images, [kind] * NUM_LEVELS, levels)
    for index, level in enumerate(levels.tolist()):
        torch.testing.assert_close(batched[index], distort(images[index : index + 1], kind, level)[0], atol=1e-6,
                                   rtol=0)


def test_type_names_and_indices_give_the_same_seeded_batch(reference):
    images = _batch(reference)
    kinds = ["white_noise", "color_block", "denoise", "white_noise", "jitter", "motion_blur"]
    indices = torch.tensor([DISTORTION_TYPES.index(kind) for kind in kinds])
    levels = torch.tensor([2, 2, 1, 5, 3, 4])
    by_name = distort_batch(images, kinds, levels.tolist(), generator=torch.Generator().manual_seed(4))
    by_index = distort_batch(images, indices, levels, generator=torch.Generator().manual_seed(4))
    assert torch.equal(by_name, by_index)
    assert by_name.shape == images.shape and by_name.dtype == images.dtype
    assert not torch.equal(by_name, distort_batch(images, kinds, levels, generator=torch.Generator().manual_seed(5)))


def test_random_distortion_is_distort_batch_with_drawn_types(reference):
    images = _batch(reference)
    distorted, kinds, levels = random_distortion(images, generator=torch.Generator().manual_seed(9))
    generator = torch.Generator().manual_seed(9)
    torch.rand(images.shape[0], generator=generator)  # the draws of the types
    torch.rand(images.shape[0], generator=generator)  # and of the levels
    assert torch.equal(distorted, distort_batch(images, kinds, levels, generator=generator))


def test_batch_arguments_are_checked(reference):
    images = _batch(reference, count=2)
    with pytest.raises(ValueError, match="Unknown distortion 'vignette'"):
        distort_batch(images, ["jpeg", "vignette"], [1, 1])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 25\)"):
        distort_batch(images, torch.tensor([0, 25]), [1, 1])
    with pytest.raises(ValueError, match="3 distortion types for a batch of 2"):
        distort_batch(images, ["jpeg"] * 3, [1, 1])
    with pytest.raises(ValueError, match="1 distortion levels for a batch of 2"):
        distort_batch(images, ["jpeg"] * 2, [1])
    for levels in ([0, 1], [1, 6], [1, 2.0], [True, 1], torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="levels must be integers from 1 to 5"):
            distort_batch(images, ["jpeg"] * 2, levels)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        distort_batch(images[:, :1], ["jpeg"] * 2, [1, 1])
