"""The fault classes a diagnosis names: every distortion type of the registry, in its order, with the label people
use for it and the family they would name ("blur", "noise", ...), plus "none" for a photo without such a fault.

Plain data (no torch): a checkpoint's `config.fault_head` stores these lists, so reading a diagnosis needs only the
config. Families follow what a photographer acts on: refocus or hold still (blur), lower the ISO (noise), stop
recompressing (compression), expose differently (exposure), fix the colour pipeline (colour).
"""

from __future__ import annotations

__all__ = ["FAULT_CLASSES", "FAULT_FAMILIES", "NO_FAULT", "fault_head_spec"]

NO_FAULT = "none"
FAULT_FAMILIES = ("blur", "noise", "compression", "exposure", "colour", "spatial", "oversharpening", NO_FAULT)

# (registry type, label, family), in the order of `DISTORTION_TYPES`, then the class of undistorted photos.
FAULT_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("gaussian_blur", "gaussian blur", "blur"),
    ("lens_blur", "lens blur", "blur"),
    ("motion_blur", "motion blur", "blur"),
    ("color_diffusion", "colour bleeding", "colour"),
    ("color_shift", "colour fringing", "colour"),
    ("color_quantization", "colour quantisation", "colour"),
    ("color_saturation_1", "desaturated", "colour"),
    ("color_saturation_2", "oversaturated", "colour"),
    ("jpeg", "JPEG artefacts", "compression"),
    ("jpeg2000", "JPEG 2000 artefacts", "compression"),
    ("white_noise", "white noise", "noise"),
    ("white_noise_color_component", "colour noise", "noise"),
    ("impulse_noise", "impulse noise", "noise"),
    ("multiplicative_noise", "multiplicative noise", "noise"),
    ("denoise", "denoising smear", "noise"),
    ("brighten", "overexposed", "exposure"),
    ("darken", "underexposed", "exposure"),
    ("mean_shift", "brightness shift", "exposure"),
    ("jitter", "pixel jitter", "spatial"),
    ("non_eccentricity_patch", "displaced patches", "spatial"),
    ("pixelate", "pixelation", "compression"),
    ("quantization", "tone quantisation", "compression"),
    ("color_block", "colour blocks", "spatial"),
    ("high_sharpen", "oversharpened", "oversharpening"),
    ("contrast_change", "contrast change", "exposure"),
    (NO_FAULT, "none", NO_FAULT),
)


def fault_head_spec(hidden_size: int = 0) -> dict:
    """The `fault_head` entry of a `MetaQAPConfig` for these classes."""
    return {"types": [kind for kind, _, _ in FAULT_CLASSES], "labels": [label for _, label, _ in FAULT_CLASSES],
            "families": [family for _, _, family in FAULT_CLASSES], "hidden_size": hidden_size}
