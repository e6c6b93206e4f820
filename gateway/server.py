"""`gateway.server.run(settings)`: uvicorn over TLS, one or several worker processes.

Each worker builds its own app (factory), so each has its own producer and claims its own spool
directory; uvicorn's supervisor restarts a dead worker, which then reclaims the free directory, and a worker
whose supervisor died stops as on SIGTERM (gateway/parent.py) rather than hold the port for nobody.
The admin listener (/readyz, /metrics: gateway/admin.py) is bound here, before any worker starts, and
served by the single process or, with several workers, by the supervisor from the workers' reports.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from common import gc_tuning, logs
from common.kafka_errors import Kind, classify_kafka_error
from common.kafka_wait import probe
from common.settings import KafkaSettings
from gateway import parent
from gateway.admin import AdminListener, AdminSettingsError, WorkerReports, bind_admin
from gateway.app import create_app
from gateway.connections import FD_RESERVE_MIN, GuardedHttpToolsProtocol
from gateway.metrics import MULTIPROC_ENV
from gateway.settings import GatewaySettings
from schemas.catalog import GATEWAY_TOPICS
from schemas.codec import build_codec
from schemas.confluent import RegistryError, RegistryUnavailable
from schemas.settings import SchemaSettings


class ConfigError(RuntimeError):
    pass


def build_config(
    settings: GatewaySettings, kafka: KafkaSettings | None = None, schema: SchemaSettings | None = None
) -> uvicorn.Config:
    for path in (settings.tls_cert_file, settings.tls_key_file):
        if not path.is_file():
            raise ConfigError(
                f"TLS file {path} not found: mount your certificate and key there (GATEWAY_TLS_CERT_FILE, "
                "GATEWAY_TLS_KEY_FILE), or create a self-signed pair with `pinwheel-connector gateway --self-signed`"
            )
    soft_fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_fd_limit != resource.RLIM_INFINITY and settings.max_connections > soft_fd_limit - FD_RESERVE_MIN:
        raise ConfigError(
            f"GATEWAY_MAX_CONNECTIONS={settings.max_connections} leaves fewer than {FD_RESERVE_MIN} of the "
            f"{soft_fd_limit} open files (ulimit -n) for Kafka and the spool; lower it or raise the limit"
        )
    # A picklable factory: with several workers uvicorn spawns processes and sends them the config.
    factory = functools.partial(create_app, settings, kafka or KafkaSettings(), schema or SchemaSettings())
    return uvicorn.Config(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert_file),
        ssl_keyfile=str(settings.tls_key_file),
        workers=settings.workers,
        timeout_worker_healthcheck=settings.worker_healthcheck_timeout_s,
        log_config=logs.uvicorn_log_config(settings.log_level, ["gateway"]),
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        # Header caps, read deadlines and the connection limit (gateway/connections.py).
        http=GuardedHttpToolsProtocol,
        limit_concurrency=None,
        timeout_keep_alive=30,
    )


def run(settings: GatewaySettings, kafka: KafkaSettings | None = None, schema: SchemaSettings | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (in-flight requests, producer, spool)."""
    config = build_config(settings, kafka, schema)
    check_kafka(kafka or KafkaSettings())
    check_schemas(schema or SchemaSettings())
    try:
        admin_socket = bind_admin(settings.admin_host, settings.admin_port)
    except AdminSettingsError as exc:
        raise ConfigError(str(exc)) from None
    serve(config, admin_socket)


def check_kafka(kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
    """A cluster that refuses us (a wrong password, a certificate that does not verify) is a ConfigError (exit
    2): spooling would only hide it. One that does not answer is not: the workers start, spool, and drain once
    it is back."""
    try:
        asyncio.run(probe(kafka, timeout_s))
    except Exception as exc:
        verdict = classify_kafka_error(exc)
        if verdict.kind is Kind.MISCONFIGURED:
            raise ConfigError(f"kafka: {verdict.reason}") from None


def check_schemas(schema: SchemaSettings) -> None:
    """With a schema registry, our schemas resolve before any worker starts: a schema missing in lookup-only
    mode, or one the registry refuses, is a ConfigError (exit 2). An unreachable registry is not: the workers
    start and wait for it."""
    if not schema.registry_url:
        return

    async def resolve() -> None:
        codec = build_codec(schema)
        try:
            await codec.prepare(GATEWAY_TOPICS)  # its schemas must resolve before it serves
        except RegistryUnavailable:
            pass
        finally:
            await codec.close()

    try:
        asyncio.run(resolve())
    except RegistryError as exc:
        raise ConfigError(f"schema registry: {exc}") from None


def _worker_app(factory: Callable[..., Any], supervisor_pid: int) -> Any:
    """A worker's app factory, run in the worker: it stops (drains, as on SIGTERM) when its supervisor dies,
    and tunes its own collector (settings do not cross a spawn)."""
    parent.stop_with_parent(supervisor_pid)
    gc_tuning.tune_for_throughput()
    return factory()


def serve(config: uvicorn.Config, admin_socket: socket.socket | None = None) -> None:
    """Serve `config` (one process or several workers) until SIGINT/SIGTERM, and the admin listener on
    `admin_socket` if given (the single process serves it from its live state; the supervisor of several
    workers from the reports they write: gateway/admin.py).

    Separate from `run` so the benchmark serves its reference endpoints with the gateway's exact options.
    """
    if config.workers > 1:
        assert callable(config.app), "build_config passes an app factory"
        # Before the workers are spawned (they import prometheus_client with it set); a fresh
        # directory per run, so the counters of a previous run are not summed in.
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
        report_dir = tempfile.mkdtemp(prefix="gateway-ready-")
        if admin_socket is not None:
            factory: Callable[..., Any] = config.app
            config.app = functools.partial(factory, report_dir=Path(report_dir))
        config.app = functools.partial(_worker_app, config.app, os.getpid())
        listener = None
        try:
            sock = config.bind_socket()
            supervisor = Multiprocess(config, sockets=[sock])
            if admin_socket is not None:
                reports = WorkerReports(
                    Path(report_dir), lambda: [p.pid for p in supervisor.processes], config.workers, metrics_dir
                )
                listener = AdminListener(reports, admin_socket).start_thread()
            supervisor.run()
        finally:
            if listener is not None:
                listener.stop_thread()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            shutil.rmtree(report_dir, ignore_errors=True)
        return
    if admin_socket is not None:
        assert callable(config.app), "build_config passes an app factory"
        single: Callable[..., Any] = config.app
        config.app = functools.partial(single, admin_socket=admin_socket)
    gc_tuning.tune_for_throughput()
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # startup failed (lifespan error): uvicorn has logged why
