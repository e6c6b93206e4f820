"""The health and metrics endpoints every service serves, written once: `/livez`, `/readyz`, `/metrics`.

- `GET /livez`: 200 `{"status": "alive"}` while the event loop answers (with `uptime_s` where the service asks
  for it; the gateway's internet-facing port does not).
- `GET /readyz`: 200 when ready, else 503, with one body shape either way: `{"status": "ready" | "not_ready",
  "reasons": [...], ...}`. `reasons` says why not (empty when ready), each one a short sentence an operator can
  act on; the service's own details follow (`kafka`, `spool_records`, `assigned`, ...).
- `GET /metrics`: the Prometheus text exposition (prometheus-client), its content type.

A service builds a `ServiceReadiness` from its state (pure) and hands the routes callables that read it at request time;
the routes fit a Starlette or FastAPI app alike. Redirects on a trailing slash are the app's to turn off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

READY = "ready"
NOT_READY = "not_ready"


@dataclass(frozen=True)
class ServiceReadiness:
    """Ready when there is no reason not to be; `details` are the service's own fields of the body."""

    reasons: Sequence[str] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def body(self) -> dict[str, Any]:
        """The /readyz body: `status` and `reasons` first, then the details (which cannot override them)."""
        own = {key: value for key, value in self.details.items() if key not in ("status", "reasons")}
        return {"status": READY if self.ready else NOT_READY, "reasons": list(self.reasons), **own}


def body_is_ready(body: Mapping[str, Any]) -> bool:
    """Whether a /readyz body (as served, or as a worker reported it) says ready."""
    return body.get("status") == READY


def _json(status: int, body: Mapping[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def livez_route(started: float | None = None, clock: Callable[[], float] = time.monotonic) -> Route:
    """`GET /livez`: `{"status": "alive"}`, with `uptime_s` since `started` (a `clock` reading) when given."""

    async def livez(request: Request) -> Response:
        body: dict[str, Any] = {"status": "alive"}
        if started is not None:
            body["uptime_s"] = round(clock() - started, 1)
        return _json(200, body)

    return Route("/livez", livez, methods=["GET"], include_in_schema=False)


def readyz_route(readiness: Callable[[], ServiceReadiness]) -> Route:
    """`GET /readyz`: 200 with the body when `readiness()` is ready, else 503 with it."""

    async def readyz(request: Request) -> Response:
        state = readiness()
        return _json(200 if state.ready else 503, state.body())

    return Route("/readyz", readyz, methods=["GET"], include_in_schema=False)


def metrics_route(exposition: Callable[[], bytes]) -> Route:
    """`GET /metrics`: `exposition()`, the Prometheus text of the service's registry (or registries)."""

    async def metrics(request: Request) -> Response:
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def registry_exposition(registry: CollectorRegistry) -> Callable[[], bytes]:
    """The exposition of one registry, read at scrape time."""
    return lambda: generate_latest(registry)
