"""The gateway's admin listener: `/readyz` and `/metrics` over plain HTTP, apart from the webhook port.

Why apart: the webhook port faces the internet (Pinwheel must reach it), while readiness details (Kafka's
state, the spool's depth, under-replicated partitions) and the metrics are for the operator and the
orchestrator. They are served on GATEWAY_ADMIN_HOST:GATEWAY_ADMIN_PORT (default 127.0.0.1:8082), in plain
HTTP because that address is meant to stay on the host or inside the pod (loopback, or the pod's network
namespace for a kubelet probe and a Prometheus sidecar): never publish it to the internet. The webhook port
keeps `/livez` only. The admin listener has uvicorn's default protocol, none of the webhook port's connection
limits or deadlines (gateway/connections.py): a flood of webhook connections cannot lock the operator out.

Who serves it:
- one process (GATEWAY_WORKERS=1): the worker itself, in its own event loop, from its live state;
- n workers: uvicorn's supervisor process, on a thread. Each worker writes a readiness report
  (`<pid>.json` in a directory of the run) every REPORT_INTERVAL_S, refreshing its gauges at the same
  time. The rule: /readyz answers 200 only if every worker process the supervisor runs now has reported
  ready within the last STALE_AFTER_S; a worker that is missing, silent (stuck, or just restarted) or
  not ready makes the whole gateway not ready (503). The body sums the spools and names each worker's
  report. /metrics sums every worker (prometheus-client's multiprocess directory), as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from starlette.applications import Starlette

from common.health import ServiceReadiness, body_is_ready, metrics_route, readyz_route

#: How often a worker (of several) writes its readiness report and refreshes its gauges.
REPORT_INTERVAL_S = 1.0
#: A report older than this is no answer: its worker is stuck, gone, or not started yet.
STALE_AFTER_S = 3.0

# Worst first: the aggregate of several workers takes the worst of their answers.
_SCHEMA_STATES = ("unresolvable", "waiting_for_registry", "resolved")
_MIN_ISR_STATES = ("under", "unknown", "ok")


class AdminSource(Protocol):
    """What the admin listener reports: the readiness (with its reasons and details) and the metrics text."""

    def readiness(self) -> ServiceReadiness: ...

    def exposition(self) -> bytes: ...


def admin_app(source: AdminSource) -> Starlette:
    """`GET /readyz` (200 when ready, else 503, with the body either way) and `GET /metrics` (common/health.py);
    any other path 404."""
    app = Starlette(routes=[readyz_route(source.readiness), metrics_route(source.exposition)])
    app.router.redirect_slashes = False  # as on the webhook port: no redirect built from the Host header
    return app


class AdminSettingsError(RuntimeError):
    """The admin address cannot be listened on (taken port, unknown interface)."""


def bind_admin(host: str, port: int) -> socket.socket | None:
    """The admin listener's socket, bound and listening (None when `port` is 0: no admin listener).

    Bound by the shell before any worker starts, so a taken port is a configuration error at start-up
    rather than a lifespan failure later; the socket is then handed to whichever process serves it.
    """
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)  # SO_REUSEADDR on POSIX
    except OSError as exc:
        raise AdminSettingsError(
            f"GATEWAY_ADMIN_PORT={port}: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None


def _admin_server(source: AdminSource) -> uvicorn.Server:
    # Logging is configured already (by the webhook server's config); a dictConfig here would reset it.
    config = uvicorn.Config(admin_app(source), log_config=None, access_log=False, lifespan="off", server_header=False)
    return uvicorn.Server(config)


class AdminListener:
    """uvicorn serving `admin_app(source)` on an already bound socket, in the current loop or on a thread."""

    def __init__(self, source: AdminSource, sock: socket.socket) -> None:
        self.sock = sock
        self.server = _admin_server(source)
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Serve in the running loop (one process: beside the webhook server).

        uvicorn captures SIGINT/SIGTERM while it serves and re-raises them when it stops; the webhook
        server's own handlers then take them, so the gateway still shuts down gracefully.
        """
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="admin-listener")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    def start_thread(self) -> AdminListener:
        """Serve on a thread with its own loop (the supervisor of several workers, whose main thread waits)."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), name="admin-listener", daemon=True
        )
        self._thread.start()
        return self

    def stop_thread(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


# -- several workers: reports in a directory, aggregated by the supervisor --------------------------------------


def write_report(directory: Path, pid: int, body: Mapping[str, Any], now: float) -> None:
    """This worker's readiness `body`, stamped with its pid and `now`, replacing its previous report atomically."""
    path = directory / f"{pid}.json"
    scratch = directory / f".{pid}.json.tmp"
    scratch.write_bytes(orjson.dumps({**body, "pid": pid, "reported_at": now}))
    os.replace(scratch, path)


