"""Wait for the Kafka cluster to answer, the same way in every service and command.

Services and commands start in any order (Kubernetes, compose without `depends_on`): rather than fail at
the first refused connection, they probe the bootstrap servers with capped exponential back-off until one
answers, a deadline passes (KafkaUnreachable) or the cluster refuses us (KafkaMisconfigured: a wrong password
or certificate is not fixed by waiting). The probe opens one connection the way every aiokafka client does
(TCP, TLS, API versions, SASL), so it sees the real cause a client's bootstrap would only log.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable

from aiokafka.conn import create_conn

from common.backoff import Backoff
from common.kafka_errors import KafkaMisconfigured, KafkaUnreachable, Kind, Verdict, classify_kafka_error
from common.settings import KafkaSettings

log = logging.getLogger(__name__)

_CONN_PARAMETERS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port"}


def bootstrap_hosts(servers: str) -> list[tuple[str, int]]:
    """`host:port,[v6]:port` -> [(host, port)]."""
    hosts = []
    for item in servers.split(","):
        host, _, port = item.strip().rpartition(":")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


async def probe(kafka: KafkaSettings, timeout_s: float | None = None) -> None:
    """Return once one bootstrap server completes a client handshake; raise the most telling failure otherwise
    (a refusal before a connection error: it is the one to report)."""
    kwargs = {key: value for key, value in kafka.client_kwargs().items() if key in _CONN_PARAMETERS}
    kwargs["client_id"] = f"{kafka.client_id_prefix}-probe"
    limit = kafka.request_timeout_ms / 1000 if timeout_s is None else min(timeout_s, kafka.request_timeout_ms / 1000)
    failures: list[BaseException] = []
    for host, port in bootstrap_hosts(kafka.bootstrap_servers):
        try:
            conn = await asyncio.wait_for(create_conn(host, port, **kwargs), max(limit, 0.1))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures.append(exc)
            continue
        conn.close()
        return
    failures.sort(key=lambda exc: classify_kafka_error(exc).kind is not Kind.MISCONFIGURED)
    raise failures[0]


class _RateLimited:
    """One log line per attempt, but at most one per `every_s`; a line carries how many were held back."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.last: float | None = None
        self.held = 0

    def emit(self, message: str, extra: dict[str, object]) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every_s:
            self.held += 1
            return
        if self.held:
            extra = {**extra, "suppressed": self.held}
        log.warning(message, extra=extra)
        self.last, self.held = now, 0


async def wait_for_kafka(
    kafka: KafkaSettings,
    *,
    timeout_s: float | None,
    stop: asyncio.Event | None = None,
    on_wait: Callable[[Verdict], None] | None = None,
    log_every_s: float | None = 10.0,
    backoff: Backoff | None = None,
) -> bool:
    """Probe until Kafka answers (True) or `stop` is set (False).

    Raises KafkaUnreachable once `timeout_s` passed (None: wait forever) and KafkaMisconfigured as soon as the
    cluster refuses us. `on_wait(verdict)` is called after every failed attempt (for /readyz). A log line per
    attempt, at most one per `log_every_s` (None: no lines, for a command whose outcome is its one line)."""
    backoff = backoff or Backoff()
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    logged = _RateLimited(log_every_s) if log_every_s is not None else None
    while stop is None or not stop.is_set():
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            await probe(kafka, remaining)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = classify_kafka_error(exc)
            if verdict.kind is Kind.MISCONFIGURED:
                raise KafkaMisconfigured(f"kafka: {verdict.reason}") from None
            if verdict.kind is Kind.OTHER:  # a probe that fails otherwise (a bad setting): not for waiting
                raise
            waited = time.monotonic() - started
            if timeout_s is not None and waited >= timeout_s:
                raise KafkaUnreachable(unreachable_line(kafka, timeout_s, exc)) from None
            delay = backoff.next_delay()
            if deadline is not None:
                delay = max(0.0, min(delay, deadline - time.monotonic()))
            if on_wait is not None:
                on_wait(Verdict(Kind.UNREACHABLE, f"kafka unreachable: {_short(exc)}"))
            if logged is not None:
                logged.emit(
                    "waiting for kafka",
                    {
                        "bootstrap_servers": kafka.bootstrap_servers,
                        "attempt": backoff.attempts,
                        "error": _short(exc),
                        "waited_s": round(waited, 1),
                        "retry_in_s": round(delay, 2),
                    },
                )
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        else:
            if backoff.attempts:
                log.info("kafka reachable", extra={"waited_s": round(time.monotonic() - started, 1)})
            return True
    return False


def _short(exc: BaseException) -> str:
    """The error class and the OS error text when there is one (`ConnectionRefusedError: [Errno 111] ...`)."""
    text = str(exc)
    name = type(exc).__name__
    if text.startswith(f"{name}: "):
        text = text[len(name) + 2 :]
    return f"{name}: {text}" if text else name


def unreachable_line(kafka: KafkaSettings, timeout_s: float, exc: BaseException | None = None) -> str:
    """The one line a service or command ends with when Kafka never answered within `timeout_s`."""
    cause = f" (last error: {_short(exc)})" if exc is not None else ""
    return (
        f"kafka: no answer from {kafka.bootstrap_servers} within {timeout_s:g} s{cause}; "
        "check KAFKA_BOOTSTRAP_SERVERS and that the brokers run"
    )
