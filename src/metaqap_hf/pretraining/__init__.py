"""Quality-aware pretraining data: pseudo-MOS labels for synthetic distortions and the streaming dataset."""

from .contact_sheet import make_contact_sheet
from .dataset import DistortedStream, ShardDataset, export_shards, find_images
from .labels import DEFAULT_METRICS, FR_METRICS, PseudoMOSLabeler, full_reference_scores

__all__ = [
    "DEFAULT_METRICS",
    "FR_METRICS",
    "PseudoMOSLabeler",
    "full_reference_scores",
    "DistortedStream",
    "ShardDataset",
    "export_shards",
    "find_images",
    "make_contact_sheet",
]
