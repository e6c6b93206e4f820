"""The FastAPI app: hygiene → verify → classify → publish (or spool), plus /livez.

/readyz and /metrics are not on this (webhook, internet-facing) port: the admin listener serves them
(gateway/admin.py), from this worker's live state or, with several workers, from the reports it writes.

Order of checks on the webhook route, cheapest and least revealing first:
1.-3. request hygiene (gateway/hygiene.py): Content-Length over the cap → 413 before a byte of the body is
   read; a content type that is not JSON → 415; the body, counted while it streams → 413 past the cap;
4. the signature over the raw bytes → 401 with a reason code;
5. the verified body becomes one record (family, `other` or dead-letter topic) → 200 once the broker
   acknowledged it or the spool holds it durably; 503 + Retry-After when neither is possible.
   While the schema registry has not given our schema ids (started during a registry outage), the
   record is kept in the spool and gets its id when the registry answers, as during a Kafka outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from common.health import ServiceReadiness, livez_route
from common.isr_watch import IsrWatch
from common.settings import KafkaSettings
from gateway import admin, hygiene, records, signature
from gateway.connections import TABLE_STATE_KEY, ConnectionLimits, ConnectionTable
from gateway.metrics import GatewayMetrics
from gateway.outcome import PublishOutcome
from gateway.producer import ProducerFactory
from gateway.publisher import Publisher
from gateway.records import RecordEncoder
from gateway.settings import GatewaySettings
from schemas.catalog import GATEWAY_TOPICS
from schemas.codec import Codec, build_codec, keep_registered, prepare_until_ready
from schemas.confluent import RegistryError, RegistryUnavailable
from schemas.settings import SchemaSettings

log = logging.getLogger(__name__)

# A delivery published straight to its topic is the routine case: the metrics count it and its log line
# is DEBUG (a JSON line on stderr per request cost ~9% of the gateway's CPU under load). Refusals, dead
# letters, spooled deliveries and 503s stay at INFO.
_ROUTINE_REASONS = frozenset({records.Route.FAMILY.value, records.Route.OTHER.value})
# Why /readyz is not ready, by `Publisher.spool_state`.
_SPOOL_REASONS = {
    "full": "spool full: GATEWAY_SPOOL_MAX_BYTES reached",
    "disk_full": "spool disk full",
    "stopping": "shutting down",
    "not_started": "starting",
}


@dataclass
class _Result:
    status: int
    outcome: str  # published | spooled | unauthorized | rejected | unavailable
    reason: str
    event_id: str | None = None
    event_type: str | None = None
    retry_after: int | None = None
    close: bool = False

    @property
    def log_level(self) -> int:
        routine = self.outcome == "published" and self.reason in _ROUTINE_REASONS
        return logging.DEBUG if routine else logging.INFO

    def response(self) -> Response:
        body: dict[str, Any] = {"status": self.outcome, "reason": self.reason}
        if self.event_id is not None:
            body["event_id"] = self.event_id
        extra: dict[str, str] = {}
        if self.retry_after is not None:
            extra["Retry-After"] = str(self.retry_after)
        if self.close:
            extra["Connection"] = "close"  # an unread body must not be taken for the next request
        return _json(self.status, body, extra)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


class _Schemas:
    """Our writer schemas resolved (registered or looked up) once; encode then never needs the registry,
    so an outage while running changes nothing. Started while the registry is down, the gateway spools
    the deliveries until they resolve (retried in the background; the drain then gives them their schema
    ids); a configuration error fails the start, or, found once the registry is back, stops the gateway
    accepting deliveries (503) until an operator acts."""

    def __init__(self, codec: RecordEncoder, settings: SchemaSettings) -> None:
        self.codec = codec if isinstance(codec, Codec) else None
        self.settings = settings
        self.ready = self.codec is None
        self.failed = False  # the registry answered but our schemas cannot be resolved (configuration)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.codec is None:
            return
        topics = list(GATEWAY_TOPICS)
        try:
            await self.codec.prepare(topics)
            self.ready = True
        except RegistryUnavailable as exc:
            log.warning("schema registry unavailable; spooling until it is back", extra={"error": str(exc)})
            self._tasks.append(asyncio.create_task(self._resolve(topics)))
        self._tasks.append(asyncio.create_task(keep_registered(self.codec, self.settings.registry_recheck_s)))

    async def _resolve(self, topics: list[str]) -> None:
        assert self.codec is not None
        try:
            await prepare_until_ready(self.codec, topics)
        except RegistryError as exc:  # lookup-only and a schema missing, or refused: an operator must act
            log.error("schemas cannot be resolved; answering 503", extra={"error": str(exc)})
            self.failed = True
            return
        self.ready = True
        log.info("schema registry back; schemas resolved")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.codec is not None:
            await self.codec.close()


@dataclass
class _Worker:
    """What one worker process runs besides its routes, started and stopped by the app's lifespan."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    codec: RecordEncoder
    schemas: _Schemas
    publisher: Publisher
    isr: IsrWatch
    connections: ConnectionTable

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        kafka: KafkaSettings,
        schema: SchemaSettings,
        codec: RecordEncoder,
        producer_factory: ProducerFactory | None,
        metrics: GatewayMetrics,
    ) -> _Worker:
        # /readyz says when a topic the gateway writes is under min.insync.replicas (checked in the background)
        isr = IsrWatch(kafka, GATEWAY_TOPICS, metric_prefix="gateway", registry=metrics.registry)
        return cls(
            settings,
            metrics,
            codec,
            _Schemas(codec, schema),
            Publisher(settings, kafka, metrics, producer_factory, reframe=codec.reframe),
            isr,
            ConnectionTable(ConnectionLimits.from_settings(settings), metrics),
        )

    def readiness(self) -> ServiceReadiness:
        """Ready while deliveries can be taken (started, not stopping, room in the spool, schemas not
        unresolvable); the details are the /readyz body's (docs/gateway.md)."""
        publisher, schemas = self.publisher, self.schemas
        state = "resolved" if schemas.ready else "unresolvable" if schemas.failed else "waiting_for_registry"
        reasons: list[str] = []
        if not publisher.accepting:
            reasons.append(_SPOOL_REASONS.get(publisher.spool_state, f"spool {publisher.spool_state}"))
        if schemas.failed:
            reasons.append("schemas unresolvable: the registry refuses or lacks them (an operator must act)")
        details = {
            "kafka": "up" if publisher.kafka_up else "down",
            "schemas": state,
            "spooling": publisher.spooling,
            "spool_records": publisher.pending_records,
            "spool_bytes": publisher.pending_bytes,
            "spool_max_bytes": self.settings.spool_max_bytes,
            # ok | full (size limit) | disk_full | stopping, and the errno of the last append the disk refused
            "spool": publisher.spool_state,
            "spool_error": publisher.spool_write_error,
            # topic -> why the cluster refuses our records there (an ACL missing): those webhooks are answered 503
            "kafka_refusals": publisher.refusals,
            **self.isr.readiness(),
        }
        return ServiceReadiness(reasons, details)

    def exposition(self) -> bytes:
        """The metrics text (with several workers, of all of them: gateway/metrics.py)."""
        self.publisher.refresh_gauges()
        return self.metrics.exposition()

    @asynccontextmanager
    async def lifespan(
        self, app: FastAPI, admin_socket: socket.socket | None, report_dir: Path | None
    ) -> AsyncIterator[dict[str, Any]]:
        await self.schemas.start()
        await self.publisher.start()
        await self.isr.start()
        listener = admin.AdminListener(self, admin_socket) if admin_socket is not None else None
        if listener is not None:
            await listener.start()
        reporting = asyncio.create_task(self._report(report_dir)) if report_dir is not None else None
        try:
            # The lifespan state reaches uvicorn's protocol instances as `app_state`.
            yield {TABLE_STATE_KEY: self.connections}
        finally:
            if reporting is not None:  # stopping: no longer counted as a ready worker
                reporting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporting
                assert report_dir is not None
                admin.remove_report(report_dir, os.getpid())
            if listener is not None:
                await listener.stop()
            await self.isr.stop()
            await self.publisher.stop()
            await self.schemas.stop()
            self.metrics.process_exited()

    async def _report(self, directory: Path) -> None:
        """One of several workers: its readiness report (and its gauges, which the supervisor's /metrics reads)
        refreshed every REPORT_INTERVAL_S."""
        pid = os.getpid()
        while True:
            self.publisher.refresh_gauges()
            try:
                admin.write_report(directory, pid, self.readiness().body(), time.time())
            except OSError as exc:  # no report reads as not ready: say why once per interval
                log.warning("cannot write the readiness report", extra={"error": str(exc)})
            await asyncio.sleep(admin.REPORT_INTERVAL_S)


