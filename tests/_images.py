"""Small generated photos for tests."""

import numpy as np
from PIL import Image


def random_photo(seed: int, size=(72, 96)) -> Image.Image:
    """A smooth random RGB image (gradients plus noise), varied enough to give distinct scores."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (5 + seed)) , np.cos(yy / 7), np.sin((xx + yy) / 11)], axis=-1)
    image = (base * 0.4 + 0.5 + rng.normal(0, 0.08, (h, w, 3))).clip(0, 1)
    return Image.fromarray((image * 255).astype(np.uint8))
