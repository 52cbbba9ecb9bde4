"""An HTTP scoring service: `metaqap serve`, and the same pieces for a Python user (`pip install 'metaqap-hf[serve]'`).

    >>> from metaqap_hf.serving import ScoringService, ServiceLimits, serve
    >>> serve(ScoringService(limits=ServiceLimits(max_batch=16, max_wait_ms=10)), port=8000)   # what `metaqap serve` does

Uploads are decoded by the library's decoder and scored by `ImageScorer`'s batch step, so a result is the dict
`pipeline("image-quality")` gives for the same file. Modules: `service` (`ScoringService`: limits, decoding,
batching; no web framework), `batcher` (`DynamicBatcher`), `metrics` (Prometheus text), `app` (`create_app`, the
FastAPI app, and `serve`, uvicorn with a graceful SIGTERM).
"""

from .app import SCORE_QUERY_OPTIONS, create_app, serve
from .batcher import DynamicBatcher
from .metrics import ServiceMetrics
from .service import RequestRejected, ScoringService, ServiceLimits

__all__ = [
    "DynamicBatcher",
    "RequestRejected",
    "SCORE_QUERY_OPTIONS",
    "ScoringService",
    "ServiceLimits",
    "ServiceMetrics",
    "create_app",
    "serve",
]
