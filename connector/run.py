"""`make run` (= `pinwheel-connector run`): the whole pipeline on one machine, fed with simulated traffic.

Steps: local Kafka (reused when already running) → topics → self-signed TLS pair → gateway and processors as
subprocesses (each run its own application id, started at the current end of the family topics) → wait
for both /readyz → simulate N accounts plus the real sandbox capture, showing the account updates as they
arrive → wait for the updates (and the demo-length pending timeouts) → the `verify` summary → stop
everything this run started (also on Ctrl-C), including the broker unless it was already running.

Run data goes to var/runs/<run id>/: ledger.jsonl, updates.jsonl, gateway.log, processor.log, the
processor's state and the gateway's spool. The demo secret is generated per run and never printed. The simulation
and its live display are `simulator/demo.py`; this module starts and stops what runs around it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.offsets import start_at_end
from common.ports import preferred_port
from common.settings import KafkaSettings
from common.topics import TopicSettings, ensure_topics
from connector.local_kafka import LocalKafka, LocalKafkaError, LocalKafkaSettings, answers_metadata
from gateway.tls import ensure_self_signed
from processors.topics import all_topics
from schemas.catalog import FAMILY_TOPICS
from simulator.demo import DemoOptions, simulate_and_verify
from simulator.settings import SimulatorSettings


class RunSettings(BaseSettings):
    """`make run` (env prefix `RUN_`); the simulator's own knobs are `SIMULATOR_*`."""

    model_config = SettingsConfigDict(env_prefix="RUN_", extra="ignore")

    accounts: int = Field(default=300, ge=1, description="Accounts to simulate.")
    seed: int | None = Field(default=None, description="Traffic seed; empty: a new one per run.")
    spread_s: float = Field(default=40.0, ge=0, description="Accounts connect over this many seconds.")
    pending_timeout_s: float = Field(
        default=45.0,
        gt=0,
        description="Demo pending timeout of the processors (PROCESSOR_PENDING_TIMEOUT_H; production: 24 h).",
    )
    gateway_port: int = Field(default=8443, ge=1, le=65535, description="Gateway HTTPS port (a free one if busy).")
    gateway_admin_port: int = Field(
        default=8082, ge=1, le=65535, description="Gateway admin port, /readyz and /metrics (a free one if busy)."
    )
    health_port: int = Field(default=8081, ge=1, le=65535, description="Processor health port (a free one if busy).")
    runs_dir: Path = Field(default=Path("var/runs"), description="Where each run keeps its data.")
    show: Literal["sample", "all", "none"] = Field(
        default="sample", description="Account updates printed live: sample (rate-limited), all, none."
    )
    show_per_s: int = Field(default=12, ge=1, description="With show=sample, most update lines per second.")
    ready_timeout_s: float = Field(default=120.0, gt=0, description="How long the services may take to be ready.")
    settle_s: float = Field(default=20.0, ge=0, description="Extra wait for late updates after the last deadline.")


def say(message: str) -> None:
    print(f"[run] {message}", flush=True)


