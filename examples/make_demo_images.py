"""Write a few demo photos to score: scikit-image's sample photos, each as the original, a Gaussian-blurred copy and
a heavily JPEG-compressed copy, so that `metaqap score` has an obvious ranking to show.

    python examples/make_demo_images.py demo_images
    metaqap score demo_images

Writes <folder>/<name>.png, <name>_blur.png and <name>_jpeg.jpg for astronaut, coffee, chelsea and rocket
(the photos ship inside scikit-image: nothing is downloaded).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageFilter
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
BLUR_RADIUS = 4.0  # pixels: clearly soft at these 300-640 px sizes
JPEG_QUALITY = 8  # blocking and colour banding are plain to see


def write_demo_images(folder: Path) -> list[Path]:
    """Save every photo in `PHOTOS` three ways into `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        versions = (
            (folder / f"{name}.png", photo, {}),
            (folder / f"{name}_blur.png", photo.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)), {}),
            (folder / f"{name}_jpeg.jpg", photo, {"quality": JPEG_QUALITY}),
        )
        for path, image, options in versions:
            image.save(path, **options)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where to write the images (created if needed)")
    for path in write_demo_images(parser.parse_args().folder):
        print(path)


if __name__ == "__main__":
    main()
