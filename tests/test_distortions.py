"""The 25 synthetic distortion types: contract (shape, dtype, range, seeding) and severity ordering."""

from __future__ import annotations

import os
from pathlib import Path

import piq
import pytest
import torch
from PIL import Image

from metaqap_hf.distortions import DISTORTION_TYPES, NUM_LEVELS, distort, random_distortion
from metaqap_hf.image_utils import load_image_tensor
from metaqap_hf.pretraining import make_contact_sheet

PRISTINE_DIR = Path(os.environ.get("METAQAP_PRISTINE_DIR", "/work/shared/data/pristine"))
CROP = 96

# Types whose output moves with the seed beyond a single per-image coin flip.
SEED_DEPENDENT_TYPES = (
    "motion_blur",
    "color_shift",
    "color_quantization",
    "white_noise",
    "white_noise_color_component",
    "impulse_noise",
    "multiplicative_noise",
    "denoise",
    "jitter",
    "non_eccentricity_patch",
    "color_block",
)

# Types where SSIM is not a faithful severity scale, and what is checked instead.
# color_shift: once the green plane moves further than the texture's correlation length (3-4 px on
# detailed crops), SSIM and MSE plateau while the colour fringes keep widening; the fraction of
# visibly changed pixels (any channel off by more than 2 %) is checked instead.
SSIM_EXCEPTIONS = {"color_shift"}


def _synthetic_batch(batch: int = 2, height: int = 48, width: int = 64) -> torch.Tensor:
    """Colourful test pattern: gradients, stripes of several frequencies and fine noise."""
    generator = torch.Generator().manual_seed(1234)
    rows = torch.linspace(0, 1, height).view(1, 1, height, 1)
    cols = torch.linspace(0, 1, width).view(1, 1, 1, width)
    phases = torch.rand(batch, 3, 1, 1, generator=generator) * 6.28
    stripes = 0.25 * torch.sin(18 * cols + 11 * rows + phases) + 0.15 * torch.sin(50 * rows + phases)
    base = torch.cat([0.3 + 0.4 * cols.expand(1, 1, height, width), 0.6 - 0.3 * rows.expand(1, 1, height, width),
                      0.5 + 0.2 * rows * cols], dim=1)
    noise = 0.03 * torch.randn(batch, 3, height, width, generator=generator)
    return (base + stripes + noise).clamp(0, 1)


def _pristine_crops() -> torch.Tensor:
    files = sorted(path for path in PRISTINE_DIR.rglob("*") if path.suffix.lower() in {".png", ".jpg", ".bmp"})
    if len(files) < 4:
        pytest.skip(f"needs pristine photos in {PRISTINE_DIR} (set METAQAP_PRISTINE_DIR)")
    chosen = files[:: len(files) // 4][:4]
    crops = []
    for path in chosen:
        image = load_image_tensor(path)
        top, left = (image.shape[1] - CROP) // 2, (image.shape[2] - CROP) // 2
        crops.append(image[:, top : top + CROP, left : left + CROP])
    return torch.stack(crops)


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_types_are_the_25_kadid_types_in_fixed_order():
    assert len(DISTORTION_TYPES) == 25 == len(set(DISTORTION_TYPES))
    assert DISTORTION_TYPES[0] == "gaussian_blur" and DISTORTION_TYPES[8] == "jpeg"
    assert DISTORTION_TYPES[-1] == "contrast_change"


@pytest.mark.parametrize("kind", DISTORTION_TYPES)
def test_keeps_shape_dtype_range_and_changes_the_image(kind):
    images = _synthetic_batch()
    for level in (1, NUM_LEVELS):
        out = distort(images, kind, level, generator=_seeded())
        assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out - images).abs().mean() > 1e-3, f"{kind} level {level} left the image unchanged"


@pytest.mark.parametrize("kind", DISTORTION_TYPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_float_dtypes_come_back_unchanged_in_type(kind, dtype):
    images = _synthetic_batch(batch=1, height=24, width=32).to(dtype)
    out = distort(images, kind, 3, generator=_seeded())
    assert out.dtype == dtype and out.shape == images.shape


@pytest.mark.parametrize("kind", DISTORTION_TYPES)
def test_same_seed_same_output(kind):
    images = _synthetic_batch()
    first = distort(images, kind, 3, generator=_seeded(7))
    second = distort(images, kind, 3, generator=_seeded(7))
    assert torch.equal(first, second)
    if kind in SEED_DEPENDENT_TYPES:
        assert not torch.equal(first, distort(images, kind, 3, generator=_seeded(8)))


@pytest.mark.parametrize("kind", DISTORTION_TYPES)
def test_severity_grows_with_level_on_pristine_photos(kind):
    crops = _pristine_crops()
    outputs = [distort(crops, kind, level, generator=_seeded()) for level in range(1, NUM_LEVELS + 1)]
    if kind in SSIM_EXCEPTIONS:
        changed = torch.stack([((out - crops).abs().amax(dim=1) > 0.02).float().mean(dim=(1, 2)) for out in outputs], 1)
        assert (changed[:, 1:] > changed[:, :-1]).all(), f"{kind}: changed area per level {changed.tolist()}"
    else:
        ssim = torch.stack([piq.ssim(out, crops, data_range=1.0, reduction="none") for out in outputs], 1)
        assert (ssim[:, 1:] < ssim[:, :-1]).all(), f"{kind}: SSIM per level {ssim.tolist()}"


def test_rejects_bad_arguments():
    images = _synthetic_batch()
    with pytest.raises(ValueError, match="Unknown distortion"):
        distort(images, "vignette", 1)
    for level in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="level"):
            distort(images, "jpeg", level)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        distort(images[:, :1], "jpeg", 1)
    with pytest.raises(TypeError, match="float"):
        distort((images * 255).byte(), "jpeg", 1)


def test_random_distortion_is_reproducible_and_reports_its_choices():
    images = _synthetic_batch(batch=6, height=32, width=32)
    distorted, kinds, levels = random_distortion(images, generator=_seeded(3))
    again, kinds_again, levels_again = random_distortion(images, generator=_seeded(3))
    assert torch.equal(distorted, again) and kinds == kinds_again and torch.equal(levels, levels_again)
    assert distorted.shape == images.shape and len(kinds) == 6 and levels.shape == (6,)
    assert set(kinds) <= set(DISTORTION_TYPES)
    assert levels.min() >= 1 and levels.max() <= NUM_LEVELS
    assert len(set(kinds)) > 1
    changed = (distorted - images).abs().flatten(1).mean(1)
    assert (changed > 0).all()


def test_contact_sheet_has_a_row_per_type_and_a_column_per_level(tmp_path):
    source = tmp_path / "pattern.png"
    pixels = _synthetic_batch(batch=1)[0].mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(source)
    written = make_contact_sheet(source, tmp_path / "sheet.png", size=24)
    with Image.open(written) as sheet:
        width, height = sheet.size
    columns, rows, cell = NUM_LEVELS + 1, len(DISTORTION_TYPES), 24 + 2
    assert width > columns * cell and (width - columns * cell) < 400
    assert height > rows * cell and (height - rows * cell) < 60
