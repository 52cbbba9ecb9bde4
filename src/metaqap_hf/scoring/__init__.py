"""Scoring many images: find them (folders, lists of paths, tar shards, datasets), decode and resize each with bounded
memory, score in batches, and write the rows as they come; every input that cannot be scored is reported with the
reason, without stopping. The library behind `metaqap score`, so a Python user gets exactly the command's behaviour.

    >>> from metaqap_hf.scoring import ImageScorer, ImageInputs, score_to_output
    >>> scorer = ImageScorer()                        # the bundled default model; or ImageScorer("path/or/hub-id")
    >>> for item in scorer.score_files(["photos/"]):  # results in input order, as they come
    ...     print(item.path, item.score if item.ok else item.reason)
    >>> run = score_to_output(ImageInputs(["photos/"]), "scores.jsonl", resume=True)   # what `metaqap score` does

Modules: `inputs` (what can be read), `scorer` (`ImageScorer`: decoding, batching), `output` (formats and
destinations, resume), `run` (`score_to_output`: one run, interrupts, several processes), `options` (`OptionError`).
"""

from ..deprecation import moved_names
from .inputs import ImageInput, ImageInputs
from .options import OptionError
from .output import FORMATS, OutputError, printable_path
from .run import ScoringInterrupted, ScoringRun, score_to_output
from .scorer import ImageScorer, ScoredImage

__all__ = [
    "FORMATS",
    "ImageInput",
    "ImageInputs",
    "ImageScorer",
    "OptionError",
    "OutputError",
    "ScoredImage",
    "ScoringInterrupted",
    "ScoringRun",
    "printable_path",
    "score_to_output",
]

# Moved to metaqap_hf.devices in 0.2.0.
__getattr__ = moved_names(__name__, {"resolve_device": "..devices"})