def cli_command(*args: str) -> list[str]:
    """`pinwheel-connector <args>` from this environment (the console script next to the interpreter)."""
    script = Path(sys.executable).parent / "pinwheel-connector"
    if script.exists():
        return [str(script), *args]
    found = shutil.which("pinwheel-connector")
    return [found, *args] if found else [sys.executable, "-m", "connector.cli", *args]


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL (fault injection): no shutdown code runs."""
        if self.alive():
            self.process.kill()
        self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_service(name: str, args: list[str], env: Mapping[str, str], log: Path) -> Service:
    with log.open("ab") as fh:
        process = subprocess.Popen(
            cli_command(*args),
            env=dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the services in order
        )
    return Service(name, process, log)


@dataclass
class Started:
    """What this run started, so it can stop exactly that."""

    services: list[Service] = field(default_factory=list)
    broker: LocalKafka | None = None

    def stop(self) -> None:
        for service in reversed(self.services):
            if service.alive():
                say(f"stopping {service.name} (pid {service.process.pid})")
            service.stop()
        self.services.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def ensure_broker(started: Started) -> KafkaSettings:
    """Reuse a running broker (ours or any at KAFKA_BOOTSTRAP_SERVERS), else start the local one."""
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        kafka = KafkaSettings()
        if not asyncio.run(answers_metadata(kafka.bootstrap_servers)):
            raise LocalKafkaError(f"no broker answers at KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}")
        say(f"using the broker at {kafka.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        return kafka
    local = LocalKafka(LocalKafkaSettings(), progress=lambda m: say(f"kafka: {m}"))
    kafka = KafkaSettings(bootstrap_servers=local.bootstrap)
    if local.pid() is not None:
        say(f"reusing the local Kafka already running on {local.bootstrap} (pid {local.pid()}); it stays up")
        local.wait_ready()
        return kafka
    if asyncio.run(answers_metadata(local.bootstrap)):
        say(f"a Kafka broker already answers on {local.bootstrap}: using it (not ours, it stays up)")
        return kafka
    local.start()
    started.broker = local
    return kafka


async def provision_topics(kafka: KafkaSettings, app_id: str) -> tuple[list[str], int]:
    """Create every topic (the processors' changelogs named after `app_id`) and start `app_id` at the end of the
    family topics. Returns the topic report lines and how many earlier records are skipped."""
    report = await ensure_topics(kafka, all_topics(TopicSettings(processor_application_id=app_id)))
    skipped = await start_at_end(kafka, app_id, list(FAMILY_TOPICS.values()))
    return report, skipped


def gateway_env(
    base: Mapping[str, str],
    *,
    secret: str,
    port: int,
    admin_port: int,
    cert: Path,
    key: Path,
    spool_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The gateway's environment: `base` plus its listeners (HTTPS webhook port, plain-HTTP admin port for
    /readyz and /metrics, both on loopback), TLS pair, secret and spool (`extra`: more GATEWAY_*)."""
    return {
        **base,
        "GATEWAY_SECRETS": secret,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_HOST": "127.0.0.1",
        "GATEWAY_ADMIN_PORT": str(admin_port),
        "GATEWAY_TLS_CERT_FILE": str(cert),
        "GATEWAY_TLS_KEY_FILE": str(key),
        "GATEWAY_SPOOL_DIR": str(spool_dir),
        **extra,
    }


def processor_env(
    base: Mapping[str, str],
    *,
    app_id: str,
    state_dir: Path,
    health_port: int,
    pending_timeout_s: float,
    **extra: str,
) -> dict[str, str]:
    """The processors' environment with a demo-length pending timeout (`extra`: more PROCESSOR_*)."""
    return {
        **base,
        "PROCESSOR_APPLICATION_ID": app_id,
        "PROCESSOR_STATE_DIR": str(state_dir),
        "PROCESSOR_HEALTH_PORT": str(health_port),
        "PROCESSOR_PENDING_TIMEOUT_H": f"{pending_timeout_s / 3600:.6f}",
        "PROCESSOR_TIMEOUT_GRACE_S": "0",
        "PROCESSOR_PUNCTUATE_INTERVAL_MS": "500",
        **extra,
    }


async def wait_ready(services: list[Service], urls: Mapping[str, str], ca_file: Path, timeout_s: float) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout_s
    pending = dict(urls)
    async with httpx.AsyncClient(verify=context, timeout=2.0) as client:
        while pending:
            for service in services:
                if not service.alive():
                    raise RuntimeError(
                        f"{service.name} exited with {service.process.returncode}; last log lines "
                        f"({service.log}):\n{service.log_tail()}"
                    )
            for name, url in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        say(f"{name} ready ({url})")
                        del pending[name]
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout_s:.0f}s: {', '.join(pending)}")
            await asyncio.sleep(0.3)


