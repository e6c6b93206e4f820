"""`pinwheel-connector watchdog`: checks the Pinwheel webhook subscription periodically and exports what it finds.

Every `WATCHDOG_INTERVAL_S` it lists the API key's webhooks (`GET /v1/webhooks`, the client of the `webhooks`
commands) and judges the subscription (`operate.subscription.assess`): its status, whether its URL is still this
gateway's, which needed event types it lacks. /metrics exports that for the rules in deploy/prometheus/alerts.yml
(group pinwheel-subscription); /livez answers while the loop runs; /readyz once the last check succeeded.
Why a service of its own and not part of the gateway: docs/operations.md "Subscription watchdog".

The API secret is read from `PINWHEEL_API_SECRET_FILE` (or `PINWHEEL_API_SECRET`) on every check and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from starlette.applications import Starlette

from common import logs
from common.health import ServiceReadiness, livez_route, metrics_route, readyz_route, registry_exposition
from operate.subscription import ACTIVE, PAUSED, SubscriptionReport, assess, required_events
from operate.webhooks import InvalidRequest, PinwheelApiSettings, WebhookClient, WebhookError, check_endpoint_url
from processors.readiness import ReadinessSettings
from schemas.catalog import KNOWN_EVENT_TYPES

log = logging.getLogger("watchdog")


def _csv(value: object) -> object:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class WatchdogSettings(BaseSettings):
    """The subscription watchdog (env prefix `WATCHDOG_`); the API's address and secret are `PINWHEEL_API_*`."""

    model_config = SettingsConfigDict(env_prefix="WATCHDOG_", extra="ignore")

    gateway_url: str = Field(
        description="The public https:// URL of this gateway's webhook endpoint, as registered with Pinwheel: "
        "the subscription must point there.",
    )
    webhook_id: str | None = Field(
        default=None,
        description="Id of the webhook to watch (x-pinwheel-webhook-id). Unset: the webhook pointing at "
        "WATCHDOG_GATEWAY_URL (a re-pointed webhook then shows as missing, not as a wrong URL).",
    )
    interval_s: float = Field(default=300.0, ge=1, description="Seconds between two checks of GET /v1/webhooks.")
    max_silence_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="PinwheelNoDeliveries fires when the gateway accepted no delivery for this long while the "
        "subscription is active (exported as watchdog_max_silence_seconds).",
    )
    extra_events: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated event types the subscription must enable besides account.added, "
        "account.monitoring_status.updated and those of READINESS_RULE.",
    )
    health_host: str = Field(default="127.0.0.1", description="Interface of /livez, /readyz and /metrics.")
    health_port: int = Field(default=8083, ge=0, le=65535, description="Port of /livez, /readyz, /metrics (0: off).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")

    @field_validator("gateway_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            return check_endpoint_url(value.strip())
        except InvalidRequest:
            raise ValueError("expected the https:// URL Pinwheel delivers to") from None

    @field_validator("webhook_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("extra_events", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _csv(value)

    @field_validator("extra_events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        if unknown := sorted(set(value) - KNOWN_EVENT_TYPES):
            raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
        return value


@dataclass
class WatchdogState:
    """What the last checks found: read by /metrics and /readyz."""

    report: SubscriptionReport | None = None  # the last successful check's
    last_ok: bool = False
    last_error: str | None = None
    last_success_at: float | None = None
    checks: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})


def check_once(
    api: PinwheelApiSettings, settings: WatchdogSettings, required: frozenset[str], state: WatchdogState
) -> SubscriptionReport | None:
    """One check: list the webhooks, judge the subscription, record the result in `state` (blocking I/O)."""
    try:
        client = WebhookClient(api)  # reads the secret file again: a rotated secret is picked up
        try:
            hooks = client.list_all()
        finally:
            client.close()
    except WebhookError as exc:  # the message names the call and Pinwheel's answer, never the secret
        state.last_ok, state.last_error = False, str(exc)
        state.checks["error"] += 1
        log.warning("subscription check failed", extra={"error": str(exc)})
        return None
    report = assess(hooks, gateway_url=settings.gateway_url, webhook_id=settings.webhook_id, required=required)
    state.report, state.last_ok, state.last_error = report, True, None
    state.last_success_at = time.time()
    state.checks["ok"] += 1
    if not report.found or report.status != ACTIVE or not report.url_matches or report.missing_events:
        log.warning(
            "subscription needs attention",
            extra={
                "webhook_id": report.webhook_id,
                "found": report.found,
                "status": report.status,
                "url_matches": report.url_matches,
                "missing_events": sorted(report.missing_events),
            },
        )
    return report


class WatchdogCollector(Collector):
    """The state as Prometheus metrics, computed at scrape time."""

    def __init__(self, state: WatchdogState, settings: WatchdogSettings) -> None:
        self.state = state
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        state = self.state
        checks = CounterMetricFamily("watchdog_checks", "Checks of GET /v1/webhooks, by result.", labels=["result"])
        for result, count in state.checks.items():
            checks.add_metric([result], count)
        yield checks
        yield GaugeMetricFamily(
            "watchdog_check_success", "1 if the last check of Pinwheel's API succeeded.", value=int(state.last_ok)
        )
        yield GaugeMetricFamily(
            "watchdog_last_success_timestamp_seconds",
            "Unix time of the last successful check (0: none yet).",
            value=state.last_success_at or 0,
        )
        yield GaugeMetricFamily(
            "watchdog_max_silence_seconds",
            "WATCHDOG_MAX_SILENCE_S: how long the gateway may accept no delivery while the subscription is active.",
            value=self.settings.max_silence_s,
        )
        report = state.report
        if report is None:  # nothing known yet: no subscription series rather than made-up values
            return
        yield GaugeMetricFamily(
            "watchdog_subscription_found", "1 if the watched webhook exists at Pinwheel.", value=int(report.found)
        )
        info = GaugeMetricFamily(
            "watchdog_subscription_info",
            "The watched webhook as Pinwheel lists it (value 1).",
            labels=["webhook_id", "url", "status", "version"],
        )
        if report.found:
            info.add_metric([report.webhook_id or "", report.url or "", report.status or "", report.version or ""], 1)
        yield info
        yield GaugeMetricFamily(
            "watchdog_subscription_active", "1 if the webhook's status is active.", value=int(report.status == ACTIVE)
        )
        yield GaugeMetricFamily(
            "watchdog_subscription_paused",
            "1 if Pinwheel paused the webhook (30 days of failed deliveries): nothing is delivered until resumed.",
            value=int(report.status == PAUSED),
        )
        yield GaugeMetricFamily(
            "watchdog_subscription_url_matches",
            "1 if the webhook's URL is WATCHDOG_GATEWAY_URL.",
            value=int(report.url_matches),
        )
        events = GaugeMetricFamily(
            "watchdog_subscription_event_enabled",
            "1 if the webhook enables the event type, 0 if not; required=true for those the pipeline needs.",
            labels=["event_type", "required"],
        )
        for event_type in sorted(report.enabled_events | report.required_events):
            required = "true" if event_type in report.required_events else "false"
            events.add_metric([event_type, required], int(event_type in report.enabled_events))
        yield events
        yield GaugeMetricFamily(
            "watchdog_subscription_missing_events",
            "Event types the pipeline needs that the webhook does not enable.",
            value=len(report.missing_events),
        )


def health_app(state: WatchdogState, settings: WatchdogSettings, started: float) -> Starlette:
    """/livez, /readyz (ready once the last check succeeded; else the reason) and /metrics: common/health.py."""
    registry = CollectorRegistry()
    registry.register(WatchdogCollector(state, settings))

    def readiness() -> ServiceReadiness:
        if state.last_ok:
            return ServiceReadiness()
        return ServiceReadiness([state.last_error or "no check yet"])

    return Starlette(
        routes=[livez_route(started), readyz_route(readiness), metrics_route(registry_exposition(registry))]
    )


async def serve(
    settings: WatchdogSettings,
    api: PinwheelApiSettings,
    required: frozenset[str],
    stop: asyncio.Event,
    state: WatchdogState | None = None,
) -> None:
    """Check every `interval_s` until `stop`, serving health and metrics meanwhile."""
    state = state or WatchdogState()
    server = None
    served = None
    if settings.health_port:
        config = uvicorn.Config(
            health_app(state, settings, time.monotonic()),
            host=settings.health_host,
            port=settings.health_port,
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        served = asyncio.create_task(server.serve())
    log.info(
        "watchdog starting",
        extra={"api": api.base_url, "gateway_url": settings.gateway_url, "required_events": sorted(required)},
    )
    try:
        while not stop.is_set():
            await asyncio.to_thread(check_once, api, settings, required, state)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.interval_s)
    finally:
        if server is not None and served is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await served
        log.info("watchdog stopped")


def watchdog_command() -> int:
    """Run until SIGINT/SIGTERM. A bad setting raises ValidationError (the CLI prints it, exit 2); no secret or a
    non-https API URL is one line, exit 2."""
    settings = WatchdogSettings()  # type: ignore[call-arg]  # gateway_url comes from the environment
    api = PinwheelApiSettings()
    rule = ReadinessSettings().parsed()
    required = required_events(rule.event_types, settings.extra_events)
    try:
        WebhookClient(api).close()  # the secret and the API URL, checked before anything starts
    except InvalidRequest as exc:
        print(f"watchdog: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, ["watchdog"])

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, api, required, stop)

    asyncio.run(main())
    return 0
