"""Prometheus metrics of one gateway app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.spool_records = Gauge("gateway_spool_records", "Events waiting in the spool.", registry=r)
        self.spool_bytes = Gauge("gateway_spool_bytes", "Bytes waiting in the spool.", registry=r)
        self.spooled = Counter("gateway_spooled", "Events written to the spool.", registry=r)
        self.drained = Counter("gateway_drained", "Spooled events published to Kafka.", registry=r)
        self.producer_errors = Counter(
            "gateway_producer_errors", "Producer failures (timeouts, broker errors).", ["kind"], registry=r
        )
        self.kafka_up = Gauge("gateway_kafka_up", "1 while the producer is connected and not spooling.", registry=r)
