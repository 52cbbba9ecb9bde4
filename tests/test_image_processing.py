import numpy as np
import pytest
import torch
from PIL import Image

from metaqap_hf import ImageLoadError, MetaQAPImageProcessor, MetaQAPImageProcessorPil, load_image

from _images import random_photo


@pytest.mark.parametrize("processor_class", [MetaQAPImageProcessor, MetaQAPImageProcessorPil])
def test_any_size_becomes_the_whole_image_at_512_in_unit_range(processor_class):
    processor = processor_class()
    wide, tall = random_photo(0, size=(40, 160)), random_photo(1, size=(300, 50))
    pixels = processor(images=[wide, tall], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 512, 512) and pixels.dtype == torch.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    again = processor(images=[wide, tall], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, again, rtol=0, atol=0)  # deterministic: no random crops


def test_backends_agree_closely():
    image = random_photo(2, size=(200, 260))
    fast = MetaQAPImageProcessor()(images=image, return_tensors="pt")["pixel_values"]
    pil = MetaQAPImageProcessorPil()(images=image, return_tensors="pt")["pixel_values"]
    assert (fast - pil).abs().mean() < 0.01


def test_load_image_applies_exif_orientation_and_converts_to_rgb(tmp_path):
    image = Image.new("RGBA", (30, 10), (255, 0, 0, 128))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (10, 30)


def test_sixteen_bit_and_greyscale_inputs(tmp_path):
    grey16 = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16))
    path = tmp_path / "grey16.png"
    grey16.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and np.asarray(loaded).max() > 200


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not an image", "not an image file"), ("truncated", "truncated")],
)
def test_load_image_names_the_file_and_the_problem(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        random_photo(3, size=(128, 128)).save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError) as error:
        load_image(path)
    assert error.value.path == str(path) and reason in error.value.reason
