"""Synthetic distortions of the KADID-10k / KADIS-700k family (25 types x 5 levels) on batched tensors.

Ground-floor room: imports nothing else from metaqap_hf. Used by ``metaqap_hf.pretraining`` to build
quality-aware pretraining data.
"""

from .registry import DISTORTION_TYPES, NUM_LEVELS, distort, distort_batch, random_distortion

__all__ = ["DISTORTION_TYPES", "NUM_LEVELS", "distort", "distort_batch", "random_distortion"]
