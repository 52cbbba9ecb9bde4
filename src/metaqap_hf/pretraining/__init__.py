"""Quality-aware pretraining data: pseudo-MOS labels for synthetic distortions, the streaming dataset, and the
objectives a model learns from them (`stage.pretrain` trains; `recipe` is the one-GPU recipe)."""

from .contact_sheet import make_contact_sheet
from .dataset import DistortedStream, ShardDataset, export_shards, find_images
from .labels import DEFAULT_METRICS, FR_METRICS, PseudoMOSLabeler, full_reference_scores
from .objectives import DISTORTION_CLASSES, OBJECTIVES, QualityPretrainingModel, distortion_class

__all__ = [
    "DEFAULT_METRICS",
    "DISTORTION_CLASSES",
    "FR_METRICS",
    "OBJECTIVES",
    "PseudoMOSLabeler",
    "QualityPretrainingModel",
    "full_reference_scores",
    "DistortedStream",
    "ShardDataset",
    "distortion_class",
    "export_shards",
    "find_images",
    "make_contact_sheet",
]