class _Webhook:
    """The webhook route: hygiene → verify → classify → publish (see the module docstring)."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.secrets = worker.settings.secret_bytes()
        self.allowed = frozenset(worker.settings.allowed_webhook_ids)

    async def respond(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            result = await self.handle(request)
        except Exception as exc:
            # A bug of ours must not become a 500 that Pinwheel gives up on: 503 makes it retry.
            log.exception("internal error", extra={"error": type(exc).__name__})
            result = _Result(503, "unavailable", "internal_error", retry_after=self.settings.retry_after_s)
        self.worker.metrics.count_request(result.outcome, result.reason)
        _log_result(result, started)
        return result.response()

    async def handle(self, request: Request) -> _Result:
        settings = self.settings
        headers = hygiene.header_map(request.scope)
        refused = hygiene.head_refusal(headers, settings.max_body_bytes)
        if refused is not None:
            return _Result(refused.status, "rejected", refused.reason, close=True)
        received_at = datetime.now(UTC)
        body = await hygiene.read_body(request.receive, settings.max_body_bytes)
        if isinstance(body, hygiene.Refusal):
            return _Result(body.status, "rejected", body.reason, close=True)
        verdict = signature.verify(
            headers,
            body,
            self.secrets,
            now=time.time(),
            tolerance_s=settings.timestamp_tolerance_s,
            allowed_webhook_ids=self.allowed,
        )
        if isinstance(verdict, signature.Refused):
            return _Result(401, "unauthorized", verdict.reason.value)
        if self.worker.schemas.failed:  # an operator must act; Pinwheel retries after Retry-After
            return _Result(503, "unavailable", "schemas_unresolvable", retry_after=settings.retry_after_s)
        planned = records.plan_record(
            body,
            request_headers=headers,
            webhook_id=verdict.webhook_id,
            pinwheel_version=headers.get(signature.VERSION_HEADER),
            sent_at=datetime.fromtimestamp(verdict.timestamp, UTC),
            received_at=received_at,
            codec=self.worker.codec,
        )
        return await self.publish(planned, received_at)

    async def publish(self, planned: records.PlannedRecord, received_at: datetime) -> _Result:
        reason = planned.reason or planned.route.value
        elapsed = (datetime.now(UTC) - received_at).total_seconds()
        outcome = await self.worker.publisher.publish(planned.record, self.settings.publish_timeout_s - elapsed)
        if outcome is PublishOutcome.ACKED:
            return _Result(200, "published", reason, planned.event_id, planned.event_type)
        if outcome is PublishOutcome.SPOOLED:
            return _Result(200, "spooled", reason, planned.event_id, planned.event_type)
        retry_after = self.settings.retry_after_s
        return _Result(503, "unavailable", outcome.value, planned.event_id, planned.event_type, retry_after)


def _log_result(result: _Result, started: float) -> None:
    if log.isEnabledFor(result.log_level):
        log.log(
            result.log_level,
            "webhook",
            extra={
                "status": result.status,
                "outcome": result.outcome,
                "reason": result.reason,
                "event_id": result.event_id,
                "event_type": result.event_type,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )


def create_app(
    settings: GatewaySettings,
    kafka: KafkaSettings | None = None,
    schema: SchemaSettings | None = None,
    *,
    codec: RecordEncoder | None = None,
    producer_factory: ProducerFactory | None = None,
    metrics: GatewayMetrics | None = None,
    admin_socket: socket.socket | None = None,
    report_dir: Path | None = None,
) -> FastAPI:
    """The gateway app of one worker process.

    `admin_socket` (bound by the caller, `gateway.admin.bind_admin`): this worker serves the admin
    listener on it, from its live state (one process). `report_dir`: this worker is one of several and
    writes its readiness report there; the supervisor serves the admin listener (gateway/admin.py).
    """
    worker = _Worker.build(
        settings,
        kafka or KafkaSettings(),
        schema or SchemaSettings(),
        codec if codec is not None else build_codec(schema),
        producer_factory,
        metrics or GatewayMetrics(),
    )
    # No slash redirects: Starlette would answer `POST /webhooks/pinwheel/` with a 307 to a URL built from the
    # client's Host header. Only the exact route is served; any other path is a plain 404.
    # No OpenTelemetry: the gateway exports Prometheus metrics, and FastAPI's native telemetry would look up
    # its providers on every request.
    app = FastAPI(
        title="Pinwheel webhook gateway",
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=functools.partial(worker.lifespan, admin_socket=admin_socket, report_dir=report_dir),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.publisher = worker.publisher
    app.state.metrics = worker.metrics
    # Plain Starlette routes: no dependency injection or validation layer on the hot path.
    app.add_route(settings.route, _Webhook(worker).respond, methods=["POST"], include_in_schema=False)
    # /livez only (no uptime: this port faces the internet); /readyz and /metrics are on the admin listener.
    app.router.routes.append(livez_route())
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`uvicorn --factory gateway.app:create_app_from_env`), settings from the env."""
    return create_app(GatewaySettings())  # secrets come from the environment
