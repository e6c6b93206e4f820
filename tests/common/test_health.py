"""common/health.py: the one /livez, /readyz and /metrics of every service (the gateway's and the processors'
tests check them on the real services)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette

from common.health import (
    ServiceReadiness,
    livez_route,
    metrics_route,
    readyz_route,
    registry_exposition,
)


def test_the_readyz_body_is_status_and_reasons_then_the_details() -> None:
    ready = ServiceReadiness((), {"kafka": "up", "status": "forged", "reasons": ["forged"]})
    assert ready.ready
    assert ready.body() == {"status": "ready", "reasons": [], "kafka": "up"}
    assert list(ready.body())[:2] == ["status", "reasons"]
    down = ServiceReadiness(["kafka unreachable: ConnectionRefusedError"], {"kafka": "down"})
    assert not down.ready
    assert down.body() == {
        "status": "not_ready",
        "reasons": ["kafka unreachable: ConnectionRefusedError"],
        "kafka": "down",
    }


async def test_the_routes_answer_from_the_state_at_request_time() -> None:
    registry = CollectorRegistry()
    hits = Counter("svc_hits", "Hits.", registry=registry)
    state = {"reasons": ["starting"]}
    clock = iter([100.0, 112.34]).__next__
    app = Starlette(
        routes=[
            livez_route(started=clock(), clock=clock),
            readyz_route(lambda: ServiceReadiness(state["reasons"], {"n": 1})),
            metrics_route(registry_exposition(registry)),
        ]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        live = await http.get("/livez")
        assert (live.status_code, live.json()) == (200, {"status": "alive", "uptime_s": 12.3})
        not_yet = await http.get("/readyz")
        assert (not_yet.status_code, not_yet.json()) == (503, {"status": "not_ready", "reasons": ["starting"], "n": 1})
        state["reasons"] = []
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "reasons": [], "n": 1})
        hits.inc()
        metrics = await http.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "svc_hits_total 1.0" in metrics.text
        assert (await http.post("/readyz")).status_code == 405


async def test_livez_without_a_start_says_alive_only() -> None:
    app = Starlette(routes=[livez_route()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        assert (await http.get("/livez")).json() == {"status": "alive"}
