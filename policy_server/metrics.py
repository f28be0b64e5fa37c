"""Prometheus metrics with the names docs/ARCHITECTURE.md (Metrics) fixes, in a registry owned by one server.

A registry per server (not the global default) lets tests run several servers in one process.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the HTTP app)

# Loopback round trips are sub-millisecond; model batches take up to seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("policy_requests_total", "Inference requests by transport and result code",
                                ["transport", "code"], registry=r)
        self.duration = Histogram("policy_request_duration_seconds", "Server-side time per request",
                                  ["transport"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("policy_queue_duration_seconds", "Time a request waited for its batch",
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("policy_compute_duration_seconds", "Time of one batched policy call",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("policy_batch_size", "Requests per policy call",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.inflight = Gauge("policy_inflight_requests", "Requests accepted and not yet answered", registry=r)
        self.model_info = Gauge("policy_model_info", "The served model (value is always 1)",
                                ["model", "checkpoint"], registry=r)

        self._counts: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def request_done(self, transport: str, code: str, seconds: float | None = None) -> None:
        """Count one request under its code, and its server-side time when it reached the service.
        The labelled series are looked up once, not per request (each `labels()` call takes the
        metric's lock and builds its key)."""
        count = self._counts.get((transport, code))
        if count is None:
            count = self._counts[(transport, code)] = self.requests.labels(transport=transport, code=code)
        count.inc()
        if seconds is not None:
            duration = self._durations.get(transport)
            if duration is None:
                duration = self._durations[transport] = self.duration.labels(transport=transport)
            duration.observe(seconds)

    def set_model(self, model: str, checkpoint: str) -> None:
        self.model_info.labels(model=model, checkpoint=checkpoint).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
