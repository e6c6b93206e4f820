"""Prometheus metrics of one gateway app (its own registry, so several apps can live in one process).

With several workers, `gateway.server.run` sets PROMETHEUS_MULTIPROC_DIR before spawning them: each
process then writes its values to files there and /metrics of any worker sums up all of them.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Request outcomes of a signed delivery that was accepted (answered 200).
DELIVERED = frozenset({"published", "spooled"})

# Publish latency: from the verified body to the broker's acknowledgement (or the spool's fsync).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Webhook requests by outcome and reason.", ["outcome", "reason"], registry=r
        )
        self.publish_latency = Histogram(
            "gateway_publish_latency_seconds",
            "Time from a verified body to a durable answer (Kafka ack or spool fsync).",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Across workers: the spool depth adds up; Kafka is up only if it is for every live worker.
        self.spool_records = Gauge(
            "gateway_spool_records", "Events waiting in the spool.", registry=r, multiprocess_mode="livesum"
        )
        self.spool_bytes = Gauge(
            "gateway_spool_bytes", "Bytes waiting in the spool.", registry=r, multiprocess_mode="livesum"
        )
        self.spool_oldest_age = Gauge(
            "gateway_spool_oldest_age_seconds",
            "Age of the oldest event waiting in the spool (since the gateway received it); 0 when empty.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "gateway_ready",
            "1 while /readyz answers ready (accepting: started, not stopping, room in the spool and on its disk).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.spooled = Counter("gateway_spooled", "Events written to the spool.", registry=r)
        self.drained = Counter("gateway_drained", "Spooled events published to Kafka.", registry=r)
        self.spool_quarantined = Counter(
            "gateway_spool_quarantined",
            "Damaged spool ranges (usually one frame) skipped and quarantined, at recovery or by the drain "
            "(the disk changed); the valid frames after them were kept. Their events are lost to Kafka.",
            registry=r,
        )
        self.registry_waits = Counter(
            "gateway_registry_waits",
            "Spool drain rounds that waited for the schema registry (records kept while it was unreachable).",
            registry=r,
        )
        self.producer_errors = Counter(
            "gateway_producer_errors", "Producer failures (timeouts, broker errors).", ["kind"], registry=r
        )
        self.kafka_up = Gauge(
            "gateway_kafka_up",
            "1 while the producer is connected and Kafka acknowledges (directly, or draining the spool).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.connections_open = Gauge(
            "gateway_connections_open",
            "Open HTTPS connections (TLS handshake done).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_dropped = Counter(
            "gateway_connections_dropped",
            "Connections the gateway closed or refused, by reason: displaced_idle and refused_at_limit (the "
            "connection limit), idle_timeout, header_timeout, body_timeout, header_too_large, "
            "request_line_too_long, invalid_request.",
            ["reason"],
            registry=r,
        )

        # When the last signed delivery was accepted (published or spooled); starts at the process's start, so a
        # fresh gateway does not look silent. The subscription watchdog's alert compares it with
        # WATCHDOG_MAX_SILENCE_S (deploy/prometheus/alerts.yml, PinwheelNoDeliveries).
        self.last_delivery = Gauge(
            "gateway_last_delivery_timestamp_seconds",
            "Unix time of the last signed delivery accepted (published or spooled), else of the gateway's start.",
            registry=r,
            multiprocess_mode="max",
        )
        self.last_delivery.set(time.time())

        # Children of the two per-request series, bound on first use: labels() validates the names, builds
        # the key and takes the metric's lock on every call.
        self._request_children: dict[tuple[str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def count_request(self, outcome: str, reason: str) -> None:
        child = self._request_children.get((outcome, reason))
        if child is None:
            child = self._request_children[(outcome, reason)] = self.requests.labels(outcome=outcome, reason=reason)
        child.inc()
        if outcome in DELIVERED:
            self.last_delivery.set(time.time())

    def count_connection_dropped(self, reason: str) -> None:
        self.connections_dropped.labels(reason=reason).inc()

    def observe_publish(self, path: str, seconds: float) -> None:
        child = self._latency_children.get(path)
        if child is None:
            child = self._latency_children[path] = self.publish_latency.labels(path=path)
        child.observe(seconds)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    @staticmethod
    def process_exited() -> None:
        """Drop this process's live gauges from the multiprocess totals."""
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
