import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaqap_hf import ImageLoadError, MetaQAPImageProcessor, MetaQAPImageProcessorPil, load_image
from metaqap_hf.image_utils import reduction_factors

from _images import random_photo

FIXTURE_PHOTOS = Path(__file__).parent / "fixtures" / "photos"


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


# --- reduced decoding of very large images, and the memory it needs ------------------------------------------
def test_reduction_factors_keep_four_times_the_target_size():
    assert reduction_factors(4095, 3000, (512, 512)) == (1, 1)  # every camera photo up to 12 MP: untouched
    assert reduction_factors(4096, 4096, (512, 512)) == (2, 2)
    assert reduction_factors(13000, 700, (512, 512)) == (6, 1)
    assert reduction_factors(13000, 13000, None) == (1, 1)


def test_images_below_the_threshold_decode_exactly_as_before(tmp_path):
    path = tmp_path / "photo.jpg"
    random_photo(8, size=(300, 4000)).save(path, quality=90)
    reduced = load_image(path, reduce_for=(512, 512))
    assert np.array_equal(np.asarray(reduced), np.asarray(load_image(path)))


@pytest.mark.parametrize(("suffix", "orientation"), [(".jpg", 1), (".png", 1), (".jpg", 6)])
def test_large_images_are_decoded_reduced_and_upright(tmp_path, suffix, orientation):
    path = tmp_path / f"large{suffix}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    random_photo(9, size=(32, 48)).resize((4400, 4200)).save(path, exif=exif)
    image = load_image(path, reduce_for=(512, 512))
    width, height = image.size if orientation == 1 else image.size[::-1]
    assert (width, height) == (4400 // 2, 4200 // 2)  # JPEG: decoded at half size; PNG: averaged 2 x 2
    full = np.asarray(load_image(path).resize(image.size, Image.BOX), dtype=np.float32)
    assert np.abs(np.asarray(image, dtype=np.float32) - full).mean() < 2.0  # the same picture, upright


def test_reduced_decoding_moves_scores_by_noise_only(tmp_path):
    """The default model on a large photo (a mosaic of the committed fixture photos): reduced decoding changes the
    score by less than 1e-3 on its 0-1 scale."""
    import metaqap_hf
    from metaqap_hf import MetaQAPModel

    tiles = [Image.open(path).convert("RGB") for path in sorted(FIXTURE_PHOTOS.glob("*"))]
    columns, rows = -(-4100 // tiles[0].width), -(-4100 // tiles[0].height)
    mosaic = Image.new("RGB", (tiles[0].width * columns, tiles[0].height * rows))
    for index in range(columns * rows):
        mosaic.paste(tiles[(index * 7) % len(tiles)], (tiles[0].width * (index % columns),
                                                       tiles[0].height * (index // columns)))
    mosaic.save(tmp_path / "mosaic.png", compress_level=1)
    model = MetaQAPModel.from_pretrained(metaqap_hf.DEFAULT_MODEL_PATH).eval()
    processor = MetaQAPImageProcessor.from_pretrained(metaqap_hf.DEFAULT_MODEL_PATH)
    scores = []
    for reduce_for in (None, (512, 512)):
        image = load_image(tmp_path / "mosaic.png", reduce_for=reduce_for)
        with torch.inference_mode():
            scores.append(float(model(**processor(images=image, return_tensors="pt")).score[0]))
    assert mosaic.width >= 4096 and abs(scores[0] - scores[1]) < 1e-3, scores


def _memory_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(f"{field}:"))


def _peak_memory_of(function, *arguments, **keywords) -> float:
    """MB by which the peak resident memory of a forked child running `function` exceeds its memory at start."""
    import multiprocessing

    def measure(queue):
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # the peak starts again from here
        start = _memory_mb("VmRSS")
        function(*arguments, **keywords)
        queue.put(_memory_mb("VmHWM") - start)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=measure, args=(queue,))
    child.start()
    result = queue.get(timeout=300)
    child.join()
    return result


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
def test_memory_holds_one_decoded_image_whatever_the_batch(tmp_path):
    """Three 6000x6000 PNGs scored in one batch of 8: memory grows by about one full-size decode (108 MB), not
    three, and 16-bit images take no float64 copy."""
    from metaqap_hf.scoring import ImageScorer

    from _scoring import save_tiny_checkpoint

    gradient = np.linspace(0, 255, 6000, dtype=np.float32)
    pixels = np.stack([gradient[None, :].repeat(6000, 0), gradient[:, None].repeat(6000, 1),
                       np.full((6000, 6000), 90, np.float32)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big0.png", compress_level=1)
    del pixels
    for index in range(1, 3):
        os.link(tmp_path / "big0.png", tmp_path / f"big{index}.png")
    scorer = ImageScorer(save_tiny_checkpoint(tmp_path / "tiny"), device="cpu")

    growth = _peak_memory_of(lambda: list(scorer.score_files([tmp_path], batch_size=8)))
    print(f"growth scoring three 6000x6000 PNGs: {growth:.0f} MB")
    assert growth < 2 * 108, growth
    deep = Image.fromarray((gradient[None, :].repeat(6000, 0) * 257).astype(np.uint16))
    deep.save(tmp_path / "deep.png", compress_level=1)
    growth = _peak_memory_of(load_image, tmp_path / "deep.png", reduce_for=(512, 512))
    print(f"growth decoding a 6000x6000 16-bit PNG: {growth:.0f} MB")
    assert growth < 2.5 * 36 * 2, growth  # the 16-bit decode (72 MB) and its 8-bit copy, no 8-byte floats
