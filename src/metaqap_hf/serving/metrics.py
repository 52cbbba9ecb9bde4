"""The service's counters and histograms in the Prometheus text format (version 0.0.4), written by hand: a few
dozen lines instead of a dependency, and nothing global, so several services in one process (tests) keep their own."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["BATCH_SIZE_BUCKETS", "LATENCY_BUCKETS", "ServiceMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        lines, cumulative = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        return lines + [f"{name}_sum {self.total:.6f}", f"{name}_count {cumulative}"]


class ServiceMetrics:
    """What `/metrics` shows: requests by status code, images scored and skipped, rejections by reason, request
    latency, batch sizes, and the requests and images waiting now. Safe to update from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = defaultdict(int)  # status code -> count
        self.images = defaultdict(int)  # "scored" / "skipped" -> count
        self.rejections = defaultdict(int)  # reason -> count
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch_sizes = _Histogram(BATCH_SIZE_BUCKETS)
        self.requests_in_flight = 0
        self.images_queued = 0

    def request_done(self, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[status] += 1
            self.latency.observe(seconds)

    def rejected(self, reason: str) -> None:
        with self._lock:
            self.rejections[reason] += 1

    def images_done(self, scored: int, skipped: int) -> None:
        with self._lock:
            self.images["scored"] += scored
            self.images["skipped"] += skipped

    def batch_scored(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP metaqap_requests_total Requests to POST /score answered, by HTTP status.",
                     "# TYPE metaqap_requests_total counter"]
            lines += [f'metaqap_requests_total{{status="{code}"}} {count}' for code, count in sorted(self.requests.items())]
            lines += ["# HELP metaqap_images_total Images received, scored or skipped (unreadable, too large).",
                      "# TYPE metaqap_images_total counter"]
            lines += [f'metaqap_images_total{{outcome="{outcome}"}} {self.images[outcome]}'
                      for outcome in ("scored", "skipped")]
            lines += ["# HELP metaqap_rejections_total Requests refused before scoring, by reason.",
                      "# TYPE metaqap_rejections_total counter"]
            lines += [f'metaqap_rejections_total{{reason="{reason}"}} {count}'
                      for reason, count in sorted(self.rejections.items())]
            lines += ["# HELP metaqap_request_duration_seconds Time from a request's arrival to its answer.",
                      "# TYPE metaqap_request_duration_seconds histogram",
                      *self.latency.lines("metaqap_request_duration_seconds"),
                      "# HELP metaqap_batch_size Images per forward pass of the model.",
                      "# TYPE metaqap_batch_size histogram",
                      *self.batch_sizes.lines("metaqap_batch_size"),
                      "# HELP metaqap_requests_in_flight Requests accepted and not yet answered.",
                      "# TYPE metaqap_requests_in_flight gauge",
                      f"metaqap_requests_in_flight {self.requests_in_flight}",
                      "# HELP metaqap_images_queued Decoded images waiting for the model.",
                      "# TYPE metaqap_images_queued gauge",
                      f"metaqap_images_queued {self.images_queued}"]
        return "\n".join(lines) + "\n"