def remove_report(directory: Path, pid: int) -> None:
    (directory / f"{pid}.json").unlink(missing_ok=True)


def read_report(directory: Path, pid: int) -> dict[str, Any] | None:
    """The last report of worker `pid`, None if it wrote none (or it cannot be read)."""
    try:
        report = orjson.loads((directory / f"{pid}.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def aggregate(reports: Mapping[int, dict[str, Any] | None], expected: int, now: float) -> ServiceReadiness:
    """The gateway's readiness from its workers' last reports (pid → report, None when it wrote none).

    Ready only if `expected` workers run and each reported ready within STALE_AFTER_S; the reasons say which
    worker is not, and why. Kafka is `up` only if it is for every worker; `schemas` and `min_isr` are the worst
    of the workers' answers; the spool figures are summed (`spool_max_bytes` is per worker, as the setting).
    """
    fresh = [r for r in reports.values() if r is not None and now - float(r.get("reported_at", 0)) <= STALE_AFTER_S]
    every_worker = len(reports) == expected and len(fresh) == expected
    body: dict[str, Any] = {
        "workers": expected,
        "workers_ready": sum(1 for r in fresh if body_is_ready(r)),
        "kafka": "up" if every_worker and all(r.get("kafka") == "up" for r in fresh) else "down",
        "schemas": _worst([r.get("schemas") for r in fresh], _SCHEMA_STATES, "waiting_for_registry"),
        "spooling": any(bool(r.get("spooling")) for r in fresh),
        "spool_records": sum(int(r.get("spool_records", 0)) for r in fresh),
        "spool_bytes": sum(int(r.get("spool_bytes", 0)) for r in fresh),
        "spool_max_bytes": max((int(r.get("spool_max_bytes", 0)) for r in fresh), default=0),
        "spool": _worst([r.get("spool") for r in fresh], _SPOOL_STATES, "not_started"),
        "spool_error": next((r["spool_error"] for r in fresh if r.get("spool_error")), None),
        "min_isr": _worst([r.get("min_isr") for r in fresh], _MIN_ISR_STATES, "unknown"),
        "kafka_refusals": {topic: why for r in fresh for topic, why in (r.get("kafka_refusals") or {}).items()},
    }
    reasons = sorted({str(r["min_isr_reason"]) for r in fresh if r.get("min_isr_reason")})
    if reasons:
        body["min_isr_reason"] = "; ".join(reasons)
    body["per_worker"] = [
        _worker_entry(pid, report, now) for pid, report in sorted(reports.items(), key=lambda item: item[0])
    ]
    return ServiceReadiness(_reasons(reports, expected, now), body)


def _reasons(reports: Mapping[int, dict[str, Any] | None], expected: int, now: float) -> list[str]:
    """Why the workers' reports do not make the gateway ready: one reason per missing, silent or unready worker."""
    reasons = [] if len(reports) == expected else [f"{len(reports)} of {expected} workers running"]
    for pid, report in sorted(reports.items(), key=lambda item: item[0]):
        if report is None:
            reasons.append(f"worker {pid}: no report yet")
        elif (age := now - float(report.get("reported_at", 0))) > STALE_AFTER_S:
            reasons.append(f"worker {pid}: no report for {age:.1f} s")
        elif not body_is_ready(report):
            reasons += [f"worker {pid}: {why}" for why in report.get("reasons") or ["not ready"]]
    return reasons


#: A worker's spool states, worst first.
_SPOOL_STATES = ("disk_full", "full", "stopping", "not_started", "ok")


def _worst(values: list[Any], order: tuple[str, ...], none: str) -> str:
    known = [order.index(v) for v in values if v in order]
    return order[min(known)] if known else none


def _worker_entry(pid: int, report: dict[str, Any] | None, now: float) -> dict[str, Any]:
    if report is None:
        return {"pid": pid, "status": "no_report"}
    age = round(now - float(report.get("reported_at", 0)), 3)
    entry = {k: v for k, v in report.items() if k != "reported_at"} | {"report_age_s": age}
    if age > STALE_AFTER_S:
        entry["status"] = "stale_report"
    return entry


class WorkerReports:
    """The admin source of several workers: their reports in `directory`, the metrics of the multiprocess dir."""

    def __init__(self, directory: Path, pids: Callable[[], list[int | None]], expected: int, metrics_dir: str) -> None:
        self.directory = directory
        self.pids = pids  # the worker processes the supervisor runs now
        self.expected = expected
        self.metrics_dir = metrics_dir

    def readiness(self) -> ServiceReadiness:
        pids = [pid for pid in self.pids() if pid is not None]
        return aggregate({pid: read_report(self.directory, pid) for pid in pids}, self.expected, time.time())

    def exposition(self) -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