def stop_on_sigterm() -> None:
    """Make SIGTERM stop the process like Ctrl-C, also when it was started as a background job.

    asyncio.run turns SIGINT into a clean cancellation of the running step, outside asyncio it is a
    KeyboardInterrupt; either way the caller's `finally` stops everything it started. A shell starts background
    jobs (`make run &`) with SIGINT *ignored*, which would swallow the SIGINT raised for SIGTERM (and asyncio.run
    only installs its handler over the default one), so the default handler is put back first.
    """

    def terminate(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)


def run(settings: RunSettings) -> int:
    started_wall = time.monotonic()
    run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
    run_dir = settings.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    app_id = f"pinwheel-run-{run_id}"
    say(f"run {run_id}: data in {run_dir}")
    started = Started()

    stop_on_sigterm()
    try:
        say("step 1/6: Kafka")
        kafka = ensure_broker(started)

        say("step 2/6: topics")
        report, skipped = asyncio.run(provision_topics(kafka, app_id))
        created = sum(1 for line in report if line.startswith("created"))
        say(f"{len(report)} topics ready ({created} created); processor application id {app_id}")
        say(f"the processors start at the end of the family topics ({skipped} earlier records are not replayed)")

        say("step 3/6: TLS certificate")
        cert, key = Path("var/tls/gateway.crt"), Path("var/tls/gateway.key")
        made = ensure_self_signed(cert, key)
        say(f"{'created' if made else 'reusing'} self-signed certificate {cert}")

        say("step 4/6: gateway and processors")
        secret = secrets.token_urlsafe(24)  # demo secret: handed to the gateway and the simulator, never shown
        gateway_port = preferred_port(settings.gateway_port)
        admin_port = preferred_port(settings.gateway_admin_port)
        health_port = preferred_port(settings.health_port)
        base_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
        gateway_vars = gateway_env(
            base_env,
            secret=secret,
            port=gateway_port,
            admin_port=admin_port,
            cert=cert,
            key=key,
            spool_dir=run_dir / "spool",
        )
        processor_vars = processor_env(
            base_env,
            app_id=app_id,
            state_dir=run_dir / "state",
            health_port=health_port,
            pending_timeout_s=settings.pending_timeout_s,
        )
        gateway = start_service("gateway", ["gateway"], gateway_vars, run_dir / "gateway.log")
        started.services.append(gateway)
        say(
            f"gateway pid {gateway.process.pid} on https://127.0.0.1:{gateway_port}, admin (/readyz, /metrics) on "
            f"http://127.0.0.1:{admin_port} (log {gateway.log})"
        )
        processor = start_service("processor", ["processor"], processor_vars, run_dir / "processor.log")
        started.services.append(processor)
        say(
            f"processor pid {processor.process.pid}, health on :{health_port} (log {processor.log}); demo pending "
            f"timeout {settings.pending_timeout_s:.0f}s instead of 24h"
        )
        urls = {
            "gateway": f"http://127.0.0.1:{admin_port}/readyz",
            "processor": f"http://127.0.0.1:{health_port}/readyz",
        }
        asyncio.run(wait_ready(started.services, urls, cert, settings.ready_timeout_s))

        say("step 5/6: simulation (account updates below as they arrive)")
        seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "big")
        sim = SimulatorSettings(
            url=f"https://127.0.0.1:{gateway_port}/webhooks/pinwheel",
            ca_file=cert,
            accounts=settings.accounts,
            seed=seed,
            spread_s=settings.spread_s,
            ledger=run_dir / "ledger.jsonl",
        )
        options = DemoOptions(
            settings.show, settings.show_per_s, settings.pending_timeout_s, settings.settle_s, say=say
        )
        code = asyncio.run(
            simulate_and_verify(
                sim, kafka, options, run_dir=run_dir, run_id=run_id, secret=secret, started_wall=started_wall
            )
        )
        say("step 6/6: stopping what this run started")
        return code
    except KeyboardInterrupt:
        print()
        say("interrupted: stopping what this run started")
        return 130
    except (LocalKafkaError, RuntimeError, OSError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        started.stop()
        say(f"done; run data in {run_dir}")


def main(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    for name in ("accounts", "seed", "show"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return run(RunSettings(**overrides))  # type: ignore[arg-type]
