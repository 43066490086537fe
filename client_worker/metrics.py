"""Prometheus metrics of one worker process, served over HTTP for scraping.

Each `Metrics` object has its own registry, so several workers in one test process do not
share counters, and the endpoint shows only the worker's own series.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
QUALITY_BUCKETS: Mapping[str, tuple[float, ...]] = {
    "silhouette_iou": (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
    "colour_difference": (2, 5, 10, 15, 20, 30, 50, 100, 255),
    "loose_parts": (0, 1, 2, 3, 5, 10, 20, 50),
    "open_edges": (0, 0.01, 0.05, 0.1, 0.15, 0.3, 1, 3),
}
"""The quality check's measures kept as histograms (docs/quality-check.md), around their thresholds."""


class Metrics:
    """Counters and gauges the worker updates; names are prefixed `img2mesh_worker_`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "img2mesh_worker_jobs",
            "Jobs by outcome: completed, failed, retried, duplicate (dropped or overtaken), deferred (until its ETA, "
            "or while another run holds it), handed_back (shutdown, Redis outage).",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "img2mesh_worker_rejected_messages", "Queue elements moved to the rejected list.", registry=self.registry
        )
        self.retries = Counter(
            "img2mesh_worker_retries", "Transient failures scheduled for a retry, by stage.", ["stage"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "img2mesh_worker_stage_seconds", "Duration of each job stage.", ["stage"], buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "img2mesh_worker_queue_depth",
            "Length of the queue (all its priority lists), delayed set, dead-letter and rejected lists.",
            ["list"], registry=self.registry,
        )
        self.stranded = Gauge(
            "img2mesh_worker_stranded_messages",
            "Messages of the queue in priority lists this worker does not read (PRIORITY_STEPS or "
            "PRIORITY_SEPARATOR differ from the producers'); the log and the health check name the lists.",
            registry=self.registry,
        )
        self.in_flight = Gauge("img2mesh_worker_jobs_in_flight", "Jobs being processed now.", registry=self.registry)
        self.webhooks = Counter(
            "img2mesh_worker_webhooks", "Webhook delivery attempts by result: delivered, failed, rejected.",
            ["result"], registry=self.registry,
        )
        self.asset_cache = Counter(
            "img2mesh_worker_asset_cache",
            "Asset cache lookups and writes by result: hit (files copied, no model run), miss, copy_failed (fell "
            "back to a model run), error (the cache could not be read or written).",
            ["result"], registry=self.registry,
        )
        self.quality = {
            measure: Histogram(f"img2mesh_worker_quality_{measure}",
                               f"The quality check's {measure} of each asset a job made (docs/quality-check.md).",
                               buckets=buckets, registry=self.registry)
            for measure, buckets in QUALITY_BUCKETS.items()
        }
        self.quality_verdicts = Counter(
            "img2mesh_worker_quality_verdicts",
            "The quality check's verdicts on assets jobs made: ok, review, refused (strict), unchecked; and "
            "retried, for assets made again at the next preset.",
            ["verdict"], registry=self.registry,
        )
        self.recovered = Counter(
            "img2mesh_worker_recovered_messages", "Messages moved back from dead workers' processing lists.",
            registry=self.registry,
        )

    def observe_quality(self, report: Mapping[str, Any]) -> None:
        """Count what the quality check's ``report`` (a job's ``quality`` object) says."""
        measures = report.get("measures") or {}
        for measure, histogram in self.quality.items():
            if measures.get(measure) is not None:
                histogram.observe(measures[measure])
        if "verdict" in report:
            self.quality_verdicts.labels(report["verdict"]).inc()
        if "retry" in report:
            self.quality_verdicts.labels("retried").inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer | None:
        """Expose `/metrics` on `port` from a daemon thread (0 = do not serve); call `shutdown()` to stop."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
